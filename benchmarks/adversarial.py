"""DAML and DAML+SP, each preset next to its control, end to end on glyphs (3 seeds).

Every DAML / DAML+SP run of a preset ("dmlkit", "official", "pml") is paired with its control
(:mod:`dmlkit.adversarial.comparison`): the same call with the generator replaced by the
identity, so both see the same negatives per anchor (real where DAML puts synthetic ones), the
same batches, schedule, steps, routing and learning rates. The reference "metric/every
negative" is the plain loss on every batch negative (not a fair control of any DAML run).
Every run shares: lr (1e-3; official range [1e-5, 1e-4] is too small for a few hundred steps),
the trunk's lr factor (1: the trunk starts from random weights, there is no pretrained trunk
to protect; the presets' 1/1000 after warm-up is for a pretrained GoogLeNet), epochs,
warm-up, batches of P x K, embedding size. Reported: R@1, MAP@R, NMI on the unseen test
classes (x100, mean +- sd over seeds, and the mean paired difference to the control), the
last epoch's diagnostics, and each run's configuration.

    python benchmarks/adversarial.py                  # about 6 min on 2 CPU cores
    python benchmarks/adversarial.py --save           # also rewrite the package's saved table
                                                      # (dmlkit/resources/adversarial_benchmark.csv:
                                                      # what notebooks 06-07 and the README show)
    python benchmarks/adversarial.py --features random_cnn   # a head on frozen random-CNN features
    python benchmarks/adversarial.py --device cuda --epochs 40 --seeds 5   # on a GPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from dmlkit import tasks
from dmlkit.adversarial import comparison

METRICS = ("recall@1", "map@r", "nmi")
SAVED = Path(__file__).resolve().parents[1] / "dmlkit" / "resources" / \
    comparison.BENCHMARK_RESOURCE


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="glyphs")
    ap.add_argument("--features", default="images", choices=("images", "random_cnn", "pixels"),
                    help="images: end to end (a SmallCNN trunk trained on the images); "
                         "random_cnn / pixels: a head on frozen features")
    ap.add_argument("--loss", default="triplet")
    ap.add_argument("--presets", default="dmlkit,official,pml")
    ap.add_argument("--methods", default="daml,daml+sp")
    ap.add_argument("--no-reference", action="store_true",
                    help="leave out the metric loss on every batch negative")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--warmup-epochs", type=int, default=4)
    ap.add_argument("--batches-per-epoch", type=int, default=25)
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--embedding-dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--trunk-lr-factor", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: deterministic and fastest for these sizes)")
    ap.add_argument("--save", nargs="?", const=str(SAVED), default=None, metavar="CSV",
                    help=f"write the per-seed table (default path: {SAVED.name} in the "
                         "package resources)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    runs = comparison.fair_runs(presets=args.presets.split(","),
                                methods=args.methods.split(","),
                                reference=not args.no_reference)
    common = dict(epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                  batches_per_epoch=args.batches_per_epoch, P=args.P, K=args.K,
                  embedding_dim=args.embedding_dim, lr=args.lr,
                  trunk_lr_factor=args.trunk_lr_factor, device=args.device)
    features = None
    if args.features != "images":
        features = tasks.load_features(args.dataset, args.features)
        print(f"frozen {args.features} features: train {tuple(features[0][0].shape)}, "
              f"test {tuple(features[1][0].shape)}")
    frame = comparison.run_comparison(runs, seeds=range(args.seeds), dataset=args.dataset,
                                      loss=args.loss, features=features, metrics=METRICS,
                                      log=lambda line: print(line, flush=True), **common)
    frame.insert(0, "setting", f"{args.dataset}/{args.features}/{args.loss}")
    print(f"\n{args.dataset}, {args.features}, {args.loss}; {args.seeds} seeds; "
          f"shared settings: {common}; total {time.time() - t0:.0f} s\n")
    print(render(comparison.summarize(frame, METRICS)))
    print("\nEvery run's full configuration:")
    for name, cfg in frame.drop_duplicates("run")[["run", "config"]].itertuples(index=False):
        print(f"  {name}: {cfg}")
    if args.save:
        frame.to_csv(args.save, index=False, float_format="%.6g")
        print(f"saved {len(frame)} rows to {args.save}")


def render(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: metrics as mean +- sd (paired difference to the
    control), diagnostics, and the settings that tell the runs apart."""
    head = ["run", "negatives per anchor in J_m", *METRICS, "cos same / diff", "probe",
            "routing", "steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.to_dict(orient="records"):
        cells = [r["run"], r["negatives"]]
        for m in METRICS:
            cell = f"{r[m]:.1f} +- {r[m + ' sd']:.1f}"
            if r[m + " vs control"] == r[m + " vs control"]:      # not NaN
                cell += f" ({r[m + ' vs control']:+.1f})"
            cells.append(cell)
        cells.append(f"{r['collapse_same']:.3f} / {r['collapse_different']:.3f}")
        probe = r["probe_accuracy"]
        cells.append("-" if probe != probe else f"{probe:.2f}")
        cells += [str(r["routing"]), str(r["steps"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("(in brackets: mean difference to the control with the same seed; probe: a "
                 "linear probe's held-out accuracy telling the metric's negatives, synthetic "
                 "or real, from real ones: 0.5 = indistinguishable)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
