"""dmlkit.nbrun and dmlkit.notebook: notebooks built from text, run next to themselves, cleaned
to the same bytes on every run; a student's run in a checkout writes into build/ only."""

import json
import os
import shutil

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dmlkit import nbrun, notebook

REPO = Path(__file__).resolve().parent.parent
#: what JupyterLab's jupytext extension writes into a notebook of notebooks/ (jupytext.toml)
JUPYTEXT = {"notebook_metadata_filter": "-all", "cell_metadata_filter": "tags,-all"}

SOURCE = '''# %% [markdown]
# # 99 · A tiny notebook

# %% tags=["parameters"]
SEED = 0
N = 3

# %%
from dmlkit import notebook
nb = notebook.setup("99_tiny", seed=SEED)

# %%
import matplotlib.pyplot as plt
from tqdm.auto import tqdm

total = sum(i for i in tqdm(range(N)))
plt.plot([0, 1], [0, N])
nb.save_fig("line")
print(f"total {total}")
nb.record(total=total)
'''


@pytest.fixture
def folder(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (nbdir / "99_tiny.py").write_text(SOURCE)
    shutil.copy(REPO / "notebooks" / "jupytext.toml", nbdir)   # paired, as in the repository
    return nbdir


def test_build_notebook_cells_tags_ids(folder):
    nb = nbrun.build_notebook(folder / "99_tiny.py")
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    assert nb.cells[0].source == "# 99 · A tiny notebook"
    assert nb.cells[1].metadata == {"tags": ["parameters"]}
    assert nb.cells[1].source == "SEED = 0\nN = 3"
    assert [c.id for c in nb.cells] == ["cell-0", "cell-1", "cell-2", "cell-3"]
    assert nb.metadata == {"kernelspec": nbrun.KERNELSPEC, "language_info": {"name": "python"},
                           "jupytext": JUPYTEXT}
    assert nbrun.jupytext_metadata(REPO / "notebooks" / "03_unified_weight_view.ipynb") == JUPYTEXT
    # not paired (no jupytext configuration): no jupytext metadata
    (folder / "jupytext.toml").unlink()
    assert nbrun.jupytext_metadata(folder / "99_tiny.ipynb") == {}
    assert "jupytext" not in nbrun.build_notebook(folder / "99_tiny.py").metadata


def test_clean_notebook_strips_machine_and_run_traces(tmp_path):
    widget = new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2},
        "text/plain": "  0%|          | 0/3 [00:00<?, ?it/s]"})
    text = new_output("stream", name="stdout", text="total 3\n")
    code = new_code_cell("x = 1", outputs=[widget, text], execution_count=4,
                         metadata={"papermill": {"duration": 1.5}, "tags": [],
                                   "execution": {"iopub.status.busy": "2026-01-01"},
                                   "lines_to_next_cell": 2})
    nb = new_notebook(cells=[new_markdown_cell("# t"), code], metadata={
        "widgets": {"application/vnd.jupyter.widget-state+json": {}},
        "papermill": {"start_time": "now"}, "jupytext": {"formats": "ipynb,py:percent"},
        "kernelspec": {"name": "python3", "display_name": "Python 3 (dmlkit)"},
        "language_info": {"name": "python", "version": "3.11.9"}})
    explorer = new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "def", "version_major": 2},
        "image/png": "iVBORw0KGgo=", "text/plain": "WeightExplorer(loss='ms')"})
    code.outputs.append(explorer)
    clean = nbrun.clean_notebook(nb)
    # the kernel's language_info stays whole: JupyterLab opens the notebook unmodified; so
    # do jupytext's format options, without the version-dependent text representation
    assert clean.metadata == {"kernelspec": nbrun.KERNELSPEC,
                              "language_info": {"name": "python", "version": "3.11.9"},
                              "jupytext": {"formats": "ipynb,py:percent"}}
    nb.metadata["jupytext"]["text_representation"] = {"jupytext_version": "1.0"}
    assert nbrun.clean_notebook(nb, jupytext=JUPYTEXT).metadata["jupytext"] == JUPYTEXT
    assert "jupytext" not in nbrun.clean_notebook(nb, jupytext={}).metadata
    assert [c.id for c in clean.cells] == ["cell-0", "cell-1"]
    # tqdm's widget goes; a widget with a static image keeps the image for pages without widgets
    static = new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                              "text/plain": "WeightExplorer(loss='ms')"})
    # jupytext's blank-line count stays (JupyterLab writes it for a .py with two blank lines)
    assert clean.cells[1].metadata == {nbrun.JUPYTEXT_CELL_KEY: 2}
    assert clean.cells[1].outputs == [text, static]
    assert clean.cells[1].execution_count == 4
    first = nbrun.write_notebook(clean, tmp_path / "a.ipynb").read_text()
    again = nbrun.clean_notebook(nbformat.reads(first, as_version=4))
    assert nbrun.write_notebook(again, tmp_path / "b.ipynb").read_text() == first
    assert first.endswith("}\n") and json.loads(first)["nbformat_minor"] == 5


