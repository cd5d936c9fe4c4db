"""Forward+backward time and peak memory of every dmlkit loss against its PML equivalent.

    python benchmarks/losses.py                 # B = 128, 512, 1024; D = 512; CPU (+ CUDA)
    python benchmarks/losses.py --sizes 256 --losses triplet multi_similarity --repeats 3

Each (loss, implementation) runs in a fresh subprocess so that the peak resident-memory
increase (CPU) is that loss's own; on CUDA the peak allocated memory is read from torch.
Ratios are PML time / dmlkit time (> 1 means dmlkit is faster). PML is the reference
implementation under the parameter mapping that the tests prove equal (tests/test_*losses*).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# name -> (dmlkit kwargs, PML factory source or None). The mappings are those the tests prove.
CASES: dict[str, tuple[dict, str | None]] = {
    "contrastive": ({"margin": 1.0, "form": "distance", "power": 1.0, "pos_margin": 0.0,
                     "reduction": "mean_nonzero"},
                    "losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)"),
    "triplet": ({"margin": 0.05}, "losses.TripletMarginLoss(margin=0.05)"),
    "lifted_structure": ({"margin": 1.0}, "losses.LiftedStructureLoss(neg_margin=1.0)"),
    "generalized_lifted_structure": (
        {"lam": 1.0, "form": "distance"},
        "losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)"),
    "npair": ({"l2_reg": 0.0, "normalize": True}, "losses.NPairsLoss()"),
    "angular": ({"alpha": 40.0}, "losses.AngularLoss(alpha=40)"),
    "multi_similarity": ({"alpha": 2.0, "beta": 50.0, "lam": 0.5, "epsilon": 0.1},
                         "MS"),
    "binomial_deviance": ({}, None),
    "npair_ovo": ({}, None),
    "tuplet": ({}, None),
    "ddml": ({}, None),
    "raw": ({}, None),
    "vthm": ({}, None),
    "raw+semihard": ({}, None),
    "raw+distance_weighted": ({"seed": 0}, None),
    "osm_caa": ({"num_classes": None, "embedding_dim": None}, None),
}


def _make_pml(source: str):
    from pytorch_metric_learning import losses, miners

    if source == "MS":
        loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
        miner = miners.MultiSimilarityMiner(epsilon=0.1)
        return lambda e, y: loss(e, y, miner(e, y))
    return eval(source)


def _make_ours(name: str, kwargs: dict, n_classes: int, dim: int):
    from dmlkit import losses

    kwargs = dict(kwargs)
    if name == "osm_caa":
        kwargs.update(num_classes=n_classes, embedding_dim=dim)
    return losses.build(name, **kwargs)


def _sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def worker(impl: str, name: str, sizes: list[int], dim: int, repeats: int, device: str) -> None:
    import torch

    torch.manual_seed(0)
    kwargs, pml_src = CASES[name]
    for B in sizes:
        n_classes = max(B // 8, 2)  # 8 images per class, as in a P x K batch
        labels = (torch.arange(B) % n_classes).to(device)
        x = torch.randn(B, dim, device=device)
        if impl == "pml":
            fn = _make_pml(pml_src)
        else:
            module = _make_ours(name, kwargs, n_classes, dim).to(device)
            fn = module
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        try:
            for r in range(repeats + 1):
                e = x.clone().requires_grad_(True)
                _sync(device)
                t0 = time.perf_counter()
                fn(e, labels).backward()
                _sync(device)
                if r > 0:  # the first run warms up
                    times.append(time.perf_counter() - t0)
        except RuntimeError as exc:  # e.g. out of memory: report it, keep the smaller sizes
            print(json.dumps({"B": B, "error": str(exc).splitlines()[0][:120]}), flush=True)
            return
        if device == "cuda":
            peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
        print(json.dumps({"B": B, "time": statistics.median(times), "peak_mb": peak_mb}),
              flush=True)


def run_case(impl, name, sizes, dim, repeats, device):
    cmd = [sys.executable, __file__, "--worker", impl, "--losses", name, "--dim", str(dim),
           "--repeats", str(repeats), "--device", device, "--sizes", *map(str, sizes)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if out.returncode != 0:
        return {}, out.stderr.strip().splitlines()[-1] if out.stderr else "failed"
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["B"]: r for r in rows}, None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 1024])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--losses", nargs="+", default=list(CASES))
    p.add_argument("--device", default=None, help="cpu, cuda, or both when omitted")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.losses[0], args.sizes, args.dim, args.repeats, args.device)
        return
    import torch

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available()
                                                          else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, D = {args.dim}, "
          f"median of {args.repeats} forward+backward runs")
    for device in devices:
        print(f"\n== {device} ==")
        print(f"{'loss':30s} {'B':>5s} {'dmlkit s':>10s} {'PML s':>10s} {'speed-up':>9s} "
              f"{'dmlkit MB':>10s} {'PML MB':>9s}")
        for name in args.losses:
            ours, err = run_case("ours", name, args.sizes, args.dim, args.repeats, device)
            if err:
                print(f"{name:30s} dmlkit failed: {err}")
                continue
            pml, perr = ({}, None)
            if CASES[name][1] is not None:
                pml, perr = run_case("pml", name, args.sizes, args.dim, args.repeats, device)
            for B in args.sizes:
                o = ours.get(B, {"error": "missing"})
                if "error" in o:
                    print(f"{name:30s} {B:5d} dmlkit failed: {o['error']}")
                    continue
                if B in pml and "error" not in pml[B]:
                    q = pml[B]
                    print(f"{name:30s} {B:5d} {o['time']:10.4f} {q['time']:10.4f} "
                          f"{q['time'] / o['time']:8.1f}x {o['peak_mb']:10.1f} {q['peak_mb']:9.1f}")
                else:
                    perr = pml.get(B, {}).get("error", perr)
                    why = "no PML equivalent" if CASES[name][1] is None else f"PML failed: {perr}"
                    print(f"{name:30s} {B:5d} {o['time']:10.4f} {'-':>10s} {'-':>9s} "
                          f"{o['peak_mb']:10.1f} {'-':>9s}   ({why})")


if __name__ == "__main__":
    main()
