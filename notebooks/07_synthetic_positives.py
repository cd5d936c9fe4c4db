# %% [markdown]
# # 07 · Synthetic positives (seed 001) on top of DAML
#
# Seed 001 extends DAML with a **positive generator**: a synthetic positive $g^+$ between the
# anchor and the real positive,
#
# $$J^+_{gen} = \sum_i \lVert g^+_i - x_i\rVert^2 + \lambda_1 \lVert g^+_i - x^+_i\rVert^2,$$
#
# and the negative generator then reads $(x, g^+, x^-)$ and makes its negative hard with respect
# to the synthetic positive:
#
# $$J^-_{gen} = \sum_i \lVert g^-_i - x_i\rVert^2 + \lambda_1 \lVert g^-_i - x^-_i\rVert^2
# + \lambda_2 \big[D(g^-_i, x_i)^2 - D(g^+_i, x_i)^2 \pm \alpha\big]_+ .$$
#
# (Seed 001 writes $+\alpha$, DAML $-\alpha$; `alpha_sign` chooses, default $-1$ as DAML.) The
# metric loss uses (anchor, positive, synthetic negative). `dmlkit.adversarial` calls this
# method `"daml+sp"`. We compare it with DAML and with the metric loss alone on the same cached
# features as notebook 06.

# %% tags=["parameters"]
SEED = 0
DATASET = "digits"          # "digits" or "glyphs"
FEATURES = "pixels"         # "pixels" or "random_cnn" (a frozen SmallCNN with random weights)
DATASET_KWARGS = {}         # e.g. {"num_classes": 30, "images_per_class": 20} for glyphs
CACHE_DIR = None            # a folder to cache random_cnn features in (None: recompute)
LOSS = "triplet"            # the loss of the recorded DAML run
EPOCHS = 12                 # total epochs (warm-up included)
WARMUP_EPOCHS = 4           # metric loss alone
GENERATOR_EPOCHS = 1        # generator alone, then joint training
BATCHES_PER_EPOCH = 8
P = 5                       # classes per batch (digits has 5 training classes)
K = 8
LR = 1e-3
GENERATOR_LR_FACTOR = 1.0   # official 0.1; 1.0 at this small number of steps
LAMBDA1 = 1.0
LAMBDA2 = 1.0
ALPHA = 1.0
RECORD_PER_EPOCH = 64       # triples kept per epoch for the plots
LOSSES = ["triplet", "contrastive"]        # comparison
ALPHA_SIGN = -1             # -1: DAML's hinge (default), +1: seed 001's eq. 4

# %%
from dmlkit import notebook
nb = notebook.setup("07_synthetic_positives", seed=SEED)

# %%
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch

from dmlkit import adversarial, plotting, tasks

torch.set_num_threads(1)  # small MLPs: one thread is faster than several (no thread overhead)

# %%
(x_train, y_train), (x_test, y_test) = tasks.load_features(
    DATASET, FEATURES, cache_dir=CACHE_DIR, dataset_kwargs=DATASET_KWARGS)
common = dict(epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS, generator_epochs=GENERATOR_EPOCHS,
              batches_per_epoch=BATCHES_PER_EPOCH, P=P, K=K, lr=LR,
              generator_lr_factor=GENERATOR_LR_FACTOR, lambda1=LAMBDA1, lambda2=LAMBDA2,
              alpha=ALPHA, alpha_sign=ALPHA_SIGN, seed=SEED, eval_features=x_test,
              eval_labels=y_test, eval_kwargs={"metrics": ["recall", "map@r", "nmi"], "ks": (1, 4)})
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}")

# %% [markdown]
# ## DAML and DAML+SP, recorded
#
# Both runs share the seed, the schedule and the data; the recorder keeps the triples (and, for
# DAML+SP, the synthetic positives) of every joint epoch.

# %%
recorders = {m: adversarial.NegativeRecorder(max_per_epoch=RECORD_PER_EPOCH) for m in ("daml", "daml+sp")}
runs = {m: adversarial.fit_adversarial(x_train, y_train, LOSS, m, recorder=recorders[m], **common)
        for m in ("daml", "daml+sp")}