def test_list_sources_and_find_dir(folder):
    (folder / "98_other.py").write_text(SOURCE)
    (folder / "helper.py").write_text("")
    assert [p.name for p in nbrun.list_sources(folder.parent)] == ["98_other.py", "99_tiny.py"]
    assert [p.name for p in nbrun.list_sources(folder, only=["99"])] == ["99_tiny.py"]
    with pytest.raises(ValueError, match="98_other, 99_tiny"):
        nbrun.list_sources(folder, only=["07"])
    with pytest.raises(ValueError, match="no notebook sources"):
        nbrun.find_notebook_dir(folder / "results")


def test_output_dirs_rule_and_environment(tmp_path):
    figures, results = notebook.output_dirs(tmp_path / "notebooks", environ={})
    assert (figures, results) == (tmp_path / "figures", tmp_path / "notebooks" / "results")
    figures, results = notebook.output_dirs(tmp_path / "work", environ={})
    assert (figures, results) == (tmp_path / "work" / "figures", tmp_path / "work" / "results")
    env = {"DMLKIT_FIGURES_DIR": str(tmp_path / "f"), "DMLKIT_RESULTS_DIR": str(tmp_path / "r")}
    assert notebook.output_dirs(tmp_path, environ=env) == (tmp_path / "f", tmp_path / "r")
    # a checkout (notebooks/ holds the NN_name.py sources), from notebooks/ or from the root:
    # the ignored build/, as `make demo`; the environment still wins
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "03_x.py").write_text("# %%\n")
    build = (tmp_path / "build" / "figures", tmp_path / "build" / "notebooks" / "results")
    assert notebook.output_dirs(tmp_path / "notebooks", environ={}) == build
    assert notebook.output_dirs(tmp_path, environ={}) == build
    assert notebook.output_dirs(tmp_path / "notebooks", environ=env) == (tmp_path / "f",
                                                                         tmp_path / "r")
    # the executed copies in build/notebooks have no sources: results beside them
    assert notebook.output_dirs(tmp_path / "build" / "notebooks", environ={}) == build


def test_a_run_in_a_checkout_leaves_the_committed_files_alone(folder, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.delenv("DMLKIT_FIGURES_DIR", raising=False)
    monkeypatch.delenv("DMLKIT_RESULTS_DIR", raising=False)
    committed = folder / "results"
    committed.mkdir()
    (committed / "runs.csv").write_text("loss,map_at_r\nms,0.5\n")
    (committed / "99_tiny.json").write_text('{"total": 3}')
    (folder.parent / "figures").mkdir()
    before = {p: p.read_bytes() for p in (folder.parent).rglob("*") if p.is_file()}
    monkeypatch.chdir(folder)                      # JupyterLab runs a notebook in its folder
    nb = notebook.setup("99_tiny", style=False)
    build = folder.parent / "build"
    assert (nb.figures_dir, nb.results_dir) == (build / "figures", build / "notebooks" / "results")
    # the runs log starts as a copy of the committed one (notebook 10 shows it)
    assert (nb.results_dir / "runs.csv").read_text() == "loss,map_at_r\nms,0.5\n"
    plt.plot([0, 1])
    nb.save_fig("line")
    plt.close("all")
    nb.record(total=4)
    assert json.loads(nb.results_path.read_text()) == {"total": 4}
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.relative_to(folder.parent).as_posix() for p in folder.parent.rglob("*")
                  if p.is_file() and p not in before) == [
        "build/figures/99_tiny_line.png", "build/notebooks/results/99_tiny.json",
        "build/notebooks/results/runs.csv"]
    # a rerun: the previous results stay whole until its first record replaces them
    (nb.results_dir / "runs.csv").write_text("loss\nmine\n")
    again = notebook.setup("99_tiny", style=False)
    assert json.loads(again.results_path.read_text()) == {"total": 4}
    assert (again.results_dir / "runs.csv").read_text() == "loss\nmine\n"  # not copied over
    again.record(other=1)
    assert json.loads(again.results_path.read_text()) == {"other": 1}


