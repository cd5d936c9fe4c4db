"""What every notebook shares: seeding, the plotting style, figure saving and recorded numbers.

A notebook starts with ``nb = notebook.setup("03_unified_weight_view", seed=SEED)``; then
``nb.save_fig("curves")`` writes ``03_unified_weight_view_curves.png`` into the figures folder
and ``nb.record(r_at_1=...)`` adds key numbers to ``03_unified_weight_view.json`` in the results
folder, which the tests and notebook 10 read.

Both folders are found from the notebook being run, never from where dmlkit is installed:
JupyterLab, papermill and nbval run a notebook in its own folder (the working directory), so

* in a checkout (the working directory is the ``notebooks/`` folder of the ``NN_name.py``
  sources, or the folder holding it), a student's run writes into the ignored ``build/``:
  results to ``build/notebooks/results/`` (which starts as a copy of the committed runs log
  ``notebooks/results/runs.csv``, so notebook 10 shows it), figures to ``build/figures/`` --
  the same folders as ``make demo``; the committed ``figures/`` and ``notebooks/results/``
  are written by ``make notebooks`` only (:mod:`dmlkit.nbrun` names them explicitly);
* elsewhere results go to ``<notebook folder>/results/`` and figures to
  ``<notebook folder>/../figures/`` when the folder is called ``notebooks``, else
  ``<notebook folder>/figures/``;
* ``DMLKIT_RESULTS_DIR`` / ``DMLKIT_FIGURES_DIR`` override either (the tests and
  ``make notebooks`` set them).

>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> folder = root / "notebooks"
>>> folder.mkdir()
>>> [p.relative_to(root).as_posix() for p in output_dirs(folder, environ={})]
['figures', 'notebooks/results']
>>> _ = (folder / "00_intro.py").write_text("# %%")   # a checkout: the notebook sources
>>> [p.relative_to(root).as_posix() for p in output_dirs(folder, environ={})]
['build/figures', 'build/notebooks/results']
>>> [p.name for p in output_dirs(root / "elsewhere", environ={})]
['figures', 'results']
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text, atomic_write_with
from .figure_audit import AUDIT_ENV, record_audit
from .seeding import seed_everything

__all__ = ["RUNS_LOG", "SOURCE_GLOB", "NotebookContext", "checkout_root", "output_dirs", "setup"]

#: The notebook sources of a checkout: ``notebooks/NN_name.py``.
SOURCE_GLOB = "[0-9][0-9]_*.py"
#: The results log notebook 09 appends to and notebook 10 reads.
RUNS_LOG = "runs.csv"


def output_dirs(folder: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """``(figures_dir, results_dir)`` of a notebook run in ``folder`` (default: the working
    directory), by the rule of the module docstring; absolute paths."""
    env = os.environ if environ is None else environ
    here = Path(folder if folder is not None else Path.cwd()).resolve()
    root = checkout_root(here)
    if root is not None:
        default_figures = root / "build" / "figures"
        default_results = root / "build" / "notebooks" / "results"
    else:
        default_figures = (here.parent / "figures" if here.name == "notebooks" else
                           here / "figures")
        default_results = here / "results"
    figures = Path(env.get("DMLKIT_FIGURES_DIR") or default_figures)
    results = Path(env.get("DMLKIT_RESULTS_DIR") or default_results)
    return figures, results


def checkout_root(folder: str | os.PathLike) -> Path | None:
    """The checkout whose notebook sources (``notebooks/NN_name.py``) are in ``folder``
    (a folder called ``notebooks``) or in ``folder/notebooks``; None elsewhere (an executed
    copy in ``build/notebooks/``, a temporary folder)."""
    here = Path(folder).resolve()
    if here.name == "notebooks" and any(here.glob(SOURCE_GLOB)):
        return here.parent
    if any((here / "notebooks").glob(SOURCE_GLOB)):
        return here
    return None


def _to_builtin(value):
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@dataclass
class NotebookContext:
    """A notebook's name, seed, output folders and the numbers it recorded so far."""

    name: str
    figures_dir: Path
    results_dir: Path
    seed: int
    results: dict = field(default_factory=dict)

    @property
    def results_path(self) -> Path:
        return self.results_dir / f"{self.name}.json"

    def figure_path(self, name: str) -> Path:
        """``<figures>/<notebook>_<name>.png``: where :meth:`save_fig` writes ``name``."""
        return self.figures_dir / f"{self.name}_{name}.png"

    def save_fig(self, name: str, fig=None, dpi: int = 110) -> None:
        """Save the current (or given) figure as ``<figures>/<notebook>_<name>.png`` (atomically).

        Returns None, so that a cell ending in ``nb.save_fig(...)`` displays nothing (no path
        of the machine that ran it in the committed outputs); see :meth:`figure_path`. With
        ``$DMLKIT_FIGURE_AUDIT`` set, the figure is audited first
        (:func:`dmlkit.figure_audit.record_audit`).
        """
        import matplotlib.pyplot as plt

        fig = fig or plt.gcf()
        if os.environ.get(AUDIT_ENV):   # the notebook tests: audit what is saved
            record_audit(fig, f"{self.name}_{name}")
        atomic_write_with(self.figure_path(name),
                          lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))

    def record(self, **values) -> None:
        """Merge key numbers into the notebook's results JSON (written atomically).

        The JSON holds what this run recorded so far: the file of a previous run stays whole
        until this run's first ``record`` replaces it (nothing is deleted at :func:`setup`, so
        an interrupted run leaves a complete file). Returns None, so that a cell ending in
        ``nb.record(...)`` does not echo every number recorded so far (they are in
        :attr:`results`).
        """
        self.results.update(_to_builtin(values))
        atomic_write_text(self.results_path, json.dumps(self.results, indent=2, sort_keys=True))


def _start_runs_log(root: Path, results_dir: Path) -> None:
    """A student's run in a checkout: ``build/notebooks/results/runs.csv`` starts as a copy of
    the committed log (notebook 10 shows the committed runs; 09 appends to the copy)."""
    committed, target = root / "notebooks" / "results" / RUNS_LOG, results_dir / RUNS_LOG
    if committed.is_file() and not target.exists():
        atomic_write_bytes(target, committed.read_bytes())


def setup(name: str, seed: int = 0, style: bool = True) -> NotebookContext:
    """Seed everything, set the plotting style, and return the notebook's context.

    Figures and results go where :func:`output_dirs` says for the working directory (in a
    checkout: the ignored ``build/``). Nothing is written or deleted until the notebook saves
    a figure or records a number.
    """
    seed_everything(seed)
    if style:
        from . import plotting

        plotting.set_style()
    here = Path.cwd()
    figures, results = output_dirs(here)
    root = checkout_root(here)
    if root is not None and not os.environ.get("DMLKIT_RESULTS_DIR"):
        _start_runs_log(root, results)
    return NotebookContext(name=name, figures_dir=figures, results_dir=results, seed=seed)
