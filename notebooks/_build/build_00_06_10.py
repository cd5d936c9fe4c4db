"""Source of truth of notebooks 00 and 06-10: writes them (without outputs) with nbformat.

    python notebooks/_build/build_00_06_10.py            # all six
    python notebooks/_build/build_00_06_10.py 08 09      # some

then execute them in place at default parameters (outputs, figures and results are committed):

    python -c "from dmlkit.nbrun import run_all; run_all(only=['00','06','07','08','09','10'])"
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, parameters: bool = False):
    text = text.strip("\n")
    if text.splitlines()[-1].startswith("nb.save_fig("):
        text += "\nplt.show()"  # show the figure, not the path save_fig returns
    cell = new_code_cell(text)
    if parameters:
        cell.metadata["tags"] = ["parameters"]
    return cell


def setup(stem: str):
    return code(f'from dmlkit import notebook\nnb = notebook.setup("{stem}", seed=SEED)')


def write(stem: str, cells) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (dmlkit)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = NOTEBOOKS / f"{stem}.ipynb"
    old = nbformat.read(path, as_version=4) if path.exists() else None
    if old is not None:  # keep committed outputs of unchanged cells until the next run
        by_source = {c.source: c for c in old.cells if c.cell_type == "code"}
        for c in nb.cells:
            if c.cell_type == "code" and c.source in by_source:
                c.outputs = by_source[c.source].get("outputs", [])
                c.execution_count = by_source[c.source].get("execution_count")
    nbformat.write(nb, path)
    return path


# =============================================================================================
# 00 quick start
# =============================================================================================
def nb00():
    stem = "00_quickstart"
    return stem, [
        md(r"""
# 00 · Quick start: environment, data sets, a first embedding in a minute

Deep metric learning (DML) learns an embedding $f(x)$ in which images of the same class are
close and images of different classes are far apart, and **evaluates it on classes never seen
in training** (class-disjoint protocol). A test query is answered by its nearest neighbours
under the cosine similarity $s_{ij} = \langle f_i, f_j \rangle$ of L2-normalised embeddings.

This notebook checks the environment, shows the data sets, and trains a first embedding on
`glyphs` (a procedural data set shipped with dmlkit) in about a minute on a CPU: an untrained
network against the same network trained with the multi-similarity loss, both measured on
**unseen** glyph classes.
"""),
        code("""
SEED = 0
DEVICE = "auto"              # auto: CUDA, else Apple MPS, else CPU (with a message)
LOSS = "multi_similarity"    # any name of dmlkit.losses.available()
NUM_CLASSES = 30             # glyph training classes (as many unseen classes for testing)
IMAGES_PER_CLASS = 20
DIFFICULTY = 0.6             # glyph nuisances: 0 (clean) .. 1 (hard)
EPOCHS = 4
ITERATIONS_PER_EPOCH = 25
P = 8                        # classes per batch
K = 4                        # images per class
EMBEDDING_DIM = 32
LR = 1e-3
""", parameters=True),
        setup(stem),
        code("""
import platform

import numpy as np
import torch
import matplotlib.pyplot as plt

import dmlkit
from dmlkit import data, losses, models, plotting, reporting, train
"""),
        md("""
## Environment and device

`dmlkit.train.select_device("auto")` picks CUDA, then Apple MPS, then the CPU, and says which
(a CPU is fine for this notebook and for notebooks 01-08; the ImageNet backbones of notebook 09
want a GPU).
"""),
        code("""
print(f"python {platform.python_version()}, torch {torch.__version__}, dmlkit {dmlkit.__version__}")
device = train.select_device(DEVICE)
print("device:", device)
"""),
        code("""
# NBVAL_CHECK_OUTPUT
print("losses:   ", ", ".join(losses.available()))
print("backbones:", ", ".join(models.available()))
print("datasets: ", ", ".join(data.available()))
"""),
        md(r"""
## The data sets

