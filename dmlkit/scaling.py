"""How pair losses scale with the batch: forward + backward time and peak memory of the dense
path, the exact tiles (:mod:`dmlkit.losses.tiling`) and pytorch-metric-learning (PML).

Each measurement runs in a fresh process (``python -m dmlkit.scaling --worker ...``), so that
its peak resident-memory increase (CPU) is its own; on CUDA the peak allocated memory is read
from torch. ``benchmarks/large_batch.py`` (the README's table) and notebook 11 (a small sweep)
both call these functions.

Implementations: ``dense`` (chunk_size=None, the reference), ``tiled`` (chunk_size = the
tile side), ``auto`` (chunk_size="auto": dense within
:func:`dmlkit.losses.tiling.auto_budget`) and ``pml`` (PML under the mapping the tests prove
equal, :data:`CASES`). The inputs are unit vectors, so that every mapping computes the same
loss (PML's angular loss multiplies by the raw negatives). The labels form a P x K batch of
8 images per class; references (query-vs-reference) cycle through the same classes.

>>> from dmlkit import scaling
>>> scaling.estimated_gb("dense", "multi_similarity", 16384, 16384) > 4
True
>>> row = scaling.run_one("tiled", "triplet", 64, dim=8, chunk=16, repeats=1)
>>> row["error"], row["time_s"] > 0, row["M"]
('', True, 64)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

__all__ = ["CASES", "IMPLS", "estimated_gb", "format_table", "measure", "measure_interleaved",
           "peak_rss_kb", "reset_peak_rss", "round_ratios", "run_grid", "run_interleaved",
           "run_one", "run_series", "save_csv"]

#: loss -> (dmlkit kwargs, PML factory source or None). The mappings are those the tests prove
#: (tests/losses/test_*.py against PML); "MS" = PML's multi-similarity loss with its miner.
CASES: dict[str, tuple[dict, str | None]] = {
    "multi_similarity": ({"alpha": 2.0, "beta": 50.0, "lam": 0.5, "epsilon": 0.1}, "MS"),
    "triplet": ({"margin": 0.05}, "losses.TripletMarginLoss(margin=0.05)"),
    "contrastive": ({"margin": 1.0, "form": "distance", "power": 1.0, "pos_margin": 0.0,
                     "reduction": "mean_nonzero"},
                    "losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)"),
    "binomial_deviance": ({}, None),
    "lifted_structure": ({"margin": 1.0}, "losses.LiftedStructureLoss(neg_margin=1.0)"),
    "angular": ({"alpha": 40.0}, "losses.AngularLoss(alpha=40)"),
}
IMPLS = ("dense", "tiled", "auto", "pml")
#: rough peak bytes per (B x M) pair, for skipping runs that cannot fit (measured at B = 4096)
BYTES_PER_PAIR = {"dense": 20, "auto": 20, "pml": 72, "tiled": 0}
#: losses that need more per pair: PML's triplet over all triplets (6.4 GB at B = 4096);
#: angular, dense: (B, M) and (M, M) buffers; PML: (pairs x B) tensors
LOSS_BYTES_PER_PAIR = {("pml", "triplet"): 400, ("dense", "angular"): 60,
                       ("auto", "angular"): 60, ("pml", "angular"): 120}


def estimated_gb(impl: str, name: str, B: int, M: int) -> float:
    """A rough peak memory estimate (GB) of one run, to skip what cannot fit."""
    per_pair = LOSS_BYTES_PER_PAIR.get((impl, name), BYTES_PER_PAIR[impl])
    return per_pair * B * M / 1e9


def _make(impl: str, name: str, chunk):
    if impl == "pml":
        from pytorch_metric_learning import losses, miners

        src = CASES[name][1]
        if src == "MS":
            loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
            miner = miners.MultiSimilarityMiner(epsilon=0.1)
            return lambda e, y, *ref: loss(e, y, miner(e, y, *ref), *ref)
        loss = eval(src, {"losses": losses})
        return lambda e, y, *ref: loss(e, y, None, *ref)
    from . import losses

    chunk_size = {"dense": None, "tiled": chunk, "auto": "auto"}[impl]
    return losses.build(name, chunk_size=chunk_size, **CASES[name][0])


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _status_kb(field: str) -> int | None:
    """A memory field of /proc/self/status (kB), None where there is none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> int:
    """Reset the peak resident set (Linux: ``clear_refs`` 5) and return the current RSS in
    kB. ``ru_maxrss`` cannot be used alone: a child inherits the peak of the process that
    forked it (a notebook kernel, the benchmark driver), which would hide small runs."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kb("VmRSS") or 0
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_kb() -> int:
    """The peak resident set (kB) since the last :func:`reset_peak_rss`."""
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(impl: str, name: str, B: int, M: int | None, dim: int, chunk: int, repeats: int,
            device: str, base_rss: int | None = None) -> dict:
    """One measurement in THIS process: the median forward + backward time (on CUDA: CUDA
    events, after one warm-up run) and the peak memory (CUDA: ``max_memory_allocated``; CPU:
    the increase of the peak resident set over ``base_rss`` kB, default: the resident set just
    before the run)."""
    import torch

    x, labels, ref = _inputs(name, B, M, dim, device)
    fn = _make(impl, name, chunk)
    if hasattr(fn, "to"):
        fn = fn.to(device)
    current = reset_peak_rss()
    base_rss = current if base_rss is None else base_rss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    # CPU beyond 16,384 squared: cold runs only; CUDA: always one warm-up run (kernel
    # selection, the allocator's first blocks), timed with CUDA events
    warm = 1 if B * (M or B) <= 16384 ** 2 or device == "cuda" else 0
    for r in range(repeats + warm):
        e = x.clone().requires_grad_(True)
        args = (e, labels) if ref is None else (e, labels, *ref)
        if device == "cuda":
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            fn(*args).backward()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t0 = time.perf_counter()
            fn(*args).backward()
            seconds = time.perf_counter() - t0
        if r >= warm:
            times.append(seconds)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        # clamped at 0: the kernel's resident-set counts are approximate (pages are counted
        # in per-CPU batches), so a run that allocates almost nothing can read as a small
        # negative increase (-0.23 MB seen at B = 256, D = 16)
        peak_mb = max(0.0, (peak_rss_kb() - base_rss) / 1024)
    return {"time_s": statistics.median(times), "peak_mb": peak_mb}


def _inputs(name: str, B: int, M: int | None, dim: int, device: str):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    n_classes = max(B // 8, 2)                  # 8 images per class, as a P x K batch
    labels = (torch.arange(B) % n_classes).to(device)
    x = F.normalize(torch.randn(B, dim, device=device), dim=1)
    ref = None
    if M is not None:
        ref = (F.normalize(torch.randn(M, dim, device=device), dim=1),
               (torch.arange(M) % n_classes).to(device))
    return x, labels, ref


def measure_interleaved(impls, name: str, B: int, M: int | None, dim: int, chunk: int,
                        repeats: int, device: str) -> dict:
    """Median forward + backward time of several implementations in THIS process, their
    runs alternating (ABBA order), so that a ratio is not a difference between processes or
    moments: the measurement behind "auto is no slower than dense"."""
    x, labels, ref = _inputs(name, B, M, dim, device)
    fns = {impl: _make(impl, name, chunk) for impl in impls}
    times = {impl: [] for impl in impls}
    for r in range(repeats + 1):                 # the first round warms up
        for impl in (impls if r % 2 == 0 else impls[::-1]):
            e = x.clone().requires_grad_(True)
            args = (e, labels) if ref is None else (e, labels, *ref)
            _sync(device)
            t0 = time.perf_counter()
            fns[impl](*args).backward()
            _sync(device)
            if r:
                times[impl].append(time.perf_counter() - t0)
    return {impl: statistics.median(t) for impl, t in times.items()}


def run_interleaved(impls, name: str, B: int, M: int | None = None, dim: int = 512,
                    chunk: int = 1024, repeats: int = 9, device: str = "cpu",
                    timeout: float = 1800) -> dict:
    """:func:`measure_interleaved` in a fresh subprocess: ``{impl: median seconds}``."""
    cmd = _worker_cmd("interleaved", name, [B], M, dim, chunk, repeats, device)
    out = subprocess.run([*cmd, "--impls", *impls], capture_output=True, text=True,
                         timeout=timeout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or "").strip().splitlines()
        raise RuntimeError(f"the interleaved run failed: {tail[-1] if tail else out.returncode}")
    return json.loads(lines[-1])


def _worker_cmd(impl: str, name: str, sizes, M, dim: int, chunk: int, repeats: int,
                device: str, series: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "dmlkit.scaling", "--worker", impl, "--loss", name,
           "--sizes", *map(str, sizes), "--dim", str(dim), "--chunk", str(chunk),
           "--repeats", str(repeats), "--device", device]
    if M is not None:
        cmd += ["--refs", str(M)]
    return cmd + (["--series"] if series else [])


def _auto_tiles(name: str, B: int, M: int) -> bool:
    import torch

    from . import losses

    loss = losses.build(name, chunk_size="auto", **CASES[name][0])
    return loss.tiled_chunk(B, M, torch.float32) is not None


def run_one(impl: str, name: str, B: int, M: int | None = None, dim: int = 512,
            chunk: int = 1024, repeats: int = 3, device: str = "cpu", timeout: float = 1800,
            max_gb: float = 8.0) -> dict:
    """One (loss, implementation, size) in a fresh subprocess; a dict row (``error`` set when
    it was skipped or failed)."""
    if name not in CASES or impl not in IMPLS:
        raise ValueError(f"unknown loss {name!r} or implementation {impl!r}; losses: "
                         f"{sorted(CASES)}, implementations: {list(IMPLS)}")
    row = {"loss": name, "impl": impl, "B": B, "M": M if M is not None else B, "D": dim,
           "chunk": chunk if impl == "tiled" else "", "device": device, "time_s": None,
           "peak_mb": None, "error": ""}
    if impl == "pml" and CASES[name][1] is None:
        row["error"] = "no PML equivalent"
        return row
    need_gb = estimated_gb(impl, name, B, row["M"])
    if impl == "auto" and _auto_tiles(name, B, row["M"]):
        need_gb = 0.0
    if need_gb > max_gb:
        row["error"] = f"skipped: needs ~{need_gb:.0f} GB > max_gb {max_gb:g}"
        return row
    try:
        out = subprocess.run(_worker_cmd(impl, name, [B], M, dim, chunk, repeats, device),
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        row["error"] = f"timeout after {timeout:g} s"
        return row
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or "failed").strip().splitlines()
        row["error"] = tail[-1][:160] if tail else f"exit code {out.returncode}"
        return row
    row.update(json.loads(lines[-1]))
    return row


def run_series(impl: str, name: str, sizes, dim: int = 128, chunk: int = 256,
               repeats: int = 1, timeout: float = 600) -> list[dict]:
    """Several ascending sizes of one implementation in ONE subprocess on the CPU (a quick
    sweep, as notebook 11 runs it): the peak of each size is measured over the resident set
    once the libraries are loaded (memory a smaller size kept cached counts again)."""
    sizes = sorted(sizes)
    out = subprocess.run(_worker_cmd(impl, name, sizes, None, dim, chunk, repeats, "cpu",
                                     series=True),
                         capture_output=True, text=True, timeout=timeout)
    rows = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or len(rows) != len(sizes):
        tail = (out.stderr or "").strip().splitlines()
        raise RuntimeError(f"the {impl} sweep of {name} failed: "
                           f"{tail[-1] if tail else out.returncode}")
    for r, B in zip(rows, sizes):
        r.update(loss=name, impl=impl, B=B, M=B, D=dim, device="cpu", error="",
                 chunk=chunk if impl == "tiled" else "")
    return rows


def run_grid(losses, sizes, impls=IMPLS, refs=None, dim=512, chunk=1024, repeats=3,
             device="cpu", max_gb=8.0, progress=print) -> list[dict]:
    """Every (loss, size, implementation) of the grid, each in its own process."""
    rows = []
    for name in losses:
        for B in sizes:
            for impl in impls:
                row = run_one(impl, name, B, refs, dim, chunk, repeats, device, max_gb=max_gb)
                rows.append(row)
                if progress:
                    what = row["error"] or f"{row['time_s']:.3f} s, {row['peak_mb']:.0f} MB"
                    progress(f"  {name} {impl} B={B} M={row['M']}: {what}")
    return rows


def round_ratios(rounds: list[list[dict]], num: str = "pml", den: str = "tiled") -> dict:
    """Per (loss, B, M): the time ratio ``num / den`` of each round of a repeated grid (rows
    of :func:`run_grid`, one list per round), so that a ratio comes with its spread across
    moments instead of one pair of runs. Rounds missing either time are left out.

    >>> row = {"loss": "triplet", "B": 8, "M": 8, "device": "cpu"}
    >>> rounds = [[{**row, "impl": "pml", "time_s": 30.0}, {**row, "impl": "tiled", "time_s": 2.0}],
    ...           [{**row, "impl": "pml", "time_s": 32.0}, {**row, "impl": "tiled", "time_s": 2.5}]]
    >>> round_ratios(rounds)
    {('triplet', 8, 8): [15.0, 12.8]}
    """
    out: dict = {}
    for rows in rounds:
        times = {(r["loss"], r["B"], r["M"], r["impl"]): r["time_s"] for r in rows}
        for key in dict.fromkeys((r["loss"], r["B"], r["M"]) for r in rows):
            a, b = times.get((*key, num)), times.get((*key, den))
            if a is not None and b:
                out.setdefault(key, []).append(a / b)
    return out


def format_table(rows: list[dict]) -> str:
    """A markdown table: per (loss, B, M) the time / memory of each implementation and the
    tiled path's ratios to PML and to dense."""
    keys = list(dict.fromkeys((r["loss"], r["B"], r["M"], r["device"]) for r in rows))
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    head = ["loss", "B", "M"] + [f"{i} s / MB" for i in impls] + [
        "PML / tiled time", "tiled / PML memory", "tiled / dense time"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def get(key, impl):
        return next((r for r in rows if (r["loss"], r["B"], r["M"], r["device"]) == key
                     and r["impl"] == impl), None)

    for key in keys:
        cells = [key[0], str(key[1]), str(key[2])]
        for impl in impls:
            r = get(key, impl)
            if r is None or r["time_s"] is None:
                cells.append("-" if r is None else f"({r['error']})")
            else:
                cells.append(f"{r['time_s']:.2f} s / {r['peak_mb']:.0f} MB")
        t, p, d = get(key, "tiled"), get(key, "pml"), get(key, "dense")
        ok = [x is not None and x["time_s"] is not None for x in (t, p, d)]
        cells.append(f"{p['time_s'] / t['time_s']:.1f}x" if ok[0] and ok[1] else "-")
        cells.append(f"{t['peak_mb'] / max(p['peak_mb'], 1e-9):.3f}" if ok[0] and ok[1]
                     else "-")
        cells.append(f"{t['time_s'] / d['time_s']:.2f}" if ok[0] and ok[2] else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def save_csv(rows: list[dict], path: str) -> None:
    """The rows as CSV, with the date and the machine."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    machine = f"{platform.machine()} {os.cpu_count()} CPUs"
    fields = ["date", "machine", "loss", "impl", "B", "M", "D", "chunk", "device", "time_s",
              "peak_mb", "error"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({"date": stamp, "machine": machine, **{k: r.get(k) for k in fields[2:]}})


def _worker(argv=None) -> None:
    """The measuring process: one JSON line per size."""
    p = argparse.ArgumentParser(prog="python -m dmlkit.scaling",
                                description="one measurement process (see dmlkit.scaling)")
    p.add_argument("--worker", required=True, choices=[*IMPLS, "interleaved"])
    p.add_argument("--impls", nargs="+", choices=list(IMPLS), default=None)
    p.add_argument("--loss", required=True, choices=list(CASES))
    p.add_argument("--sizes", type=int, nargs="+", required=True)
    p.add_argument("--refs", type=int, default=None)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--series", action="store_true")
    args = p.parse_args(argv)
    if args.worker == "interleaved":
        print(json.dumps(measure_interleaved(args.impls, args.loss, args.sizes[0], args.refs,
                                             args.dim, args.chunk, args.repeats,
                                             args.device)), flush=True)
        return
    base = None
    if args.series:     # the resident set once the libraries are loaded
        import torch  # noqa: F401

        from . import losses  # noqa: F401
        base = reset_peak_rss()
    for B in (args.sizes if args.series else args.sizes[:1]):
        res = measure(args.worker, args.loss, B, args.refs, args.dim, args.chunk,
                      args.repeats, args.device, base_rss=base)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    _worker()
