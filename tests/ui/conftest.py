"""The JupyterLab server and Chromium page shared by every browser test (tests/ui/): one
server for the whole session (``make test`` runs tests/ui/ as one unit of work, see
tests/conftest.py), serving a temporary folder with the notebooks the tests open, built from
their ``.py`` sources at small parameters."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dmlkit.nbrun import build_notebook, run_notebook, write_notebook

from ui.lab import SCREENSHOTS, chromium, jupyterlab, missing

REPO = Path(__file__).resolve().parents[2]
#: small parameters (as in tests/test_notebooks_tiny.py): the browser waits for the kernel;
#: 01 is opened for its first exercise cells only (tests/ui/test_exercise_cell.py)
PARAMETERS = {
    "00_quickstart": {"NUM_CLASSES": 16, "IMAGES_PER_CLASS": 10, "DIFFICULTY": 0.3, "EPOCHS": 2,
                      "ITERATIONS_PER_EPOCH": 10, "EMBEDDING_DIM": 16},
    "01_contrastive_and_triplet": {},
    "03_unified_weight_view": {"NUM_CLASSES": 20, "NUM_TEST_CLASSES": 10, "IMAGES_PER_CLASS": 8,
                               "STEPS": 20, "SNAPSHOTS": 2, "CURVE_POINTS": 41},
}
SESSION_S = 480      # the server is stopped after this long, whatever happens
TINY = '''# %% tags=["parameters"]
N = 3

# %%
from tqdm.auto import tqdm
total = sum(tqdm(range(N)))
print(total)
'''


def _with_parameters(source: Path, params: dict):
    """The notebook of ``source`` with ``params`` set in its parameters cell."""
    nb = build_notebook(source)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for name, value in params.items():
        hits = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        assert hits, f"{source.stem} has no parameter {name}"
        lines[hits[0]] = f"{name} = {value!r}"
    cell.source = "\n".join(lines)
    return nb


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """``(page, base_url, token, folder)``: the server, a page, the notebooks to open."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)   # only this run's failures stay
    tmp = tmp_path_factory.mktemp("ui")
    work = tmp / "notebooks"
    work.mkdir()
    for name, params in PARAMETERS.items():
        write_notebook(_with_parameters(REPO / "notebooks" / f"{name}.py", params),
                       work / f"{name}.ipynb")
    (tmp / "tiny.py").write_text(TINY)
    run_notebook(tmp / "tiny.py", work / "99_executed.ipynb")   # as `make notebooks` does
    env = {"DMLKIT_FIGURES_DIR": str(tmp / "figures"), "DMLKIT_RESULTS_DIR": str(tmp / "results"),
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    # the kernel draws inline (a test run may have set MPLBACKEND=Agg)
    env.update({k: v for k, v in os.environ.items() if k != "MPLBACKEND" and k not in env})
    with jupyterlab(work, tmp, env=env, max_s=SESSION_S) as (base, token), \
            chromium(tmp / "chromium-profile") as page:
        yield page, base, token, work
