"""Batches beyond memory: the exact tiles of multi-similarity and triplet against
pytorch-metric-learning (PML) at large B (D = 512), measured by :mod:`dmlkit.scaling`.

On CUDA every (loss, implementation, B) runs in its own process (:func:`dmlkit.scaling.run_one`:
forward + backward, CUDA events after one warm-up run, the median of ``repeats``,
``torch.cuda.max_memory_allocated``), so that a PML out-of-memory error ends that process
only and is reported as ``OOM``. The sizes are 16,384, 65,536 and the largest B at which PML
is estimated to fit in the free GPU memory (:data:`dmlkit.scaling.BYTES_PER_PAIR`; PML is
tried there, and at 4/5 of it after an OOM). The tiled path's memory grows with B, not B^2:
its limit is time. ``--tiny``: toy sizes measured in this process.
"""

from __future__ import annotations

import math

__all__ = ["LOSSES", "classify_error", "largest_pml_batch", "run"]

LOSSES = ("multi_similarity", "triplet")
#: share of the free memory PML's estimated peak may take at "the largest B that fits"
FREE_SHARE = 0.85


def largest_pml_batch(loss: str, free_bytes: float, multiple: int = 1024) -> int:
    """The largest B (a multiple of ``multiple``) whose estimated PML peak fits in
    ``FREE_SHARE`` of ``free_bytes``.

    >>> largest_pml_batch("multi_similarity", 80e9)
    30720
    >>> largest_pml_batch("triplet", 80e9)
    12288
    """
    from .. import scaling

    per_pair = scaling.LOSS_BYTES_PER_PAIR.get(("pml", loss), scaling.BYTES_PER_PAIR["pml"])
    b = math.sqrt(FREE_SHARE * free_bytes / per_pair)
    return max(multiple, int(b // multiple) * multiple)


def classify_error(error: str) -> str:
    """``OOM: ...`` for an out-of-memory error (CUDA or host), else the error unchanged.

    >>> classify_error("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 8 GiB")
    'OOM: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 8 GiB'
    """
    low = error.lower()
    if error and ("out of memory" in low or "outofmemory" in low or "memoryerror" in low
                  or "cannot allocate memory" in low):
        return "OOM: " + error
    return error


def _free_bytes(device) -> float:
    import torch

    if device.type == "cuda":
        return float(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9


def _measure(ctx, impl: str, loss: str, B: int, dim: int, chunk: int, repeats: int) -> dict:
    """One row as :func:`dmlkit.scaling.run_one` gives it; ``--tiny`` measures here."""
    from .. import scaling

    dev = ctx.device.type
    if not ctx.tiny:
        timeout = max(30.0, min(180.0, ctx.budget.left() - 10))
        row = scaling.run_one(impl, loss, B, None, dim, chunk, repeats, dev, timeout=timeout,
                              max_gb=math.inf)
    else:
        row = {"loss": loss, "impl": impl, "B": B, "M": B, "D": dim, "device": dev,
               "time_s": None, "peak_mb": None, "error": ""}
        try:
            row.update(scaling.measure(impl, loss, B, None, dim, chunk, repeats, dev))
        except (MemoryError, RuntimeError) as exc:      # torch.OutOfMemoryError included
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    row["error"] = classify_error(row.get("error") or "")
    return row


def run(ctx, sec) -> None:
    """The large-batch section (see the module docstring)."""
    import importlib.util

    if importlib.util.find_spec("pytorch_metric_learning") is None:
        sec.note("pytorch-metric-learning is not installed (make gpu-wheels): tiled only")
        impls = ("tiled",)
    else:
        impls = ("tiled", "pml")
    if ctx.tiny:
        sizes, dim, chunk, repeats, multiple, cap = (64, 128), 16, 32, 1, 32, 256
    else:
        sizes, dim, chunk, repeats, multiple, cap = (16384, 65536), 512, 1024, 3, 1024, None
    free = _free_bytes(ctx.device)
    if cap:
        sec.note(f"--tiny: the largest B is capped at {cap}")
    sec.note(f"D = {dim}, tiles of {chunk}, median of {repeats} forward + backward after a "
             f"warm-up run ({'CUDA events' if ctx.device.type == 'cuda' else 'wall clock'}); "
             f"{free / 2**30:.1f} GiB free at the start; PML / tiled > 1: the tiles are faster")
    rows = []
    for loss in LOSSES:
        largest = largest_pml_batch(loss, free, multiple)
        if cap:
            largest = min(largest, cap)
        plan = [(B, f"{B}") for B in sizes] + [(largest, f"{largest} (largest for PML)")]
        for B, label in plan:
            if ctx.budget.left() < 45 and not ctx.tiny:
                sec.note(f"{loss} B = {label} and later sizes skipped: time budget "
                         f"({ctx.budget.left():.0f} s left)")
                break
            got = {}
            for impl in reversed(impls):             # PML first: at "largest" it may shrink B
                row = _measure(ctx, impl, loss, B, dim, chunk, repeats)
                if impl == "pml" and "largest" in label and row["error"].startswith("OOM"):
                    B = max(multiple, int(B * 0.8) // multiple * multiple)
                    label = f"{B} (largest for PML, after an OOM at {row['B']})"
                    ctx.log(f"  {loss} pml: OOM at {row['B']}, trying {B}")
                    row = _measure(ctx, impl, loss, B, dim, chunk, repeats)
                got[impl] = row
                what = row["error"] or f"{row['time_s']:.3f} s, {row['peak_mb']:.0f} MB"
                ctx.log(f"  {loss} {impl} B={B}: {what}")
            t, p = got.get("tiled"), got.get("pml")
            ok = [r is not None and r["time_s"] is not None for r in (t, p)]
            rows.append({
                "loss": loss, "B": label,
                "tiled s": t["time_s"] if ok[0] else None,
                "tiled MB": t["peak_mb"] if ok[0] else None,
                "PML s": p["time_s"] if ok[1] else None,
                "PML MB": p["peak_mb"] if ok[1] else None,
                "PML / tiled time": p["time_s"] / t["time_s"] if all(ok) else None,
                "tiled / PML memory": t["peak_mb"] / max(p["peak_mb"], 1e-9) if all(ok)
                else None,
                "error": "; ".join(f"{r['impl']}: {r['error']}" for r in (t, p)
                                   if r is not None and r["error"]) or None})
    sec.tables["tiled vs PML (one process per measurement)" if not ctx.tiny
               else "tiled vs PML (toy sizes, in this process)"] = rows
    tiled_ok = [r for r in rows if r["tiled s"] is not None]
    sec.check("the tiled path ran at every size measured", len(tiled_ok) == len(rows),
              detail="; ".join(f"{r['loss']} B={r['B']}: {r['error']}" for r in rows
                               if r["tiled s"] is None))
    if "pml" in impls:
        reported = all(r["PML s"] is not None or "pml:" in (r["error"] or "") for r in rows)
        sec.check("every PML run gave a time or a reported error (OOM: not a crash)", reported)
