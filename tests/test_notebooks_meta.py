"""Conventions every committed notebook keeps (DEVELOPERS.md, issue 6)."""

import json

import pytest

from dmlkit.nbrun import list_notebooks, notebook_dir

NOTEBOOKS = list_notebooks()


def test_collection_exists():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert tagged[0]["cell_type"] == "code"
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "sys.path" not in source, "notebooks must not edit sys.path"
    assert "from tqdm import" not in source and "import tqdm\n" not in source, "use tqdm.auto"
    assert "setup(" in source, "notebooks start with dmlkit.notebook.setup (seeds, style)"
    # committed with the outputs of a default run, without papermill's noisy metadata
    assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), "no outputs"
    assert "papermill" not in nb["metadata"]
    # its recorded numbers are committed next to it (notebook 10 and the tests read them)
    assert (notebook_dir() / "results" / f"{path.stem}.json").exists()
    # parameter knobs are UPPER_CASE
    for line in "".join(tagged[0]["source"]).splitlines():
        line = line.split("#")[0].strip()
        if "=" in line and not line.startswith(("import", "from")):
            name = line.split("=")[0].strip()
            assert name.isupper(), f"parameter {name!r} should be UPPER_CASE"
