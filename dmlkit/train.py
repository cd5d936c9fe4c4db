"""Training: one :func:`fit` for every notebook and the command line, and a feature cache.

>>> from dmlkit.train import fit
>>> result = fit(dataset="glyphs", loss="multi_similarity", epochs=5)   # doctest: +SKIP
>>> result.history          # pandas DataFrame, one row per evaluation, also saved as CSV
>>> result.test_metrics     # held-out test classes, best-on-validation model

Protocol. Train and test classes are disjoint (FORMULAS.md section 5). The *best model is
selected on a validation split of held-out training classes* (``val_fraction`` of the training
classes, :func:`dmlkit.data.train_val_split`), never on the test classes. Many of the papers
reported the best test-set score over training, which selects on the test classes and inflates
the numbers (Musgrave et al. 2020); here the test classes are only used once, at the end (and,
with ``track_test=True``, logged for learning curves but never used for any decision).

Reproducibility. Everything random is derived from ``seed``: the model initialisation, the
validation classes, and, at the start of every epoch, the torch / numpy / python RNGs and the
P x K sampler (re-seeded from ``(seed, epoch)``). Checkpoints (``last.pt``, written atomically
at the end of every epoch) hold the model, optimiser, loss parameters, grad scaler, RNG states
and history, so ``resume=True`` continues a killed run to the same weights as an uninterrupted
run (exactly on CPU with ``num_workers=0``; on GPU up to non-deterministic kernels).

Feature cache. :func:`extract_features` runs a frozen backbone once over a data set and stores
the features on disk (atomic ``.pt``); :func:`fit_head` trains a linear or MLP embedding head
on them in seconds. The adversarial-generator notebooks train on these features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import models as _models
from .notebook import atomic_write_csv

__all__ = [
    "DEFAULT_METRICS",
    "FINAL_METRICS",
    "FitResult",
    "HeadResult",
    "TrainConfig",
    "atomic_save",
    "extract_features",
    "fit",
    "fit_head",
    "load_checkpoint",
    "select_device",
]

#: Metrics (names of :func:`dmlkit.evaluate.evaluate`) computed at every evaluation
#: (validation split; test with ``track_test``): ``recall`` gives ``recall@K`` for each K in
#: ``ks``.
DEFAULT_METRICS: tuple[str, ...] = ("recall", "map@r", "r_precision")
#: Metrics of the final test evaluation (adds the clustering metrics NMI and F1; those are
#: left out for In-shop's query / gallery protocol).
FINAL_METRICS: tuple[str, ...] = (*DEFAULT_METRICS, "nmi", "f1")
# the papers' Recall@K lists (dmlkit.evaluate.PRESETS) by data set
_PRESET = {"cub200": "cub", "cars196": "cars", "sop": "sop", "inshop": "inshop"}

# data sets read from image files: augmentation for training, centre crop for evaluation
_IMAGE_FILE_DATASETS = {"cub200", "cars196", "sop", "inshop"}


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Every knob of :func:`fit`; the command line and the notebooks map 1:1 onto these fields.

    Defaults are a quick glyphs run on a CPU. The papers' recipe on CUB / Cars196 is
    ``backbone="resnet50"`` (or ``"googlenet"``), ``embedding_dim=512``, ``lr=1e-5``,
    ``P=16, K=5`` (seed 004; FORMULAS.md section 5).
    """

    dataset: Any = "glyphs"            # name for dmlkit.data.load_dataset, or a Dataset
    loss: Any = "multi_similarity"     # name for dmlkit.losses.build, or an nn.Module
    loss_params: dict = field(default_factory=dict)
    backbone: str = "small_cnn"        # dmlkit.models.available()
    embedding_dim: int = 64
    pretrained: bool = True            # ImageNet weights for the torchvision backbones
    normalize: bool = True             # L2-normalised embeddings
    freeze_bn: bool = False            # BatchNorm layers of the backbone in eval mode
    epochs: int = 10
    iterations_per_epoch: int | None = None   # None: one pass of the P x K sampler
    P: int = 16                        # classes per batch
    K: int = 4                         # images per class
    lr: float = 1e-3                   # head (and loss parameters) learning rate
    backbone_lr_mult: float = 1.0      # backbone lr = lr * backbone_lr_mult (0: frozen)
    weight_decay: float = 0.0
    optimizer: str = "adam"            # adam, adamw, sgd
    grad_clip: float | None = None     # max gradient norm
    eval_every: int = 1                # epochs between evaluations (0: only at the end)
    metrics: tuple = DEFAULT_METRICS   # dmlkit.evaluate.evaluate metric names
    final_metrics: tuple = FINAL_METRICS
    ks: tuple | None = None            # Recall@K list; None: the papers' list for the data set
    select_metric: str = "map@r"       # best-model criterion on the validation split (a key)
    val_fraction: float = 0.2          # held-out training classes (0: no selection)
    track_test: bool = False           # also log test metrics (never used for selection)
    initial_test: bool = False         # test metrics of the untrained network (a baseline)
    device: str = "auto"               # auto, cuda, cuda:1, mps, cpu
    amp: str | None = "auto"           # auto (bf16 on CUDA), bf16, fp16, None
    channels_last: bool | None = None  # None: on CUDA for the ImageNet backbones
    num_workers: int | None = None     # None: 0 for in-memory data, else min(8, cores)
    batch_size_eval: int = 256
    image_size: int = 224              # image-file data sets: random / centre crop size
    resize: int = 256                  # image-file data sets: resize before cropping
    data_root: str | None = None
    download: bool = False
    dataset_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    out_dir: str | None = None         # None: runs/<name>
    name: str | None = None            # None: <dataset>-<loss>-<backbone>-s<seed>
    resume: bool = False               # continue from <out_dir>/last.pt if it exists
    save_checkpoints: bool = True
    progress: bool = True              # tqdm progress bars
    verbose: bool = True               # device message and a line per evaluation

    def run_name(self) -> str:
        if self.name:
            return str(self.name)
        ds = self.dataset if isinstance(self.dataset, str) else type(self.dataset).__name__
        ls = self.loss if isinstance(self.loss, str) else type(self.loss).__name__
        return f"{ds}-{ls}-{self.backbone}-s{self.seed}"

    def to_dict(self) -> dict:
        """JSON-friendly dict (objects given for ``dataset`` / ``loss`` become their repr)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            if not isinstance(v, (str, int, float, bool, list, dict, type(None))):
                v = repr(v)
            out[f.name] = v
        return out


def _config(config: TrainConfig | None, overrides: dict) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown fit() option(s) {unknown}; known: {', '.join(sorted(names))}")
    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    cfg.loss_params = dict(cfg.loss_params or {})
    cfg.dataset_kwargs = dict(cfg.dataset_kwargs or {})
    cfg.metrics = tuple(cfg.metrics)
    cfg.final_metrics = tuple(cfg.final_metrics)
    for name in ("epochs", "P", "K", "embedding_dim", "batch_size_eval"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)!r}")
    if cfg.K < 2:
        raise ValueError(f"K (images per class) must be >= 2 to form positive pairs, got {cfg.K}")
    if cfg.iterations_per_epoch is not None and cfg.iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1 or None, "
                         f"got {cfg.iterations_per_epoch}")
    if not 0.0 <= float(cfg.val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.optimizer.lower() not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {', '.join(_OPTIMIZERS)}")
    if cfg.amp not in (None, "auto", "bf16", "fp16", "none", False):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or None, got {cfg.amp!r}")
    if isinstance(cfg.dataset, str):  # canonical name ("cub" -> "cub200"); unknown: ValueError
        from .data import _canonical

        cfg.dataset = _canonical(cfg.dataset)
    if cfg.ks is None:
        from .evaluate import PRESETS

        preset = _PRESET.get(cfg.dataset) if isinstance(cfg.dataset, str) else None
        cfg.ks = PRESETS[preset] if preset else (1, 2, 4, 8)
    cfg.ks = tuple(int(k) for k in cfg.ks)
    keys = _metric_keys(cfg.metrics, cfg.ks)
    if cfg.select_metric not in keys:
        raise ValueError(f"select_metric {cfg.select_metric!r} is not computed by metrics "
                         f"{list(cfg.metrics)}; choose one of {keys}")
    return cfg


def _metric_keys(metrics, ks) -> list[str]:
    keys = []
    for m in metrics:
        keys += [f"{m}@{k}" for k in ks] if m in ("recall", "precision") else [m]
    return keys


# ---------------------------------------------------------------------------------------------
# device, precision, seeds, files


def select_device(device: str | torch.device = "auto", verbose: bool = True) -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU, with a visible message."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            msg = f"Using CUDA: {torch.cuda.get_device_name(dev)}"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            dev, msg = torch.device("mps"), "Using Apple MPS"
        else:
            dev = torch.device("cpu")
            n = torch.get_num_threads()
            msg = (f"CUDA not available, using CPU ({n} thread{'s' if n > 1 else ''}); "
                   "training the ImageNet backbones will be slow")
        if verbose:
            print(msg, flush=True)
        return dev
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available; "
                         "use device='auto' or 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for but MPS is not available; use 'cpu'")
    return dev


def _amp_dtype(amp, device: torch.device) -> torch.dtype | None:
    if amp in (None, False, "none") or device.type != "cuda":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 1234]).generate_state(1)[0])


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a file at
    ``path`` is always complete (the previous version survives a crash during saving)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _atomic_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`fit` (a dict; see ``_checkpoint``)."""
    return torch.load(path, map_location=map_location, weights_only=False)


