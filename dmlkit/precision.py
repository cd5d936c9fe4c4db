"""The precision policy: how dmlkit's numeric code treats bfloat16 / float16 input
(docs/precision.md), and the tolerances the tests hold every case to.

The policy, in one line: **half precision is a storage format, never an arithmetic one.**

* A half-precision input (``torch.float16`` or ``torch.bfloat16``) is cast to float32
  **once**, where it enters a loss (:func:`full_precision_forward`), a miner
  (:mod:`dmlkit.miners`) or a retrieval metric (:mod:`dmlkit.evaluate`); every operation after
  that (normalisation, the similarity / Gram matrix, log-sum-exp, exponentials, reductions,
  mining comparisons, ranking) runs in float32. float32 and float64 inputs are computed in
  their own dtype.
* A loss, a miner and a metric run with autocast **disabled** (:func:`no_autocast`): under
  ``torch.autocast`` a loss computes exactly what it computes on float32 input (the
  backbone keeps its mixed precision).
* A loss on half input returns a float32 value; its gradient reaches the half-precision leaf
  through the one cast, i.e. it is the float32 gradient rounded once to the input dtype.

So on the same (rounded) input, half precision and float32 give the same numbers; what half
precision costs is the rounding of the input itself (that is the model's business, not the
loss's) and one rounding of the gradient (relative error at most :data:`UNIT_ROUNDOFF` of the
dtype, plus float16's underflow of gradients below 2^-24). The measured errors of every
registered loss, miner and retrieval metric are in ``dmlkit/resources/precision_errors.csv``
(written by ``benchmarks/precision.py --save``, computed by :mod:`dmlkit.precision_errors`);
:func:`tolerance` turns a row into the bound a test asserts.

>>> import torch
>>> from dmlkit.precision import compute_dtype, promote
>>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
(torch.float32, torch.float64)
>>> promote(torch.ones(2, dtype=torch.float16)).dtype
torch.float32
"""

from __future__ import annotations

import contextlib
import csv
import functools
from importlib import resources

import torch

__all__ = ["FACTOR", "FLOORS", "HALF_DTYPES", "TABLE", "UNIT_ROUNDOFF", "compute_dtype",
           "dtype_name", "family_tolerance", "full_precision_forward", "load_table",
           "no_autocast", "promote", "tolerance", "without_autocast"]

#: the half-precision dtypes that are computed in float32
HALF_DTYPES = (torch.float16, torch.bfloat16)

#: unit roundoff u (half an ulp of 1) of each dtype: rounding to nearest moves a value by at
#: most u relative (float16: in its normal range, |x| >= 2^-14)
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11,
                 torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}

_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
          torch.float64: "fp64"}

#: the resource file of measured errors (one row per case, see dmlkit.precision_errors)
TABLE = "precision_errors.csv"

#: a test's tolerance is FACTOR times the largest error measured for its case ...
FACTOR = 4.0
#: ... and never below the floor of its quantity (relative, max-norm; metrics: absolute):
#: against float32 on the same rounded input the policy makes a value, a rounded gradient
#: (``grad_rounded``), a miner's masks and probabilities and a metric exact (the floor: about
#: one float32 ulp); against float64, float32 arithmetic (about 10 float32 ulps, 1e-6). A
#: half-precision gradient (``grad``) is also allowed its one rounding (see :func:`tolerance`).
FLOORS = {
    ("value", "fp32"): 1e-7, ("value", "fp64"): 1e-6,
    ("grad", "fp32"): 1e-7, ("grad", "fp64"): 1e-6,
    ("grad_rounded", "fp32"): 1e-7, ("grad_rounded", "fp64"): 1e-6,
    ("mask", "fp32"): 0.0, ("mask", "fp64"): 0.0,
    ("prob", "fp32"): 1e-7, ("prob", "fp64"): 1e-6,
    ("metric", "fp32"): 1e-12, ("metric", "fp64"): 1e-12,
}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype dmlkit computes in for inputs of ``dtype``: float32 for half precision."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def promote(x):
    """``x`` cast to float32 when it is a half-precision tensor (one differentiable cast);
    anything else (float32 / float64 tensors, None, arrays, lists) is returned as is."""
    if isinstance(x, torch.Tensor) and x.dtype in HALF_DTYPES:
        return x.float()
    return x


