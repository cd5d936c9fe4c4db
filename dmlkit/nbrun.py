"""Build the notebooks from their text sources and run them with papermill.

The source of truth of notebook ``NN_name`` is ``notebooks/NN_name.py`` (jupytext's percent
format: ``# %%`` code cells, ``# %% [markdown]`` prose, ``# %% tags=["parameters"]`` the knobs).
The committed ``NN_name.ipynb`` is that source executed at its default parameters, cleaned
(:func:`clean_notebook`): nothing of the machine that ran it, the same bytes on every rerun.

Two ways to run the collection (``python -m dmlkit.nbrun --help``):

* ``make demo`` / ``python -m dmlkit notebooks``: every notebook at its defaults into the
  ignored ``build/notebooks/`` (executed copies, ``results/`` with the recorded numbers and the
  runs CSV) and ``build/figures/``; the checkout stays as it is.
* ``make notebooks`` / ``python -m dmlkit.nbrun --in-place``: regenerate the committed
  ``notebooks/*.ipynb``, ``figures/`` and ``notebooks/results/`` from the sources -- the only
  way to write them (a notebook run in JupyterLab or papermill from a checkout writes into
  ``build/``, see :mod:`dmlkit.notebook`). Each notebook runs into a staging folder under
  ``build/``; its notebook, figures and results replace the committed ones (file by file,
  atomically, unchanged files untouched) only once it has run to the end: an interrupted run
  leaves the committed files as they were.

Kernels are started with CurveZMQ transport encryption where the kernel declares support
(ipykernel's kernel spec does), so no "Kernel is running over TCP without encryption" warning.

Wall-clock seconds per notebook go to ``build/notebooks/timings.json`` in both modes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .atomic import atomic_write_bytes, atomic_write_text
from .notebook import SOURCE_GLOB as _SOURCE_GLOB

__all__ = ["JUPYTEXT_CELL_KEY", "KERNELSPEC", "VARIES_TAG", "build_notebook", "clean_notebook",
           "find_notebook_dir", "jupytext_metadata", "kernel_manager_class", "list_sources",
           "main", "run_all", "run_in_place", "run_notebook", "write_notebook"]

#: The kernel every notebook names (``make install`` registers it under this display name).
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
#: Cell tag of outputs that legitimately differ between runs (wall-clock seconds, timestamps):
#: the rerun test does not compare the numbers they print.
VARIES_TAG = "varies"
#: The cell metadata jupytext gives a cell whose source is followed by other than one blank
#: line (two after a ``def``) in the ``.py``; JupyterLab's save writes it, so it is kept.
JUPYTEXT_CELL_KEY = "lines_to_next_cell"
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def find_notebook_dir(start: str | os.PathLike | None = None) -> Path:
    """The folder of the notebook sources: ``<start>/notebooks`` (default start: the working
    directory), or ``start`` itself when it holds ``NN_*.py`` sources."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here / "notebooks", here):
        if any(folder.glob(_SOURCE_GLOB)):
            return folder
    raise ValueError(f"no notebook sources ({_SOURCE_GLOB}) in {here} or {here / 'notebooks'}: "
                     "run from the repository root or pass the folder")


