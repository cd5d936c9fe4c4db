"""The committed notebooks: equal to their ``.py`` sources, and clean (no trace of the machine
that ran them, the same bytes on every rerun)."""

import re
import shutil

import nbformat
import pytest
from nbtest import NOTEBOOKS, REPO, committed, output_text, sources

from dmlkit.nbrun import (
    JUPYTEXT_CELL_KEY,
    KERNELSPEC,
    build_notebook,
    clean_notebook,
    jupytext_metadata,
)

SOURCES = sources()


def _cells(nb):
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def test_collection_exists():
    assert len(SOURCES) >= 11
    assert not (NOTEBOOKS / "_build").exists(), "the .py sources replace the builders"
    stems = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    assert stems == {p.stem for p in SOURCES}, "one .py source per committed notebook"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_has_the_cells_of_its_source(source):
    assert _cells(committed(source.stem)) == _cells(build_notebook(source)), (
        f"{source.stem}.ipynb differs from {source.name}: "
        f"run `make notebooks ONLY={source.stem[:2]}`")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_conventions(source):
    text = source.with_suffix(".ipynb").read_text()
    nb = nbformat.reads(text, as_version=4)
    assert nb.metadata["kernelspec"] == KERNELSPEC
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert set(nb.metadata) <= {"kernelspec", "language_info", "jupytext"}, (
        "no widget state or papermill metadata")
    # the jupytext metadata JupyterLab writes on save (notebooks/jupytext.toml's options)
    assert nb.metadata.get("jupytext") == jupytext_metadata(source.with_suffix(".ipynb")), (
        "not the jupytext metadata JupyterLab writes: run `make notebooks`")
    # the kernel's language_info, version included: without it JupyterLab rewrites it when the
    # kernel starts and marks the notebook modified as soon as it opens
    assert re.fullmatch(r"\d+\.\d+\.\d+", nb.metadata["language_info"].get("version", "")), (
        "no Python version in language_info: run `make notebooks`")
    assert [c.id for c in nb.cells] == [f"cell-{i}" for i in range(len(nb.cells))]
    for c in nb.cells:
        assert set(c.metadata) <= {"tags", JUPYTEXT_CELL_KEY}, c.metadata
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert tagged[0].cell_type == "code"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "sys.path" not in code, "notebooks must not edit sys.path"
    assert "from tqdm import" not in code and "import tqdm\n" not in code, "use tqdm.auto"
    assert "setup(" in code, "notebooks start with dmlkit.notebook.setup (seeds, style)"
    assert not re.search(r"\b(analysis|reporting)\.", code), "the old module names are gone"
    # committed with the outputs of a default run, nothing of the machine that ran it
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs, "no outputs: run `make notebooks`"
    for out in outputs:
        assert out.output_type != "error"
        assert not (out.output_type == "stream" and out.name == "stderr"), (
            f"stderr in the outputs: {out.text[:300]}")
        assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {})
        assert "Warning" not in output_text(out), f"a warning: {output_text(out)[:300]}"
        assert not re.search(r"\d+%\|", output_text(out)), (
            f"a progress bar frozen in the outputs: {output_text(out)[:300]}")
    for needle in (str(REPO), "/home/", "/tmp/", "site-packages", "PosixPath"):
        assert needle not in text, f"{needle!r} in the committed notebook"
    # nbformat-normalised: cleaning and writing again changes nothing (JupyterLab opens it clean)
    assert nbformat.writes(clean_notebook(nb)) + "\n" == text
    # its recorded numbers are committed next to it (notebook 10 and the tests read them)
    assert (NOTEBOOKS / "results" / f"{source.stem}.json").exists()
    # parameter knobs are UPPER_CASE
    for line in tagged[0].source.splitlines():
        line = line.split("#")[0].strip()
        if "=" in line and not line.startswith(("import", "from")):
            name = line.split("=")[0].strip()
            assert name.isupper(), f"parameter {name!r} should be UPPER_CASE"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_open_and_save_in_jupyterlab_changes_nothing(source, tmp_path):
    """JupyterLab with jupytext (its contents manager reads the pair, the cells from the .py and
    the outputs from the .ipynb, and writes both on save): opening and saving a committed
    notebook leaves both files byte for byte as they are (`git status` stays empty)."""
    from jupytext import TextFileContentsManager

    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in (source.name, source.with_suffix(".ipynb").name, "jupytext.toml"):
        shutil.copy(NOTEBOOKS / name, folder / name)
    manager = TextFileContentsManager(root_dir=str(tmp_path))
    path = f"notebooks/{source.stem}.ipynb"
    manager.save(manager.get(path), path)
    assert (folder / source.name).read_text() == source.read_text(), (
        f"{source.name} is not in jupytext's own percent format")
    assert (folder / f"{source.stem}.ipynb").read_text() == (
        source.with_suffix(".ipynb").read_text()), (
        f"JupyterLab rewrites {source.stem}.ipynb on save: run `make notebooks`")


def test_makefile_registers_the_notebooks_kernel():
    makefile = (REPO / "Makefile").read_text()
    assert f'--name {KERNELSPEC["name"]} --display-name "{KERNELSPEC["display_name"]}"' in makefile
