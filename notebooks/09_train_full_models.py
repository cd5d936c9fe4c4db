# %% [markdown]
# # 09 · Training full models (parameterised)
#
# One notebook for every training run of the collection: a data set, a backbone, a loss, and
# the papers' knobs. The defaults train the small CNN on `glyphs` on a CPU in about a minute; the
# benchmarks need a GPU, e.g. with papermill:
#
# ```bash
# papermill 09_train_full_models.ipynb out.ipynb -p DATASET cub200 -p BACKBONE resnet50 \
#     -p EMBEDDING_DIM 512 -p EPOCHS 60 -p P 16 -p K 5 -p LR 1e-5 -p BACKBONE_LR_MULT 1.0 \
#     -p ITERATIONS_PER_EPOCH None -p DATASET_KWARGS '{}' -p DATA_ROOT /data -p DEVICE cuda
# ```
#
# (the recipe of Wang et al. 2019b: ImageNet-pretrained backbone, 512-d L2-normalised embedding, Adam
# $10^{-5}$, P x K batches with K = 5 on CUB / Cars196 and 4 on SOP / In-shop, 227 px crops; the
# papers' Recall@K lists are used automatically for the benchmarks.) `LOSS` is any name of
# `dmlkit.losses.available()`; `"daml:<loss>"` or `"daml+sp:<loss>"` trains DAML (notebook 06)
# or its synthetic-positive extension (notebook 07) on frozen backbone features with that loss.
#
# The model is selected on held-out *training* classes, the test classes are used once at the
# end, and every run is **appended** to `results/runs.csv` with its settings; notebook 10 reads
# that file next to the published results.

# %% tags=["parameters"]
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

# %%
from dmlkit import notebook
nb = notebook.setup("09_train_full_models", seed=SEED)

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import display

from dmlkit import adversarial, atomic, plotting, results, train

# %%
method, loss_name = adversarial.parse_loss_spec(LOSS)
settings = dict(dataset=DATASET, backbone=BACKBONE, pretrained=PRETRAINED, loss=loss_name,
                loss_params=LOSS_PARAMS, embedding_dim=EMBEDDING_DIM, epochs=EPOCHS,
                iterations_per_epoch=ITERATIONS_PER_EPOCH, P=P, K=K, lr=LR,
                backbone_lr_mult=BACKBONE_LR_MULT, image_size=IMAGE_SIZE, device=DEVICE, amp=AMP,
                num_workers=NUM_WORKERS, data_root=DATA_ROOT, download=DOWNLOAD,
                dataset_kwargs=DATASET_KWARGS, seed=SEED, save_checkpoints=SAVE_CHECKPOINTS)
print(f"method: {method}, loss: {loss_name}")

# %% [markdown]
# ## Training
#
# Metric-only runs train the whole network with `dmlkit.train.fit` (the untrained network is
# evaluated first, `track_test=True`, for the baseline row). DAML runs
# (`adversarial.fit_adversarial_run`) extract frozen backbone features once and train the metric
# head and the generator(s) on them.

# %% tags=["varies"]
t0 = time.perf_counter()
if method == "metric":
    result = train.fit(**settings, track_test=True, progress=False)
else:
    result = adversarial.fit_adversarial_run(method=method, **settings)
seconds = time.perf_counter() - t0
print(f"{seconds:.0f} s")

# %%
history = result.history
val_cols = [c for c in history.columns if c.startswith(("val_", "test_")) and
            c.endswith(("recall@1", "map@r"))]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
plotting.plot_history(history, ["loss"], ax=axes[0])
axes[0].set_title("training loss")
plotting.plot_history(history, val_cols, ax=axes[1])
axes[1].set_title("validation / test classes")
nb.save_fig("curves", fig)
plt.show()

# %%
table = results.compare_metrics({"untrained": result.initial_test_metrics,
                                 "trained (best on validation)": result.test_metrics})
display(table)

# %% [markdown]
# ## The test embedding
#
# UMAP of (a sample of) the test embeddings, coloured by class: classes never seen in training.

# %%
emb, labels = adversarial.test_embeddings(result, max_points=UMAP_POINTS, seed=SEED)
xy = plotting.project_2d(emb, "umap", seed=SEED)
plotting.plot_embedding_2d(xy, labels, title=f"{DATASET} test classes, {LOSS}")
nb.save_fig("umap")
plt.show()

# %% [markdown]
# ## Results log
#
# One row per run, appended atomically (the file is rewritten through a temporary file and
# `os.replace`, under a lock): settings, seconds, best epoch and the test metrics.

# %% tags=["varies"]
csv_path = Path(RESULTS_CSV) if RESULTS_CSV else nb.results_dir / "runs.csv"
iterations = adversarial.total_iterations(result)
row = results.run_row(result, notebook=nb.name, seconds=seconds, iterations=iterations,
                      method=method)
runs = atomic.append_csv_row(csv_path, row)
print(f"{len(runs)} run(s) in {csv_path.name}")
display(runs.tail(3).T)

# %%
nb.record(dataset=DATASET, backbone=BACKBONE, loss=LOSS, method=method, seconds=seconds,
          untrained=result.initial_test_metrics, trained=result.test_metrics,
          best_epoch=result.best_epoch, iterations=iterations, runs_in_csv=len(runs))
print(f"recorded in {nb.results_path.name}: {', '.join(sorted(nb.results))}")
