"""Run a notebook at tiny scale for the tests: papermill injects the parameters, nbval executes
it (``--nbval-lax``: cells marked ``# NBVAL_CHECK_OUTPUT`` must reproduce their committed
output), and the numbers the notebook recorded come back as a dict for the test to assert on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from dmlkit.nbrun import notebook_dir


def run_tiny(name: str, parameters: dict, tmp_path: Path, timeout: int = 600) -> dict:
    src = notebook_dir() / f"{name}.ipynb"
    assert src.exists(), f"notebook {src} is missing"
    nb = load_notebook_node(str(src))  # adds the metadata papermill expects (tags, papermill)
    nb = parameterize_notebook(nb, parameters, kernel_name="python3", language="python")
    work = tmp_path / "nb"
    work.mkdir(parents=True, exist_ok=True)
    target = work / src.name
    nbformat.write(nb, target)
    env = {**os.environ, "DMLKIT_FIGURES_DIR": str(tmp_path / "figures"),
           "DMLKIT_RESULTS_DIR": str(tmp_path / "results"), "MPLBACKEND": "Agg",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
           "--nbval-cell-timeout", str(timeout), "--rootdir", str(work), str(target)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work,
                         timeout=timeout, check=False)
    assert out.returncode == 0, (
        f"{name} failed under nbval:\n{out.stdout[-6000:]}\n{out.stderr[-2000:]}")
    results = tmp_path / "results" / f"{name}.json"
    assert results.exists(), f"{name} recorded no results ({results})"
    figures = list((tmp_path / "figures").glob(f"{name}_*.png"))
    assert figures, f"{name} saved no figure under figures/"
    return json.loads(results.read_text())
