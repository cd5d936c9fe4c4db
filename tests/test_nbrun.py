"""dmlkit.nbrun and dmlkit.notebook: notebooks built from text, run next to themselves, cleaned
to the same bytes on every run."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dmlkit import nbrun, notebook

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
    return nbdir


def test_build_notebook_cells_tags_ids(folder):
    nb = nbrun.build_notebook(folder / "99_tiny.py")
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    assert nb.cells[0].source == "# 99 · A tiny notebook"
    assert nb.cells[1].metadata == {"tags": ["parameters"]}
    assert nb.cells[1].source == "SEED = 0\nN = 3"
    assert [c.id for c in nb.cells] == ["cell-0", "cell-1", "cell-2", "cell-3"]
    assert nb.metadata == {"kernelspec": nbrun.KERNELSPEC, "language_info": {"name": "python"}}


def test_clean_notebook_strips_machine_and_run_traces(tmp_path):
    widget = new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2},
        "text/plain": "  0%|          | 0/3 [00:00<?, ?it/s]"})
    text = new_output("stream", name="stdout", text="total 3\n")
    code = new_code_cell("x = 1", outputs=[widget, text], execution_count=4,
                         metadata={"papermill": {"duration": 1.5}, "tags": [],
                                   "execution": {"iopub.status.busy": "2026-01-01"}})
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
    # the kernel's language_info stays whole: JupyterLab opens the notebook unmodified
    assert clean.metadata == {"kernelspec": nbrun.KERNELSPEC,
                              "language_info": {"name": "python", "version": "3.11.9"}}
    assert [c.id for c in clean.cells] == ["cell-0", "cell-1"]
    # tqdm's widget goes; a widget with a static image keeps the image for pages without widgets
    static = new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                              "text/plain": "WeightExplorer(loss='ms')"})
    assert clean.cells[1].metadata == {} and clean.cells[1].outputs == [text, static]
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


def test_run_notebook_in_place_and_into_a_folder_gives_the_same_bytes(folder, monkeypatch):
    monkeypatch.delenv("DMLKIT_FIGURES_DIR", raising=False)
    monkeypatch.delenv("DMLKIT_RESULTS_DIR", raising=False)
    timings = nbrun.run_all(folder=folder, in_place=True, verbose=False)
    assert set(timings) == {"99_tiny"} and timings["99_tiny"] > 0
    committed = (folder / "99_tiny.ipynb").read_text()
    # figures next to notebooks/, results inside it; no temporary file left behind
    assert (folder.parent / "figures" / "99_tiny_line.png").exists()
    assert json.loads((folder / "results" / "99_tiny.json").read_text()) == {"total": 3}
    assert sorted(p.name for p in folder.iterdir()) == ["99_tiny.ipynb", "99_tiny.py", "results"]
    nb = nbformat.reads(committed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["total 3\n"]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for o in outputs)
    assert set(nb.metadata) == {"kernelspec", "language_info"}
    # the demo run: into another folder, its figures and results beside it, same notebook bytes
    out = folder.parent / "build" / "notebooks"
    nbrun.run_all(["99"], folder=folder, verbose=False)
    assert (out / "99_tiny.ipynb").read_text() == committed
    assert (out / "results" / "99_tiny.json").exists()
    assert (out.parent / "figures" / "99_tiny_line.png").exists()
    # parameters are injected after the parameters cell
    nbrun.run_notebook(folder / "99_tiny.py", out / "p.ipynb", {"N": 4})
    assert json.loads((out / "results" / "99_tiny.json").read_text()) == {"total": 6}
