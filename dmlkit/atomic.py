"""Atomic writes: a file at its final path is always complete.

Everything dmlkit writes (checkpoints, results JSON, the runs CSV, figures, notebooks,
downloads' final rename) goes through a temporary file in the same folder and ``os.replace``:
a reader, or a crash, sees the old file or the new one, never half of one. The new file keeps
the permissions of the one it replaces (a new one gets the usual ``0o666`` less the umask).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "a.txt", "hello")
PosixPath('...a.txt')
>>> (folder / "a.txt").read_text()
'hello'
>>> sorted(p.name for p in folder.iterdir())   # no temporary file left behind
['a.txt']
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["append_csv_row", "atomic_save", "atomic_write", "atomic_write_bytes",
           "atomic_write_csv", "atomic_write_text", "atomic_write_with", "locked"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        if hasattr(os, "fchmod"):  # not mkstemp's 0600: the mode the file has or would get
            os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _file_mode(path: Path) -> int:
    """The permission bits of ``path``, or those ``open`` gives a new file (0o666 less the
    umask) when it does not exist."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[IO], Any],
                      mode: str = "wb") -> Path:
    """Call ``writer(file_object)`` on a temporary file that then replaces ``path``."""
    with atomic_write(path, mode) as fh:
        writer(fh)
    return Path(path)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (the previous checkpoint survives a crash)."""
    import torch

    return atomic_write_with(path, lambda fh: torch.save(obj, fh))


def atomic_write_csv(df, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        df.to_csv(fh, index=False)
    return Path(path)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` (POSIX; a no-op where fcntl is missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_csv_row(path: str | os.PathLike, row: dict) -> Any:
    """Append one row to a CSV file atomically and under a lock; returns the whole table.

    Columns are the union of the old columns and the row's keys, in first-seen order (missing
    values stay empty). Values must be scalars (str, number, bool, None): a reader never sees
    a half-written file, and two concurrent appends never lose a row.
    """
    import numpy as np
    import pandas as pd

    path = Path(path)
    row = dict(row)
    if not row:
        raise ValueError("row is empty: nothing to append")
    for key, value in row.items():
        if not isinstance(value, (str, int, float, bool, np.generic, type(None))):
            raise ValueError(f"row value for {key!r} must be a scalar, got "
                             f"{type(value).__name__}; flatten it first")
    with locked(path):
        old = pd.read_csv(path) if path.exists() else pd.DataFrame()
        new = (pd.concat([old, pd.DataFrame([row])], ignore_index=True) if len(old.columns)
               else pd.DataFrame([row]))
        atomic_write_csv(new, path)
    return new