# ---------------------------------------------------------------------------------------------
# data


def _load(cfg: TrainConfig, split: str, train: bool):
    from . import data

    kw = dict(cfg.dataset_kwargs)
    if cfg.dataset in _IMAGE_FILE_DATASETS:
        kw.setdefault("transform", data.get_transforms(train, image_size=cfg.image_size,
                                                       resize=cfg.resize))
    return data.load_dataset(cfg.dataset, split=split, root=cfg.data_root,
                             download=cfg.download, **kw)


def _datasets(cfg: TrainConfig):
    """(train, val or None, test, gallery or None) following the class-disjoint protocol."""
    from . import data

    if isinstance(cfg.dataset, str):
        train_aug = _load(cfg, "train", train=True)
        train_eval = (_load(cfg, "train", train=False)
                      if cfg.dataset in _IMAGE_FILE_DATASETS else train_aug)
        if cfg.dataset == "inshop":
            test, gallery = _load(cfg, "query", False), _load(cfg, "gallery", False)
        else:
            test, gallery = _load(cfg, "test", False), None
    else:  # a Dataset object, or a dict {"train": ..., "test": ..., ["val": ..., "gallery"]}
        given = cfg.dataset if isinstance(cfg.dataset, dict) else {"train": cfg.dataset}
        if "train" not in given:
            raise ValueError("a dataset dict needs a 'train' entry (and 'test', 'val', "
                             "'gallery' optionally)")
        train_aug = train_eval = given["train"]
        test, gallery = given.get("test"), given.get("gallery")
        if "val" in given:
            return train_aug, given["val"], test, gallery
    for name, ds in (("train", train_aug), ("test", test)):
        if ds is not None and not hasattr(ds, "labels"):
            raise ValueError(f"the {name} dataset needs a .labels array (N,) of int class ids")
    if cfg.val_fraction > 0:
        fit_part, _ = data.train_val_split(train_aug, cfg.val_fraction, seed=cfg.seed)
        _, val_part = data.train_val_split(train_eval, cfg.val_fraction, seed=cfg.seed)
        return fit_part, val_part, test, gallery
    return train_aug, None, test, gallery


