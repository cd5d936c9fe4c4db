"""The configuration of :func:`dmlkit.train.fit`: one :class:`TrainConfig` field per knob.

Each field carries one line of help (its ``metadata["help"]``); the command line
(``python -m dmlkit train --help``) prints those lines, so the help lives in one place.

>>> cfg = resolve_config(None, {"dataset": "CUB", "epochs": 2})
>>> cfg.dataset, cfg.ks, cfg.epochs
('cub200', (1, 2, 4, 8, 16, 32), 2)
>>> TrainConfig.help("backbone_lr_mult")
'backbone learning rate = lr * backbone_lr_mult (0: frozen backbone)'
>>> resolve_config(None, {"learning_rate": 0.1})
Traceback (most recent call last):
...
ValueError: unknown fit() option(s) ['learning_rate']; known: ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_METRICS", "FINAL_METRICS", "OPTIMIZERS", "TrainConfig", "metric_keys",
           "resolve_config"]

#: Metrics (names of :func:`dmlkit.evaluate.evaluate`) computed at every evaluation
#: (validation split; test with ``track_test``): ``recall`` gives ``recall@K`` for each K in
#: ``ks``.
DEFAULT_METRICS: tuple[str, ...] = ("recall", "map@r", "r_precision")
#: Metrics of the final test evaluation (adds the clustering metrics NMI and F1; those are
#: left out for a query / gallery protocol such as In-shop's).
FINAL_METRICS: tuple[str, ...] = (*DEFAULT_METRICS, "nmi", "f1")
#: optimiser names of :attr:`TrainConfig.optimizer` (SGD with momentum 0.9)
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")


def _option(default: Any, help: str) -> Any:
    """A dataclass field with an immutable default and one line of help."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of :func:`fit`; the command line and the notebooks map 1:1 onto these fields.

    Defaults are a quick glyphs run on a CPU. The papers' recipe on CUB / Cars196 is
    ``backbone="resnet50"`` (or ``"googlenet"``), ``embedding_dim=512``, ``lr=1e-5``,
    ``P=16, K=5`` (Wang et al. 2019b; docs/formulas.md#data-protocols).
    """

    dataset: Any = field(default="glyphs", metadata={
        "help": "data set name (dmlkit.data.available()); from Python also a Dataset"})
    loss: Any = field(default="multi_similarity", metadata={
        "help": "loss name (dmlkit.losses.available()); from Python also a module"})
    loss_params: dict = field(default_factory=dict, metadata={
        "help": "keyword arguments of the loss given by name"})
    chunk_size: Any = _option(  # noqa: RUF009 - an int, "auto" or None (str on the CLI)
        None, "exact tiled pair loss: tiles of at most this many rows / columns, auto or none")
    backbone: str = _option("small_cnn", "backbone name (dmlkit.models.available())")
    embedding_dim: int = _option(64, "size of the embedding")
    pretrained: bool = _option(True, "ImageNet weights for the torchvision backbones")
    normalize: bool = _option(True, "L2-normalise the embeddings")
    freeze_bn: bool = _option(False, "keep the backbone's BatchNorm layers in eval mode")
    epochs: int = _option(10, "number of training epochs")
    iterations_per_epoch: int | None = _option(
        None, "P x K batches per epoch (none: one pass of the sampler)")
    P: int = _option(16, "classes per batch")
    K: int = _option(4, "images per class in a batch (>= 2)")
    lr: float = _option(1e-3, "learning rate of the head (the loss parameters: loss_lr_mult)")
    backbone_lr_mult: float = _option(
        1.0, "backbone learning rate = lr * backbone_lr_mult (0: frozen backbone)")
    loss_lr_mult: float = _option(
        1.0, "learning rate of the loss's parameters (proxies, centres) = lr * loss_lr_mult "
             "(Proxy-Anchor: 100)")
    weight_decay: float = _option(0.0, "weight decay of the network parameters")
    optimizer: str = _option("adam", "optimiser: adam, adamw or sgd (momentum 0.9)")
    grad_clip: float | None = _option(None, "clip the gradient norm to this value (none: off)")
    eval_every: int = _option(1, "epochs between evaluations (0: only at the end)")
    metrics: tuple = _option(DEFAULT_METRICS, "metrics of every evaluation "
                                              "(dmlkit.evaluate.evaluate names)")
    final_metrics: tuple = _option(FINAL_METRICS, "metrics of the final test evaluation")
    ks: tuple | None = _option(None, "Recall@K list (none: the papers' list for the data set)")
    select_metric: str = _option("map@r", "best-model criterion on the validation split")
    val_fraction: float = _option(0.2, "share of the training classes held out for "
                                       "validation (0: no model selection)")
    track_test: bool = _option(False, "also log test metrics (never used for selection)")
    initial_test: bool = _option(False, "test metrics of the untrained network (a baseline)")
    device: str = _option("auto", "auto, cuda, cuda:1, mps or cpu")
    amp: str | None = _option("auto", "mixed precision: auto (bf16 on CUDA), bf16, fp16 "
                                      "or none")
    channels_last: bool | None = _option(
        None, "channels-last memory format (none: on CUDA for the ImageNet backbones)")
    num_workers: int | None = _option(
        None, "data loader workers (none: 0 for in-memory data, else min(8, usable CPUs))")
    batch_size_eval: int = _option(256, "batch size of the evaluation passes")
    image_size: int = _option(224, "image-file data sets: random / centre crop size")
    resize: int = _option(256, "image-file data sets: resize before cropping")
    data_root: str | None = _option(None, "folder of the data sets (none: the default root)")
    download: bool = _option(False, "download a missing data set")
    dataset_kwargs: dict = field(default_factory=dict, metadata={
        "help": "keyword arguments of the data set given by name"})
    seed: int = _option(0, "seed of every random choice of the run")
    out_dir: str | None = _option(None, "output folder (none: runs/<name>)")
    name: str | None = _option(None, "run name (none: <dataset>-<loss>-<backbone>-s<seed>)")
    resume: bool = _option(False, "continue from <out_dir>/last.pt if it exists")
    save_checkpoints: bool = _option(True, "write last.pt, best.pt, history.csv, metrics.json")
    progress: bool = _option(True, "show tqdm progress bars")
    verbose: bool = _option(True, "print the device and a line per evaluation")

    @classmethod
    def help(cls, name: str) -> str:
        """The one line of help of field ``name``."""
        return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)

    def run_name(self) -> str:
        """``name``, or ``<dataset>-<loss>-<backbone>-s<seed>``."""
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


def resolve_config(config: TrainConfig | None, overrides: dict) -> TrainConfig:
    """``config`` (default :class:`TrainConfig`) with ``overrides``, checked and completed:
    canonical data set name, the data set's Recall@K list for ``ks=None``. Bad values raise
    ValueError naming the option."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown fit() option(s) {unknown}; known: {', '.join(sorted(names))}")
    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    cfg.loss_params = dict(cfg.loss_params or {})
    if isinstance(cfg.chunk_size, str) and cfg.chunk_size.strip().isdigit():
        cfg.chunk_size = int(cfg.chunk_size)      # from the command line
    from ..losses.tiling import check_chunk_size
    cfg.chunk_size = check_chunk_size(cfg.chunk_size)
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
    if not float(cfg.loss_lr_mult) >= 0.0:
        raise ValueError(f"loss_lr_mult must be >= 0, got {cfg.loss_lr_mult!r}")
    if not 0.0 <= float(cfg.val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if cfg.amp not in (None, "auto", "bf16", "fp16", "none", False):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or None, got {cfg.amp!r}")
    if isinstance(cfg.dataset, str):  # canonical name ("cub" -> "cub200"); unknown: ValueError
        from ..data import dataset_info

        cfg.dataset = dataset_info(cfg.dataset).name
    if cfg.ks is None:
        from ..data import dataset_info

        cfg.ks = dataset_info(cfg.dataset).recall_ks if isinstance(cfg.dataset, str) \
            else (1, 2, 4, 8)
    cfg.ks = tuple(int(k) for k in cfg.ks)
    keys = metric_keys(cfg.metrics, cfg.ks)
    if cfg.select_metric not in keys:
        raise ValueError(f"select_metric {cfg.select_metric!r} is not computed by metrics "
                         f"{list(cfg.metrics)}; choose one of {keys}")
    return cfg


def metric_keys(metrics, ks) -> list[str]:
    """The result keys of ``metrics``: ``recall`` / ``precision`` expand to one key per K.

    >>> metric_keys(("recall", "map@r"), (1, 2))
    ['recall@1', 'recall@2', 'map@r']
    """
    keys = []
    for m in metrics:
        keys += [f"{m}@{k}" for k in ks] if m in ("recall", "precision") else [m]
    return keys
