"""Correctness on the device: every registered loss, forward and backward, against the CPU;
mixed precision against float32; the exact tiles against the dense path; ``evaluate`` on
device tensors against CPU arrays.

Errors are max-norm relative: ``max |a - b| / max(max |b|, 1e-6)`` over the loss value, or
over every gradient (the embeddings' and the loss's own parameters', e.g. proxies). float32
matrix products are computed in full float32 here (TF32 off), as on the CPU.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch

__all__ = ["AMP_TOL", "EVAL_TOL", "FP32_TOL", "STOCHASTIC", "TILED_TOL", "build_every_loss",
           "rel_err", "run"]

#: float32 on the device vs float32 on the CPU, and float32 vs float64 (value and gradients)
FP32_TOL = 1e-5
#: tiled (chunk_size) vs dense on the device, float32
TILED_TOL = 1e-5
#: autocast vs float32 on the same device (value and gradients, max-norm relative): a loss
#: switches autocast off and computes in float32 (:mod:`dmlkit.precision`), so the loss alone
#: under bf16 / fp16 autocast gives its float32 result; what half precision changes in a
#: training step (the backbone's activations) is the training section's business
AMP_TOL = {"bf16": (FP32_TOL, FP32_TOL), "fp16": (FP32_TOL, FP32_TOL)}
#: evaluate on the device vs on the CPU: retrieval metrics; NMI / F1 (k-means: same initial
#: centres, rounding may move a point across a boundary)
EVAL_TOL = (1e-6, 1e-2)
#: losses that sample at random (their CPU and CUDA generators differ): finiteness only
STOCHASTIC = frozenset({"raw+distance_weighted"})
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def rel_err(a, b) -> float:
    """``max |a - b| / max(max |b|, 1e-6)`` of tensors or lists of tensors (float64)."""
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    if len(a) != len(b):
        raise ValueError(f"different numbers of tensors: {len(a)} vs {len(b)}")
    num = max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b))
    den = max(float(y.double().abs().max()) for y in b)
    return num / max(den, 1e-6)


def build_every_loss(dim: int, classes: int) -> dict:
    """Every registered loss at its defaults (proxy / centre losses get ``num_classes`` and
    ``embedding_dim``), its random parameters drawn from a fixed seed."""
    from .. import losses

    out = {}
    for name in losses.available():
        kw = {}
        if "num_classes" in (losses.parameters(name) or ()):
            kw = {"num_classes": classes, "embedding_dim": dim}
        torch.manual_seed(1)
        out[name] = losses.build(name, **kw)
    return out


def _value_grads(loss, x, y, device, dtype=torch.float32, amp: str | None = None):
    """The value and every gradient of a copy of ``loss`` on ``device`` in ``dtype`` (under
    autocast ``amp``), as float64 CPU tensors."""
    loss = copy.deepcopy(loss).to(device=device, dtype=dtype)
    xx = x.detach().to(device=device, dtype=dtype).clone().requires_grad_(True)
    ctx = (torch.autocast(device.type, dtype=_DTYPES[amp]) if amp
           else contextlib.nullcontext())
    with ctx:
        value = loss(xx, y.to(device))
    value.backward()
    grads = [xx.grad] + [torch.zeros_like(p) if p.grad is None else p.grad
                         for p in loss.parameters()]
    return value.detach().double().cpu(), [g.detach().double().cpu() for g in grads]


def _finite(value, grads) -> bool:
    return bool(torch.isfinite(value).all()) and all(bool(torch.isfinite(g).all())
                                                    for g in grads)


@contextlib.contextmanager
def full_fp32():
    """float32 products in full float32 on CUDA (no TF32) within the block."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _worst(rows: list[dict], key: str) -> tuple[float | None, str]:
    vals = [(r[key], r["loss"]) for r in rows if r.get(key) is not None]
    if not vals:
        return None, ""
    v, name = max(vals, key=lambda t: (not np.isfinite(t[0]), t[0]))
    return v, f"worst: {name}"


def run(ctx, sec) -> None:
    """The correctness section (see the module docstring)."""
    with full_fp32():
        _losses(ctx, sec)
        _evaluate(ctx, sec)


