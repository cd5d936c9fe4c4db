"""``make test`` in parallel: every test of a file runs on one worker, and every browser test
(``tests/ui/``) on one worker, so that module fixtures (the notebook rerun, a JupyterLab server,
the book build) run once. Checked by running pytest-xdist with two workers on a throw-away
suite that uses the hooks of ``tests/conftest.py``."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("xdist")

CONFTEST = Path(__file__).with_name("conftest.py")

TEST_FILE = textwrap.dedent("""
    import json, os, pytest

    @pytest.mark.parametrize("i", range(6))
    def test_record(i, request):
        with open(os.environ["UNITS_LOG"], "a") as f:
            f.write(json.dumps([request.node.nodeid.split("::")[0],
                                os.environ["PYTEST_XDIST_WORKER"]]) + "\\n")
""")


def test_a_file_and_the_browser_tests_each_run_on_one_worker(tmp_path):
    (tmp_path / "tests" / "ui").mkdir(parents=True)
    # the hooks under test, loaded from the real conftest by path
    (tmp_path / "tests" / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("dmlkit_test_hooks", {str(CONFTEST)!r})
        hooks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hooks)
        pytest_collection_modifyitems = hooks.pytest_collection_modifyitems
        pytest_xdist_make_scheduler = hooks.pytest_xdist_make_scheduler
    """))
    files = ["tests/ui/test_lab.py", "tests/ui/test_book.py", "tests/test_one.py",
             "tests/test_two.py", "tests/test_three.py"]
    for name in files:
        (tmp_path / name).write_text(TEST_FILE)
    log = tmp_path / "units.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadscope", "--no-loadscope-reorder", "--rootdir", str(tmp_path),
         "tests"], cwd=tmp_path, env={**os.environ, "UNITS_LOG": str(log)},
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 6 * len(files)
    workers: dict[str, set] = {}
    for path, worker in rows:
        unit = "tests/ui" if path.startswith("tests/ui/") else path
        workers.setdefault(unit, set()).add(worker)
    assert set(workers) == {"tests/ui", "tests/test_one.py", "tests/test_two.py",
                            "tests/test_three.py"}
    assert all(len(w) == 1 for w in workers.values()), workers
    # both workers got work: the units are spread, not all sent to one
    assert len(set().union(*workers.values())) == 2
