"""Small experiment tasks: in-memory glyph / digit tasks, tiny nets, ablations, label noise.

Everything here is small-scale by design (a few hundred glyph images, a four-block CNN, a few
hundred steps on a CPU) so that a notebook can compare several losses x seeds in about a
minute; the training itself is :func:`dmlkit.train.train_embedding`.

>>> from dmlkit import tasks
>>> task = tasks.image_task("glyphs", num_classes=6, num_test_classes=4, images_per_class=4,
...                         size=16)
>>> task
ImageTask(glyphs: train (24, 1, 16, 16) / 6 classes, test (16, 1, 16, 16) / 4 unseen classes)
>>> tasks.embed(tasks.build_net(embedding_dim=8), task.X_test).shape
torch.Size([16, 8])

The test classes are never seen in training (class-disjoint, docs/formulas.md#data-protocols);
scores on them are reported for teaching, and nothing here selects a model on them.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as _data
from . import evaluate as _evaluate
from . import models as _models

__all__ = [
    "ImageTask",
    "batch_losses",
    "build_net",
    "embed",
    "endless_batches",
    "image_task",
    "inject_label_noise",
    "load_features",
    "metric_sweep",
    "multimodal_clusters",
    "retrieval_scores",
    "run_ablation",
    "single_thread",
    "summarize",
]


# ------------------------------------------------------------------------------- data and nets


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one torch thread (restored afterwards).

    The networks here are tiny, so intra-op parallelism has little to split, and on a shared
    machine extra threads compete with the other processes (a choice, not a benchmark: the
    repository saves no timing of one thread against several).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ImageTask:
    """A class-disjoint image retrieval task held in memory.

    ``X`` (N, C, H, W) float32 / ``y`` (N,) int64: training images and labels (0..C-1);
    ``X_test`` / ``y_test``: images of classes never seen in training.
    """

    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    name: str = "task"

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if self.y.numel() else 0

    def __repr__(self) -> str:
        return (f"ImageTask({self.name}: train {tuple(self.X.shape)} / {self.num_classes} "
                f"classes, test {tuple(self.X_test.shape)} / "
                f"{len(torch.unique(self.y_test))} unseen classes)")

    def describe(self) -> str:
        """One sentence for a reader: images, classes and image size of both splits."""
        def split(X, classes, what):
            size = " x ".join(str(d) for d in X.shape[1:])
            return f"{X.shape[0]} {what} images ({size}) of {classes} classes"

        return (f"{self.name}: {split(self.X, self.num_classes, 'training')}; "
                f"{split(self.X_test, len(torch.unique(self.y_test)), 'test')} (unseen)")

    def _repr_pretty_(self, printer, cycle) -> None:
        """What ``display(task)`` shows in a notebook: :meth:`describe`, not the repr."""
        printer.text(self.describe())


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(ds, "images") and getattr(ds, "transform", None) is None:
        X = torch.as_tensor(ds.images, dtype=torch.float32)
    else:
        X = torch.stack([torch.as_tensor(ds[i][0], dtype=torch.float32) for i in range(len(ds))])
    return X.contiguous(), torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)


def image_task(dataset: str = "glyphs", **kwargs) -> ImageTask:
    """Train / test tensors of an in-memory data set (``"glyphs"``, ``"digits"``,
    ``"fashion_mnist"``: those whose :func:`dmlkit.data.dataset_info` says not ``image_files``).

    ``kwargs`` go to :func:`dmlkit.data.load_dataset` for both splits (e.g. ``num_classes``,
    ``num_test_classes``, ``images_per_class``, ``size``, ``difficulty`` for glyphs;
    ``root``, ``images_per_class`` for fashion_mnist).
    """
    if _data.dataset_info(dataset).image_files:
        in_memory = [n for n in _data.available() if not _data.dataset_info(n).image_files]
        raise ValueError(f"image_task holds an in-memory data set: choose one of "
                         f"{in_memory}, got {dataset!r}")
    X, y = _tensors(_data.load_dataset(dataset, "train", **kwargs))
    Xt, yt = _tensors(_data.load_dataset(dataset, "test", **kwargs))
    return ImageTask(X, y, Xt, yt, name=dataset)


def build_net(in_channels: int = 1, embedding_dim: int = 32, width: int = 16,
              seed: int = 0) -> _models.EmbeddingNet:
    """A :class:`~dmlkit.models.SmallCNN` of ``width`` + a linear head to ``embedding_dim``.

    The output is NOT normalised: each loss normalises (or not, N-pair) itself, and the
    retrieval metrics use cosine similarity.
    """
    torch.manual_seed(seed)
    backbone = _models.SmallCNN(in_channels, None, width=width)
    return _models.EmbeddingNet(backbone, backbone.out_features, embedding_dim,
                                normalize=False, name=f"small_cnn_w{width}")


@torch.no_grad()
def embed(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Embeddings (N, D) of images X (N, C, H, W), eval mode, no gradient (mode restored)."""
    was = model.training
    model.eval()
    try:
        out = [model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, 0)