* **digits** (scikit-learn's 8x8 handwritten digits): classes 0-4 for training, 5-9 for testing.
* **glyphs**: procedurally drawn symbols, any number of classes, deterministic; train classes
  `0 .. n-1`, test classes `n .. 2n-1` (never seen in training). Each image is a random
  rendering (rotation, scale, translation, stroke wobble and width, contrast, noise, clutter).

Below: a few training classes, one row per class.
"""),
        code("""
glyph_options = {"num_classes": NUM_CLASSES, "images_per_class": IMAGES_PER_CLASS,
                 "difficulty": DIFFICULTY}
glyphs_train = data.load_dataset("glyphs", "train", **glyph_options)
glyphs_test = data.load_dataset("glyphs", "test", **glyph_options)
digits_train = data.load_dataset("digits", "train")
print(f"glyphs: {len(glyphs_train)} training images of {len(np.unique(glyphs_train.labels))} "
      f"classes, {len(glyphs_test)} test images of {len(np.unique(glyphs_test.labels))} unseen classes")
print(f"digits: {len(digits_train)} training images, image shape {tuple(digits_train[0][0].shape)}")
images = [glyphs_train[i][0] for i in range(len(glyphs_train))]
fig = reporting.plot_image_grid(images, glyphs_train.labels, classes=6, per_class=8)
nb.save_fig("glyphs", fig)
"""),
        md("""
**The benchmarks** (CUB-200-2011, Cars196, Stanford Online Products, In-shop Clothes) are read
from their official archives under a data root: the `root=` argument, else `$DMLKIT_DATA`, else
`~/.cache/dmlkit`, one folder per data set. Put the archives there (they are verified and
extracted on first use) or pass `download=True` where a direct URL exists. Loading a missing
data set raises `DatasetNotFoundError` with these instructions:
"""),
        code("""
# NBVAL_CHECK_OUTPUT
for cls in (data.CUB200, data.Cars196, data.SOP, data.InShop):
    print(f"{cls.title}  ->  <root>/{cls.folder}/   ({cls.homepage})")
    for a in cls.archives:
        print(f"    {a.filename:<40} {a.url or '(no direct URL: ' + a.note + ')'}")
"""),
        code("""
try:
    data.load_dataset("cub200", "train", root="/nonexistent/dmlkit-data")
except data.DatasetNotFoundError as err:
    print(err)
"""),
        md(r"""
## A first embedding

`train.fit` trains a small CNN (4 conv blocks, a linear layer to $D$ and L2 normalisation)
with P x K batches (P classes, K images each). A validation split of held-out *training*
classes picks the best epoch; the test classes are used once, at the end. `track_test=True`
also evaluates the untrained network (epoch 0) on the test classes: the baseline.
The multi-similarity loss (seed 004) is

$$\mathcal L = \frac1m\sum_i \Big[\tfrac1\alpha \log\big(1+\sum_{k\in\hat P_i} e^{-\alpha(s_{ik}-\lambda)}\big)
+ \tfrac1\beta \log\big(1+\sum_{k\in\hat N_i} e^{\beta(s_{ik}-\lambda)}\big)\Big].$$
"""),
        code("""
result = train.fit(dataset="glyphs", loss=LOSS, epochs=EPOCHS,
                   iterations_per_epoch=ITERATIONS_PER_EPOCH, P=P, K=K,
                   embedding_dim=EMBEDDING_DIM, lr=LR, device=DEVICE, seed=SEED,
                   dataset_kwargs=glyph_options,
                   track_test=True, save_checkpoints=False, progress=False)
"""),
        code("""
table = reporting.compare_metrics({"untrained": result.initial_test_metrics,
                                   "trained": result.test_metrics})
table
"""),
        code("""
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
plotting.plot_history(result.history, ["loss"], ax=axes[0])
axes[0].set_title("training loss")
plotting.plot_history(result.history, ["val_recall@1", "val_map@r", "test_recall@1",
                                       "test_map@r"], ax=axes[1])
axes[1].set_title("held-out classes")
nb.save_fig("curves", fig)
"""),
        code("""
nb.record(untrained=result.initial_test_metrics, trained=result.test_metrics,
          best_epoch=result.best_epoch,
          r1_gain=result.test_metrics["recall@1"] - result.initial_test_metrics["recall@1"],
          mapr_gain=result.test_metrics["map@r"] - result.initial_test_metrics["map@r"])
print(f"R@1 on unseen classes: {result.initial_test_metrics['recall@1']:.3f} untrained -> "
      f"{result.test_metrics['recall@1']:.3f} trained")
"""),
        md("""
The trained embedding retrieves same-class glyphs of classes it has **never seen** much better
than the untrained one: it learned what makes two glyphs the same, not the training classes.

Next: notebook 01 (the losses), 08 (what the metrics measure), 09 (training at full scale).
"""),
    ]


# =============================================================================================
# 06 adversarial hard negatives
# =============================================================================================
ADV_PARAMS = """
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
"""


def _adv_common_md(title: str, intro: str) -> list:
    return [md(title + "\n\n" + intro)]


def nb06():
    stem = "06_adversarial_hard_negatives"
    return stem, [
        md(r"""
# 06 · Adversarial hard negatives (DAML)

Most negatives in a batch are easy: far from the anchor, they contribute nothing to a hinge
loss. **Deep Adversarial Metric Learning** (Duan et al. 2018, seed 000) *generates* hard
negatives: a generator $G$ reads a triple (anchor $x$, positive $x^+$, negative $x^-$) of
features and writes a synthetic negative $\tilde x^- = G(x, x^+, x^-)$ trained with

$$J_{gen} = \underbrace{\lVert \tilde x^- - x\rVert^2}_{J_{hard}:\ \text{near the anchor}}
+ \lambda_1 \underbrace{\lVert \tilde x^- - x^-\rVert^2}_{J_{reg}:\ \text{near the real negative}}
+ \lambda_2 \underbrace{\big[D(\tilde x^-, x)^2 - D(x^+, x)^2 - \alpha\big]_+}_{J_{adv}:\ \text{hard for the metric}}$$

while the metric $D$ (a head on frozen features) minimises its loss $J_m$ on
(anchor, positive, *synthetic* negative). The generator is not used at test time.

Here, at small scale on cached features (`dmlkit.adversarial`):
1. where the synthetic negatives lie (UMAP and t-SNE of anchors, positives, real and generated
   negatives, early and late in training, via the recorder hook),
2. how hard they are (distance histograms),
3. metric-only vs DAML for several losses.
"""),
        code(ADV_PARAMS + """LOSSES = ["contrastive", "triplet", "lifted_structure", "npair"]   # comparison
""", parameters=True),
        setup(stem),
        code("""
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch

from dmlkit import adversarial, evaluate, plotting, reporting

torch.set_num_threads(1)  # small MLPs: one thread is faster than several (no thread overhead)
"""),
        md("""
## Cached features

The generator and the metric head work on frozen features computed once
(`reporting.load_features`), standardised with the training statistics and L2-normalised. The
default is the fastest possible setting: the 64 raw pixels of the digits (5 training classes,
5 unseen test classes). `DATASET = "glyphs"`, `FEATURES = "random_cnn"` gives more classes; on a
GPU, notebook 09 runs DAML on ImageNet features (`LOSS = "daml:triplet"`).

Note that a head trained on 5 classes generalises *worse* to the 5 unseen digits than the raw
pixels it reads (first line below): there is far too little class diversity to learn a metric
that transfers. The comparison that matters here is between methods on the same features.
"""),
        code("""
(x_train, y_train), (x_test, y_test) = reporting.load_features(
    DATASET, FEATURES, cache_dir=CACHE_DIR, dataset_kwargs=DATASET_KWARGS)
print(f"train {tuple(x_train.shape)} ({len(np.unique(y_train))} classes), "
      f"test {tuple(x_test.shape)} ({len(np.unique(y_test))} unseen classes)")
features_only = evaluate.evaluate(x_test, y_test, metrics=["recall", "map@r"], ks=(1, 4))
print("the features themselves on the test classes:", {k: round(v, 3) for k, v in features_only.items()})
"""),
        md("""
## One DAML run, recorded

`NegativeRecorder` keeps, at every joint-training epoch, the first triples the generator saw:
features and embeddings of anchor, positive, real negative and synthetic negative.
Schedule: `WARMUP_EPOCHS` of metric loss alone, `GENERATOR_EPOCHS` of generator alone, then
joint training.
"""),
        code("""
common = dict(epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS, generator_epochs=GENERATOR_EPOCHS,
              batches_per_epoch=BATCHES_PER_EPOCH, P=P, K=K, lr=LR,
              generator_lr_factor=GENERATOR_LR_FACTOR, lambda1=LAMBDA1, lambda2=LAMBDA2,
              alpha=ALPHA, seed=SEED, eval_features=x_test, eval_labels=y_test,
              eval_kwargs={"metrics": ["recall", "map@r", "nmi"], "ks": (1, 4)})
recorder = adversarial.NegativeRecorder(max_per_epoch=RECORD_PER_EPOCH)
daml = adversarial.fit_adversarial(x_train, y_train, LOSS, "daml", recorder=recorder, **common)
pd.DataFrame(daml.history).round(4)
"""),
        md(r"""
## How hard are the generated negatives?

The recorder also sees the generator-alone epoch (`WARMUP_EPOCHS`): there the generator
attacks a frozen metric. Distances in the metric's embedding space, per recorded triple: $D(a, p)$, $D(a, n)$ for the
real negative and $D(a, \tilde n)$ for the synthetic one. `harder` is the share of triples whose
synthetic negative is closer to the anchor than the real one; `violating_*` the share that
still violates the margin ($D(a, n) < D(a, p) + m$), i.e. that the triplet loss can learn from.
"""),
        code("""
hardness = recorder.hardness_frame()
summary = reporting.hardness_summary(hardness)
summary.round(3)
"""),
        code("""
epochs_seen = sorted(hardness["epoch"].unique())
first, last = epochs_seen[0], epochs_seen[-1]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, ep in zip(axes, (first, last)):
    h = hardness[hardness["epoch"] == ep]
    plotting.plot_hardness(h["d_an"], h["d_asyn"], h["d_ap"], margin=recorder.margin, ax=ax, bins=20)
    ax.set_title(f"epoch {ep}")
nb.save_fig("hardness", fig)
"""),
        md("""
## Where are they? UMAP and t-SNE, early and late

Colour = class (anchors and positives: the anchor's class; negatives: the negative's class),
marker = kind. Synthetic negatives sit between the anchor and the real negative, close to the
anchor's cluster: that is what makes them hard.
"""),
        code("""
fig, axes = plt.subplots(2, 2, figsize=(11, 10))
for col, ep in enumerate((first, last)):
    X, meta = recorder.points("embedding", epoch=ep)
    for row, method in enumerate(("umap", "tsne")):
        xy = plotting.project_2d(X, method, seed=SEED)
        plotting.plot_embedding_2d(xy, meta["label"].to_numpy(), ax=axes[row, col],
                                   markers=meta["kind"].to_numpy(),
                                   title=f"{method.upper()}, epoch {ep}")
nb.save_fig("projections", fig)
"""),
        md("""
## Metric-only vs DAML, several losses

Same features, same schedule and seed; DAML replaces each anchor's real negatives by
generated ones in the metric loss (1 per anchor for contrastive / triplet, all of them for
lifted structure and N-pair). Test classes are unseen. At this scale (a few hundred steps on
frozen random features) the differences are small and noisy: the notebook shows the mechanics,
`benchmarks/adversarial.py` averages seeds.
"""),
        code("""
rows = []
for loss_name in LOSSES:
    for method in ("metric", "daml"):
        res = (daml if (loss_name, method) == (LOSS, "daml")
               else adversarial.fit_adversarial(x_train, y_train, loss_name, method, **common))
        rows.append({"loss": loss_name, "method": method,
                     **{k: v for k, v in res.history[-1].items() if k in ("recall@1", "recall@4", "map@r", "nmi")}})
comparison = pd.DataFrame(rows)
comparison.round(3)
"""),
        code("""
pivot = comparison.pivot(index="loss", columns="method", values="map@r").reindex(LOSSES)
ax = pivot.plot.bar(figsize=(7, 3.6), rot=0)
ax.set_ylabel("MAP@R on unseen classes")
ax.set_title("metric-only vs DAML")
nb.save_fig("comparison")
"""),
        code("""
overall = reporting.hardness_summary(hardness, by=None).iloc[0]
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
"""),
    ]


# =============================================================================================
# 07 synthetic positives
# =============================================================================================
def nb07():
    stem = "07_synthetic_positives"
    return stem, [
        md(r"""
# 07 · Synthetic positives (seed 001) on top of DAML

Seed 001 extends DAML with a **positive generator**: a synthetic positive $g^+$ between the
anchor and the real positive,

$$J^+_{gen} = \sum_i \lVert g^+_i - x_i\rVert^2 + \lambda_1 \lVert g^+_i - x^+_i\rVert^2,$$

and the negative generator then reads $(x, g^+, x^-)$ and makes its negative hard with respect
to the synthetic positive:

$$J^-_{gen} = \sum_i \lVert g^-_i - x_i\rVert^2 + \lambda_1 \lVert g^-_i - x^-_i\rVert^2
+ \lambda_2 \big[D(g^-_i, x_i)^2 - D(g^+_i, x_i)^2 \pm \alpha\big]_+ .$$

(Seed 001 writes $+\alpha$, DAML $-\alpha$; `alpha_sign` chooses, default $-1$ as DAML.) The
metric loss uses (anchor, positive, synthetic negative). `dmlkit.adversarial` calls this
method `"daml+sp"`. We compare it with DAML and with the metric loss alone on the same cached
features as notebook 06.
"""),
        code(ADV_PARAMS + """LOSSES = ["triplet", "contrastive"]        # comparison
ALPHA_SIGN = -1             # -1: DAML's hinge (default), +1: seed 001's eq. 4
""", parameters=True),
        setup(stem),
        code("""
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch

from dmlkit import adversarial, plotting, reporting

torch.set_num_threads(1)  # small MLPs: one thread is faster than several (no thread overhead)
"""),
        code("""
(x_train, y_train), (x_test, y_test) = reporting.load_features(
    DATASET, FEATURES, cache_dir=CACHE_DIR, dataset_kwargs=DATASET_KWARGS)
common = dict(epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS, generator_epochs=GENERATOR_EPOCHS,
              batches_per_epoch=BATCHES_PER_EPOCH, P=P, K=K, lr=LR,
              generator_lr_factor=GENERATOR_LR_FACTOR, lambda1=LAMBDA1, lambda2=LAMBDA2,
              alpha=ALPHA, alpha_sign=ALPHA_SIGN, seed=SEED, eval_features=x_test,
              eval_labels=y_test, eval_kwargs={"metrics": ["recall", "map@r", "nmi"], "ks": (1, 4)})
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}")
"""),
        md("""