def dtype_name(dtype: torch.dtype) -> str:
    """``"bf16"``, ``"fp16"``, ``"fp32"`` or ``"fp64"``."""
    if dtype not in _NAMES:
        raise ValueError(f"no precision name for {dtype}; known: {sorted(_NAMES.values())}")
    return _NAMES[dtype]


@contextlib.contextmanager
def no_autocast():
    """Autocast disabled, on every device type where it is enabled, within the block."""
    with contextlib.ExitStack() as stack:
        for device in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        yield


def without_autocast(fn):
    """``fn`` run with autocast disabled (:func:`no_autocast`): the metrics' decorator."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with no_autocast():
            return fn(*args, **kwargs)

    return wrapped


def full_precision_forward(forward):
    """A loss's ``forward(embeddings, labels, ...)`` with the policy applied: every
    half-precision tensor argument (the embeddings, the references) cast to float32 once,
    autocast disabled. :class:`dmlkit.losses.PairLoss` applies it to ``forward`` of every
    subclass; :class:`dmlkit.memory.CrossBatchMemory` uses it too."""

    @functools.wraps(forward)
    def wrapped(self, *args, **kwargs):
        with no_autocast():
            return forward(self, *map(promote, args),
                           **{k: promote(v) for k, v in kwargs.items()})

    wrapped.full_precision = True
    return wrapped


# --------------------------------------------------------------------------- measured table
def load_table(path=None) -> list[dict]:
    """The rows of the measured table (the packaged resource, or ``path``): the errors as
    floats, the other columns as strings."""
    if path is None:
        text = resources.files("dmlkit").joinpath("resources", TABLE).read_text()
    else:
        with open(path) as fh:
            text = fh.read()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    rows = list(csv.DictReader(lines))
    for row in rows:
        row["max_error"] = float(row["max_error"])
    return rows


@functools.lru_cache(maxsize=1)
def _table_index() -> dict:
    return {(r["kind"], r["name"], r["path"], r["dtype"], r["quantity"], r["reference"]):
            r["max_error"] for r in load_table()}


def family_tolerance(kind: str, dtype, quantity: str, reference: str) -> float:
    """:func:`tolerance` of the worst measured case of a family (``kind``): the bound for a
    setting the table does not list (a loss with other hyper-parameters)."""
    dname = dtype if isinstance(dtype, str) else dtype_name(dtype)
    cases = [k for k in _table_index() if k[0] == kind and k[3] == dname and k[4] == quantity
             and k[5] == reference]
    if not cases:
        raise ValueError(f"no measured {kind} {quantity} error in {dname} against {reference} "
                         f"in dmlkit/resources/{TABLE}")
    return max(tolerance(*k) for k in cases)


def tolerance(kind: str, name: str, path: str, dtype, quantity: str, reference: str) -> float:
    """The bound a test holds one case to: ``max(FACTOR * measured, floor)``.

    ``kind`` is ``"loss"``, ``"miner"`` or ``"metric"``; ``path`` ``"dense"`` / ``"tiled"``
    (miners ``"-"``, metrics ``"self"`` / ``"gallery"``); ``dtype`` a half dtype or its
    name; ``quantity`` one of ``value``, ``grad``, ``grad_rounded``, ``mask``, ``prob``,
    ``metric``; ``reference`` ``"fp32"`` or ``"fp64"``. A half-precision gradient
    (``grad``) is also allowed one rounding to its dtype (:data:`UNIT_ROUNDOFF`, relative
    to the largest entry), the policy's bound. A case missing from the table is a
    ValueError (run ``benchmarks/precision.py --save``).
    """
    dname = dtype if isinstance(dtype, str) else dtype_name(dtype)
    key = (kind, name, path, dname, quantity, reference)
    index = _table_index()
    if key not in index:
        raise ValueError(f"no measured error for {key} in dmlkit/resources/{TABLE}; "
                         "run `python benchmarks/precision.py --save`")
    floor = FLOORS[(quantity, reference)]
    if quantity == "grad":
        rounding = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dname)
        if rounding is not None:
            floor = max(floor, UNIT_ROUNDOFF[rounding] + FLOORS[("grad", reference)])
    return max(FACTOR * index[key], floor)
