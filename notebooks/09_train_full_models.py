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
DATASET = "glyphs"           # glyphs, digits, fashion_mnist, image_folder, cub200, cars196, ...
DATASET_KWARGS = {"num_classes": 30, "images_per_class": 20}   # glyphs / digits options ({} for benchmarks)
DATA_ROOT = None             # folder of the data sets (image_folder: yours, root/<class>/<image>)
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
REAL_IMAGES_PER_CLASS = 200  # last section (Fashion-MNIST): images per class, train and test
REAL_EPOCHS = 2              # last section: epochs of REAL_ITERATIONS_PER_EPOCH batches 5 x 6
REAL_ITERATIONS_PER_EPOCH = 15
FOLDER_IMAGES_PER_CLASS = 30 # last section (image_folder): PNGs written per class
FOLDER_TEST_FRACTION = 0.4   # last section: share of the class folders held out as unseen test classes
FOLDER_EPOCHS = 2            # last section: epochs of FOLDER_ITERATIONS_PER_EPOCH batches 4 x 6
FOLDER_ITERATIONS_PER_EPOCH = 10

# %%
from dmlkit import notebook
nb = notebook.setup("09_train_full_models", seed=SEED)

# %%
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from dmlkit import adversarial, atomic, data, evaluate, models, plotting, results, train

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
                                 "trained (best on validation)": result.test_metrics},
                                digits=1, percent=True)   # x 100
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

# %% [markdown]
# ## Real photos: Fashion-MNIST's unseen classes
#
# Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for
# Benchmarking Machine Learning Algorithms") holds 28 x 28 grey photos of Zalando articles in
# ten classes. The small CNN is trained on classes 0-4 (T-shirt/top, Trouser, Pullover, Dress,
# Coat) of the training file and searched on the unseen classes 5-9 (Sandal, Shirt, Sneaker,
# Bag, Ankle boot) of the test file, `REAL_IMAGES_PER_CLASS` images per class on each side. The
# files are read from the data root, torchvision's `FashionMNIST/raw` or Debian's package
# (`apt-get install dataset-fashion-mnist`); without them this section trains on five + five
# glyph classes instead, and says so. With five training classes none is held out for
# validation: the last epoch is tested. Read both rows of the table below: Recall@1 only needs
# one same-class image among a query's nearest neighbours, MAP@R needs *all* of them ranked
# first (notebook 08), so the two can change by very different amounts. One run, one seed: the
# table shows what this run did, not how much a rerun would vary.

# %%
real = {"dataset": "fashion_mnist",
        "dataset_kwargs": {"images_per_class": REAL_IMAGES_PER_CLASS, "seed": SEED}}
try:
    real_train, real_test = (data.load_dataset("fashion_mnist", split, root=DATA_ROOT,
                                               download=DOWNLOAD, **real["dataset_kwargs"])
                             for split in ("train", "test"))
    print(f"Fashion-MNIST: {len(real_train)} training images of the classes "
          f"{', '.join(real_train.class_names.values())}; {len(real_test)} test images of the "
          f"unseen classes {', '.join(real_test.class_names.values())}")
except data.DatasetNotFoundError:
    real = {"dataset": "glyphs", "dataset_kwargs": {"num_classes": 5,
                                                    "images_per_class": REAL_IMAGES_PER_CLASS}}
    real_train, real_test = (data.load_dataset("glyphs", split, **real["dataset_kwargs"])
                             for split in ("train", "test"))
    print("Fashion-MNIST's files are not here (apt-get install dataset-fashion-mnist, or "
          f"DOWNLOAD = True): this section trains on glyphs instead ({len(real_test)} test "
          "images of 5 unseen glyph classes)")

# %%
# the test classes are evaluated below, before and after training (fit sees the training split)
real_result = train.fit(dataset={"train": real_train}, backbone="small_cnn",
                        embedding_dim=EMBEDDING_DIM, epochs=REAL_EPOCHS,
                        iterations_per_epoch=REAL_ITERATIONS_PER_EPOCH, P=5, K=6, lr=LR,
                        val_fraction=0.0, device=DEVICE, amp=AMP, seed=SEED,
                        save_checkpoints=False, progress=False, verbose=False)