## DAML and DAML+SP, recorded

Both runs share the seed, the schedule and the data; the recorder keeps the triples (and, for
DAML+SP, the synthetic positives) of every joint epoch.
"""),
        code("""
recorders = {m: adversarial.NegativeRecorder(max_per_epoch=RECORD_PER_EPOCH) for m in ("daml", "daml+sp")}
runs = {m: adversarial.fit_adversarial(x_train, y_train, LOSS, m, recorder=recorders[m], **common)
        for m in ("daml", "daml+sp")}
hardness = {m: recorders[m].hardness_frame() for m in runs}
pd.concat({m: reporting.hardness_summary(h, by=None) for m, h in hardness.items()}).round(3)
"""),
        md(r"""
The synthetic positive $g^+$ sits between the anchor and the real positive, so
$D(x, g^+) < D(x, x^+)$ in the generator's space, and the negative generator's hinge
$[D(g^-, x)^2 - D(g^+, x)^2 - \alpha]_+$ now pushes the negative towards a *closer* reference:
its negatives end up nearer the anchor.
"""),
        code("""
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
"""),
        md("""
## Anchors, positives, synthetic positives and negatives (feature space, UMAP)
"""),
        code("""
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
"""),
        md("""
## Metric-only vs DAML vs DAML+SP
"""),
        code("""
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
"""),
        code("""
