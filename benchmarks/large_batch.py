"""Large batches and memory banks: dense vs exact tiled pair losses vs PML (time, peak memory).

    python benchmarks/large_batch.py --quick                      # small sizes, a minute
    python benchmarks/large_batch.py --sizes 1024 4096 16384      # multi-similarity, D = 512
    python benchmarks/large_batch.py --losses triplet --sizes 4096
    python benchmarks/large_batch.py --sizes 65536 --impls tiled  # beyond dense memory
    python benchmarks/large_batch.py --sizes 256 --refs 262144 --impls tiled   # memory bank
    python benchmarks/large_batch.py ... --out results.csv        # also save the rows

Each (loss, implementation, size) runs forward + backward in a fresh subprocess, so that the
peak resident-memory increase (CPU) is its own; on CUDA the peak allocated memory is read from
torch. Implementations: ``dense`` (chunk_size=None, the reference), ``tiled`` (chunk_size =
``--chunk``), ``auto`` (chunk_size="auto": dense within the budget of
``dmlkit.losses.tiling.auto_budget``) and ``pml`` (pytorch-metric-learning under the mapping
the tests prove equal). A run whose estimated memory exceeds ``--max-gb`` is skipped (the
development machine is shared); ratios are PML / dmlkit.
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

# loss -> (dmlkit kwargs, PML factory source). The mappings are those the tests prove.
CASES: dict[str, tuple[dict, str | None]] = {
    "multi_similarity": ({"alpha": 2.0, "beta": 50.0, "lam": 0.5, "epsilon": 0.1}, "MS"),
    "triplet": ({"margin": 0.05}, "losses.TripletMarginLoss(margin=0.05)"),
    "contrastive": ({"margin": 1.0, "form": "distance", "power": 1.0, "pos_margin": 0.0,
                     "reduction": "mean_nonzero"},
                    "losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)"),
    "binomial_deviance": ({}, None),
    "lifted_structure": ({"margin": 1.0}, "losses.LiftedStructureLoss(neg_margin=1.0)"),
}
IMPLS = ("dense", "tiled", "auto", "pml")
#: rough peak bytes per (B x M) pair, for skipping runs that cannot fit (measured at B = 4096)
BYTES_PER_PAIR = {"dense": 20, "auto": 20, "pml": 72, "tiled": 0}
#: PML losses that need more per pair (triplet over all triplets: 6.4 GB at B = 4096)
PML_BYTES_PER_PAIR = {"triplet": 400}


def estimated_gb(impl: str, name: str, B: int, M: int) -> float:
    """A rough peak memory estimate (GB) of one run, to skip what cannot fit."""
    if impl == "pml" and name in PML_BYTES_PER_PAIR:
        return PML_BYTES_PER_PAIR[name] * B * M / 1e9
    return BYTES_PER_PAIR[impl] * B * M / 1e9


def _make(impl: str, name: str, chunk):
    if impl == "pml":
        from pytorch_metric_learning import losses, miners

        src = CASES[name][1]
        if src == "MS":
            loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
            miner = miners.MultiSimilarityMiner(epsilon=0.1)
            return lambda e, y, *ref: loss(e, y, miner(e, y, *ref), *ref)
        loss = eval(src)
        return lambda e, y, *ref: loss(e, y, None, *ref)
    from dmlkit import losses

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


def _reset_peak_rss() -> int:
    """Reset the peak resident set (Linux: ``clear_refs`` 5) and return the current RSS in
    kB. ``ru_maxrss`` cannot be used alone: a child inherits the peak of the process that
    forked it (a notebook kernel, the benchmark driver), which would hide small runs."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kb("VmRSS") or 0
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kb() -> int:
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(impl: str, name: str, B: int, M: int | None, dim: int, chunk: int, repeats: int,
           device: str, base_rss: int | None = None) -> dict:
    """One measurement in this process: median forward + backward time and peak memory
    (the increase of the peak resident set over ``base_rss`` kB, default: the resident set
    just before the run)."""
    import torch

    torch.manual_seed(0)
    n_classes = max(B // 8, 2)                  # 8 images per class, as a P x K batch
    labels = (torch.arange(B) % n_classes).to(device)
    x = torch.randn(B, dim, device=device)
    ref = None
    if M is not None:
        ref = (torch.randn(M, dim, device=device), (torch.arange(M) % n_classes).to(device))
    fn = _make(impl, name, chunk)
    if hasattr(fn, "to"):
        fn = fn.to(device)
    current = _reset_peak_rss()
    base_rss = current if base_rss is None else base_rss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    warm = 1 if B * (M or B) <= 16384 ** 2 else 0       # beyond: cold runs only
    for r in range(repeats + warm):
        e = x.clone().requires_grad_(True)
        args = (e, labels) if ref is None else (e, labels, *ref)
        _sync(device)
        t0 = time.perf_counter()
        fn(*args).backward()
        _sync(device)
        if r >= warm:
            times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak_mb = (_peak_rss_kb() - base_rss) / 1024
    return {"time_s": statistics.median(times), "peak_mb": peak_mb}


def run_one(impl: str, name: str, B: int, M: int | None = None, dim: int = 512,
            chunk: int = 1024, repeats: int = 3, device: str = "cpu", timeout: float = 1800,
            max_gb: float = 8.0) -> dict:
    """One (loss, implementation, size) in a fresh subprocess; a dict row (``error`` set when
    it was skipped or failed)."""
    row = {"loss": name, "impl": impl, "B": B, "M": M if M is not None else B, "D": dim,
           "chunk": chunk if impl == "tiled" else "", "device": device, "time_s": None,
           "peak_mb": None, "error": ""}
    if impl == "pml" and CASES[name][1] is None:
        row["error"] = "no PML equivalent"
        return row
    need_gb = estimated_gb(impl, name, B, row["M"])
    if impl == "auto":
        need_gb = 0.0 if _auto_tiles(B, row["M"]) else need_gb
    if need_gb > max_gb:
        row["error"] = f"skipped: needs ~{need_gb:.0f} GB > --max-gb {max_gb:g}"
        return row
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--losses", name,
           "--sizes", str(B), "--dim", str(dim), "--chunk", str(chunk), "--repeats",
           str(repeats), "--device", device]
    if M is not None:
        cmd += ["--refs", str(M)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ})
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
    """Several ascending sizes of one implementation in ONE subprocess (a quick sweep, as
    the notebook runs it): the peak of each size is measured over the resident set once
    the libraries are loaded (memory a smaller size kept cached counts again)."""
    sizes = sorted(sizes)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--series",
           "--losses", name, "--sizes", *map(str, sizes), "--dim", str(dim), "--chunk",
           str(chunk), "--repeats", str(repeats), "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ})
    rows = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    for r, B in zip(rows, sizes):
        r.update(loss=name, impl=impl, B=B, M=B, D=dim, device="cpu", error="",
                 chunk=chunk if impl == "tiled" else "")
    return rows