def embed_images(model, images, batch=500):
    """Embeddings of an in-memory image tensor (N, C, H, W), evaluation mode, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch].to(device)).float().cpu()
                          for i in range(0, len(images), batch)]).numpy()


torch.manual_seed(SEED)  # the same architecture with random weights: the "before" picture
untrained_net = models.build_model("small_cnn", EMBEDDING_DIM,
                                   in_channels=real_test.images.shape[1])
real_embeddings = {"untrained (random weights)": embed_images(untrained_net, real_test.images),
                   "trained": embed_images(real_result.model, real_test.images)}
real_metrics = {name: evaluate.evaluate(emb, real_test.labels, metrics=["recall", "map@r"],
                                        ks=(1, 2, 4, 8))
                for name, emb in real_embeddings.items()}
display(results.compare_metrics(real_metrics, digits=1, percent=True))  # x 100

# %% [markdown]
# The same queries (one drawn at random from each unseen class) before and after training:
# each row is a query (black frame) and its six nearest test images, framed green when they
# show the same kind of article, red otherwise.

# %%
real_rng = np.random.default_rng(SEED)  # one random query of each unseen class
real_queries = np.array([real_rng.choice(np.flatnonzero(real_test.labels == c))
                         for c in range(real_test.num_classes)])
real_correct = {}
for name, emb in real_embeddings.items():
    gallery = plotting.retrieval_gallery(emb, real_test.labels, queries=real_queries, k=6)
    real_correct[name] = int(gallery.correct.sum())
    fig = plotting.plot_retrieval_gallery(real_test.images, gallery, size=1.0)
    fig.suptitle(f"{data.dataset_info(real['dataset']).display_name} unseen classes, {name}: "
                 f"{real_correct[name]} of "
                 f"{gallery.correct.size} neighbours of the same class", y=1.02, fontsize=9)
    nb.save_fig("real_gallery_" + ("trained" if name == "trained" else "untrained"), fig)
    plt.show()

# %%
nb.record(real_dataset=real["dataset"], real_test_images=len(real_test),
          real_untrained=real_metrics["untrained (random weights)"],
          real_trained=real_metrics["trained"], real_gallery_correct=real_correct)

# %% [markdown]
# ## Your own images: `image_folder`
#
# To train on images of your own, put each class in a folder of its own, `root/<class>/<image>`
# (any format PIL opens), and load it as `image_folder`: the *classes* are split into training
# classes and unseen test classes (a seeded share `test_fraction` of the folders, or the
# `test_classes` you name). This section writes such a folder from the ten classes above,
# `FOLDER_IMAGES_PER_CLASS` PNGs each (`data.write_image_folder`; into the ignored `build/` of
# the checkout, elsewhere into a temporary folder), adds one file that is not an image, and
# then makes the calls you would make on yours. From a shell the same run is
# `python -m dmlkit train --dataset image_folder --data-root DIR`.

# %%
checkout = notebook.checkout_root(Path.cwd())
folder = (checkout / "build" if checkout else Path(tempfile.mkdtemp())) / "09_image_folder"
shutil.rmtree(folder, ignore_errors=True)  # this section's own folder, written afresh
written = {}
for split in (real_train, real_test):
    keep = np.concatenate([np.flatnonzero(split.labels == c)[:FOLDER_IMAGES_PER_CLASS]
                           for c in range(split.num_classes)])
    written |= data.write_image_folder(folder, split.images[keep],
                                       split.class_ids[split.labels[keep]],
                                       getattr(split, "class_names", None))
broken = folder / sorted(written)[0] / "broken.png"
atomic.atomic_write_bytes(broken, b"this is not a PNG")
print(f"root/<class>/<image>: {sum(written.values())} PNGs in {len(written)} class folders "
      f"({', '.join(written)}), and {broken.relative_to(folder)}")

# %% [markdown]
# Every image is decoded once when the data set is built, so a damaged file is reported then,
# with its path, and never stops training in the middle of an epoch: by default an error that
# lists every such file; with `skip_bad=True` a warning, and the files are left out (printed
# here with the folder shown as `root`).

# %%
try:
    data.load_dataset("image_folder", "all", root=folder)
except data.BadImageError as err:
    print(f"{type(err).__name__}: {str(err).replace(str(folder), 'root')}")
folder_kwargs = {"test_fraction": FOLDER_TEST_FRACTION, "seed": SEED, "skip_bad": True}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    folder_train, folder_test = (data.load_dataset("image_folder", split, root=folder,
                                                   **folder_kwargs)
                                 for split in ("train", "test"))
for warning in caught:
    print(f"warning: {str(warning.message).replace(str(folder), 'root')}")
print(f"training classes: {', '.join(folder_train.class_names[c] for c in folder_train.class_ids)} "
      f"({len(folder_train)} images); unseen test classes: "
      f"{', '.join(folder_test.test_classes)} ({len(folder_test)} images)")

# %% [markdown]
# Training and testing through `train.fit`, by the data set's name and folder as from the command
# line. The images are read from the files on every step (resized to `image_size`, random crops
# and flips while training, ImageNet normalisation); no training class is held out for
# validation here, so the last epoch is tested. One run, one seed.

# %%
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="left out")   # the warning printed above
    folder_result = train.fit(dataset="image_folder", data_root=str(folder),
                              dataset_kwargs=folder_kwargs, backbone="small_cnn",
                              embedding_dim=EMBEDDING_DIM, epochs=FOLDER_EPOCHS,
                              iterations_per_epoch=FOLDER_ITERATIONS_PER_EPOCH, P=4, K=6, lr=LR,
                              image_size=28, resize=28, val_fraction=0.0, initial_test=True,
                              device=DEVICE, amp=AMP, num_workers=0, seed=SEED,
                              save_checkpoints=False, progress=False, verbose=False)
display(results.compare_metrics({"untrained": folder_result.initial_test_metrics,
                                 "trained": folder_result.test_metrics}, digits=1, percent=True))
nb.record(folder_classes=written, folder_skipped=len(folder_train.skipped) + len(folder_test.skipped),
          folder_test_classes=folder_test.test_classes,
          folder_untrained=folder_result.initial_test_metrics,
          folder_trained=folder_result.test_metrics)
if checkout is None:  # outside a checkout the folder was a temporary one
    shutil.rmtree(folder.parent, ignore_errors=True)
