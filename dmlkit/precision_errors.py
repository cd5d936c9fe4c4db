"""The measured half-precision errors of every registered loss, miner and retrieval metric
(docs/precision.md): the rows of ``dmlkit/resources/precision_errors.csv``.

Every case is measured **on the same rounded input**: the input is first rounded to the half
dtype (bfloat16 or float16), then computed three ways: from the half tensor, from its float32
copy and from its float64 copy (both exact copies of the rounded values). The errors are thus
those of the computation, not of the rounding of the input:

* losses, forward and backward, dense and tiled (``chunk_size``): the value's relative error
  ``|v - v_ref| / max(|v_ref|, 1e-6)`` and the gradients' max-norm relative error
  ``max |g - g_ref| / max |g_ref|`` over the embeddings' and the loss's own parameters'
  gradients (proxies, centres), on :data:`SEEDS` batches of B = 16, D = 8, 4 classes; and
  ``grad_rounded``, the same against the reference gradient rounded to the half dtype (the
  policy makes the half gradient the float32 one rounded once: 0 against float32);
* miners, on a rounded similarity matrix S: the share of mask entries that differ, and for
  distance-weighted sampling the probabilities' max-norm relative error;
* retrieval metrics (Recall@1/2/4/8, MAP@R, R-precision), without and with a gallery, on
  rounded embeddings: the absolute difference of each metric.

The largest error over the batches is the row's ``max_error``; :func:`dmlkit.precision.tolerance`
turns it into a test's bound. ``python benchmarks/precision.py`` prints the table.
"""

from __future__ import annotations

import copy
import datetime

import torch

from . import losses, miners
from .evaluate import retrieval_metrics
from .precision import dtype_name
from .similarity import pair_masks, similarity_matrix

__all__ = ["CHUNK", "COLUMNS", "DOCS_MARKERS", "DTYPES", "METRIC_KEYS", "REFERENCES", "SEEDS",
           "build", "loss_batch", "loss_errors", "loss_paths", "markdown_table", "measure_all",
           "metric_batch", "metric_errors", "miner_errors", "with_docs_table"]

#: the random batches of every case
SEEDS = (0, 1, 2, 3, 4)
#: the half dtypes measured, and the references
DTYPES = (torch.bfloat16, torch.float16)
REFERENCES = ("fp32", "fp64")
#: batch shape of the losses and miners; the tile side of the tiled path
B, D, C = 16, 8, 4
CHUNK = 5
#: the retrieval metrics measured
METRIC_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision")
#: the columns of the resource CSV
COLUMNS = ("kind", "name", "path", "dtype", "quantity", "reference", "max_error", "batches",
           "measured", "torch")

#: constructor arguments of the losses that own parameters (one proxy / centre per class)
_OWN = {"num_classes": C, "embedding_dim": D}


def build(name: str, chunk_size=None):
    """The registered loss ``name`` at its defaults (proxy / centre losses get C classes and
    D dimensions, their parameters drawn from a fixed seed), dense or tiled."""
    kw = dict(_OWN) if "num_classes" in (losses.parameters(name) or ()) else {}
    torch.manual_seed(1)
    return losses.build(name, chunk_size=chunk_size, **kw)


def loss_paths(name: str) -> tuple[str, ...]:
    """``("dense",)`` or ``("dense", "tiled")``: the paths a loss has."""
    try:
        build(name, chunk_size=CHUNK)
    except ValueError:
        return ("dense",)
    return ("dense", "tiled")


def loss_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D) float64 embeddings of norm about 3 (not unit: normalisation is part of the
    computation) and labels of C classes, 4 samples each, shuffled."""
    g = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(B, D, generator=g, dtype=torch.float64)
    y = (torch.arange(B) % C)[torch.randperm(B, generator=g)]
    return x, y


def _value_grads(loss, x, y, seed):
    """Value and gradients (embeddings first, then the loss's parameters) as float64, plus
    the value's and the embeddings' gradient's dtypes."""
    leaf = x.detach().clone().requires_grad_(True)
    params = list(loss.parameters())
    torch.manual_seed(seed)                      # the stochastic miners' draws
    value = loss(leaf, y)
    grads = torch.autograd.grad(value, [leaf, *params], allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [leaf, *params])]
    return (value.detach().double(), [g.double() for g in grads],
            (value.dtype, grads[0].dtype))


def _rel(a, b) -> float:
    """max-norm relative error of tensors or lists of tensors (float64)."""
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    num = max(float((x - y).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))
    den = max(float(y.abs().max()) if y.numel() else 0.0 for y in b)
    return num / max(den, 1e-6)