hardness = {m: recorders[m].hardness_frame() for m in runs}
pd.concat({m: adversarial.hardness_summary(h, by=None) for m, h in hardness.items()}).round(3)

# %% [markdown]
# The synthetic positive $g^+$ sits between the anchor and the real positive, so
# $D(x, g^+) < D(x, x^+)$ in the generator's space, and the negative generator's hinge
# $[D(g^-, x)^2 - D(g^+, x)^2 - \alpha]_+$ now pushes the negative towards a *closer* reference:
# its negatives end up nearer the anchor.

# %%
arr = recorders["daml+sp"].arrays()
d_pos = np.linalg.norm(arr["anchor"] - arr["positive"], axis=1)
d_syn_pos = np.linalg.norm(arr["anchor"] - arr["synthetic_positive"], axis=1)
print(f"feature space: mean D(anchor, positive) {d_pos.mean():.3f}, "
      f"mean D(anchor, synthetic positive) {d_syn_pos.mean():.3f}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, m in zip(axes, runs):
    h = hardness[m]
    last = h[h["epoch"] == h["epoch"].max()]
    plotting.plot_hardness(last["d_an"], last["d_asyn"], last["d_ap"], margin=recorders[m].margin,
                           ax=ax, bins=20)
    ax.set_title(f"{m}, epoch {int(h['epoch'].max())}")
nb.save_fig("hardness", fig)
plt.show()

# %% [markdown]
# ## Anchors, positives, synthetic positives and negatives (feature space, UMAP)

# %%
rec = recorders["daml+sp"]
last_epoch = int(arr["epoch"].max())
X, meta = rec.points("feature", epoch=last_epoch)
keep = arr["epoch"] == last_epoch
X = np.concatenate([X, arr["synthetic_positive"][keep]])
meta = pd.concat([meta, pd.DataFrame({"kind": "synthetic positive", "label": arr["label"][keep]})],
                 ignore_index=True)
xy = plotting.project_2d(X, "umap", seed=SEED)
plotting.plot_embedding_2d(xy, meta["label"].to_numpy(), markers=meta["kind"].to_numpy(),
                           title=f"DAML+SP, epoch {last_epoch} (UMAP of features)")
nb.save_fig("umap")
plt.show()

# %% [markdown]
# ## Metric-only vs DAML vs DAML+SP

# %%
rows = []
for loss_name in LOSSES:
    for method in adversarial.METHODS:
        res = (runs[method] if loss_name == LOSS and method in runs
               else adversarial.fit_adversarial(x_train, y_train, loss_name, method, **common))
        rows.append({"loss": loss_name, "method": method,
                     **{k: v for k, v in res.history[-1].items() if k in ("recall@1", "recall@4", "map@r", "nmi")}})
comparison = pd.DataFrame(rows)
ax = comparison.pivot(index="loss", columns="method", values="map@r").reindex(LOSSES).plot.bar(
    figsize=(7, 3.6), rot=0)
ax.set_ylabel("MAP@R on unseen classes")
nb.save_fig("comparison")
comparison.round(3)

# %%
summ = {m: adversarial.hardness_summary(h, by=None).iloc[0] for m, h in hardness.items()}
nb.record(loss=LOSS, alpha_sign=ALPHA_SIGN,
          **{f"{m.replace('+', '_')}_mean_d_real": s["d_an"] for m, s in summ.items()},
          **{f"{m.replace('+', '_')}_mean_d_synthetic": s["d_asyn"] for m, s in summ.items()},
          **{f"{m.replace('+', '_')}_mean_d_ap": s["d_ap"] for m, s in summ.items()},
          feature_d_positive=float(d_pos.mean()), feature_d_synthetic_positive=float(d_syn_pos.mean()),
          comparison=comparison.to_dict(orient="records"))
for m, s in summ.items():
    print(f"{m:8s} D(a, real negative) {s['d_an']:.3f}  D(a, synthetic negative) {s['d_asyn']:.3f}")