summ = {m: reporting.hardness_summary(h, by=None).iloc[0] for m, h in hardness.items()}
nb.record(loss=LOSS, alpha_sign=ALPHA_SIGN,
          **{f"{m.replace('+', '_')}_mean_d_real": s["d_an"] for m, s in summ.items()},
          **{f"{m.replace('+', '_')}_mean_d_synthetic": s["d_asyn"] for m, s in summ.items()},
          **{f"{m.replace('+', '_')}_mean_d_ap": s["d_ap"] for m, s in summ.items()},
          feature_d_positive=float(d_pos.mean()), feature_d_synthetic_positive=float(d_syn_pos.mean()),
          comparison=comparison.to_dict(orient="records"))
for m, s in summ.items():
    print(f"{m:8s} D(a, real negative) {s['d_an']:.3f}  D(a, synthetic negative) {s['d_asyn']:.3f}")
"""),
    ]


# =============================================================================================
# 08 evaluation metrics
# =============================================================================================
def nb08():
    stem = "08_evaluation_metrics"
    return stem, [
        md(r"""
# 08 · Evaluation metrics: what each one measures

The test set is both the queries and the database (the query itself excluded), classes unseen
in training; embeddings are compared by cosine similarity. `dmlkit.evaluate` computes, exactly:

| metric | definition |
|---|---|
| Recall@K (R@K) | share of queries with at least one same-class item among their $K$ nearest neighbours |
| R-precision | $R$ = number of other same-class items; share of same-class items among the top $R$ |
| MAP@R | $\frac1R \sum_{i\le R} P@i \cdot \mathrm{rel}_i$ (Musgrave et al. 2020) |
| NMI | k-means with $K$ = number of classes; $\frac{2\,I(\Omega; C)}{H(\Omega) + H(C)}$ |
| F1 | pair counting over the same clustering: $P = TP/(TP+FP)$, $R = TP/(TP+FN)$, $F_1 = 2PR/(P+R)$ |
| VRF | one positive and `neg` negatives per query: success when the positive is the most similar (N-pair paper, neg = 1, 71) |
| CMC@k, mAP | re-identification: rank of the first correct match, and mean average precision over the whole ranking |