def loss_errors(name: str, path: str, dtype: torch.dtype, seeds=SEEDS) -> dict:
    """``{(quantity, reference): max error}`` of loss ``name`` on ``path`` in ``dtype``, and
    under ``"dtypes"`` the set of (value dtype, gradient dtype) seen (the policy: float32 and
    the input's dtype)."""
    loss = build(name, chunk_size=CHUNK if path == "tiled" else None)
    loss64 = copy.deepcopy(loss).double()
    out = {(q, r): 0.0 for q in ("value", "grad", "grad_rounded") for r in REFERENCES}
    seen = set()
    for seed in seeds:
        x, y = loss_batch(seed)
        xh = x.to(dtype)
        vh, gh, dts = _value_grads(loss, xh, y, seed)
        seen.add(dts)
        v32, g32, _ = _value_grads(loss, xh.float(), y, seed)
        v64, g64, _ = _value_grads(loss64, xh.double(), y, seed)
        for ref, v, g in (("fp32", v32, g32), ("fp64", v64, g64)):
            out[("value", ref)] = max(out[("value", ref)], _rel(vh, v))
            out[("grad", ref)] = max(out[("grad", ref)], _rel(gh, g))
            rounded = [g[0].to(dtype).double(), *g[1:]]    # the parameters stay float32
            out[("grad_rounded", ref)] = max(out[("grad_rounded", ref)], _rel(gh, rounded))
    out["dtypes"] = seen
    return out


def _miner_call(name: str, S, pos, neg, seed):
    kw = {"dim": D, "generator": torch.Generator().manual_seed(seed)} \
        if name == "distance_weighted" else {}
    return miners.build(name, **kw)(S, pos, neg)


def miner_errors(name: str, dtype: torch.dtype, seeds=SEEDS) -> dict:
    """``{(quantity, reference): max error}`` of miner ``name`` on a similarity matrix
    rounded to ``dtype``: ``mask`` (share of differing entries of both masks) and, for
    distance-weighted sampling, ``prob`` (the probabilities)."""
    out = {("mask", r): 0.0 for r in REFERENCES}
    if name == "distance_weighted":
        out.update({("prob", r): 0.0 for r in REFERENCES})
    for seed in seeds:
        x, y = loss_batch(seed)
        Sh = similarity_matrix(x).to(dtype)
        pos, neg = pair_masks(y)
        got = _miner_call(name, Sh, pos, neg, seed)
        for ref, rdt in (("fp32", torch.float32), ("fp64", torch.float64)):
            want = _miner_call(name, Sh.to(rdt), pos, neg, seed)
            differ = sum(int((a != b).sum()) for a, b in zip(got, want))
            out[("mask", ref)] = max(out[("mask", ref)], differ / (2 * Sh.numel()))
            if name == "distance_weighted":
                p = miners.distance_weighted_probabilities(Sh, pos, neg, D).double()
                q = miners.distance_weighted_probabilities(Sh.to(rdt), pos, neg, D).double()
                out[("prob", ref)] = max(out[("prob", ref)], _rel(p, q))
    return out


def metric_batch(seed: int, n: int = 120, dim: int = 16, classes: int = 12):
    """Clustered (n, dim) float64 embeddings (class centres plus noise: Recall@1 about 0.7)
    and their labels."""
    g = torch.Generator().manual_seed(1000 + seed)
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    y = torch.arange(n) % classes
    x = centres[y] + 0.8 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return x, y


def _metrics(x, y, path):
    if path == "gallery":
        return retrieval_metrics(x[:40], y[:40], (1, 2, 4, 8), gallery=(x[40:], y[40:]))
    return retrieval_metrics(x, y, (1, 2, 4, 8))


def metric_errors(path: str, dtype: torch.dtype, seeds=SEEDS) -> dict:
    """``{(key, reference): max |metric - reference|}`` over :data:`METRIC_KEYS`, on embeddings
    rounded to ``dtype`` (``path``: ``"self"`` = the set against itself, ``"gallery"`` =
    40 queries against the other items)."""
    out = {(k, r): 0.0 for k in METRIC_KEYS for r in REFERENCES}
    for seed in seeds:
        x, y = metric_batch(seed)
        xh = x.to(dtype)
        got = _metrics(xh, y, path)
        for ref, rdt in (("fp32", torch.float32), ("fp64", torch.float64)):
            want = _metrics(xh.to(rdt), y, path)
            for k in METRIC_KEYS:
                out[(k, ref)] = max(out[(k, ref)], abs(got[k] - want[k]))
    return out


