"""DAML presets on a fair footing: frozen glyphs random-CNN features, triplet loss, 3 seeds.

Metric-only controls see one negative per anchor where DAML does (``metric_triples="sampled",
negatives_per_anchor=1``), the same batches, steps and learning rates; each row prints its
configuration. Run from the repository root: ``python benchmarks/adversarial_presets.py``.
"""

import json
import time

import numpy as np
import torch
from adversarial import load_features, standardise  # benchmarks/adversarial.py

from dmlkit import adversarial as adv
from dmlkit import evaluate

SEEDS = (0, 1, 2)
COMMON = dict(epochs=12, warmup_epochs=4, batches_per_epoch=25, P=8, K=4, embedding_dim=64)
RUNS = {
    "metric/dmlkit, 1 real neg, 1 pos (sampled)":
        ("metric", "dmlkit", dict(metric_triples="sampled", negatives_per_anchor=1)),
    "metric/dmlkit, all batch negatives": ("metric", "dmlkit", {}),
    "daml/dmlkit (1 synthetic neg)": ("daml", "dmlkit", {}),
    "metric/official control, lr 1e-4": ("metric", "official", {}),
    "daml/official, lr 1e-4": ("daml", "official", {}),
    "metric/official control, lr 1e-3": ("metric", "official", dict(lr=1e-3)),
    "daml/official, lr 1e-3": ("daml", "official", dict(lr=1e-3)),
    "daml/pml (real batch + 0.1 x synthetic)": ("daml", "pml", {}),
}
CONFIG_KEYS = ("preset", "method", "lr", "routing", "metric_triples", "negatives_per_anchor",
               "real_weight", "lam", "generator_weight", "generator_epochs", "warmup", "trunk")


def main() -> None:
    torch.set_num_threads(1)
    (xtr, ytr), (xte, yte) = load_features("glyphs", "random_cnn", "runs/features")
    xtr, xte = standardise(xtr.float(), xte.float())
    raw = evaluate.evaluate(xte, yte, metrics=["recall"], ks=(1,))["recall@1"]
    print(f"train {tuple(xtr.shape)} test {tuple(xte.shape)}; frozen features R@1 {100 * raw:.1f}")
    for name, (method, preset, kw) in RUNS.items():
        t0, r1, diag = time.time(), [], []
        for seed in SEEDS:
            res = adv.fit_adversarial(xtr, ytr, "triplet", method, preset=preset, seed=seed,
                                      diagnostics=True, **COMMON, **kw)
            m = evaluate.evaluate(res.embed(xte), yte, metrics=["recall"], ks=(1,), seed=seed)
            r1.append(100 * m["recall@1"])
            last = res.history[-1]
            diag.append((last["collapse_same"], last["collapse_different"],
                         last.get("probe_accuracy", float("nan"))))
        d = np.array(diag)
        probe = np.nanmean(d[:, 2]) if not np.all(np.isnan(d[:, 2])) else float("nan")
        print(f"{name:45s} R@1 {np.mean(r1):5.1f} +- {np.std(r1, ddof=1):4.1f}  cos same/diff "
              f"{d[:, 0].mean():.3f}/{d[:, 1].mean():.3f} probe {probe:.2f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        config = {k: res.config[k] for k in CONFIG_KEYS}
        print("    config:", json.dumps({**config, **COMMON, **kw}), flush=True)


if __name__ == "__main__":
    main()