Ranking ties are broken by database index, so every number is deterministic.
"""),
        code("""
SEED = 0
N_CLASSES = 20               # synthetic sweeps: classes, points per class, dimension
PER_CLASS = 12
DIM = 32
SPREADS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]      # distance between the modes of a class
NOISES = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]     # within-class noise (one mode per class)
GLYPH_CLASSES = 20           # retrieval gallery: unseen glyph classes
GLYPH_IMAGES = 10
GALLERY_QUERIES = 6
GALLERY_K = 6
""", parameters=True),
        setup(stem),
        code("""
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

from dmlkit import data, evaluate, reporting
"""),
        md("""
## A toy example, every metric

Twelve 2-D points of three classes, small enough to check by hand.
"""),
        code("""
# NBVAL_CHECK_OUTPUT
toy_x = np.array([[1.0, 0.1], [0.9, 0.3], [1.0, -0.2], [0.7, 0.7],
                  [0.1, 1.0], [-0.2, 1.0], [0.4, 0.9], [0.95, 0.2],
                  [-1.0, -0.1], [-0.8, -0.6], [-0.9, 0.4], [0.2, -1.0]])
toy_y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
toy = evaluate.evaluate(toy_x, toy_y, metrics=evaluate.METRICS, ks=(1, 2, 4, 8), vrf_negs=(1,),
                        cmc_ranks=(1, 5), seed=0)
pd.Series(toy).round(4).to_frame("value")
"""),
        code("""
fig, ax = plt.subplots(figsize=(4.5, 4.5))
for c, marker in zip(range(3), "o^s"):
    sel = toy_y == c
    ax.scatter(toy_x[sel, 0], toy_x[sel, 1], marker=marker, s=60, label=f"class {c}")
for i, (x, y) in enumerate(toy_x):
    ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
ax.set_aspect("equal")
ax.legend(fontsize="small")
ax.set_title("toy embeddings")
nb.save_fig("toy", fig)
"""),
        md(r"""
**Checking by brute force.** The definitions, written per query with plain numpy (float64),
give the same numbers as `dmlkit.evaluate` (which is chunked, exact, and fast enough for the
60,502 SOP test images):
"""),
        code("""
def brute_force(x, y, ks):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    recall, map_r, r_prec = {k: [] for k in ks}, [], []
    for q in range(len(y)):
        others = np.array([j for j in range(len(y)) if j != q])
        sims = x[others] @ x[q]
        ranked = others[np.lexsort((others, -sims))]       # similarity desc, index asc
        rel = (y[ranked] == y[q]).astype(float)
        R = int(rel.sum())
        for k in ks:
            recall[k].append(rel[:k].max())
        map_r.append(sum(rel[:i + 1].sum() / (i + 1) * rel[i] for i in range(R)) / R)
        r_prec.append(rel[:R].mean())
    return {**{f"recall@{k}": np.mean(v) for k, v in recall.items()},
            "map@r": np.mean(map_r), "r_precision": np.mean(r_prec)}

reference = brute_force(toy_x, toy_y, (1, 2, 4, 8))
check = pd.DataFrame({"dmlkit.evaluate": {k: toy[k] for k in reference}, "brute force": reference})
assert np.allclose(check.iloc[:, 0], check.iloc[:, 1])
check.round(4)
"""),
        code("""
# the k-means clustering behind NMI and F1 (on the L2-normalised points, as evaluate does)
toy_unit = (toy_x / np.linalg.norm(toy_x, axis=1, keepdims=True)).astype(np.float32)
toy_clusters = evaluate.kmeans(toy_unit, n_clusters=3, seed=0)
nb.record(toy_embeddings=toy_x, toy_labels=toy_y, toy_metrics=toy, toy_clusters=toy_clusters)
print("k-means clusters of the toy points:", toy_clusters)
"""),
        md(r"""
