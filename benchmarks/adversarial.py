"""DAML and DAML+SP next to their controls, and the ablation of what carries DAML's gain,
end to end on glyphs.

Every DAML / DAML+SP run of a preset ("dmlkit", "official", "pml") is paired with its control
(:mod:`dmlkit.adversarial.comparison`): the same call with the generator replaced by the
identity (and no generator objective), so both see the same negatives per anchor (real where
DAML puts synthetic ones), the same batches, schedule, steps, routing and learning rates.
``--ablation`` adds the runs of :mod:`dmlkit.adversarial.ablation` (DAML without J_adv, J_gen
kept out of the metric network, a parameter-free midpoint generator with DAML's terms, the
control plus the pull terms, the official design at its own trunk lr) and reports every run's
paired difference to its control with a 95 % t interval over the seeds and the verdict the
interval allows (:mod:`dmlkit.paired`). Every run shares: lr (1e-3; the official range
[1e-5, 1e-4] is too small for a few hundred steps), the trunk's lr factor (1: the trunk starts
from random weights; the presets' 1/1000 after warm-up is for a pretrained GoogLeNet), epochs,
warm-up, batches of P x K, embedding size; the overrides of each preset's own values are
printed. Reported: R@1, MAP@R, NMI on the unseen test classes (x100).

    python benchmarks/adversarial.py --ablation --workers 2     # about 50 min on 2 CPU cores
    python benchmarks/adversarial.py --ablation --save          # also rewrite the package's
                                          # saved table (dmlkit/resources/adversarial_ablation.csv:
                                          # what notebooks 06-07 and the README show)
    python benchmarks/adversarial.py --ablation --designs official --seeds 5   # one design
    python benchmarks/adversarial.py                  # presets vs controls only
    python benchmarks/adversarial.py --features random_cnn   # a head on frozen random-CNN features
    python benchmarks/adversarial.py --device cuda --epochs 40 --seeds 10   # on a GPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from dmlkit import paired, tasks
from dmlkit.adversarial import ablation, comparison

METRICS = ("recall@1", "map@r", "nmi")
SAVED = Path(__file__).resolve().parents[1] / "dmlkit" / "resources" / \
    ablation.ABLATION_RESOURCE


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="glyphs")
    ap.add_argument("--features", default="images", choices=("images", "random_cnn", "pixels"),
                    help="images: end to end (a SmallCNN trunk trained on the images); "
                         "random_cnn / pixels: a head on frozen features")
    ap.add_argument("--loss", default="triplet")
    ap.add_argument("--ablation", action="store_true",
                    help="the runs of dmlkit.adversarial.ablation instead of presets vs controls")
    ap.add_argument("--designs", default="official,pml,dmlkit",
                    help="--ablation: the presets whose DAML variants run")
    ap.add_argument("--sp-designs", default="official",
                    help="--ablation: the presets whose DAML+SP variants run ('' for none)")
    ap.add_argument("--own-trunk-lr", default="official",
                    help="--ablation: the presets also run at their own trunk lr factor")
    ap.add_argument("--workers", type=int, default=1, help="runs trained at once (processes)")
    ap.add_argument("--presets", default="dmlkit,official,pml")
    ap.add_argument("--methods", default="daml,daml+sp")
    ap.add_argument("--no-reference", action="store_true",
                    help="leave out the metric loss on every batch negative")
    ap.add_argument("--seeds", type=int, default=5)
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
                    help=f"write the per-seed table (default path, with --ablation: "
                         f"{SAVED.name} in the package resources)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    def names(text):
        return [x for x in text.split(",") if x]

    if args.ablation:
        runs, skipped = ablation.ablation_runs(names(args.designs), names(args.sp_designs),
                                               names(args.own_trunk_lr))
        presets = dict.fromkeys(r.preset for r in runs)
    else:
        if args.save == str(SAVED):
            ap.error("the package's saved table is the ablation's: add --ablation, or give "
                     "--save a path")
        runs, skipped = comparison.fair_runs(presets=names(args.presets),
                                             methods=names(args.methods),
                                             reference=not args.no_reference), []
        presets = names(args.presets)
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
                                      log=lambda line: print(line, flush=True),
                                      workers=args.workers, **common)
    frame.insert(0, "setting", f"{args.dataset}/{args.features}/{args.loss}")
    print(f"\n{args.dataset}, {args.features}, {args.loss}; {args.seeds} seeds; "
          f"shared settings: {common}; total {time.time() - t0:.0f} s\n")
    print("Shared settings that replace a preset's own value (a run's own settings, such as "
          "the '@ preset trunk lr' runs, win over them):")
    for line in comparison.overrides(common, presets):
        print(f"  {line}")
    print()
    print(render(comparison.summarize(frame, METRICS)))
    if args.ablation:
        table = ablation.ablation_table(frame, METRICS)
        print("\nPaired differences to the control (x100, 95 % t interval over the seeds):")
        for line in paired.verdict_lines(table):
            print(f"  {line}")
        for line in skipped:
            print(f"left out: {line}")
    print("\nEvery run's full configuration:")
    for name, cfg in frame.drop_duplicates("run")[["run", "config"]].itertuples(index=False):
        print(f"  {name}: {cfg}")
    if args.save:
        frame.to_csv(args.save, index=False, float_format="%.6g")
        print(f"saved {len(frame)} rows to {args.save}")


def render(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: metrics as mean +- sd, the paired difference to the
    control with its 95 % interval, the diagnostics, and the settings that tell runs apart."""
    head = ["run", "negatives per anchor in J_m", *METRICS, "cos same / diff",
            "centred same / diff", "offset / spread", "probe", "routing", "steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.to_dict(orient="records"):
        cells = [r["run"], r["negatives"]]
        for m in METRICS:
            cell = f"{r[m]:.1f} +- {r[m + ' sd']:.1f}"
            if r[m + " vs control"] == r[m + " vs control"]:      # not NaN
                cell += (f" ({r[m + ' vs control']:+.1f}, CI {r[m + ' low']:+.1f} to "
                         f"{r[m + ' high']:+.1f})")
            cells.append(cell)
        cells.append(f"{r['collapse_same']:.3f} / {r['collapse_different']:.3f}")
        cells.append(f"{r['centred_same']:.2f} / {r['centred_different']:.2f}")
        cells.append(f"{r['offset']:.2f} / {r['spread']:.2f}")
        probe = r["probe_accuracy"]
        cells.append("n/a" if probe != probe else f"{probe:.2f}")
        cells += [str(r["routing"]), str(r["steps"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("(in brackets: mean difference to the control with the same seed and its 95 % "
                 "t interval; centred: cosines after subtracting the mean embedding; offset / "
                 "spread: norm of the mean embedding / RMS norm of the residuals; probe: a "
                 "linear probe's held-out accuracy telling the metric's negatives, synthetic or "
                 "real, from real ones: 0.5 = indistinguishable)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