def _losses(ctx, sec) -> None:
    dev, cuda = ctx.device, ctx.device.type == "cuda"
    B, D, C, chunk = (32, 16, 8, 8) if ctx.tiny else (256, 64, 32, 64)
    g = torch.Generator().manual_seed(0)
    x64 = torch.randn(B, D, generator=g, dtype=torch.float64)
    y = torch.arange(B) % C
    rows = []
    for name, loss in build_every_loss(D, C).items():
        r = {"loss": name}
        rows.append(r)
        v64, g64 = _value_grads(loss, x64, y, torch.device("cpu"), torch.float64)
        v32, g32 = _value_grads(loss, x64, y, torch.device("cpu"))
        dv, dg = (_value_grads(loss, x64, y, dev) if cuda else (v32, g32))
        stochastic = name in STOCHASTIC
        r["finite"] = _finite(dv, dg)
        if not stochastic:
            r["fp32 vs fp64 value"], r["fp32 vs fp64 grad"] = rel_err(v32, v64), rel_err(g32, g64)
            if cuda:
                r["cuda vs cpu value"], r["cuda vs cpu grad"] = rel_err(dv, v32), rel_err(dg, g32)
        for amp in AMP_TOL:
            av, ag = _value_grads(loss, x64, y, dev, amp=amp)
            r[f"{amp} finite"] = _finite(av, ag)
            if not stochastic:
                r[f"{amp} value"], r[f"{amp} grad"] = rel_err(av, dv), rel_err(ag, dg)
        tiled = copy.deepcopy(loss)
        try:
            tiled.chunk_size = chunk
        except ValueError:                 # no tile formulation: refuses, as documented
            r["tiled vs dense"] = None
        else:
            tv, tg = _value_grads(tiled, x64, y, dev)
            r["tiled vs dense"] = (None if stochastic else max(rel_err(tv, dv),
                                                               rel_err(tg, dg)))
        ctx.log(f"  {name}: " + (", ".join(f"{k} {v:.1e}" for k, v in r.items()
                                           if isinstance(v, float))
                                 or f"finite {r['finite']} (samples at random: finiteness only)"))
    sec.tables["losses (max-norm relative errors)"] = rows
    n = len(rows)
    sec.check(f"every loss ({n}) finite on {dev.type}, fp32 and both autocasts",
              all(r["finite"] and r["bf16 finite"] and r["fp16 finite"] for r in rows),
              detail=", ".join(r["loss"] for r in rows if not (
                  r["finite"] and r["bf16 finite"] and r["fp16 finite"])))
    for key in ("fp32 vs fp64 value", "fp32 vs fp64 grad"):
        sec.check(f"CPU {key} (every loss)", *_flip(_worst(rows, key), FP32_TOL))
    if cuda:
        for key in ("cuda vs cpu value", "cuda vs cpu grad"):
            sec.check(f"{key}, float32, every loss", *_flip(_worst(rows, key), FP32_TOL))
    else:
        sec.skip_check("CUDA vs CPU, float32, every loss", "no CUDA")
    for amp, (tol_v, tol_g) in AMP_TOL.items():
        sec.check(f"{amp} autocast vs fp32 on {dev.type}: value",
                  *_flip(_worst(rows, f"{amp} value"), tol_v))
        sec.check(f"{amp} autocast vs fp32 on {dev.type}: gradients",
                  *_flip(_worst(rows, f"{amp} grad"), tol_g))
    tiled_rows = [r for r in rows if r["tiled vs dense"] is not None]
    sec.check(f"tiled == dense on {dev.type} ({len(tiled_rows)} losses, tiles of {chunk})",
              *_flip(_worst(rows, "tiled vs dense"), TILED_TOL))
    sec.note(f"B = {B}, D = {D}, {C} classes; {', '.join(sorted(STOCHASTIC))} samples at "
             "random: finiteness only; losses without a tile formulation refuse chunk_size "
             "(tiled: -)")


def _flip(worst: tuple, tol: float) -> tuple:
    value, detail = worst
    return value, tol, detail


def _clustered(n: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 2.0
    labels = np.arange(n) % classes
    x = centres[labels] + rng.normal(size=(n, dim))
    return x.astype(np.float32), labels.astype(np.int64)


def _evaluate(ctx, sec) -> None:
    from .. import evaluate

    n, dim, classes = (120, 8, 12) if ctx.tiny else (4000, 64, 100)
    x, y = _clustered(n, dim, classes)
    retrieval = ("recall", "precision", "map@r", "r_precision")
    cpu = evaluate.evaluate(x, y, metrics=(*retrieval, "nmi", "f1"))
    dev = evaluate.evaluate(torch.from_numpy(x).to(ctx.device),
                            torch.from_numpy(y).to(ctx.device), metrics=(*retrieval, "nmi", "f1"))
    rows = [{"metric": k, "CPU arrays": cpu[k], f"{ctx.device.type} tensors": dev[k],
             "abs diff": abs(dev[k] - cpu[k])} for k in cpu]
    sec.tables["evaluate: device tensors vs CPU arrays"] = rows
    diffs = {r["metric"]: r["abs diff"] for r in rows}
    ret = {k: v for k, v in diffs.items() if k not in ("nmi", "f1")}
    worst = max(ret, key=ret.get)
    sec.check(f"evaluate on {ctx.device.type} tensors == CPU: retrieval metrics",
              ret[worst], EVAL_TOL[0], f"worst: {worst}; N = {n}, D = {dim}")
    sec.check(f"evaluate on {ctx.device.type} tensors == CPU: NMI, F1",
              max(diffs["nmi"], diffs["f1"]), EVAL_TOL[1])
    ctx.log(f"  evaluate: max |diff| retrieval {ret[worst]:.1e}, "
            f"NMI/F1 {max(diffs['nmi'], diffs['f1']):.1e}")