## Why Recall@1 saturates and MAP@R does not

Recall@1 only asks whether the **single nearest** neighbour is of the right class. A class made
of several tight but scattered clumps (a bird photographed from the front and from the back, a
car model in two colours) has perfect Recall@1: every image's twin is in its own clump. MAP@R
asks whether **all** $R$ same-class images come first, so it sees the scatter.

Synthetic embeddings (`reporting.multimodal_clusters`): each class is 3 tight modes at distance
`spread` from the class centre. As the modes move apart, Recall@1 stays at 1.0 while MAP@R and
R-precision fall from 1.0 towards chance: Recall@1 cannot tell these embeddings apart.
"""),
        code("""
sweep_spread = reporting.metric_sweep(
    SPREADS, lambda v: reporting.multimodal_clusters(N_CLASSES, PER_CLASS, DIM, modes=3,
                                                     mode_spread=v, noise=0.1, seed=SEED),
    seed=SEED, name="spread")
sweep_noise = reporting.metric_sweep(
    NOISES, lambda v: reporting.multimodal_clusters(N_CLASSES, PER_CLASS, DIM, modes=1,
                                                    noise=v, seed=SEED),
    seed=SEED, name="noise")
sweep_spread.round(3)
"""),
        code("""
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, (df, x) in zip(axes, ((sweep_spread, "spread"), (sweep_noise, "noise"))):
    for m, lw in (("recall@1", 4), ("recall@4", 1.5), ("map@r", 1.5), ("r_precision", 1.5), ("nmi", 1.5)):
        ax.plot(df[x], df[m], marker="o", lw=lw, ls="--" if m == "recall@4" else "-", label=m)
    ax.set_xlabel(f"{x} ({'3 modes per class' if x == 'spread' else 'one Gaussian per class'})")
    ax.legend(fontsize="small")
axes[0].set_ylabel("metric")
axes[0].set_title("modes of a class drift apart")
axes[1].set_title("classes get noisier")
nb.save_fig("saturation", fig)
sweep_noise.round(3)
"""),
        md("""
With one Gaussian per class (right), noise degrades every metric, but Recall@1 stays near 1 long
after MAP@R has started to fall: on well-trained embeddings the papers' R@1 differences shrink
while MAP@R still separates methods (Musgrave et al. 2020 report MAP@R for this reason).
"""),
        md("""
## All metrics on real images, and a retrieval gallery

Glyph test classes, embedded by their **raw pixels** (the baseline any learned embedding must
beat). Each row of the gallery is a query (black frame) and its nearest neighbours, framed green
when of the query's class and red otherwise; the first column agrees with Recall@1.
"""),
        code("""
glyphs = data.load_dataset("glyphs", "test", num_classes=GLYPH_CLASSES, num_test_classes=GLYPH_CLASSES,
                           images_per_class=GLYPH_IMAGES)
images = [glyphs[i][0] for i in range(len(glyphs))]
pixels = np.stack([im.numpy().ravel() for im in images])
labels = np.asarray(glyphs.labels)
glyph_metrics = evaluate.evaluate(pixels, labels, metrics=evaluate.METRICS, ks=(1, 2, 4, 8), seed=SEED)
pd.Series(glyph_metrics).round(3).to_frame("raw pixels")
"""),
        code("""
gallery = reporting.retrieval_gallery(pixels, labels, queries=GALLERY_QUERIES, k=GALLERY_K, seed=SEED)
fig = reporting.plot_retrieval_gallery(images, gallery)
nb.save_fig("gallery", fig)
"""),
        code("""
nb.record(sweep_spread=sweep_spread.to_dict(orient="list"),
          sweep_noise=sweep_noise.to_dict(orient="list"),
          glyph_pixel_metrics=glyph_metrics,
          gallery_queries=gallery.query, gallery_neighbours=gallery.neighbours,
          gallery_correct=gallery.correct, glyph_labels=labels)
print(f"spread sweep: R@1 {sweep_spread['recall@1'].min():.2f}..{sweep_spread['recall@1'].max():.2f}, "
      f"MAP@R {sweep_spread['map@r'].min():.2f}..{sweep_spread['map@r'].max():.2f}")
"""),
    ]


# =============================================================================================
# 09 train full models
# =============================================================================================
def nb09():
    stem = "09_train_full_models"
    return stem, [
        md(r"""
# 09 · Training full models (parameterised)

One notebook for every training run of the collection: a data set, a backbone, a loss, and
the papers' knobs. The defaults train the small CNN on `glyphs` on a CPU in about a minute; the
benchmarks need a GPU, e.g. with papermill:

```bash
papermill 09_train_full_models.ipynb out.ipynb -p DATASET cub200 -p BACKBONE resnet50 \
    -p EMBEDDING_DIM 512 -p EPOCHS 60 -p P 16 -p K 5 -p LR 1e-5 -p BACKBONE_LR_MULT 1.0 \
    -p ITERATIONS_PER_EPOCH None -p DATASET_KWARGS '{}' -p DATA_ROOT /data -p DEVICE cuda
```

