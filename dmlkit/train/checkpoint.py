"""Checkpoints of :func:`dmlkit.train.fit`: what ``last.pt`` holds, loading it with errors that
say what to do, and which settings a resumed run may change.

``last.pt`` (written atomically at the end of every epoch, :func:`dmlkit.atomic.atomic_save`)
holds the model, optimiser, loss parameters, grad scaler, RNG states, history and the config.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
>>> load_checkpoint(path)
Traceback (most recent call last):
...
dmlkit.train.checkpoint.CheckpointError: checkpoint .../last.pt does not exist; ...
>>> _ = path.write_bytes(b"not a checkpoint")
>>> load_checkpoint(path)
Traceback (most recent call last):
...
dmlkit.train.checkpoint.CheckpointError: cannot read checkpoint .../last.pt (corrupt or truncated...
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..seeding import get_rng_state

__all__ = ["RESUMABLE", "CheckpointError", "check_resume_config", "load_checkpoint",
           "training_state"]

#: options that may change between a run and its resumption
RESUMABLE = frozenset({"epochs", "resume", "progress", "verbose", "num_workers", "device",
                       "out_dir", "name", "eval_every", "batch_size_eval", "save_checkpoints",
                       "data_root", "download", "track_test", "initial_test"})


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a dmlkit checkpoint; the message names
    the file and what to do."""


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`dmlkit.train.fit` (a dict; see
    :func:`training_state`).

    A missing file, or one that is corrupt or truncated (a copy cut short, a disk that filled
    up), raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (or out_dir "
                              f"of the run)")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(
            f"cannot read checkpoint {path} (corrupt or truncated: {type(exc).__name__}: "
            f"{exc}); delete it to start again, resume=False to overwrite it, or point out_dir "
            f"elsewhere") from exc
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path} holds a {type(ck).__name__}, not a dmlkit checkpoint "
                              f"dict; delete it or point out_dir elsewhere")
    return ck


def training_state(model, optimizer, loss, scaler, epoch: int, history: list, best_score: float,
                   best_epoch: int, best_val: dict, config: dict) -> dict:
    """The contents of ``last.pt``: everything a resumed run needs, RNG states included."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "loss": loss.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
            "history": history, "best_score": best_score, "best_epoch": best_epoch,
            "best_val": best_val, "rng": get_rng_state(), "config": config}


def check_resume_config(saved: dict, now: dict, path: Path) -> None:
    """ValueError naming every setting (outside :data:`RESUMABLE`) that differs between the
    saved run's config and this one's (both :meth:`TrainConfig.to_dict`)."""
    diff = sorted(k for k in now if k not in RESUMABLE and k in saved and saved[k] != now[k])
    if diff:
        changes = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff)
        raise ValueError(f"cannot resume {path}: the run was started with other settings "
                         f"({changes}); use another out_dir or resume=False")
