"""Run notebooks for the tests, from their ``.py`` sources.

:func:`run_tiny`: papermill injects tiny parameters, nbval executes the notebook (``--nbval-lax``:
cells marked ``# NBVAL_CHECK_OUTPUT`` must reproduce the output they have in the committed
``.ipynb``), and the numbers the notebook recorded come back as a dict for the test to assert on;
every figure the notebook saved must pass :mod:`dmlkit.figure_audit` (:func:`check_figure_audit`).
:func:`printed_numbers`: the numbers a notebook prints, cell by cell, for the rerun test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from dmlkit.figure_audit import AUDIT_ENV, Violation
from dmlkit.nbrun import VARIES_TAG, build_notebook, write_notebook

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def sources() -> list[Path]:
    """The notebook sources ``notebooks/NN_name.py``, in order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def committed(name: str):
    """The committed notebook ``notebooks/<name>.ipynb``."""
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _with_committed_outputs(nb, name: str):
    """Give each code cell the outputs (and execution count) of the committed cell with the
    same source: nbval compares the ``NBVAL_CHECK_OUTPUT`` cells with them."""
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        return nb
    ran = {c.source: c for c in committed(name).cells if c.cell_type == "code"}
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source in ran:
            cell.outputs = ran[cell.source].outputs
            cell.execution_count = ran[cell.source].execution_count
    return nb


#: Notebooks whose saved figures still break a rule of :mod:`dmlkit.figure_audit`: their
#: violations are printed by :func:`check_figure_audit`, not asserted (issue 20, item 5: to fix).
AUDIT_PENDING: dict[str, str] = {}


def notebook_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a test run: figures and results under ``tmp_path``, no display; every
    figure the notebook saves is audited into ``tmp_path/figure_audit.jsonl``."""
    return {**os.environ, "DMLKIT_FIGURES_DIR": str(tmp_path / "figures"),
            "DMLKIT_RESULTS_DIR": str(tmp_path / "results"), "MPLBACKEND": "Agg",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            AUDIT_ENV: str(tmp_path / "figure_audit.jsonl")}


def check_figure_audit(name: str, tmp_path: Path) -> dict[str, list[str]]:
    """Every figure ``name`` saved was audited (:meth:`NotebookContext.save_fig` with
    ``$DMLKIT_FIGURE_AUDIT``) and breaks no rule: no overlapping text, axis labels wherever
    an axis shows ticks, no legend over data. Returns the violations per figure (asserted
    empty unless the notebook is in :data:`AUDIT_PENDING`)."""
    path = tmp_path / "figure_audit.jsonl"
    lines = [json.loads(s) for s in path.read_text().splitlines()] if path.exists() else []
    audited = {r["figure"] for r in lines}
    saved = {p.stem for p in (tmp_path / "figures").glob(f"{name}_*.png")}
    assert saved <= audited, f"figures saved without the audit: {sorted(saved - audited)}"
    found = {r["figure"]: [str(Violation(**v)) for v in r["violations"]]
             for r in lines if r["violations"]}
    if name in AUDIT_PENDING:
        print(f"{name}: figure audit pending ({AUDIT_PENDING[name]}): {found}")
    else:
        assert not found, f"{name}: figures that break the audit: " + json.dumps(found, indent=1)
    return found


def run_tiny(name: str, parameters: dict, tmp_path: Path, timeout: int = 600) -> dict:
    src = NOTEBOOKS / f"{name}.py"
    assert src.exists(), f"notebook source {src} is missing"
    work = tmp_path / "nb"
    work.mkdir(parents=True, exist_ok=True)
    target = work / f"{name}.ipynb"
    write_notebook(_with_committed_outputs(build_notebook(src), name), target)
    nb = load_notebook_node(str(target))  # adds the metadata papermill expects
    write_notebook(parameterize_notebook(nb, parameters, kernel_name="python3",
                                         language="python"), target)
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
           "--nbval-cell-timeout", str(timeout), "--rootdir", str(work), str(target)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=notebook_env(tmp_path),
                         cwd=work, timeout=timeout, check=False)
    assert out.returncode == 0, (
        f"{name} failed under nbval:\n{out.stdout[-6000:]}\n{out.stderr[-2000:]}")
    results = tmp_path / "results" / f"{name}.json"
    assert results.exists(), f"{name} recorded no results ({results})"
    figures = list((tmp_path / "figures").glob(f"{name}_*.png"))
    assert figures, f"{name} saved no figure under figures/"
    check_figure_audit(name, tmp_path)
    return json.loads(results.read_text())


_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def output_text(output) -> str:
    """The text of one output: a stream, or the ``text/plain`` of a result / display."""
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "")


def printed_numbers(nb) -> list[tuple[int, list[float]]]:
    """``[(cell index, numbers printed by the cell)]`` for every code cell not tagged
    :data:`dmlkit.nbrun.VARIES_TAG`, in order; numbers parsed from the text outputs."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or VARIES_TAG in cell.metadata.get("tags", []):
            continue
        text = "\n".join(output_text(o) for o in cell.get("outputs", []))
        out.append((i, [float(m) for m in _NUMBER.findall(text)]))
    return out