def retrieval_scores(embeddings, labels) -> dict[str, float]:
    """``{"recall@1", "map@r"}`` with the test set as queries and database (cosine)."""
    res = _evaluate.retrieval_metrics(embeddings, labels, ks=(1,))
    return {"recall@1": float(res["recall@1"]), "map@r": float(res["map@r"])}


def load_features(dataset: str = "digits", features: str = "pixels", *,
                  cache_dir: str | os.PathLike | None = None, standardize: bool = True,
                  dataset_kwargs: dict | None = None
                  ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Train / test features for the adversarial notebooks: ``((x_tr, y_tr), (x_te, y_te))``.

    ``features="pixels"``: raw pixels of an embedded data set (digits: 64-d, instant);
    ``"random_cnn"``: global-pooled features of dmlkit's SmallCNN with random weights
    (torch seed 0; :func:`dmlkit.train.extract_features`, cached in ``cache_dir``).
    With ``standardize`` the features are centred / scaled with the *training* statistics and
    L2-normalised (the scale of the official DAML generator's unit-norm inputs).
    Tensors: x (N, F) float32, y (N,) int64.
    """
    from . import train

    dataset_kwargs = dict(dataset_kwargs or {})
    if features == "pixels":
        out = []
        for split in ("train", "test"):
            ds = _data.load_dataset(dataset, split, **dataset_kwargs)
            x = torch.stack([ds[i][0].reshape(-1) for i in range(len(ds))]).float()
            out.append((x, torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)))
    elif features == "random_cnn":
        out = []
        for split in ("train", "test"):
            torch.manual_seed(0)  # the same random backbone for both splits
            out.append(train.extract_features(
                "small_cnn", dataset, split=split, pretrained=False, cache_dir=cache_dir,
                dataset_kwargs=dataset_kwargs, image_size=32, progress=False))
    else:
        raise ValueError(f"unknown features {features!r}; known: 'pixels', 'random_cnn'")
    if standardize:
        mu = out[0][0].mean(0, keepdim=True)
        sd = out[0][0].std(0, keepdim=True).clamp(min=1e-6)
        out = [(torch.nn.functional.normalize((x - mu) / sd, dim=1), y) for x, y in out]
    return tuple(out)


# ------------------------------------------------------------------------------- runs


def endless_batches(sampler) -> Iterator[list[int]]:
    """The batches of a batch sampler, epoch after epoch (``set_epoch`` called when it exists).

    >>> batches = endless_batches([[0, 1], [2, 3]])
    >>> [next(batches) for _ in range(3)]
    [[0, 1], [2, 3], [0, 1]]
    """
    epoch = 0
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        empty = True
        for idx in sampler:
            empty = False
            yield list(idx)
        if empty:
            raise ValueError("the batch sampler yielded no batch")
        epoch += 1


@torch.no_grad()
def batch_losses(model: nn.Module, task: ImageTask, loss: nn.Module, sampler,
                 n_batches: int = 20) -> np.ndarray:
    """Loss values (n_batches,) of the first batches of ``sampler`` under a fixed ``model``.

    Compares how hard the batches of two samplers are (e.g. hard negative class mining vs
    random classes) for the same network: harder batches have larger losses.
    """
    was = model.training
    model.eval()
    out = []
    try:
        with single_thread():
            for idx in endless_batches(sampler):
                idx = torch.as_tensor(idx)
                out.append(float(loss(model(task.X[idx]), task.y[idx])))
                if len(out) >= n_batches:
                    break
    finally:
        model.train(was)
    return np.asarray(out)


def _spec(spec) -> tuple[str, dict]:
    if isinstance(spec, str):
        return spec, {}
    name, params = spec
    return str(name), dict(params or {})


def run_ablation(task: ImageTask, specs: Mapping[str, object] | Sequence[str],
                 seeds: Sequence[int] = (0, 1, 2), progress: bool = True,
                 histories: dict | None = None, runs: dict | None = None,
                 **train_kwargs) -> pd.DataFrame:
    """Train every loss of ``specs`` with every seed; one row per run.

    ``specs``: loss names, or ``{label: name}`` / ``{label: (name, params)}``.
    ``train_kwargs`` go to :func:`dmlkit.train.train_embedding` (``track_mining=True`` adds
    the mean pos / neg kept shares over training). Columns: loss, seed, untrained_recall@1,
    untrained_map@r, recall@1, map@r, [pos_kept, neg_kept, triplets_kept], seconds.
    ``histories``: a dict filled with ``{(label, seed): run.history}`` if given; ``runs``
    likewise with the :class:`dmlkit.train.TrainRun`.
    """
    from .train import train_embedding

    if not isinstance(specs, Mapping):
        specs = {name: name for name in specs}
    rows = []
    jobs = [(label, spec, s) for label, spec in specs.items() for s in seeds]
    for label, spec, s in tqdm(jobs, desc="runs", disable=not progress):
        name, params = _spec(spec)
        run = train_embedding(task, name, loss_params=params, seed=s, **train_kwargs)
        row = {"loss": label, "seed": s,
               **{f"untrained_{k}": v for k, v in run.initial_scores.items()}, **run.scores}
        if histories is not None:
            histories[(label, s)] = run.history
        if runs is not None:
            runs[(label, s)] = run
        for col in ("pos_kept", "neg_kept", "triplets_kept"):
            if col in run.history:
                row[col] = float(run.history[col].mean())
        row["seconds"] = run.seconds
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, metrics: Sequence[str] = ("recall@1", "map@r"),
              by: str = "loss") -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of ``metrics`` per ``by``, in first-seen order.

    Columns ``<metric>_mean``, ``<metric>_std`` (sample std, ddof=1; 0 for one seed), ``n``.
    """
    missing = [m for m in (*metrics, by) if m not in df]
    if missing:
        raise ValueError(f"columns {missing} not in the table; it has {list(df.columns)}")
    g = df.groupby(by, sort=False)
    out = pd.DataFrame({"n": g.size()})
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    return out


# ------------------------------------------------------------------------------- label noise


def inject_label_noise(labels, fraction: float, seed: int = 0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Give ``round(fraction * N)`` samples, drawn at random, a different random label.

    Returns ``(noisy_labels (N,), flipped (N,) bool)``. The new label is uniform over the
    other classes present, so every flipped sample is an outlier of the class it now carries.
    """
    lab = torch.as_tensor(labels, dtype=torch.int64).clone()
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    classes = torch.unique(lab)
    if len(classes) < 2 and fraction > 0:
        raise ValueError("label noise needs at least two classes")
    g = torch.Generator().manual_seed(int(seed))
    k = round(float(fraction) * len(lab))
    idx = torch.randperm(len(lab), generator=g)[:k]
    shift = torch.randint(1, len(classes), (k,), generator=g)
    pos = torch.searchsorted(classes, lab[idx])
    lab[idx] = classes[(pos + shift) % len(classes)]
    flipped = torch.zeros(len(lab), dtype=torch.bool)
    flipped[idx] = True
    return lab, flipped


# ------------------------------------------------------------------------------- synthetic sweeps


def multimodal_clusters(n_classes: int = 20, per_class: int = 12, dim: int = 32,
                        modes: int = 3, mode_spread: float = 1.0, noise: float = 0.05,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic embeddings whose classes are unions of ``modes`` tight clusters.

    Class ``c`` has a centre ``mu_c ~ N(0, I_dim / dim)``; each of its modes sits at
    ``mu_c + mode_spread * nu`` with ``nu ~ N(0, I_dim / dim)``; points are their mode plus
    ``noise * N(0, I_dim / dim)`` (``per_class`` points, assigned to modes in turn). With
    ``mode_spread`` large and ``noise`` small, every point's nearest neighbour is in its own
    mode (Recall@1 = 1) while most of its class lies far away (MAP@R low): the case where
    Recall@1 saturates and MAP@R still measures the class's compactness.
    Returns ``(X (n_classes * per_class, dim) float32, y (N,) int64)``.
    """
    if n_classes < 2 or per_class < 2 or modes < 1 or dim < 1:
        raise ValueError("need n_classes >= 2, per_class >= 2, modes >= 1, dim >= 1")
    rng = np.random.default_rng(seed)
    scale = 1.0 / math.sqrt(dim)
    centres = rng.normal(0, scale, (n_classes, dim))
    mode_off = rng.normal(0, scale, (n_classes, modes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    mode_of = np.tile(np.arange(per_class) % modes, n_classes)
    x = (centres[y] + mode_spread * mode_off[y, mode_of]
         + noise * rng.normal(0, scale, (y.size, dim)))
    return x.astype(np.float32), y.astype(np.int64)


def metric_sweep(values: Iterable[float], make: Callable[[float], tuple], *,
                 metrics: Sequence[str] = ("recall", "map@r", "r_precision", "nmi"),
                 ks: Sequence[int] = (1, 4), seed: int = 0, name: str = "value") -> pd.DataFrame:
    """Evaluate :func:`dmlkit.evaluate.evaluate` on ``make(v) -> (embeddings, labels)`` for each
    value ``v``; one row per value (column ``name``) with every metric as a column."""
    rows = []
    for v in values:
        emb, lab = make(v)
        row = {name: float(v)}
        row.update(_evaluate.evaluate(emb, lab, metrics=list(metrics), ks=tuple(ks), seed=seed))
        rows.append(row)
    return pd.DataFrame(rows)