def measure_all(seeds=SEEDS, names=None) -> list[dict]:
    """Every row of the table (losses ``names``, default every registered loss)."""
    stamp = {"batches": len(seeds), "measured": datetime.date.today().isoformat(),
             "torch": torch.__version__.split("+")[0]}
    rows = []
    for name in names or losses.available():
        for path in loss_paths(name):
            for dtype in DTYPES:
                errs = loss_errors(name, path, dtype, seeds)
                errs.pop("dtypes")
                rows += [dict(kind="loss", name=name, path=path, dtype=dtype_name(dtype),
                              quantity=q, reference=r, max_error=e, **stamp)
                         for (q, r), e in errs.items()]
    for name in miners.available():
        for dtype in DTYPES:
            rows += [dict(kind="miner", name=name, path="-", dtype=dtype_name(dtype),
                          quantity=q, reference=r, max_error=e, **stamp)
                     for (q, r), e in miner_errors(name, dtype, seeds).items()]
    for path in ("self", "gallery"):
        for dtype in DTYPES:
            rows += [dict(kind="metric", name=k, path=path, dtype=dtype_name(dtype),
                          quantity="metric", reference=r, max_error=e, **stamp)
                     for (k, r), e in metric_errors(path, dtype, seeds).items()]
    return rows


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def markdown_table(rows: list[dict]) -> str:
    """The docs' tables of the measured errors (docs/precision.md): per loss the largest error
    over its paths (dense, tiled) of the value against float64 and of the gradient against
    float32 and (rounded to the dtype) against float64, in bf16 and fp16; per miner and per
    retrieval metric the largest error against float64 (and float32)."""
    worst: dict = {}
    paths: dict = {}
    for r in rows:
        key = (r["kind"], r["name"], r["dtype"], r["quantity"], r["reference"])
        worst[key] = max(worst.get(key, 0.0), float(r["max_error"]))
        paths.setdefault((r["kind"], r["name"]), set()).add(r["path"])
    cols = [("value", "fp64"), ("grad", "fp32"), ("grad_rounded", "fp64")]
    head = ["loss", "paths"] + [f"{d} {q.replace('_rounded', ' rounded')} vs {ref}"
                                for d in ("bf16", "fp16") for q, ref in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, name in paths:
        if kind != "loss":
            continue
        cells = [_fmt(worst[("loss", name, d, q, ref)]) for d in ("bf16", "fp16")
                 for q, ref in cols]
        lines.append("| " + " | ".join([f"`{name}`", " + ".join(sorted(paths[kind, name])),
                                        *cells]) + " |")
    lines += ["", "| miner | " + " | ".join(
        f"{d} {q} vs {ref}" for d in ("bf16", "fp16") for q, ref in
        (("mask", "fp32"), ("mask", "fp64"), ("prob", "fp64"))) + " |", "|" + "---|" * 7]
    for kind, name in paths:
        if kind == "miner":
            cells = [_fmt(worst[key]) if key in worst else "-" for d in ("bf16", "fp16")
                     for key in (("miner", name, d, "mask", "fp32"),
                                 ("miner", name, d, "mask", "fp64"),
                                 ("miner", name, d, "prob", "fp64"))]
            lines.append("| " + " | ".join([f"`{name}`", *cells]) + " |")
    lines += ["", "| metric (self and gallery) | " + " | ".join(
        f"{d} vs {ref}" for d in ("bf16", "fp16") for ref in REFERENCES) + " |",
        "|" + "---|" * 5]
    for kind, name in paths:
        if kind == "metric":
            cells = [_fmt(worst[("metric", name, d, "metric", ref)]) for d in ("bf16", "fp16")
                     for ref in REFERENCES]
            lines.append("| " + " | ".join([f"`{name}`", *cells]) + " |")
    return "\n".join(lines) + "\n"


#: the markers of the generated table in docs/precision.md
DOCS_MARKERS = ("<!-- precision table: begin -->", "<!-- precision table: end -->")


def with_docs_table(text: str, table: str) -> str:
    """``text`` (docs/precision.md) with ``table`` between the :data:`DOCS_MARKERS`."""
    begin, end = DOCS_MARKERS
    if begin not in text or end not in text:
        raise ValueError(f"docs/precision.md lacks the markers {begin} ... {end}")
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + table + end + rest.split(end, 1)[1]