def _auto_tiles(B: int, M: int) -> bool:
    import torch

    from dmlkit.losses.tiling import resolve_chunk_size

    return resolve_chunk_size("auto", B, M, torch.float32) is not None


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
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    machine = f"{platform.machine()} {os.cpu_count()} CPUs"
    fields = ["date", "machine", "loss", "impl", "B", "M", "D", "chunk", "device", "time_s",
              "peak_mb", "error"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({"date": stamp, "machine": machine, **{k: r.get(k) for k in fields[2:]}})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384],
                   help="batch sizes B (default: 1024 4096 16384)")
    p.add_argument("--refs", type=int, default=None,
                   help="M references per batch (query-vs-reference; default: in-batch)")
    p.add_argument("--losses", nargs="+", default=["multi_similarity"], choices=list(CASES))
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=1024, help="tile side of 'tiled' (1024)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-gb", type=float, default=8.0,
                   help="skip runs estimated to need more memory (default 8)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--quick", action="store_true",
                   help="B = 256, 1024, D = 128, one repeat: a smoke run")
    p.add_argument("--out", default=None, help="also write the rows as CSV to this path")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--series", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        base = None
        if args.series:   # the resident set once the libraries are loaded
            import importlib
            for module in ("torch", "dmlkit.losses"):
                importlib.import_module(module)
            base = _reset_peak_rss()
        for B in (args.sizes if args.series else args.sizes[:1]):
            res = worker(args.worker, args.losses[0], B, args.refs, args.dim, args.chunk,
                         args.repeats, args.device or "cpu", base_rss=base)
            print(json.dumps(res), flush=True)
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.sizes, args.dim, args.repeats = [256, 1024], 128, 1
        args.chunk = min(args.chunk, 256)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"D = {args.dim}, tiles of {args.chunk}, median of {args.repeats} fwd+bwd")
    rows = run_grid(args.losses, args.sizes, args.impls, args.refs, args.dim, args.chunk,
                    args.repeats, device, args.max_gb)
    print()
    print(format_table(rows))
    if args.out:
        save_csv(rows, args.out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
