# %% [markdown]
# # 06 · Adversarial hard negatives (DAML)
#
# Most negatives in a batch are easy: far from the anchor, they contribute nothing to a hinge
# loss. **Deep Adversarial Metric Learning** (Duan et al. 2018, seed 000) *generates* hard
# negatives: a generator $G$ reads a triple (anchor $x$, positive $x^+$, negative $x^-$) of
# features and writes a synthetic negative $\tilde x^- = G(x, x^+, x^-)$ trained with
#
# $$J_{gen} = \underbrace{\lVert \tilde x^- - x\rVert^2}_{J_{hard}:\ \text{near the anchor}}
# + \lambda_1 \underbrace{\lVert \tilde x^- - x^-\rVert^2}_{J_{reg}:\ \text{near the real negative}}
# + \lambda_2 \underbrace{\big[D(\tilde x^-, x)^2 - D(x^+, x)^2 - \alpha\big]_+}_{J_{adv}:\ \text{hard for the metric}}$$
#
# while the metric $D$ (a head on frozen features) minimises its loss $J_m$ on
# (anchor, positive, *synthetic* negative). The generator is not used at test time.
#
# Here, at small scale on cached features (`dmlkit.adversarial`):
# 1. where the synthetic negatives lie (UMAP and t-SNE of anchors, positives, real and generated
#    negatives, early and late in training, via the recorder hook),
# 2. how hard they are (distance histograms),
# 3. metric-only vs DAML for several losses.

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
LOSSES = ["contrastive", "triplet", "lifted_structure", "npair"]   # comparison

# %%
from dmlkit import notebook
nb = notebook.setup("06_adversarial_hard_negatives", seed=SEED)

# %%
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch

from dmlkit import adversarial, evaluate, plotting, tasks

torch.set_num_threads(1)  # small MLPs: one thread is faster than several (no thread overhead)

# %% [markdown]
# ## Cached features
#
# The generator and the metric head work on frozen features computed once
# (`tasks.load_features`), standardised with the training statistics and L2-normalised. The
# default is the fastest possible setting: the 64 raw pixels of the digits (5 training classes,
# 5 unseen test classes). `DATASET = "glyphs"`, `FEATURES = "random_cnn"` gives more classes; on a
# GPU, notebook 09 runs DAML on ImageNet features (`LOSS = "daml:triplet"`).
#
# Note that a head trained on 5 classes generalises *worse* to the 5 unseen digits than the raw
# pixels it reads (first line below): there is far too little class diversity to learn a metric
# that transfers. The comparison that matters here is between methods on the same features.

# %%
(x_train, y_train), (x_test, y_test) = tasks.load_features(
    DATASET, FEATURES, cache_dir=CACHE_DIR, dataset_kwargs=DATASET_KWARGS)
print(f"train {tuple(x_train.shape)} ({len(np.unique(y_train))} classes), "
      f"test {tuple(x_test.shape)} ({len(np.unique(y_test))} unseen classes)")
features_only = evaluate.evaluate(x_test, y_test, metrics=["recall", "map@r"], ks=(1, 4))
print("the features themselves on the test classes:", {k: round(v, 3) for k, v in features_only.items()})

# %% [markdown]
# ## One DAML run, recorded
#
# `NegativeRecorder` keeps, at every joint-training epoch, the first triples the generator saw:
# features and embeddings of anchor, positive, real negative and synthetic negative.
# Schedule: `WARMUP_EPOCHS` of metric loss alone, `GENERATOR_EPOCHS` of generator alone, then
# joint training.

# %%
common = dict(epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS, generator_epochs=GENERATOR_EPOCHS,
              batches_per_epoch=BATCHES_PER_EPOCH, P=P, K=K, lr=LR,
              generator_lr_factor=GENERATOR_LR_FACTOR, lambda1=LAMBDA1, lambda2=LAMBDA2,
              alpha=ALPHA, seed=SEED, eval_features=x_test, eval_labels=y_test,
              eval_kwargs={"metrics": ["recall", "map@r", "nmi"], "ks": (1, 4)})
recorder = adversarial.NegativeRecorder(max_per_epoch=RECORD_PER_EPOCH)
daml = adversarial.fit_adversarial(x_train, y_train, LOSS, "daml", recorder=recorder, **common)
pd.DataFrame(daml.history).round(4)

