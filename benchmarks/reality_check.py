"""The reality check (Musgrave et al. 2020): every loss under one protocol, its hyper-parameters
tuned with Optuna on class-disjoint folds of the training classes, the best setting retrained
over seeds and scored on the unseen test classes, with paired 95 % intervals
(:mod:`dmlkit.reality`, :mod:`dmlkit.paired`).

    python benchmarks/reality_check.py                    # glyphs, small: a few minutes, 2 cores
    python benchmarks/reality_check.py --dataset fashion_mnist \\
        --dataset-param images_per_class=200             # real photos (5 training classes)
    python benchmarks/reality_check.py --trials 12 --seeds 5 --steps 80 --workers 2
    python benchmarks/reality_check.py ... --save         # rewrite the package's saved run
        # (dmlkit/resources/reality_check.csv + .json: what notebook 13 shows; with --dataset
        # fashion_mnist reality_check_fashion_mnist.csv + .json: notebook 10's own table)

Printed: each loss's best setting and validation score, the test MAP@R and R@1 (x100) with
their 95 % t intervals, every loss against the baseline (paired by seed) with the verdict its
interval allows, and the papers' claimed ordering beside the measured one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from dmlkit import paired, reality, tasks
from dmlkit.__main__ import _key_values

PACKAGE = Path(reality.__file__).parent
GLYPHS = {"num_classes": 24, "num_test_classes": 16, "images_per_class": 8, "size": 16,
          "difficulty": 0.3}


def build_task(dataset: str, params: dict) -> tuple[tasks.ImageTask, dict]:
    kwargs = {**GLYPHS, **params} if dataset == "glyphs" else dict(params)
    return tasks.image_task(dataset, **kwargs), {"name": dataset, **kwargs}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="glyphs",
                    help="an in-memory data set: glyphs (default), digits, fashion_mnist")
    ap.add_argument("--dataset-param", action="append", metavar="NAME=VALUE",
                    help="data set option, repeatable (glyphs defaults: "
                         + ", ".join(f"{k}={v}" for k, v in GLYPHS.items()) + ")")
    ap.add_argument("--losses", default=",".join(reality.DEFAULT_LOSSES))
    ap.add_argument("--baseline", default="contrastive", help="the loss the others are paired with")
    ap.add_argument("--trials", type=int, default=8, help="Optuna trials per loss")
    ap.add_argument("--folds", type=int, default=None,
                    help="class-disjoint validation folds (default 3, fewer when the task has "
                         "under 6 training classes)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 of the retrained runs")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--embedding-dim", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--study-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="losses handled at once (processes)")
    ap.add_argument("--save", nargs="?", const="package", default=None, metavar="CSV",
                    help="write the per-seed table and its configuration beside it (.json); "
                         "without CSV the package's saved run of the data set ("
                         + ", ".join(f"{k}: {v}" for k, v in reality.SAVED_RUNS.items()) + ")")
    args = ap.parse_args(argv)
    if args.save == "package":
        if args.dataset not in reality.SAVED_RUNS:
            ap.error(f"the package saves runs on {sorted(reality.SAVED_RUNS)}; give --save CSV")
        args.save = str(PACKAGE / reality.SAVED_RUNS[args.dataset])

    task, dataset = build_task(args.dataset, _key_values(args.dataset_param, "--dataset-param"))
    folds = args.folds
    if folds is None:
        folds = min(3, max(2, task.num_classes // 2))
        if folds < 3:
            print(f"{task.num_classes} training classes: {folds} validation folds")
    protocol = reality.Protocol(steps=args.steps, P=args.P, K=args.K, lr=args.lr,
                                embedding_dim=args.embedding_dim, width=args.width,
                                folds=folds, trials=args.trials, seeds=tuple(range(args.seeds)),
                                study_seed=args.study_seed)
    losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    print(task)
    print("protocol:", protocol.as_dict())
    t0 = time.perf_counter()
    result = reality.run(task, losses, protocol, workers=args.workers, log=print,
                         dataset=dataset)
    seconds = time.perf_counter() - t0

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(f"\ntest scores (x100), mean and 95 % t interval over {args.seeds} seeds:")
    print(reality.summarize(result.frame).round(1).to_string())
    print()
    table = paired.report(result.frame, baseline=args.baseline, metrics=("map@r", "recall@1"),
                          run="loss", scale=100, labels=reality.LABELS)
    print(table.to_string())
    print("\nthe papers' claimed ordering (CUB-200-2011 R@1) beside ours:")
    print(reality.orderings(result.frame).round(1).to_string())
    print(f"\n{seconds / 60:.1f} min")
    if args.save:
        csv, js = reality.save(result, args.save, command=" ".join(
            ["python", "benchmarks/reality_check.py", *(sys.argv[1:] if argv is None else argv)]),
            minutes=round(seconds / 60, 1))
        print(f"saved {csv} and {js}")


if __name__ == "__main__":
    main()
