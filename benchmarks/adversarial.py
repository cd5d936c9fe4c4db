"""Metric-only vs DAML vs DAML+SP, for contrastive / triplet / lifted / N-pair, on cached features.

Each (loss, method, seed) trains a 2-layer metric head (and, for DAML, the generator(s)) with
:func:`dmlkit.adversarial.fit_adversarial` on frozen features of the training classes and
evaluates R@1 / NMI / F1 / MAP@R on the unseen test classes (class-disjoint). Prints one row
per (loss, method): mean +- std over seeds, and the DAML-minus-metric difference.

Features (``--features``):
  * ``random_cnn`` (default): dmlkit's SmallCNN with RANDOM weights (no pretrained weights are
    reachable offline), global-pooled 128-d, extracted once with
    :func:`dmlkit.train.extract_features` and cached under ``--cache-dir``;
  * ``pixels``: raw pixels (digits: 64-d).
Features are standardised with the training statistics and L2-normalised (the official DAML
generator works on unit-norm 512-d embeddings, which keeps J_hard / J_reg on the scale of J_adv).

Deviation from the official schedule at this scale: the generator learns at the head's lr
(``--generator-lr-factor 1``; official 1/10) and has ``--generator-epochs`` alone before joint
training, because the whole run is a few hundred steps. Everything else is the default of
fit_adversarial (lambda1 = lambda2 = 1, alpha = 1, alpha_sign = -1, one synthetic negative per
anchor for triplet / contrastive, all of them for lifted, Sohn's pairing for N-pair).

    python benchmarks/adversarial.py                       # glyphs, 3 seeds (about 2 min, 2 CPUs)
    python benchmarks/adversarial.py --dataset digits --features pixels --seeds 5 --P 5
    python benchmarks/adversarial.py --device cuda --epochs 60 --seeds 5   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from dmlkit import adversarial, evaluate

LOSSES = {"contrastive": "contrastive", "triplet": "triplet", "lifted": "lifted_structure",
          "npair": "npair"}
METRICS = ("recall@1", "nmi", "f1", "map@r")


def load_features(dataset: str, features: str, cache_dir: str):
    if features == "pixels":
        from dmlkit import data

        out = []
        for split in ("train", "test"):
            ds = data.load_dataset(dataset, split)
            x = torch.stack([ds[i][0].reshape(-1) for i in range(len(ds))]).float()
            out.append((x, torch.as_tensor(np.asarray(ds.labels))))
        return out
    if features != "random_cnn":
        raise ValueError(f"unknown features {features!r}; known: random_cnn, pixels")
    from dmlkit import data, models, train

    # ONE random backbone for both splits (extract_features("small_cnn", pretrained=False)
    # would build a new random network per call); seed 0 is in the cache key.
    torch.manual_seed(0)
    channels = data.load_dataset(dataset, "train")[0][0].shape[0]
    backbone = models.SmallCNN(in_channels=channels)
    return [train.extract_features(backbone, dataset, split=split, cache_dir=cache_dir,
                                   key=f"{dataset}-{split}-small_cnn-random-seed0",
                                   progress=False)
            for split in ("train", "test")]


def standardise(train_x: torch.Tensor, test_x: torch.Tensor):
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    return F.normalize((train_x - mu) / sd, dim=1), F.normalize((test_x - mu) / sd, dim=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="glyphs")
    ap.add_argument("--features", default="random_cnn", choices=("random_cnn", "pixels"))
    ap.add_argument("--cache-dir", default="runs/features")
    ap.add_argument("--losses", default="contrastive,triplet,lifted,npair")
    ap.add_argument("--methods", default="metric,daml,daml+sp")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--warmup-epochs", type=int, default=4)
    ap.add_argument("--generator-epochs", type=int, default=2)
    ap.add_argument("--batches-per-epoch", type=int, default=25)
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--embedding-dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--generator-lr-factor", type=float, default=1.0)
    ap.add_argument("--lambda1", type=float, default=1.0)
    ap.add_argument("--lambda2", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--alpha-sign", type=int, default=-1)
    ap.add_argument("--head", default="mlp", choices=("mlp", "linear"))
    ap.add_argument("--lifted-negatives", type=int, default=8,
                    help="synthetic negatives per anchor for lifted structure (0: all of them, "
                         "the library default; capped by default to keep the CPU run short)")
    ap.add_argument("--normalize-synthetic", action="store_true",
                    help="L2-normalise the generator output (the features are unit-norm)")
    ap.add_argument("--keep-real-negatives", action="store_true",
                    help="keep the real negatives in J_m next to the synthetic ones")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest for these small matrices)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    (xtr, ytr), (xte, yte) = load_features(args.dataset, args.features, args.cache_dir)
    xtr, xte = standardise(xtr.float(), xte.float())
    n_tr, n_te = len(torch.unique(ytr)), len(torch.unique(yte))
    print(f"{args.dataset} / {args.features}: train {tuple(xtr.shape)} ({n_tr} classes), "
          f"test {tuple(xte.shape)} ({n_te} classes); features in {time.time() - t0:.0f}s")
    raw = evaluate.evaluate(xte, yte, metrics=["recall", "map@r", "nmi", "f1"], ks=(1,))
    print("frozen features, no head: " + "  ".join(f"{m} {100 * raw[m]:.1f}" for m in METRICS))
    losses = [s.strip() for s in args.losses.split(",")]
    methods = [s.strip() for s in args.methods.split(",")]
    results: dict[tuple[str, str], list[dict]] = {}
    for loss in losses:
        for method in methods:
            rows = []
            t1 = time.time()
            for seed in range(args.seeds):
                res = adversarial.fit_adversarial(
                    xtr, ytr, LOSSES.get(loss, loss), method, embedding_dim=args.embedding_dim,
                    epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                    generator_epochs=args.generator_epochs,
                    batches_per_epoch=args.batches_per_epoch, P=args.P, K=args.K, lr=args.lr,
                    generator_lr_factor=args.generator_lr_factor, lambda1=args.lambda1,
                    lambda2=args.lambda2, alpha=args.alpha, alpha_sign=args.alpha_sign,
                    seed=seed, device=args.device, head=args.head,
                    normalize_synthetic=args.normalize_synthetic,
                    keep_real_negatives=args.keep_real_negatives,
                    negatives_per_anchor=(args.lifted_negatives if loss == "lifted"
                                          and args.lifted_negatives > 0 else "auto"))
                emb = res.embed(xte)
                m = evaluate.evaluate(emb, yte, metrics=["recall", "map@r", "nmi", "f1"],
                                      ks=(1,), seed=seed)
                rows.append({k: 100.0 * float(m[k]) for k in METRICS})
            results[(loss, method)] = rows
            print(f"  {loss:12s} {method:8s} done in {time.time() - t1:5.1f}s", flush=True)
    print(f"\nclass-disjoint test, {args.seeds} seeds, mean +- std (x100); "
          f"{args.epochs} epochs ({args.warmup_epochs} metric warm-up, then "
          f"{args.generator_epochs} generator-only for DAML) x {args.batches_per_epoch} batches "
          f"of {args.P}x{args.K}; head {args.head}; total {time.time() - t0:.0f}s")
    header = "| loss | method | " + " | ".join(METRICS) + " |"
    print(header)
    print("|" + "---|" * (len(METRICS) + 2))
    for (loss, method), rows in results.items():
        cells = []
        for k in METRICS:
            v = np.array([r[k] for r in rows])
            cell = f"{v.mean():.1f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"
            base = results.get((loss, "metric"))
            if method != "metric" and base is not None:
                d = v - np.array([r[k] for r in base])    # paired by seed
                cell += f" ({d.mean():+.1f})"
            cells.append(cell)
        print(f"| {loss} | {method} | " + " | ".join(cells) + " |")
    print("(in brackets: mean paired difference to metric-only with the same seed)")


if __name__ == "__main__":
    main()
