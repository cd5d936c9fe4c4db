"""What every notebook shares: seeding, the device message, figure saving and recorded numbers.

A notebook starts with ``nb = notebook.setup("03_unified_weight_view", seed=SEED)``; then
``nb.save_fig("curves")`` writes ``figures/03_unified_weight_view_curves.png``
and ``nb.record(r_at_1=...)`` adds key numbers to ``notebooks/results/03_unified_weight_view.json``,
which the tests and notebook 10 read. ``DMLKIT_FIGURES_DIR`` / ``DMLKIT_RESULTS_DIR`` redirect
both (the test-suite runs notebooks into a temporary directory this way).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["NotebookContext", "atomic_write_text", "repo_root", "seed_everything", "setup"]


def repo_root() -> Path:
    """The repository root (the folder holding ``notebooks/`` and ``dmlkit/``)."""
    return Path(__file__).resolve().parent.parent


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_csv(df, path: Path) -> None:
    """Write a DataFrame as CSV through a temporary file in the same folder and ``os.replace``:
    a reader sees the old file or the new one, never a partial one."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    name: str
    figures_dir: Path
    results_dir: Path
    seed: int
    results: dict = field(default_factory=dict)

    @property
    def results_path(self) -> Path:
        return self.results_dir / f"{self.name}.json"

    def save_fig(self, name: str, fig=None, dpi: int = 110) -> Path:
        """Save the current (or given) figure as ``figures/<notebook>_<name>.png``."""
        import matplotlib.pyplot as plt

        fig = fig or plt.gcf()
        path = self.figures_dir / f"{self.name}_{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
        return path

    def record(self, **values) -> dict:
        """Merge key numbers into the notebook's results JSON (written atomically)."""
        self.results.update(_to_builtin(values))
        atomic_write_text(self.results_path, json.dumps(self.results, indent=2, sort_keys=True))
        return self.results


def setup(name: str, seed: int = 0, style: bool = True) -> NotebookContext:
    """Seed everything, set the plotting style, and return the notebook's context."""
    seed_everything(seed)
    if style:
        from . import plotting

        plotting.set_style()
    root = repo_root()
    figures = Path(os.environ.get("DMLKIT_FIGURES_DIR", root / "figures"))
    results = Path(os.environ.get("DMLKIT_RESULTS_DIR", root / "notebooks" / "results"))
    ctx = NotebookContext(name=name, figures_dir=figures, results_dir=results, seed=seed)
    if ctx.results_path.exists():
        ctx.results_path.unlink()  # a rerun records afresh
    return ctx