def _in_memory(ds) -> bool:
    while hasattr(ds, "dataset"):
        ds = ds.dataset
    return hasattr(ds, "images") and isinstance(ds.images, torch.Tensor)


def _num_workers(cfg: TrainConfig, ds) -> int:
    if cfg.num_workers is not None:
        return int(cfg.num_workers)
    return 0 if _in_memory(ds) else min(8, os.cpu_count() or 1)


class _EpochBatches:
    """Batch sampler giving ``n`` P x K batches for an epoch, restarting the wrapped
    :class:`dmlkit.data.PKSampler` (with a new epoch number) when it runs out."""

    def __init__(self, sampler, n: int | None):
        self.sampler, self.n, self.epoch = sampler, n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n if self.n is not None else len(self.sampler)

    def __iter__(self):
        made, cycle = 0, 0
        while True:
            self.sampler.set_epoch(self.epoch * 1_000_003 + cycle)
            empty = True
            for batch in self.sampler:
                empty = False
                yield batch
                made += 1
                if self.n is None or made >= self.n:
                    return
            if empty:
                raise ValueError("the P x K sampler produced no batch: too few classes with "
                                 "at least K images for P classes per batch")
            cycle += 1


def _loader(ds, cfg: TrainConfig, device: torch.device, batch_sampler=None) -> DataLoader:
    workers = _num_workers(cfg, ds)
    kw = {"num_workers": workers, "pin_memory": device.type == "cuda",
              "persistent_workers": False}
    if workers > 0:
        kw["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **kw)
    return DataLoader(ds, batch_size=cfg.batch_size_eval, shuffle=False, **kw)


# ---------------------------------------------------------------------------------------------
# model, loss, optimiser

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def _in_channels(ds) -> int:
    x, _ = ds[0]
    return int(x.shape[0]) if torch.is_tensor(x) and x.dim() == 3 else 3


def _build_loss(cfg: TrainConfig) -> nn.Module:
    if isinstance(cfg.loss, nn.Module):
        if cfg.loss_params:
            raise ValueError("loss_params only apply to a loss given by name")
        return cfg.loss
    from . import losses

    return losses.build(cfg.loss, **cfg.loss_params)


def _optimizer(cfg: TrainConfig, model: _models.EmbeddingNet, loss: nn.Module):
    groups = model.param_groups(cfg.lr, cfg.backbone_lr_mult, cfg.weight_decay)
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:  # e.g. class centres / proxies owned by the loss
        groups.append({"params": loss_params, "lr": cfg.lr, "weight_decay": 0.0,
                       "name": "loss"})
    kw = {"momentum": 0.9} if cfg.optimizer.lower() == "sgd" else {}
    return _OPTIMIZERS[cfg.optimizer.lower()](groups, lr=cfg.lr, **kw)


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def _embed(model: nn.Module, ds, cfg: TrainConfig, device: torch.device,
           amp_dtype: torch.dtype | None = None,
           channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`dmlkit.evaluate.embed`, with the run's precision, memory format and
    progress setting. Returns ``(N, D) float32`` embeddings and ``(N,)`` int64 labels."""
    was_training = model.training
    model.eval()
    embs, labs = [], []
    try:
        for x, y in tqdm(_loader(ds, cfg, device), desc="embed", leave=False,
                         disable=not cfg.progress):
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                embs.append(model(x).float().cpu())
            labs.append(torch.as_tensor(y, dtype=torch.int64))
    finally:
        model.train(was_training)
    return torch.cat(embs).numpy(), torch.cat(labs).numpy()


def _evaluate(model, ds, cfg, device, metrics, gallery=None, amp_dtype=None,
              channels_last=False) -> dict:
    from . import evaluate

    emb, labels = _embed(model, ds, cfg, device, amp_dtype, channels_last)
    kw = {}
    if gallery is not None:
        g_emb, g_labels = _embed(model, gallery, cfg, device, amp_dtype, channels_last)
        kw["gallery"] = (g_emb, g_labels)
        metrics = [m for m in metrics if m not in ("nmi", "f1")]  # cluster one set only
    return {k: float(v) for k, v in evaluate.evaluate(
        emb, labels, metrics=list(metrics), seed=cfg.seed, ks=cfg.ks, **kw).items()}


# ---------------------------------------------------------------------------------------------
# fit


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``model`` is the best-on-validation model (the last one without a validation split), on
    the training device, in eval mode. ``history`` has one row per evaluation: ``epoch``,
    ``loss`` (mean training loss of the epoch), ``lr``, ``epoch_time``, ``data_share`` (share
    of the step time spent waiting for data), ``val_<metric>`` and, with ``track_test``,
    ``test_<metric>``. Row ``epoch == 0`` is the untrained network; with ``track_test`` its
    test ``final_metrics`` (or with ``initial_test``) are in ``initial_test_metrics`` (the
    baseline of the demo).
    """

    model: _models.EmbeddingNet
    history: pd.DataFrame
    test_metrics: dict
    best_val_metrics: dict
    best_epoch: int
    config: TrainConfig
    out_dir: Path | None = None
    paths: dict = field(default_factory=dict)
    loss: nn.Module | None = None
    device: torch.device | None = None
    initial_test_metrics: dict = field(default_factory=dict)


def fit(config: TrainConfig | None = None, **overrides) -> FitResult:
    """Train an embedding network with a metric-learning loss; see :class:`TrainConfig`.

    ``fit(dataset="glyphs", loss="multi_similarity", loss_params={"alpha": 2}, epochs=5)``;
    ``fit(cfg)`` or ``fit(cfg, epochs=1)`` with a :class:`TrainConfig`. ``dataset`` may be a
    name (:func:`dmlkit.data.available`), a Dataset with ``.labels`` (its training classes are
    split into fit / validation), or a dict ``{"train": ds, "test": ds, "val": ds}``; ``loss``
    a name (:func:`dmlkit.losses.available`) or a module called as ``loss(embeddings, labels)``
    whose parameters (if any) are optimised too.

    Each epoch: ``iterations_per_epoch`` P x K batches, then (every ``eval_every`` epochs) the
    metrics on the validation classes, a history row, ``history.csv`` and an atomic
    ``last.pt``; ``best.pt`` keeps the model with the best ``val_<select_metric>``. At the end
    the best model is evaluated once on the test classes (``final_metrics``).
    """
    cfg = _config(config, overrides)
    device = select_device(cfg.device, verbose=cfg.verbose)
    amp_dtype = _amp_dtype(cfg.amp, device)
    if cfg.amp == "fp16" and device.type != "cuda" and cfg.verbose:
        print("amp ignored: mixed precision is used on CUDA only")

    _seed_everything(cfg.seed)
    train_ds, val_ds, test_ds, gallery_ds = _datasets(cfg)
    loss = _build_loss(cfg).to(device)
    model = _models.build_model(cfg.backbone, cfg.embedding_dim, pretrained=cfg.pretrained,
                                normalize=cfg.normalize, freeze_bn=cfg.freeze_bn,
                                in_channels=_in_channels(train_ds)).to(device)
    channels_last = (cfg.channels_last if cfg.channels_last is not None
                     else device.type == "cuda" and cfg.backbone != "small_cnn")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fmt = (amp_dtype, channels_last)  # evaluation in the training precision / layout
    optimizer = _optimizer(cfg, model, loss)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    from . import data

    sampler = data.PKSampler(np.asarray(train_ds.labels), cfg.P, cfg.K, seed=cfg.seed)
    batches = _EpochBatches(sampler, cfg.iterations_per_epoch)
    train_loader = _loader(train_ds, cfg, device, batch_sampler=batches)

    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("runs") / cfg.run_name()
    write = cfg.save_checkpoints
    paths = {"last": out_dir / "last.pt", "best": out_dir / "best.pt",
             "history": out_dir / "history.csv", "config": out_dir / "config.json"}
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_text(json.dumps(cfg.to_dict(), indent=2, default=str), paths["config"])

    history: list[dict] = []
    start_epoch, best_score, best_epoch, best_val = 0, -math.inf, 0, {}
    best_state = None
    initial_test: dict = {}
    if cfg.resume and paths["last"].exists():
        ck = load_checkpoint(paths["last"], map_location=device)
        _check_resume_config(ck.get("config", {}), cfg, paths["last"])
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        loss.load_state_dict(ck["loss"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        history = list(ck["history"])
        start_epoch, best_score = int(ck["epoch"]), float(ck["best_score"])
        best_epoch, best_val = int(ck["best_epoch"]), dict(ck["best_val"])
        initial_test = dict(ck.get("initial_test", {}))
        if cfg.verbose:
            print(f"Resuming {out_dir} after epoch {start_epoch}")
    elif cfg.resume and cfg.verbose:
        print(f"resume=True but {paths['last']} does not exist: starting from scratch")

    def evaluate_now(epoch: int, row: dict) -> None:
        nonlocal best_score, best_epoch, best_val, best_state, initial_test
        if val_ds is not None:
            val = _evaluate(model, val_ds, cfg, device, cfg.metrics, None, *fmt)
            row.update({f"val_{k}": v for k, v in val.items()})
            score = val[cfg.select_metric]
            if score > best_score:
                best_score, best_epoch, best_val = score, epoch, val
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if write:
                    atomic_save({"model": best_state, "epoch": epoch, "val": val,
                                 "config": cfg.to_dict()}, paths["best"])
        if (cfg.track_test or (epoch == 0 and cfg.initial_test)) and test_ds is not None:
            names = cfg.final_metrics if epoch == 0 else cfg.metrics
            test = _evaluate(model, test_ds, cfg, device, names, gallery_ds, *fmt)
            keep = _metric_keys(cfg.metrics, cfg.ks)
            row.update({f"test_{k}": v for k, v in test.items() if k in keep})
            if epoch == 0:
                initial_test = test

    if start_epoch == 0 and cfg.eval_every > 0:  # the untrained network: epoch 0
        _seed_everything(_epoch_seed(cfg.seed, 0))
        row = {"epoch": 0, "loss": float("nan"), "lr": cfg.lr, "epoch_time": 0.0,
               "data_share": float("nan")}
        evaluate_now(0, row)
        history.append(row)
        if cfg.verbose:
            _print_row(row)

    epochs = range(start_epoch + 1, cfg.epochs + 1)
    bar = tqdm(epochs, desc="epochs", disable=not cfg.progress, initial=start_epoch,
               total=cfg.epochs)
    for epoch in bar:
        _seed_everything(_epoch_seed(cfg.seed, epoch))
        batches.set_epoch(epoch)
        model.train()
        loss.train()
        total, steps, data_time, t0 = 0.0, 0, 0.0, time.perf_counter()
        t_wait = time.perf_counter()
        for x, y in tqdm(train_loader, desc=f"epoch {epoch}", leave=False,
                         disable=not cfg.progress):
            data_time += time.perf_counter() - t_wait  # blocked waiting for the loader
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                emb = model(x)
            value = loss(emb.float(), y)
            if not torch.isfinite(value):
                raise FloatingPointError(f"loss became {value.item()} at epoch {epoch}, step "
                                         f"{steps}: lower lr or use amp='bf16' / None")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total += float(value.detach())
            steps += 1
            if device.type == "cuda":
                torch.cuda.synchronize()  # the step's kernels count as compute, not data time
            t_wait = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        row = {"epoch": epoch, "loss": total / max(steps, 1), "lr": cfg.lr,
               "epoch_time": elapsed, "data_share": data_time / max(elapsed, 1e-12)}
        last = epoch == cfg.epochs
        if (cfg.eval_every > 0 and (epoch % cfg.eval_every == 0 or last)) or (
                last and val_ds is not None and best_state is None):
            evaluate_now(epoch, row)
        history.append(row)
        if cfg.verbose and cfg.eval_every > 0 and "val_" + cfg.select_metric in row:
            _print_row(row, bar)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if write:
            atomic_write_csv(pd.DataFrame(history), paths["history"])
            ck = _checkpoint(model, optimizer, loss, scaler, epoch, history, best_score,
                             best_epoch, best_val, cfg)
            ck["initial_test"] = initial_test
            atomic_save(ck, paths["last"])
    bar.close()

    # best-on-validation model (never selected on the test classes)
    if val_ds is not None:
        if best_state is None and write and paths["best"].exists():  # resumed run
            best_state = load_checkpoint(paths["best"], map_location=device)["model"]
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    test_metrics = {}
    if test_ds is not None:
        test_metrics = _evaluate(model, test_ds, cfg, device, cfg.final_metrics, gallery_ds,
                                 *fmt)
        if cfg.verbose:
            which = f"best val epoch {best_epoch}" if val_ds is not None else "last epoch"
            print(f"test ({which}): " + ", ".join(f"{k}={v:.4f}" for k, v in
                                                   test_metrics.items()))
        if write:
            _atomic_text(json.dumps({"best_epoch": best_epoch, "val": best_val,
                                     "test": test_metrics}, indent=2),
                         out_dir / "metrics.json")
            paths["metrics"] = out_dir / "metrics.json"
    return FitResult(model=model, history=pd.DataFrame(history), test_metrics=test_metrics,
                     best_val_metrics=best_val, best_epoch=best_epoch, config=cfg,
                     out_dir=out_dir if write else None, paths=paths if write else {},
                     loss=loss, device=device, initial_test_metrics=initial_test)


def _checkpoint(model, optimizer, loss, scaler, epoch, history, best_score, best_epoch,
                best_val, cfg) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "loss": loss.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
            "history": history, "best_score": best_score, "best_epoch": best_epoch,
            "best_val": best_val, "rng": _rng_state(), "config": cfg.to_dict()}


# options that may change between a run and its resumption
_RESUMABLE = {"epochs", "resume", "progress", "verbose", "num_workers", "device", "out_dir",
              "name", "eval_every", "batch_size_eval", "save_checkpoints", "data_root",
              "download", "track_test", "initial_test"}


def _check_resume_config(saved: dict, cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    diff = sorted(k for k in now if k not in _RESUMABLE and k in saved and saved[k] != now[k])
    if diff:
        changes = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff)
        raise ValueError(f"cannot resume {path}: the run was started with other settings "
                         f"({changes}); use another out_dir or resume=False")


def _print_row(row: dict, bar=None) -> None:
    parts = [f"epoch {row['epoch']}"]
    if not math.isnan(row["loss"]):
        parts.append(f"loss {row['loss']:.4f}")
    parts += [f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("val_", "test_"))]
    (bar.write if bar is not None else print)("  ".join(parts))


# ---------------------------------------------------------------------------------------------
# feature cache


def _cache_path(cache_dir, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in key)
    if len(safe) > 120:
        safe = safe[:80] + "-" + hashlib.md5(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{safe}.pt"


@torch.no_grad()
def extract_features(model: nn.Module | str, dataset: Dataset | str, device: str = "auto",
                     batch_size: int = 256, *, split: str = "train",
                     cache_dir: str | os.PathLike | None = "runs/features",
                     key: str | None = None, pretrained: bool = True,
                     dataset_kwargs: dict | None = None, image_size: int = 224,
                     resize: int = 256, num_workers: int | None = None, seed: int = 0,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a frozen backbone over a data set, computed once and cached on disk.

    Args:
        model: a backbone name (built with ImageNet weights when ``pretrained``), an
            :class:`~dmlkit.models.EmbeddingNet` (its ``.backbone`` is used), or any module
            mapping ``(B, C, H, W)`` to ``(B, F)``.
        dataset: a data set name (loaded with ``split`` and evaluation transforms) or a
            Dataset with ``.labels``.
        cache_dir: folder of the cache (None: no cache). The file is keyed by ``key``, by
            default ``<dataset>-<split>-<backbone>-<image_size>[-<dataset_kwargs>]`` when both
            are given by name; a module or dataset object needs an explicit ``key`` to be
            cached. Written atomically (``.pt``: features, labels, meta).
        seed: initialisation of a backbone built by name without pretrained weights
            (``small_cnn`` always), so that a cached file matches the network it names.

    Returns:
        ``features (N, F) float32`` and ``labels (N,) int64`` CPU tensors, in data set order.
    """
    dataset_kwargs = dict(dataset_kwargs or {})
    if key is None and isinstance(model, str) and isinstance(dataset, str):
        extra = "-".join(f"{k}={v}" for k, v in sorted(dataset_kwargs.items()))
        random_init = not pretrained or _models._canonical(model) == "small_cnn"
        key = (f"{dataset}-{split}-{model}{f'-random{seed}' if random_init else ''}-{image_size}"
               + (f"-{extra}" if extra else ""))
    path = _cache_path(cache_dir, key) if (cache_dir is not None and key) else None
    if path is not None and path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        return blob["features"], blob["labels"]

    dev = select_device(device, verbose=False)
    if isinstance(dataset, str):
        from . import data

        if dataset in _IMAGE_FILE_DATASETS:
            dataset_kwargs.setdefault("transform", data.get_transforms(
                False, image_size=image_size, resize=resize))
        dataset = data.load_dataset(dataset, split=split, **dataset_kwargs)
    if isinstance(model, str):
        with torch.random.fork_rng(devices=[]):  # a random backbone is the same for a seed
            torch.manual_seed(seed)
            model = _models.build_model(model, pretrained=pretrained,
                                        in_channels=_in_channels(dataset))
    net = model.backbone if isinstance(model, _models.EmbeddingNet) else model
    was_training = net.training
    net.eval().to(dev)
    workers = num_workers if num_workers is not None else (
        0 if _in_memory(dataset) else min(8, os.cpu_count() or 1))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=dev.type == "cuda")
    feats, labels = [], []
    amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    for x, y in tqdm(loader, desc="features", disable=not progress, leave=False):
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            f = net(x.to(dev, non_blocking=True))
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(y, dtype=torch.int64))
    net.train(was_training)
    features = torch.cat(feats) if feats else torch.zeros(0, 0)
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    if path is not None:
        atomic_save({"features": features, "labels": labels_t,
                     "meta": {"key": key, "n": len(labels_t)}}, path)
    return features, labels_t


@dataclass
class HeadResult:
    """What :func:`fit_head` returns: ``head`` ((N, F) -> (N, D), eval mode), ``history`` (one
    row per evaluation: epoch, loss, ``val_<metric>``), the best validation metrics and the
    loss module (with its trained parameters, if any)."""

    head: nn.Module
    history: pd.DataFrame
    best_val_metrics: dict
    best_epoch: int
    loss: nn.Module


class EmbeddingHead(nn.Module):
    """Linear (``hidden_dim=None``) or 2-layer MLP head on cached features, L2-normalised."""

    def __init__(self, in_dim: int, embedding_dim: int, hidden_dim: int | None = None,
                 normalize: bool = True):
        super().__init__()
        if hidden_dim:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                                     nn.Linear(hidden_dim, embedding_dim))
        else:
            self.net = nn.Linear(in_dim, embedding_dim)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, F)`` -> ``(B, D)``."""
        z = self.net(x)
        return nn.functional.normalize(z, dim=1) if self.normalize else z


def fit_head(features: torch.Tensor, labels, loss: str | nn.Module = "multi_similarity",
             embedding_dim: int = 128, *, loss_params: dict | None = None,
             hidden_dim: int | None = None, normalize: bool = True, epochs: int = 20,
             iterations_per_epoch: int | None = None, P: int = 16, K: int = 4,
             lr: float = 1e-3, weight_decay: float = 0.0, val: tuple | None = None,
             metrics: Sequence[str] = DEFAULT_METRICS, ks: Sequence[int] = (1, 2, 4, 8),
             select_metric: str = "map@r",
             eval_every: int = 1, seed: int = 0, device: str = "cpu",
             progress: bool = False) -> HeadResult:
    """Train an embedding head on cached backbone features (seconds on a CPU).

    Args:
        features: ``(N, F)`` float features (e.g. from :func:`extract_features`).
        labels: ``(N,)`` int class labels.
        loss: a loss name or module, called as ``loss(embeddings, labels)``.
        val: optional ``(features, labels)`` of held-out classes: the head with the best
            ``select_metric`` on them is returned (otherwise the last one).

    Returns:
        :class:`HeadResult`.
    """
    from . import data, losses
    from ._checks import check_embeddings_labels

    features = torch.as_tensor(features, dtype=torch.float32)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    check_embeddings_labels(features, labels_t)
    if select_metric not in _metric_keys(metrics, ks):
        raise ValueError(f"select_metric {select_metric!r} is not computed by metrics "
                         f"{list(metrics)}; choose one of {_metric_keys(metrics, ks)}")
    dev = select_device(device, verbose=False)
    _seed_everything(seed)
    head = EmbeddingHead(features.shape[1], embedding_dim, hidden_dim, normalize).to(dev)
    loss_mod = (losses.build(loss, **(loss_params or {})) if isinstance(loss, str)
                else loss).to(dev)
    params = [{"params": head.parameters()}]
    extra = [p for p in loss_mod.parameters() if p.requires_grad]
    if extra:
        params.append({"params": extra, "weight_decay": 0.0})
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sampler = _EpochBatches(data.PKSampler(labels_t.numpy(), P, K, seed=seed),
                            iterations_per_epoch)
    x_all, y_all = features.to(dev), labels_t.to(dev)

    def val_metrics() -> dict:
        from . import evaluate

        head.eval()
        with torch.no_grad():
            z = head(torch.as_tensor(val[0], dtype=torch.float32).to(dev)).cpu().numpy()
        head.train()
        return {k: float(v) for k, v in evaluate.evaluate(
            z, np.asarray(val[1]), metrics=list(metrics), ks=tuple(ks), seed=seed).items()}

    history, best, best_epoch, best_val, best_state = [], -math.inf, 0, {}, None
    if val is not None and eval_every > 0:
        row = {"epoch": 0, "loss": float("nan")}
        row.update({f"val_{k}": v for k, v in val_metrics().items()})
        history.append(row)
    for epoch in tqdm(range(1, epochs + 1), desc="head", disable=not progress):
        _seed_everything(_epoch_seed(seed, epoch))
        sampler.set_epoch(epoch)
        head.train()
        total, steps = 0.0, 0
        for idx in sampler:
            idx_t = torch.as_tensor(idx, device=dev)
            value = loss_mod(head(x_all[idx_t]), y_all[idx_t])
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += float(value.detach())
            steps += 1
        row = {"epoch": epoch, "loss": total / max(steps, 1)}
        if val is not None and eval_every > 0 and (epoch % eval_every == 0 or epoch == epochs):
            m = val_metrics()
            row.update({f"val_{k}": v for k, v in m.items()})
            if m[select_metric] > best:
                best, best_epoch, best_val = m[select_metric], epoch, m
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        history.append(row)
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return HeadResult(head=head, history=pd.DataFrame(history), best_val_metrics=best_val,
                      best_epoch=best_epoch if best_state is not None else epochs,
                      loss=loss_mod)
