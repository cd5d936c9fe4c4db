# %% [markdown]
# # 00 · Quick start: environment, data sets, a first embedding in a minute
#
# Deep metric learning (DML) learns an embedding $f(x)$ in which images of the same class are
# close and images of different classes are far apart, and **evaluates it on classes never seen
# in training** (class-disjoint protocol). A test query is answered by its nearest neighbours
# under the cosine similarity $s_{ij} = \langle f_i, f_j \rangle$ of L2-normalised embeddings.
#
# This notebook checks the environment, shows the data sets, and trains a first embedding on
# `glyphs` (a procedural data set shipped with dmlkit) in about a minute on a CPU: an untrained
# network against the same network trained with the multi-similarity loss, both measured on
# **unseen** glyph classes.

# %% tags=["parameters"]
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

# %%
from dmlkit import notebook
nb = notebook.setup("00_quickstart", seed=SEED)

# %%
import platform

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

import dmlkit
from dmlkit import data, losses, models, plotting, tables, train

# %% [markdown]
# ## Environment and device
#
# `dmlkit.train.select_device("auto")` picks CUDA, then Apple MPS, then the CPU, and says which
# (a CPU is fine for this notebook and for notebooks 01-08; the ImageNet backbones of notebook 09
# want a GPU).

# %% tags=["varies"]
print(f"python {platform.python_version()}, torch {torch.__version__}, dmlkit {dmlkit.__version__}")
device = train.select_device(DEVICE)
print("device:", device)

# %% tags=["nbval-check-output"]
print(tables.name_list("losses:   ", losses.available()))
print(tables.name_list("backbones:", models.available()))
print(tables.name_list("datasets: ", data.available()))

# %% [markdown]
# ## The data sets
#
# * **digits** (scikit-learn's 8x8 handwritten digits): classes 0-4 for training, 5-9 for testing.
# * **glyphs**: procedurally drawn symbols, any number of classes, deterministic; train classes
#   `0 .. n-1`, test classes `n .. 2n-1` (never seen in training). Each image is a random
#   rendering (rotation, scale, translation, stroke wobble and width, contrast, noise, clutter).
#
# Below: a few training classes, one row per class.

# %%
glyph_options = {"num_classes": NUM_CLASSES, "images_per_class": IMAGES_PER_CLASS,
                 "difficulty": DIFFICULTY}
glyphs_train = data.load_dataset("glyphs", "train", **glyph_options)
glyphs_test = data.load_dataset("glyphs", "test", **glyph_options)
digits_train = data.load_dataset("digits", "train")
print(f"glyphs: {len(glyphs_train)} training images of {len(np.unique(glyphs_train.labels))} "
      f"classes, {len(glyphs_test)} test images of {len(np.unique(glyphs_test.labels))} unseen classes")
print(f"digits: {len(digits_train)} training images, image shape {tuple(digits_train[0][0].shape)}")
images = [glyphs_train[i][0] for i in range(len(glyphs_train))]
fig = plotting.plot_image_grid(images, glyphs_train.labels, classes=6, per_class=8)
nb.save_fig("glyphs", fig)
plt.show()

# %% [markdown]
# **The benchmarks** (CUB-200-2011, Cars196, Stanford Online Products, In-shop Clothes) are read
# from their official archives under a data root: the `root=` argument, else `$DMLKIT_DATA`, else
# `~/.cache/dmlkit`, one folder per data set. Put the archives there (they are verified and
# extracted on first use) or pass `download=True` where a direct URL exists. Loading a missing
# data set raises `DatasetNotFoundError` with these instructions:

# %% tags=["nbval-check-output"]
for cls in (data.CUB200, data.Cars196, data.SOP, data.InShop):
    print(f"{cls.title}  ->  <root>/{cls.folder}/   ({cls.homepage})")
    for a in cls.archives:
        print(f"    {a.filename:<40} {a.url or '(no direct URL: ' + a.note + ')'}")

# %%
try:
    data.load_dataset("cub200", "train", root="/nonexistent/dmlkit-data")
except data.DatasetNotFoundError as err:
    print(err)

# %% [markdown]
# ## A first embedding
#
# `train.fit` trains a small CNN (4 conv blocks, a linear layer to $D$ and L2 normalisation)
# with P x K batches (P classes, K images each). A validation split of held-out *training*
# classes picks the best epoch; the test classes are used once, at the end. `track_test=True`
# also evaluates the untrained network (epoch 0) on the test classes: the baseline. Metrics are
# shown as percentages, as in the papers (an R@1 of 50 means that half of the queries have a
# nearest neighbour of their own class).
# The multi-similarity loss (Wang et al. 2019b, eq. 17; see docs/references.md) is
#
# $$\mathcal L = \frac1m\sum_i \Big[\tfrac1\alpha \log\big(1+\sum_{k\in\hat P_i} e^{-\alpha(s_{ik}-\lambda)}\big)
# + \tfrac1\beta \log\big(1+\sum_{k\in\hat N_i} e^{\beta(s_{ik}-\lambda)}\big)\Big].$$

# %%
result = train.fit(dataset="glyphs", loss=LOSS, epochs=EPOCHS,
                   iterations_per_epoch=ITERATIONS_PER_EPOCH, P=P, K=K,
                   embedding_dim=EMBEDDING_DIM, lr=LR, device=DEVICE, seed=SEED,
                   dataset_kwargs=glyph_options,
                   track_test=True, save_checkpoints=False, progress=False)

# %%
display(tables.metrics_table({"untrained": result.initial_test_metrics,
                              "trained": result.test_metrics}))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
plotting.plot_history(result.history, ["loss"], ax=axes[0])
axes[0].set_title("training loss (from epoch 1)")
plotting.plot_history(result.history, ["val_recall@1", "val_map@r", "test_recall@1",
                                       "test_map@r"], ax=axes[1])
axes[1].set_title("held-out classes (epoch 0: untrained)")
nb.save_fig("curves", fig)
plt.show()

# %%
nb.record(untrained=result.initial_test_metrics, trained=result.test_metrics,
          best_epoch=result.best_epoch,
          r1_gain=result.test_metrics["recall@1"] - result.initial_test_metrics["recall@1"],
          mapr_gain=result.test_metrics["map@r"] - result.initial_test_metrics["map@r"])
print(f"R@1 on unseen classes: {tables.percent(result.initial_test_metrics['recall@1'])} % "
      f"untrained -> {tables.percent(result.test_metrics['recall@1'])} % trained")

# %% [markdown]
# On classes it has **never seen**, the trained embedding scores higher than the untrained one on
# every metric of the table (one run, one seed): what it learned about telling glyphs apart carries
# over beyond the training classes.
#
# Next: notebook 01 (the losses), 08 (what the metrics measure), 09 (training at full scale).
