"""Benchmark: dmlkit.evaluate's full metric set vs pytorch-metric-learning's AccuracyCalculator.

On SOP-like random data (class centres + noise, 2-8 images per class like Stanford Online
Products' 5.3 on average, D = 512, L2-normalised) this times, in separate processes so that peak
memory is measured per method:

* ours: ``evaluate.evaluate(x, y, preset="sop")`` = Recall@{1,10,100,1000}, MAP@R, R-precision,
  NMI and pair F1 (k-means with K = number of classes);
* PML: ``AccuracyCalculator(include=("precision_at_1", "r_precision",
  "mean_average_precision_at_r", "NMI"), k="max_bin_count")`` on the same data.

and, for the clustering alone (NMI + F1, K = number of classes, one k-means run):

* ``evaluate.clustering_metrics(x, y, init="k-means++")`` (the default) and
  ``init="random"`` (faiss's / PML's convention, dmlkit's default before k-means++);
* PML: ``AccuracyCalculator(include=("NMI",))`` (faiss k-means, niter 20, random init).

It prints wall and CPU time (CPU seconds are the fairer figure on a shared machine), peak
resident memory (and the increase over the process after the data
was built), the ratio PML / ours, and checks that the shared metrics agree (precision@1 =
recall@1, R-precision, MAP@R exactly; NMI differs because the k-means runs differ). On a CUDA
machine it also runs both on the GPU (peak = torch.cuda.max_memory_allocated).

    python benchmarks/evaluate.py                      # N = 20,000 and 60,000
    python benchmarks/evaluate.py --sizes 5000 --pml-timeout 300
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def make_data(n: int, dim: int, sigma: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, size=n // 2 + 1)
    labels = np.repeat(np.arange(sizes.size), sizes)[:n].astype(np.int64)
    centres = rng.standard_normal((sizes.size, dim), dtype=np.float32)
    x = centres[labels] + sigma * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def worker(method: str, n: int, dim: int, sigma: float, device: str, threads: int) -> dict:
    import faiss
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)

    x, labels = make_data(n, dim, sigma)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    if device == "cuda":
        xt, yt = xt.cuda(), yt.cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if method == "ours":
        from dmlkit import evaluate

        base, cpu0 = _rss_mb(), _cpu_s()
        t0 = time.perf_counter()
        res = evaluate.evaluate(xt, yt, preset="sop", seed=0)
    elif method in ("kmeans++", "random"):
        from dmlkit import evaluate

        init = "k-means++" if method == "kmeans++" else "random"
        base, cpu0 = _rss_mb(), _cpu_s()
        t0 = time.perf_counter()
        res = evaluate.clustering_metrics(xt, yt, seed=0, init=init)
    elif method == "pml-nmi":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("NMI",), device=torch.device(device))
        base, cpu0 = _rss_mb(), _cpu_s()
        t0 = time.perf_counter()
        res = calc.get_accuracy(xt, yt)
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(
            include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
            k="max_bin_count", device=torch.device(device))
        base, cpu0 = _rss_mb(), _cpu_s()
        t0 = time.perf_counter()
        res = calc.get_accuracy(xt, yt)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "cpu_seconds": _cpu_s() - cpu0, "rss_mb": _rss_mb(),
           "rss_increase_mb": _rss_mb() - base, "classes": int(np.unique(labels).size),
           "result": {k: float(v) for k, v in res.items()}}
    if device == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_worker(method, n, dim, sigma, device, timeout, threads):
    cmd = [sys.executable, __file__, "--worker", method, "--sizes", str(n), "--dim", str(dim),
           "--sigma", str(sigma), "--device", device, "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clustering_rows(n, args, device) -> None:
    """Time the clustering alone: k-means++ and random init (ours), faiss via PML."""
    print("  clustering alone (NMI + F1, one k-means run, K = #classes):")
    for name, method in (("k-means++ (ours)", "kmeans++"), ("random (ours)", "random"),
                         ("PML NMI (faiss)", "pml-nmi")):
        if method == "pml-nmi" and args.skip_pml:
            continue
        r = run_worker(method, n, args.dim, args.sigma, device, args.ours_timeout, args.threads)
        if "error" in r:
            print(f"    {name:17s}: {r['error']}")
            continue
        vals = ", ".join(f"{k}={v:.4f}" for k, v in r["result"].items())
        print(f"    {name:17s}: {r['seconds']:8.2f} s wall, {r['cpu_seconds']:8.2f} s CPU, "
              f"+{r['rss_increase_mb']:.0f} MB; {vals}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 60000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--sigma", type=float, default=2.5, help="noise / centre scale")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--pml-timeout", type=float, default=1200.0)
    ap.add_argument("--ours-timeout", type=float, default=1200.0)
    ap.add_argument("--skip-pml", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for torch and faiss in both workers (0: their default); "
                         "1 makes CPU seconds comparable on a busy machine")
    ap.add_argument("--skip-clustering", action="store_true",
                    help="do not time the clustering alone (both inits and PML's NMI)")
    ap.add_argument("--worker", choices=["ours", "pml", "kmeans++", "random", "pml-nmi"],
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.sizes[0], args.dim, args.sigma, args.device,
                                args.threads)))
        return
    import torch

    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device])
    threads = args.threads or torch.get_num_threads()
    print(f"threads per worker: {threads}, devices: {devices}")
    for device in devices:
        for n in args.sizes:
            ours = run_worker("ours", n, args.dim, args.sigma, device, args.ours_timeout,
                              args.threads)
            pml = ({"error": "skipped"} if args.skip_pml else
                   run_worker("pml", n, args.dim, args.sigma, device, args.pml_timeout,
                              args.threads))
            print(f"\n== N = {n:,}, D = {args.dim}, device = {device}, "
                  f"classes = {ours.get('classes', '?')}")
            for name, r in (("dmlkit full set", ours), ("PML subset", pml)):
                if "error" in r:
                    print(f"  {name:16s}: {r['error']}")
                    continue
                gpu = f", GPU peak {r['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in r else ""
                print(f"  {name:16s}: {r['seconds']:8.2f} s wall, {r['cpu_seconds']:8.2f} s CPU, "
                      f"peak RSS {r['rss_mb']:7.0f} MB "
                      f"(+{r['rss_increase_mb']:.0f} MB over data){gpu}")
                print("    " + ", ".join(f"{k}={v:.4f}" for k, v in r["result"].items()))
            if "error" not in ours and "error" not in pml:
                print(f"  time ratio PML / dmlkit: {pml['seconds'] / ours['seconds']:.2f}x wall, "
                      f"{pml['cpu_seconds'] / ours['cpu_seconds']:.2f}x CPU")
                o, p = ours["result"], pml["result"]
                pairs = [("recall@1", "precision_at_1"), ("r_precision", "r_precision"),
                         ("map@r", "mean_average_precision_at_r")]
                diff = max(abs(o[a] - p[b]) for a, b in pairs)
                print(f"  max |ours - PML| over recall@1/R-precision/MAP@R: {diff:.2e}; "
                      f"NMI {o['nmi']:.4f} vs {p['NMI']:.4f} (different k-means runs)")
            if not args.skip_clustering:
                _clustering_rows(n, args, device)


if __name__ == "__main__":
    main()