(seed 004's recipe: ImageNet-pretrained backbone, 512-d L2-normalised embedding, Adam
$10^{-5}$, P x K batches with K = 5 on CUB / Cars196 and 4 on SOP / In-shop, 227 px crops; the
papers' Recall@K lists are used automatically for the benchmarks.) `LOSS` is any name of
`dmlkit.losses.available()`; `"daml:<loss>"` or `"daml+sp:<loss>"` trains DAML (notebook 06)
or its synthetic-positive extension (notebook 07) on frozen backbone features with that loss.

The model is selected on held-out *training* classes, the test classes are used once at the
end, and every run is **appended** to `results/runs.csv` with its settings; notebook 10 reads
that file next to the published results.
"""),
        code("""
SEED = 0
DATASET = "glyphs"           # glyphs, digits, cub200, cars196, sop, inshop
DATASET_KWARGS = {"num_classes": 30, "images_per_class": 20}   # glyphs / digits options ({} for benchmarks)
DATA_ROOT = None             # benchmarks: folder holding cub200/, cars196/, sop/, inshop/
DOWNLOAD = False
BACKBONE = "small_cnn"       # small_cnn, resnet18, resnet50, googlenet
PRETRAINED = True            # ImageNet weights for the torchvision backbones
LOSS = "multi_similarity"    # a dmlkit.losses name, or "daml:triplet", "daml+sp:triplet", ...
LOSS_PARAMS = {}
EMBEDDING_DIM = 64
EPOCHS = 4
ITERATIONS_PER_EPOCH = 25    # None: one pass of the P x K sampler
P = 8
K = 4
LR = 1e-3
BACKBONE_LR_MULT = 1.0
IMAGE_SIZE = 224             # crop size for the benchmarks
DEVICE = "auto"
AMP = "auto"                 # bf16 on CUDA when available
NUM_WORKERS = None
SAVE_CHECKPOINTS = False     # True: runs/<name>/{last,best}.pt, history.csv
RESULTS_CSV = None           # None: results/runs.csv next to the notebooks' results
UMAP_POINTS = 1000           # test embeddings shown in the UMAP
""", parameters=True),
        setup(stem),
        code("""
import time
from pathlib import Path

import matplotlib.pyplot as plt

from dmlkit import plotting, reporting, train
"""),
        code("""
method, loss_name = reporting.parse_loss_spec(LOSS)
settings = dict(dataset=DATASET, backbone=BACKBONE, pretrained=PRETRAINED, loss=loss_name,
                loss_params=LOSS_PARAMS, embedding_dim=EMBEDDING_DIM, epochs=EPOCHS,
                iterations_per_epoch=ITERATIONS_PER_EPOCH, P=P, K=K, lr=LR,
                backbone_lr_mult=BACKBONE_LR_MULT, image_size=IMAGE_SIZE, device=DEVICE, amp=AMP,
                num_workers=NUM_WORKERS, data_root=DATA_ROOT, download=DOWNLOAD,
                dataset_kwargs=DATASET_KWARGS, seed=SEED, save_checkpoints=SAVE_CHECKPOINTS)
print(f"method: {method}, loss: {loss_name}")
"""),
        md("""
## Training

Metric-only runs train the whole network with `dmlkit.train.fit` (the untrained network is
evaluated first, `track_test=True`, for the baseline row). DAML runs
(`reporting.fit_adversarial_run`) extract frozen backbone features once and train the metric
head and the generator(s) on them.
"""),
        code("""
t0 = time.perf_counter()
if method == "metric":
    result = train.fit(**settings, track_test=True, progress=False)
else:
    result = reporting.fit_adversarial_run(method=method, **settings)
seconds = time.perf_counter() - t0
print(f"{seconds:.0f} s")
"""),
        code("""
history = result.history
val_cols = [c for c in history.columns if c.startswith(("val_", "test_")) and
            c.endswith(("recall@1", "map@r"))]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
plotting.plot_history(history, ["loss"], ax=axes[0])
axes[0].set_title("training loss")
plotting.plot_history(history, val_cols, ax=axes[1])
axes[1].set_title("validation / test classes")
nb.save_fig("curves", fig)
"""),
        code("""
table = reporting.compare_metrics({"untrained": result.initial_test_metrics,
                                   "trained (best on validation)": result.test_metrics})
table
"""),
        md("""
## The test embedding

UMAP of (a sample of) the test embeddings, coloured by class: classes never seen in training.
"""),
        code("""
emb, labels = reporting.test_embeddings(result, max_points=UMAP_POINTS, seed=SEED)
xy = plotting.project_2d(emb, "umap", seed=SEED)
plotting.plot_embedding_2d(xy, labels, title=f"{DATASET} test classes, {LOSS}")
nb.save_fig("umap")
"""),
        md("""
## Results log

One row per run, appended atomically (the file is rewritten through a temporary file and
`os.replace`, under a lock): settings, seconds, best epoch and the test metrics.
"""),
        code("""
csv_path = Path(RESULTS_CSV) if RESULTS_CSV else nb.results_dir / "runs.csv"
iterations = reporting.total_iterations(result)
row = reporting.run_row(result, notebook=nb.name, seconds=seconds, iterations=iterations,
                        method=method)
runs = reporting.append_csv_row(csv_path, row)
print(f"{len(runs)} run(s) in {csv_path.name}")
runs.tail(3).T
"""),
        code("""
nb.record(dataset=DATASET, backbone=BACKBONE, loss=LOSS, method=method, seconds=seconds,
          untrained=result.initial_test_metrics, trained=result.test_metrics,
          best_epoch=result.best_epoch, iterations=iterations, runs_in_csv=len(runs))
print(f"recorded in {nb.results_path.name}: {', '.join(sorted(nb.results))}")
"""),
    ]


# =============================================================================================
# 10 results vs papers
# =============================================================================================
def nb10():
    stem = "10_results_vs_papers"
    return stem, [
        md(r"""
# 10 · Our results next to the papers'

This notebook reads the results log of notebook 09 (`results/runs.csv`, one row per training
run) and the published tables of the seed papers (shipped with dmlkit as
`dmlkit/resources/published_results.csv`), and puts them side by side, **with the settings
that differ**: data set, backbone, embedding size, image size, number of iterations, and how
the reported model was selected.

Read the comparison with care:
* runs on `glyphs` / `digits` have no published counterpart (they check the pipeline, not the
  papers); only CUB-200-2011, Cars196, SOP and In-shop runs are comparable;
* most papers report the best *test* score over training; dmlkit selects on held-out training
  classes and tests once (Musgrave et al. 2020 show how much this matters);
* values are percentages, as printed in the papers.
"""),
        code("""
SEED = 0
RUNS_CSV = None              # None: results/runs.csv (written by notebook 09)
DATASETS = None              # paper data set names to show; None: those of our runs + CUB / Cars196
METRICS = ["R@1", "R@2", "R@4", "R@8", "NMI", "F1", "MAP@R"]
PLOT_DATASET = "CUB-200-2011"
""", parameters=True),
        setup(stem),
        code("""
from pathlib import Path

import pandas as pd
import matplotlib.pyplot as plt

from dmlkit import reporting
"""),
        code("""
csv_path = Path(RUNS_CSV) if RUNS_CSV else nb.results_dir / "runs.csv"
runs = reporting.read_runs(csv_path)
if runs.empty:
    print(f"No runs yet ({csv_path.name} is missing or empty): run notebook 09 first. "
          "Showing the published results only.")
else:
    print(f"{len(runs)} run(s) in {csv_path.name}:")
    cols = [c for c in ("dataset", "loss", "backbone", "embedding_dim", "epochs", "iterations",
                        "test_recall@1", "test_map@r") if c in runs.columns]
    display(runs[cols].round(4))
published = reporting.published_results()
print(f"{len(published)} published numbers from {published['paper'].nunique()} sources")
"""),
        md("""
## The published tables

Every source, data set and metric the papers report (counts of numbers):
"""),
        code("""
# NBVAL_CHECK_OUTPUT
pd.crosstab([published["paper"], published["dataset"]], published["metric"]
            .where(published["metric"].isin(METRICS), "other"))
"""),
        md("""
## Side by side

Our runs first (paper "dmlkit (this repository)"), then the papers' rows on the same data set.
"""),
        code("""
datasets = DATASETS
if datasets is None:
    datasets = set(reporting.runs_long(runs)["dataset"]) | {"CUB-200-2011", "Cars196"}
table = reporting.results_vs_papers(runs, published, datasets=datasets, metrics=METRICS)
with pd.option_context("display.max_rows", 200):
    display(table.round(1))
"""),
        md("""
## What differs

For each run and each paper reporting on its data set (for the toy data sets, the CUB-200-2011
papers are listed for orientation): ours vs theirs.
"""),
        code("""
differences = reporting.setting_differences(runs, published)
if differences.empty:
    print("no runs: nothing to compare")
differences
"""),
        code("""
sub = table[table["dataset"] == PLOT_DATASET].dropna(subset=["R@1"])
labels = [f"{m}, {d}-d [{p[:45]}]" for m, d, p in zip(sub["method"], sub["embedding_dim"], sub["paper"])]
fig, ax = plt.subplots(figsize=(7, 0.22 * len(sub) + 1))
colors = ["#d95f02" if p == "dmlkit (this repository)" else "#7570b3" for p in sub["paper"]]
ax.barh(range(len(sub)), sub["R@1"], color=colors)
ax.set_yticks(range(len(sub)), labels, fontsize=6)
ax.invert_yaxis()
ax.set_xlabel("R@1 (%)")
ax.set_title(f"R@1 on {PLOT_DATASET} (orange: dmlkit runs)")
nb.save_fig("r_at_1")
"""),
        code("""
ours = table[table["paper"] == "dmlkit (this repository)"]
nb.record(n_runs=len(runs), n_published=len(published), n_table_rows=len(table),
          n_paper_rows=int((table["paper"] != "dmlkit (this repository)").sum()),
          n_our_rows=len(ours), datasets=sorted(datasets),
          papers=sorted(table["paper"].unique()), n_differences=len(differences))
print(f"{len(table)} table rows: {len(ours)} from our runs, {len(table) - len(ours)} from the papers")
"""),
    ]


BUILDERS = {"00": nb00, "06": nb06, "07": nb07, "08": nb08, "09": nb09, "10": nb10}

if __name__ == "__main__":
    wanted = sys.argv[1:] or list(BUILDERS)
    for key in wanted:
        stem, cells = BUILDERS[key]()
        print(write(stem, cells))
