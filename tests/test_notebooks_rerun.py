"""Rerun every notebook at its default parameters and compare the numbers it prints with the
committed outputs (``slow``: about 260 s of notebooks, run two at a time).

Numbers are parsed from the text outputs of every code cell (streams and the ``text/plain`` of
results), cell by cell, and must agree to a relative 1e-6. Cells tagged ``varies``
(:data:`dmlkit.nbrun.VARIES_TAG`: wall-clock seconds, timestamps) are not compared. Each notebook
runs in its own temporary folder; notebook 10 reads a copy of the committed
``notebooks/results/runs.csv``, the file it read when it was committed.
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest
from nbtest import NOTEBOOKS, committed, printed_numbers, sources

pytestmark = pytest.mark.slow

SOURCES = sources()
PARALLEL = 2
#: notebooks that read the committed results log instead of starting from an empty one
READS_RUNS_CSV = {"10_results_vs_papers"}


def _rerun(name, tmp):
    folder = tmp / name
    (folder / "results").mkdir(parents=True)
    if name in READS_RUNS_CSV:
        shutil.copy(NOTEBOOKS / "results" / "runs.csv", folder / "results" / "runs.csv")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DMLKIT_FIGURES_DIR", "DMLKIT_RESULTS_DIR", "MPLBACKEND")}
    # a process per notebook: each kernel gets its own environment and working directory
    code = ("import sys; from dmlkit.nbrun import run_notebook; "
            "run_notebook(sys.argv[1], sys.argv[2])")
    out = subprocess.run([sys.executable, "-c", code, str(NOTEBOOKS / f"{name}.py"),
                          str(folder / f"{name}.ipynb")], capture_output=True, text=True,
                         env=env, cwd=folder, timeout=1200, check=False)
    return name, out


@pytest.fixture(scope="module")
def reruns(request, tmp_path_factory):
    """The executed notebooks of the selected tests, run ``PARALLEL`` at a time."""
    wanted = [item.callspec.params["source"].stem for item in request.session.items
              if getattr(item, "originalname", "") == "test_rerun_prints_the_committed_numbers"]
    tmp = tmp_path_factory.mktemp("rerun")
    with ThreadPoolExecutor(PARALLEL) as pool:
        done = dict(pool.map(lambda name: _rerun(name, tmp), wanted))
    return {name: (out, tmp / name / f"{name}.ipynb") for name, out in done.items()}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_rerun_prints_the_committed_numbers(source, reruns):
    out, path = reruns[source.stem]
    assert out.returncode == 0, f"{source.stem} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    got = printed_numbers(nbformat.read(path, as_version=4))
    want = printed_numbers(committed(source.stem))
    assert [i for i, _ in got] == [i for i, _ in want]
    for (i, new), (_, old) in zip(got, want):
        assert len(new) == len(old), f"cell {i}: {len(new)} numbers printed, committed {len(old)}"
        assert new == pytest.approx(old, rel=1e-6, abs=1e-12), f"cell {i} prints other numbers"
