"""Large batches and memory banks: dense vs exact tiled pair losses vs PML (time, peak memory).

    python benchmarks/large_batch.py --quick                      # small sizes, a minute
    python benchmarks/large_batch.py --sizes 1024 4096 16384      # multi-similarity, D = 512
    python benchmarks/large_batch.py --losses triplet angular --sizes 4096
    python benchmarks/large_batch.py --sizes 65536 --impls tiled  # beyond dense memory
    python benchmarks/large_batch.py --sizes 256 --refs 262144 --impls tiled   # memory bank
    python benchmarks/large_batch.py ... --out results.csv        # also save the rows
    python benchmarks/large_batch.py --sizes 1024 4096 --impls dense auto --interleave --repeats 9
    python benchmarks/large_batch.py --sizes 16384 --impls pml tiled --rounds 3 --max-gb 21

The measuring code is :mod:`dmlkit.scaling` (notebook 11 calls it too): each (loss,
implementation, size) runs forward + backward in a fresh subprocess, so that the peak
resident-memory increase (CPU) is its own; on CUDA the peak allocated memory is read from
torch. Implementations: ``dense`` (chunk_size=None, the reference), ``tiled`` (chunk_size =
``--chunk``), ``auto`` (chunk_size="auto": dense within the budget of
``dmlkit.losses.tiling.auto_budget``) and ``pml`` (pytorch-metric-learning under the mapping
the tests prove equal). A run whose estimated memory exceeds ``--max-gb`` is skipped (the
development machine is shared); ratios are PML / dmlkit. ``--rounds N`` runs the whole grid N
times, one process after another, and prints the PML / tiled ratio of every round (its
spread across moments of a noisy host).
"""

from __future__ import annotations

import argparse
import statistics

from dmlkit import scaling


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384],
                   help="batch sizes B (default: 1024 4096 16384)")
    p.add_argument("--refs", type=int, default=None,
                   help="M references per batch (query-vs-reference; default: in-batch)")
    p.add_argument("--losses", nargs="+", default=["multi_similarity"],
                   choices=list(scaling.CASES))
    p.add_argument("--impls", nargs="+", default=list(scaling.IMPLS),
                   choices=list(scaling.IMPLS))
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=1024, help="tile side of 'tiled' (1024)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-gb", type=float, default=8.0,
                   help="skip runs estimated to need more memory (default 8)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--quick", action="store_true",
                   help="B = 256, 1024, D = 128, one repeat: a smoke run")
    p.add_argument("--out", default=None, help="also write the rows as CSV to this path")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the grid this many times and print each round's PML / tiled "
                        "time ratio (default 1)")
    p.add_argument("--interleave", action="store_true",
                   help="time the implementations in ONE process, their runs alternating "
                        "(ratios without process-to-process noise; no memory)")
    args = p.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.sizes, args.dim, args.repeats = [256, 1024], 128, 1
        args.chunk = min(args.chunk, 256)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"D = {args.dim}, tiles of {args.chunk}, median of {args.repeats} fwd+bwd")
    if args.interleave:
        impls = [i for i in args.impls if not (i == "pml" and any(
            scaling.CASES[n][1] is None for n in args.losses))]
        print("| loss | B | M | " + " | ".join(f"{i} s" for i in impls)
              + " | " + " | ".join(f"{i} / {impls[0]}" for i in impls[1:]) + " |")
        print("|---" * (3 + 2 * len(impls) - 1) + "|")
        for name in args.losses:
            for B in args.sizes:
                t = scaling.run_interleaved(impls, name, B, args.refs, args.dim, args.chunk,
                                            args.repeats, device)
                print(f"| {name} | {B} | {args.refs or B} | "
                      + " | ".join(f"{t[i]:.3f}" for i in impls) + " | "
                      + " | ".join(f"{t[i] / t[impls[0]]:.2f}" for i in impls[1:]) + " |",
                      flush=True)
        return
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    rounds = []
    for k in range(args.rounds):
        if args.rounds > 1:
            print(f"round {k + 1} of {args.rounds}")
        rounds.append(scaling.run_grid(args.losses, args.sizes, args.impls, args.refs,
                                       args.dim, args.chunk, args.repeats, device,
                                       args.max_gb))
        print()
        print(scaling.format_table(rounds[-1]))
    rows = [r for rows in rounds for r in rows]
    if args.rounds > 1:
        print("\nPML / tiled time per round:")
        for (name, B, M), ratios in scaling.round_ratios(rounds).items():
            print(f"  {name} B={B} M={M}: " + ", ".join(f"{x:.1f}x" for x in ratios)
                  + f" (median {statistics.median(ratios):.1f}x, min {min(ratios):.1f}x)")
    if args.out:
        scaling.save_csv(rows, args.out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
