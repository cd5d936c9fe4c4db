"""What every notebook shares: seeding, the plotting style, figure saving and recorded numbers.

A notebook starts with ``nb = notebook.setup("03_unified_weight_view", seed=SEED)``; then
``nb.save_fig("curves")`` writes ``03_unified_weight_view_curves.png`` into the figures folder
and ``nb.record(r_at_1=...)`` adds key numbers to ``03_unified_weight_view.json`` in the results
folder, which the tests and notebook 10 read.

Both folders are found from the notebook being run, never from where dmlkit is installed:
JupyterLab, papermill and nbval run a notebook in its own folder (the working directory), so

* results go to ``<notebook folder>/results/``;
* figures go to ``<notebook folder>/../figures/`` when the folder is called ``notebooks`` (the
  repository's layout: ``figures/`` next to ``notebooks/``), else ``<notebook folder>/figures/``;
* ``DMLKIT_RESULTS_DIR`` / ``DMLKIT_FIGURES_DIR`` override either (the tests run notebooks into
  a temporary folder this way).

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "notebooks"
>>> [p.relative_to(folder.parent).as_posix() for p in output_dirs(folder, environ={})]
['figures', 'notebooks/results']
>>> [p.name for p in output_dirs(folder.parent / "elsewhere", environ={})]
['figures', 'results']
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text, atomic_write_with
from .seeding import seed_everything

__all__ = ["NotebookContext", "output_dirs", "setup"]


def output_dirs(folder: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """``(figures_dir, results_dir)`` of a notebook run in ``folder`` (default: the working
    directory), by the rule of the module docstring; absolute paths."""
    env = os.environ if environ is None else environ
    here = Path(folder if folder is not None else Path.cwd()).resolve()
    default_figures = here.parent / "figures" if here.name == "notebooks" else here / "figures"
    figures = Path(env.get("DMLKIT_FIGURES_DIR") or default_figures)
    results = Path(env.get("DMLKIT_RESULTS_DIR") or here / "results")
    return figures, results


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
        of the machine that ran it in the committed outputs); see :meth:`figure_path`.
        """
        import matplotlib.pyplot as plt

        fig = fig or plt.gcf()
        atomic_write_with(self.figure_path(name),
                          lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))

    def record(self, **values) -> None:
        """Merge key numbers into the notebook's results JSON (written atomically).

        Returns None, so that a cell ending in ``nb.record(...)`` does not echo every number
        recorded so far (they are in :attr:`results`).
        """
        self.results.update(_to_builtin(values))
        atomic_write_text(self.results_path, json.dumps(self.results, indent=2, sort_keys=True))


def setup(name: str, seed: int = 0, style: bool = True) -> NotebookContext:
    """Seed everything, set the plotting style, and return the notebook's context.

    Figures and results go next to the notebook being run (see :func:`output_dirs`).
    """
    seed_everything(seed)
    if style:
        from . import plotting

        plotting.set_style()
    figures, results = output_dirs()
    ctx = NotebookContext(name=name, figures_dir=figures, results_dir=results, seed=seed)
    if ctx.results_path.exists():
        ctx.results_path.unlink()  # a rerun records afresh
    return ctx