def test_setup_writes_next_to_the_working_directory(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.delenv("DMLKIT_FIGURES_DIR", raising=False)
    monkeypatch.delenv("DMLKIT_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    nb = notebook.setup("97_here", style=False)
    plt.plot([0, 1])
    assert nb.save_fig("line") is None  # nothing echoed into the committed outputs
    plt.close("all")
    assert nb.record(value=1.5) is None  # a cell ending in nb.record echoes nothing
    assert (tmp_path / "figures" / "97_here_line.png").stat().st_size > 0
    assert json.loads((tmp_path / "results" / "97_here.json").read_text()) == {"value": 1.5}
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["97_here_line.png"]


def test_run_notebook_in_place_and_into_a_folder_gives_the_same_bytes(folder, monkeypatch,
                                                                     capfd):
    monkeypatch.delenv("DMLKIT_FIGURES_DIR", raising=False)
    monkeypatch.delenv("DMLKIT_RESULTS_DIR", raising=False)
    timings = nbrun.run_all(folder=folder, in_place=True, verbose=False)
    assert set(timings) == {"99_tiny"} and timings["99_tiny"] > 0
    committed = (folder / "99_tiny.ipynb").read_text()
    # figures next to notebooks/, results inside it; no temporary or staging file left behind
    assert (folder.parent / "figures" / "99_tiny_line.png").exists()
    assert json.loads((folder / "results" / "99_tiny.json").read_text()) == {"total": 3}
    assert sorted(p.name for p in folder.iterdir()) == ["99_tiny.ipynb", "99_tiny.py",
                                                         "jupytext.toml", "results"]
    assert list((folder.parent / "build").iterdir()) == []
    nb = nbformat.reads(committed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["total 3\n"]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for o in outputs)
    assert set(nb.metadata) == {"kernelspec", "language_info", "jupytext"}
    assert nb.metadata["jupytext"] == JUPYTEXT
    # the kernel ran with CurveZMQ keys: ipykernel printed no transport warning (the kernel's
    # stderr is this process's file descriptor 2), nor any other warning
    err = capfd.readouterr().err
    assert "without encryption" not in err and "WARNING" not in err, err
    # the demo run: into another folder, its figures and results beside it, same notebook bytes
    out = folder.parent / "build" / "notebooks"
    nbrun.run_all(["99"], folder=folder, verbose=False)
    assert (out / "99_tiny.ipynb").read_text() == committed
    assert (out / "results" / "99_tiny.json").exists()
    assert (out.parent / "figures" / "99_tiny_line.png").exists()
    # parameters are injected after the parameters cell
    nbrun.run_notebook(folder / "99_tiny.py", out / "p.ipynb", {"N": 4})
    assert json.loads((out / "results" / "99_tiny.json").read_text()) == {"total": 6}
    # JupyterLab with jupytext opens and saves the committed notebook (its contents manager
    # reads the pair and writes both files): not a byte changes, in the .ipynb or the .py
    from jupytext import TextFileContentsManager

    source = (folder / "99_tiny.py").read_text()
    manager = TextFileContentsManager(root_dir=str(folder.parent))
    model = manager.get("notebooks/99_tiny.ipynb")
    assert model["content"]["metadata"]["jupytext"] == JUPYTEXT
    manager.save(model, "notebooks/99_tiny.ipynb")
    assert (folder / "99_tiny.ipynb").read_text() == committed
    assert (folder / "99_tiny.py").read_text() == source


def test_in_place_publishes_only_a_run_that_ended(folder, monkeypatch):
    """``make notebooks`` stages a notebook's outputs and replaces the committed files only
    when it ran to the end; files whose bytes did not change are not rewritten."""
    results, figures = folder / "results", folder.parent / "figures"
    results.mkdir()
    figures.mkdir()
    files = {results / "99_tiny.json": b'{"total": 3}', results / "runs.csv": b"a\n1\n",
             figures / "99_tiny_line.png": b"png", folder / "99_tiny.ipynb": b"{}\n"}
    for path, data in files.items():
        path.write_bytes(data)
        os.utime(path, (1, 1))

    def fake_run(source, output, parameters=None, env=None, timeout=None, cwd=None):
        stage_results, stage_figures = Path(env["DMLKIT_RESULTS_DIR"]), Path(
            env["DMLKIT_FIGURES_DIR"])
        assert cwd == folder and output.parent == stage_results.parent
        assert (stage_results / "runs.csv").read_bytes() == b"a\n1\n"   # a copy to append to
        (stage_results / "runs.csv").write_bytes(b"a\n1\n2\n")
        (stage_figures / "99_tiny_line.png").write_bytes(b"png")      # the same bytes
        (stage_figures / "99_tiny_new.png").write_bytes(b"new")
        if parameters.get("interrupt"):
            raise KeyboardInterrupt
        (stage_results / "99_tiny.json").write_bytes(b'{"total": 4}')
        output.write_bytes(b"{ }\n")
        return 1.5

    monkeypatch.setattr(nbrun, "run_notebook", fake_run)
    with pytest.raises(KeyboardInterrupt):
        nbrun.run_in_place(folder / "99_tiny.py", {"interrupt": True})
    assert {p: p.read_bytes() for p in files} == files
    assert not (figures / "99_tiny_new.png").exists()
    assert list((folder.parent / "build").iterdir()) == []      # the staging folder is gone
    assert nbrun.run_in_place(folder / "99_tiny.py", {}) == 1.5
    assert (results / "runs.csv").read_bytes() == b"a\n1\n2\n"
    assert (results / "99_tiny.json").read_bytes() == b'{"total": 4}'
    assert (figures / "99_tiny_new.png").read_bytes() == b"new"
    assert (folder / "99_tiny.ipynb").read_bytes() == b"{ }\n"
    assert (figures / "99_tiny_line.png").stat().st_mtime == 1    # unchanged: not rewritten
    assert list((folder.parent / "build").iterdir()) == []
