"""The IDX file format of MNIST and Fashion-MNIST: a checked reader, gzipped or not.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian uint32
dimensions, then the values in C order (big-endian for multi-byte types). Type codes:
``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E``
float64 (LeCun, Cortes and Burges, "The MNIST database of handwritten digits"). A file is
gzipped when it starts with the gzip signature ``1f 8b``, whatever its name.

>>> import struct
>>> raw = struct.pack(">BBBBII", 0, 0, 0x08, 2, 2, 3) + bytes(range(6))
>>> parse_idx(raw, "a.idx")
array([[0, 1, 2],
       [3, 4, 5]], dtype=uint8)
>>> parse_idx(raw[:-1], "b.idx")
Traceback (most recent call last):
...
dmlkit.data.idx.IDXError: b.idx is not a valid IDX file: it holds 5 bytes of values where \
its header (2 x 3 uint8) announces 6 (truncated or not an IDX file)
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDX_TYPES", "IDXError", "parse_idx", "read_idx"]

#: IDX type code -> numpy dtype (big-endian)
IDX_TYPES: dict[int, np.dtype] = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8),
                                  0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
                                  0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file is not a valid IDX file (bad magic, truncated, damaged gzip); the message names
    the file."""


def _type_name(dtype: np.dtype) -> str:
    return np.dtype(dtype).newbyteorder("=").name


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array held by the (already decompressed) IDX bytes ``raw``; ``name`` is used in the
    error messages. Raises :class:`IDXError` on a bad magic number or a size that does not
    match the header."""
    def bad(problem: str) -> IDXError:
        return IDXError(f"{name} is not a valid IDX file: {problem}")

    if len(raw) < 4:
        raise bad(f"it holds {len(raw)} bytes, fewer than the 4 of the magic number")
    zero1, zero2, code, ndim = raw[:4]
    if zero1 != 0 or zero2 != 0 or code not in IDX_TYPES:
        raise bad(f"its magic number is 0x{raw[:4].hex()}, expected 0x0000TTDD (TT a type code "
                  f"of {', '.join(f'{c:02x}' for c in IDX_TYPES)}, DD the number of dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad(f"it ends inside its header ({len(raw)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        shape = " x ".join(map(str, dims)) or "scalar"
        why = "truncated or not an IDX file" if got < expected else "trailing bytes"
        raise bad(f"it holds {got} bytes of values where its header ({shape} "
                  f"{_type_name(dtype)}) announces {expected} ({why})")
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array (native byte order).

    Raises :class:`IDXError` naming ``path`` when the file is damaged: a broken or truncated
    gzip stream, a bad magic number, or fewer / more bytes than its header announces.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(f"{path} is not a valid IDX file: its gzip stream is damaged or "
                           f"truncated ({exc})") from exc
    return parse_idx(raw, str(path))