def list_sources(folder: str | os.PathLike | None = None,
                 only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebook sources ``NN_name.py`` in order; ``only``: prefixes or names."""
    folder = find_notebook_dir(folder)
    paths = sorted(folder.glob(_SOURCE_GLOB))
    if only:
        wanted = [str(o) for o in only]
        chosen = [p for p in paths if any(p.stem == w or p.stem.startswith(w) for w in wanted)]
        if not chosen:
            raise ValueError(f"no notebook matches {list(only)}; notebooks: "
                             f"{', '.join(p.stem for p in paths)}")
        paths = chosen
    return paths


def jupytext_metadata(notebook: str | os.PathLike) -> dict:
    """The ``jupytext`` metadata JupyterLab's jupytext extension gives ``notebook`` (an
    ``.ipynb`` path) when it opens it, and so writes when it saves it: the format options of
    the jupytext configuration of its folder (``notebooks/jupytext.toml``), when that pairs
    the notebook with a text file; ``{}`` otherwise.

    The same computation as jupytext's contents manager (``set_default_format_options`` on
    a paired notebook); committing it means that open + save in JupyterLab changes nothing
    but the outputs.
    """
    from jupytext.config import load_jupytext_config
    from jupytext.formats import long_form_multiple_formats

    path = Path(notebook).resolve()
    config = load_jupytext_config(str(path.parent))
    formats = config.default_formats(str(path)) if config is not None else None
    if not formats or len(long_form_multiple_formats(formats)) < 2:
        return {}
    options: dict = {}
    config.set_default_format_options(options, read=True)
    return options


def build_notebook(source: str | os.PathLike):
    """The notebook of a jupytext percent source, without outputs, cleaned; its ``jupytext``
    metadata is what JupyterLab writes for the ``.ipynb`` next to the source
    (:func:`jupytext_metadata`)."""
    import jupytext

    source = Path(source)
    return clean_notebook(jupytext.read(source),
                          jupytext=jupytext_metadata(source.with_suffix(".ipynb")))


def _without_widget(output):
    """``output`` without its live-widget view; None when nothing but a text fallback is left
    (tqdm's frozen "0%" bar). A widget that also carries a static image (the weight explorer's
    PNG) keeps the image: a page without a widget manager shows it."""
    data = output.get("data", {})
    if output.get("output_type") not in ("display_data", "execute_result") or (
            _WIDGET_MIME not in data):
        return output
    data.pop(_WIDGET_MIME)
    return output if set(data) - {"text/plain"} else None


def clean_notebook(nb, jupytext: dict | None = None):
    """Make ``nb`` (an nbformat ``NotebookNode``, changed in place and returned) what is committed.

    Removes what depends on the run: papermill's metadata, execution timings, saved widget
    state and widget views (tqdm's progress bars, whose text fallback is a frozen "0%", go
    entirely; a widget with a static image keeps the image); a cell keeps only its ``tags`` and
    :data:`JUPYTEXT_CELL_KEY`.
    Sets :data:`KERNELSPEC`, nbformat 4.5 and cell ids ``cell-<index>`` (deterministic: a rerun
    gives the same bytes). ``language_info`` stays as the kernel wrote it, Python version
    included: JupyterLab writes its kernel's ``language_info`` into a notebook when the kernel
    starts, and a notebook without the version is marked modified as soon as it opens.

    The ``jupytext`` metadata becomes ``jupytext`` when given (``{}``: none; see
    :func:`jupytext_metadata`); else the notebook's own is kept without its
    ``text_representation`` (jupytext's version: JupyterLab does not write it into an
    ``.ipynb`` either).
    """
    nb.nbformat, nb.nbformat_minor = 4, 5
    meta = nb.metadata
    for key in ("papermill", "widgets", "celltoolbar"):
        meta.pop(key, None)
    own = meta.pop("jupytext", {})
    options = dict(own if jupytext is None else jupytext)
    options.pop("text_representation", None)
    if options:
        meta["jupytext"] = options
    meta["kernelspec"] = dict(KERNELSPEC)
    meta.setdefault("language_info", {"name": "python"})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
        old = cell.get("metadata", {})
        cell["metadata"] = {"tags": list(old["tags"])} if old.get("tags") else {}
        if JUPYTEXT_CELL_KEY in old:
            cell["metadata"][JUPYTEXT_CELL_KEY] = old[JUPYTEXT_CELL_KEY]
        if cell.cell_type == "code":
            kept = (_without_widget(o) for o in cell.get("outputs", []))
            cell.outputs = [o for o in kept if o is not None]
            cell.setdefault("execution_count", None)
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    return nb


def write_notebook(nb, path: str | os.PathLike) -> Path:
    """Validate, normalise and write ``nb`` atomically, as Jupyter itself writes a notebook."""
    import nbformat

    _, nb = nbformat.validator.normalize(nb)
    nb = nbformat.from_dict(nb)
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    return atomic_write_text(path, text if text.endswith("\n") else text + "\n")


@functools.cache
def kernel_manager_class():
    """The kernel manager the notebooks run under: jupyter_client's ``AsyncKernelManager``
    with ``transport_encryption = "auto"``, i.e. CurveZMQ keys for every kernel whose spec
    declares support (ipykernel's does). Without it ipykernel warns "Kernel is running over
    TCP without encryption" on the terminal for every notebook. jupyter_client's own class
    where pyzmq lacks CurveZMQ or jupyter_client predates the option."""
    import zmq
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    if not zmq.has("curve") or "transport_encryption" not in AsyncKernelManager.class_traits():
        return AsyncKernelManager

    class EncryptedKernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _encrypted(self):
            return "auto"

    return EncryptedKernelManager


def run_notebook(source: str | os.PathLike, output: str | os.PathLike,
                 parameters: Mapping | None = None, env: Mapping[str, str] | None = None,
                 timeout: int | None = None, cwd: str | os.PathLike | None = None) -> float:
    """Build ``source`` (``.py``), execute it with papermill in the folder of ``output`` (so its
    figures and results land next to it, see :mod:`dmlkit.notebook`), write the cleaned result
    to ``output`` (``.ipynb``); returns the wall time in seconds.

    ``parameters`` are injected after the ``parameters`` cell; ``env`` is set for the run;
    ``cwd``: the kernel's working directory instead of the folder of ``output``.
    """
    import nbformat
    import papermill as pm

    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.", suffix=".ipynb")
    os.close(fd)
    t0 = time.perf_counter()
    try:
        nb = build_notebook(source)
        write_notebook(nb, tmp)
        pm.execute_notebook(tmp, tmp, parameters=dict(parameters or {}), kernel_name="python3",
                            cwd=str(cwd or output.parent), progress_bar=False,
                            request_save_on_cell_execute=False, execution_timeout=timeout,
                            kernel_manager_class=kernel_manager_class())
        seconds = time.perf_counter() - t0
        ran = nbformat.read(tmp, as_version=4)
        write_notebook(clean_notebook(ran, jupytext=nb.metadata.get("jupytext", {})), output)
    finally:
        Path(tmp).unlink(missing_ok=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return seconds


def _publish(staged: Path, target: Path) -> list[Path]:
    """Copy every file of ``staged`` into ``target`` atomically, skipping those whose bytes
    are already there; returns the paths written."""
    written = []
    for path in sorted(p for p in staged.iterdir() if p.is_file()):
        dest, data = target / path.name, path.read_bytes()
        if not (dest.is_file() and dest.read_bytes() == data):
            written.append(atomic_write_bytes(dest, data))
    return written


def run_in_place(source: str | os.PathLike, parameters: Mapping | None = None,
                 env: Mapping[str, str] | None = None, timeout: int | None = None) -> float:
    """Regenerate the committed ``NN_name.ipynb`` of ``source`` (``notebooks/NN_name.py``),
    its figures (``../figures/``) and results (``results/``); returns the wall time.

    The notebook runs in the sources' folder with its figures and results redirected into a
    staging folder under ``<repository>/build/`` (which starts with a copy of the committed
    results, e.g. the runs log notebook 10 reads); only once it has run to the end do they
    replace the committed files: results, figures, then the notebook.
    """
    source = Path(source).resolve()
    folder = source.parent
    results, figures = folder / "results", folder.parent / "figures"
    build = folder.parent / "build"
    build.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=build, prefix=f".nbrun-{source.stem}."))
    try:
        (stage / "figures").mkdir()
        if results.is_dir():
            shutil.copytree(results, stage / "results")
        staged_env = {**(env or {}), "DMLKIT_FIGURES_DIR": str(stage / "figures"),
                      "DMLKIT_RESULTS_DIR": str(stage / "results")}
        seconds = run_notebook(source, stage / source.with_suffix(".ipynb").name, parameters,
                               env=staged_env, timeout=timeout, cwd=folder)
        if (stage / "results").is_dir():
            _publish(stage / "results", results)
        _publish(stage / "figures", figures)
        _publish(stage, folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return seconds


def run_all(only: Sequence[str] | None = None, *, folder: str | os.PathLike | None = None,
            in_place: bool = False, out_dir: str | os.PathLike | None = None,
            parameters_by_name: Mapping[str, Mapping] | None = None,
            env: Mapping[str, str] | None = None, verbose: bool = True) -> dict[str, float]:
    """Run the notebooks in order; returns seconds per notebook.

    ``in_place``: regenerate the committed notebooks, figures and results
    (:func:`run_in_place`); else write the executed notebooks into ``out_dir`` (default
    ``<repository>/build/notebooks``, ignored by git), their results into ``results/`` beside
    them and figures into ``../figures/`` (:mod:`dmlkit.notebook`).
    """
    sources = list_sources(folder, only)
    target = (Path(out_dir) if out_dir is not None else
              sources[0].parent.parent / "build" / "notebooks")
    timings = {}
    for source in sources:
        if verbose:
            print(f"running {source.stem} ...", flush=True)
        params = (parameters_by_name or {}).get(source.stem, {})
        timings[source.stem] = (run_in_place(source, params, env=env) if in_place else
                                run_notebook(source, target / f"{source.stem}.ipynb", params,
                                             env=env))
        if verbose:
            print(f"  {source.stem}: {timings[source.stem]:.0f} s", flush=True)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dmlkit.nbrun [--in-place] [--only 03 09] [--out-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m dmlkit.nbrun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None,
                        help="notebook prefixes or names, e.g. 03 09_train_full_models")
    parser.add_argument("--in-place", action="store_true",
                        help="regenerate the committed notebooks, figures and results")
    parser.add_argument("--out-dir", default=None,
                        help="where the executed copies go (default: build/notebooks)")
    args = parser.parse_args(argv)
    sources = list_sources(None, args.only)
    timings = run_all(args.only, folder=sources[0].parent, in_place=args.in_place,
                      out_dir=args.out_dir)
    path = sources[0].parent.parent / "build" / "notebooks" / "timings.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({k: round(v, 1) for k, v in timings.items()})
    atomic_write_text(path, json.dumps(old, indent=2, sort_keys=True) + "\n")
    print(f"\n{'notebook':38s} seconds")
    for name, sec in timings.items():
        print(f"{name:38s} {sec:7.0f}")
    print(f"{'total':38s} {sum(timings.values()):7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