# %% [markdown]
# ## How hard are the generated negatives?
#
# The recorder also sees the generator-alone epoch (`WARMUP_EPOCHS`): there the generator
# attacks a frozen metric. Distances in the metric's embedding space, per recorded triple: $D(a, p)$, $D(a, n)$ for the
# real negative and $D(a, \tilde n)$ for the synthetic one. `harder` is the share of triples whose
# synthetic negative is closer to the anchor than the real one; `violating_*` the share that
# still violates the margin ($D(a, n) < D(a, p) + m$), i.e. that the triplet loss can learn from.

# %%
hardness = recorder.hardness_frame()
summary = adversarial.hardness_summary(hardness)
summary.round(3)

# %%
epochs_seen = sorted(hardness["epoch"].unique())
first, last = epochs_seen[0], epochs_seen[-1]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, ep in zip(axes, (first, last)):
    h = hardness[hardness["epoch"] == ep]
    plotting.plot_hardness(h["d_an"], h["d_asyn"], h["d_ap"], margin=recorder.margin, ax=ax, bins=20)
    ax.set_title(f"epoch {ep}")
nb.save_fig("hardness", fig)
plt.show()

# %% [markdown]
# ## Where are they? UMAP and t-SNE, early and late
#
# Colour = class (anchors and positives: the anchor's class; negatives: the negative's class),
# marker = kind. Synthetic negatives sit between the anchor and the real negative, close to the
# anchor's cluster: that is what makes them hard.

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 10))
for col, ep in enumerate((first, last)):
    X, meta = recorder.points("embedding", epoch=ep)
    for row, method in enumerate(("umap", "tsne")):
        xy = plotting.project_2d(X, method, seed=SEED)
        plotting.plot_embedding_2d(xy, meta["label"].to_numpy(), ax=axes[row, col],
                                   markers=meta["kind"].to_numpy(),
                                   title=f"{method.upper()}, epoch {ep}")
nb.save_fig("projections", fig)
plt.show()

# %% [markdown]
# ## Metric-only vs DAML, several losses
#
# Same features, same schedule and seed; DAML replaces each anchor's real negatives by
# generated ones in the metric loss (1 per anchor for contrastive / triplet, all of them for
# lifted structure and N-pair). Test classes are unseen. At this scale (a few hundred steps on
# frozen random features) the differences are small and noisy: the notebook shows the mechanics,
# `benchmarks/adversarial.py` averages seeds.

# %%
rows = []
for loss_name in LOSSES:
    for method in ("metric", "daml"):
        res = (daml if (loss_name, method) == (LOSS, "daml")
               else adversarial.fit_adversarial(x_train, y_train, loss_name, method, **common))
        rows.append({"loss": loss_name, "method": method,
                     **{k: v for k, v in res.history[-1].items() if k in ("recall@1", "recall@4", "map@r", "nmi")}})
comparison = pd.DataFrame(rows)
comparison.round(3)

# %%
pivot = comparison.pivot(index="loss", columns="method", values="map@r").reindex(LOSSES)
ax = pivot.plot.bar(figsize=(7, 3.6), rot=0)
ax.set_ylabel("MAP@R on unseen classes")
ax.set_title("metric-only vs DAML")
nb.save_fig("comparison")
plt.show()

# %%
overall = adversarial.hardness_summary(hardness, by=None).iloc[0]
nb.record(loss=LOSS, mean_d_ap=overall["d_ap"], mean_d_real=overall["d_an"],
          mean_d_synthetic=overall["d_asyn"], share_harder=overall["harder"],
          feature_mean_d_real=hardness["f_d_an"].mean(),
          feature_mean_d_synthetic=hardness["f_d_asyn"].mean(),
          features_only=features_only,
          hardness_by_epoch=summary.to_dict(orient="list"),
          daml_metrics={k: v for k, v in daml.history[-1].items() if k in ("recall@1", "map@r", "nmi")},
          comparison=comparison.to_dict(orient="records"))
print(f"mean D(anchor, real negative) {overall['d_an']:.3f} vs "
      f"D(anchor, synthetic negative) {overall['d_asyn']:.3f}; "
      f"{100 * overall['harder']:.0f}% of synthetic negatives are harder than their real one")
