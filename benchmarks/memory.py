"""Cross-batch memory: step time and peak memory against the memory size, dmlkit (dense and
tiled) and PML.

    python benchmarks/memory.py                       # B = 128 (32 x 4), D = 512, CPU
    python benchmarks/memory.py --memory 0 1024 8192 --loss contrastive --repeats 5
    python benchmarks/memory.py --impl dmlkit tiled --memory 65536 262144   # tiles of 1024

One step = forward + backward of the multi-similarity loss (VTHM mining; PML: its
``MultiSimilarityMiner``) of a batch against a FULL memory (the ring is filled with random
embeddings before timing); memory size 0 is the plain in-batch loss. Peak memory: the increase
of the peak resident set over filling and timing (the ring itself included;
:func:`dmlkit.scaling.reset_peak_rss`). Each
(implementation, size) runs in a fresh subprocess so that the peak resident-memory increase
(CPU) is its own; on CUDA the peak allocated memory is read from torch. "dmlkit" computes the
memory loss densely (the (B, M) S and masks), "tiled" in exact tiles of 1024
(``chunk_size=1024``; each query's own slot leaves its positives through the tiles' slots).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

LOSSES = {  # dmlkit kwargs, PML factory: the mappings tests/test_memory.py proves equal
    "multi_similarity": ({}, "MS"),
    "contrastive": ({"margin": 0.5, "power": 1, "reduction": "mean_nonzero"},
                    "losses.ContrastiveLoss(pos_margin=0, neg_margin=0.5)"),
    "triplet": ({"margin": 0.1}, "losses.TripletMarginLoss(margin=0.1)"),
}


def _build(impl: str, loss_name: str, memory: int, dim: int):
    kwargs, pml_source = LOSSES[loss_name]
    if impl in ("dmlkit", "tiled"):
        from dmlkit import losses
        from dmlkit.memory import CrossBatchMemory

        loss = losses.build(loss_name, **kwargs,
                            **({"chunk_size": 1024} if impl == "tiled" else {}))
        return loss if memory == 0 else CrossBatchMemory(loss, dim, memory)
    from pytorch_metric_learning import losses, miners

    miner = miners.MultiSimilarityMiner(epsilon=0.1) if pml_source == "MS" else None
    loss = (losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5) if pml_source == "MS"
            else eval(pml_source))
    if memory == 0:
        return (lambda e, y: loss(e, y, miner(e, y))) if miner else loss
    return losses.CrossBatchMemory(loss, dim, memory_size=memory, miner=miner)


def worker(impl: str, loss_name: str, memory: int, P: int, K: int, dim: int, repeats: int,
           device: str) -> dict:
    import torch

    torch.manual_seed(0)
    B = P * K
    from dmlkit.scaling import peak_rss_kb, reset_peak_rss

    _build(impl, loss_name, 0, dim)     # imports and first kernels before the baseline
    rss0 = reset_peak_rss()
    fn = _build(impl, loss_name, memory, dim)
    if hasattr(fn, "to"):
        fn = fn.to(device)
    labels = torch.arange(P, device=device).repeat_interleave(K)

    def step():
        x = torch.randn(B, dim, device=device, requires_grad=True)
        y = labels + P * torch.randint(0, 50, (1,), device=device)   # 50 P classes in turn
        fn(x, y).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(memory // B + 1):              # fill the ring directly (no loss steps)
        x = torch.randn(B, dim, device=device)
        y = labels + P * (i % 50)
        if impl in ("dmlkit", "tiled") and memory:
            fn.enqueue(x, y)
        elif memory:
            fn.add_to_memory(x, y, B)
    step()                                         # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda"
            else (peak_rss_kb() - rss0) / 1024)
    return {"impl": impl, "memory": memory, "ms": 1e3 * statistics.median(times),
            "peak_mb": peak}


def run(impl, loss_name, memory, P, K, dim, repeats, device) -> dict:
    args = [sys.executable, __file__, "--worker", impl, loss_name, str(memory), str(P), str(K),
            str(dim), str(repeats), device]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        impl, name, memory, P, K, dim, repeats, device = sys.argv[2:10]
        print(json.dumps(worker(impl, name, int(memory), int(P), int(K), int(dim),
                                int(repeats), device)))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory", type=int, nargs="+", default=[0, 1024, 4096, 16384, 65536])
    p.add_argument("--loss", default="multi_similarity", choices=sorted(LOSSES))
    p.add_argument("--P", type=int, default=32)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", nargs="+", default=["dmlkit", "tiled", "pml"])
    args = p.parse_args(argv)
    print(f"{args.loss}, B = {args.P} x {args.K}, D = {args.dim}, {args.device}, median of "
          f"{args.repeats} steps against a full memory")
    print("| memory | " + " | ".join(f"{i} ms | {i} MB" for i in args.impl) + " |")
    print("|---|" + "---|---|" * len(args.impl))
    for memory in args.memory:
        cells = []
        for impl in args.impl:
            r = run(impl, args.loss, memory, args.P, args.K, args.dim, args.repeats,
                    args.device)
            cells += [f"{r['ms']:.1f}", f"{r['peak_mb']:.0f}"]
        print(f"| {memory} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
