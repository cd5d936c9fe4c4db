"""Safe downloads: resume, checksum, atomic rename, atomic extraction.

Rules (a file that *looks* complete is complete):

- bytes stream into ``<path>.part``; an existing ``.part`` is resumed with an HTTP ``Range``
  request (a server that ignores ``Range`` makes us start over);
- a short body (connection dropped, size below ``Content-Length`` or the expected size)
  leaves only the ``.part`` file and raises :class:`DownloadError` ("run again to resume");
- the MD5 (and size) are checked *before* ``os.replace(<path>.part, <path>)``; on a mismatch
  the bytes are moved aside to ``<path>.corrupt`` and :class:`DownloadError` says so;
- :func:`extract_archive` unpacks into a temporary folder next to the destination and then
  renames the top-level entries into place, so an interrupted extraction leaves nothing
  that looks extracted.

The data root is the ``root`` argument, else ``$DMLKIT_DATA``, else ``~/.cache/dmlkit``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

__all__ = [
    "DownloadError",
    "check_file",
    "data_root",
    "download_url",
    "extract_archive",
    "md5sum",
]

ENV_VAR = "DMLKIT_DATA"
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed (network, truncated body, checksum); the message says what to do."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The dataset root: ``root``, else ``$DMLKIT_DATA``, else ``~/.cache/dmlkit``."""
    if root is None:
        root = os.environ.get(ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "dmlkit")
    return Path(os.fspath(root)).expanduser()


def md5sum(path: str | os.PathLike, chunk: int = _CHUNK) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: str | os.PathLike, md5: str | None = None, size: int | None = None) -> bool:
    """True when ``path`` exists and matches ``size`` and ``md5`` (those given)."""
    path = Path(path)
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return md5 is None or md5sum(path) == md5.lower()


def _manual_hint(url: str, path: Path) -> str:
    return (f"Download {url} by hand and save it as {path.name!r} in {str(path.parent)!r} "
            f"(or set ${ENV_VAR} / pass root= to the folder that holds it).")


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "dmlkit"})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)


def download_url(url: str, path: str | os.PathLike, md5: str | None = None,
                 size: int | None = None, resume: bool = True, timeout: float = 30.0,
                 progress: bool = True) -> Path:
    """Download ``url`` to ``path`` safely (see module docstring) and return ``path``.

    Args:
        url: http(s) URL (ftp works through urllib but cannot resume).
        path: final file name; bytes go to ``path + ".part"`` until verified.
        md5: expected hex MD5 (recommended); ``None`` skips the check.
        size: expected size in bytes (optional, checked before the MD5).
        resume: continue an existing ``.part`` with an HTTP Range request.
        timeout: socket timeout in seconds.

    Raises:
        DownloadError: no network / HTTP error (the message names the URL, the file name and
            the folder to put it in), a truncated transfer (the ``.part`` is kept for
            resuming) or a checksum / size mismatch (the file is moved to ``.corrupt``).
    """
    path = Path(path)
    if check_file(path, md5, size):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    start = part.stat().st_size if (resume and part.exists()) else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:  # the .part already holds every byte
            return _finish(part, path, url, md5, size)
        raise DownloadError(f"HTTP {exc.code} for {url}. {_manual_hint(url, path)}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"could not reach {url} ({exc}). {_manual_hint(url, path)}") from exc

    with response:
        status = getattr(response, "status", None) or response.getcode()
        if start > 0 and status != 206:  # server ignored Range: start from scratch
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else size
        mode = "ab" if start > 0 else "wb"
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=start, unit="B", unit_scale=True,
                       desc=path.name, leave=False)
        try:
            with open(part, mode) as fh:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    if bar is not None:
                        bar.update(len(block))
        except (http.client.IncompleteRead, OSError) as exc:
            got = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"download of {url} stopped after {got} bytes ({exc}); the partial file "
                f"{str(part)!r} was kept: call again to resume. {_manual_hint(url, path)}"
            ) from exc
        finally:
            if bar is not None:
                bar.close()
    got = part.stat().st_size
    if total is not None and got < total:
        raise DownloadError(
            f"download of {url} is incomplete ({got} of {total} bytes); the partial file "
            f"{str(part)!r} was kept: call again to resume. {_manual_hint(url, path)}")
    return _finish(part, path, url, md5, size)


def _finish(part: Path, path: Path, url: str, md5: str | None, size: int | None) -> Path:
    """Verify the ``.part`` file and rename it into place, or move it aside as ``.corrupt``."""
    problem = None
    got = part.stat().st_size
    if size is not None and got != size:
        problem = f"size {got} bytes, expected {size}"
    elif md5 is not None:
        actual = md5sum(part)
        if actual != md5.lower():
            problem = f"MD5 {actual}, expected {md5.lower()}"
    if problem is not None:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(part, bad)
        raise DownloadError(f"checksum mismatch for {url}: {problem}. The file was moved "
                            f"aside to {str(bad)!r} (not used). {_manual_hint(url, path)}")
    os.replace(part, path)
    return path


def verify_archive(path: str | os.PathLike, md5: str | None = None) -> None:
    """Raise ``ValueError`` if a user-supplied archive does not match ``md5``."""
    if md5 is not None and md5sum(path) != md5.lower():
        raise ValueError(f"{str(path)!r} does not have the official MD5 {md5}; it is "
                         "truncated or a different file. Delete it and fetch it again.")


def _safe_members(names: list[str], dest: Path) -> None:
    root = dest.resolve()
    for name in names:
        target = (dest / name).resolve()
        if target != root and root not in target.parents:
            raise ValueError(f"archive member {name!r} would be written outside {str(dest)!r}")


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a .tar(.gz/.tgz) or .zip archive into ``dest`` atomically.

    Members are unpacked into a temporary folder inside ``dest``; each top-level entry is then
    renamed into ``dest`` (an existing entry of the same name is replaced). Returns the paths
    of the top-level entries.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        name = archive.name.lower()
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                _safe_members(zf.namelist(), tmp)
                zf.extractall(tmp)
        elif name.endswith((".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")):
            with tarfile.open(archive) as tf:
                _safe_members(tf.getnames(), tmp)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.10.12
                    tf.extractall(tmp)
        else:
            raise ValueError(f"unknown archive type {archive.name!r} (expected .zip or .tar.gz)")
        moved = []
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
            moved.append(target)
        return moved
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"could not extract {str(archive)!r} ({exc}); the archive is "
                         "damaged: delete it and fetch it again.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
