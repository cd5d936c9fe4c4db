""":func:`fit`: train an embedding network on a data set, select on validation classes, test.

>>> from dmlkit.train import fit
>>> result = fit(dataset="glyphs", loss="multi_similarity", epochs=1, iterations_per_epoch=2,
...              P=4, K=4, embedding_dim=8, device="cpu", save_checkpoints=False,
...              dataset_kwargs={"num_classes": 8, "images_per_class": 6, "size": 16},
...              progress=False, verbose=False)
>>> result.history["epoch"].tolist()   # one row per evaluation (0: the untrained network)
[0, 1]
>>> sorted(result.test_metrics)        # held-out test classes, best-on-validation model
['f1', 'map@r', 'nmi', 'r_precision', 'recall@1', 'recall@2', 'recall@4', 'recall@8']

Protocol. Train and test classes are disjoint (docs/formulas.md#data-protocols). The *best model is
selected on a validation split of held-out training classes* (``val_fraction`` of the training
classes, :func:`dmlkit.data.train_val_split`), never on the test classes. Many of the papers
reported the best test-set score over training, which selects on the test classes and inflates
the numbers (Musgrave et al. 2020); here the test classes are only used once, at the end (and,
with ``track_test=True``, logged for learning curves but never used for any decision).

Reproducibility. Everything random is derived from ``seed``: the model initialisation, the
validation classes, and, at the start of every epoch, the torch / numpy / python RNGs and the
P x K sampler (re-seeded from ``(seed, epoch)``, :func:`dmlkit.seeding.derived_seed`).
Checkpoints (``last.pt``, :mod:`dmlkit.train.checkpoint`) let ``resume=True`` continue a killed
run to the same weights as an uninterrupted run (exactly on CPU with ``num_workers=0``; on GPU
up to non-deterministic kernels).
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed as _distributed
from .. import models as _models
from ..atomic import atomic_save, atomic_write_csv, atomic_write_text
from ..seeding import derived_seed, seed_everything, set_rng_state
from . import datasets
from .batches import EpochBatches
from .checkpoint import check_resume_config, load_checkpoint, training_state
from .config import TrainConfig, metric_keys, resolve_config
from .device import amp_dtype, select_device
from .epoch_log import EpochLog, short_metric_name
from .engine import Trainer

__all__ = ["FitResult", "FitTrainer", "fit"]

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


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
    return FitTrainer(resolve_config(config, overrides)).run()


def _build_loss(cfg: TrainConfig, classes=None) -> nn.Module:
    """The loss of the run; a loss by name that owns one parameter per class (proxies,
    centres: a ``num_classes`` parameter) gets ``num_classes = len(classes)`` (the training
    classes, whose labels :func:`class_index` maps to 0..C-1) and ``embedding_dim``."""
    if isinstance(cfg.loss, nn.Module):
        if cfg.loss_params or cfg.chunk_size is not None:
            raise ValueError("loss_params and chunk_size only apply to a loss given by name "
                             "(set loss.chunk_size on a loss module)")
        return cfg.loss
    from .. import losses

    params = dict(cfg.loss_params)
    if classes is not None and "num_classes" in (losses.parameters(cfg.loss) or ()):
        params.setdefault("num_classes", len(classes))
        params.setdefault("embedding_dim", cfg.embedding_dim)
    if cfg.chunk_size is not None:
        params["chunk_size"] = cfg.chunk_size        # the exact tiled path
    return losses.build(cfg.loss, **params)


def class_index(classes) -> torch.Tensor:
    """A lookup tensor mapping each training class id (``classes``, sorted) to 0..C-1."""
    classes = torch.as_tensor(np.asarray(classes), dtype=torch.long)
    index = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
    index[classes] = torch.arange(len(classes))
    return index


def _optimizer(cfg: TrainConfig, model: _models.EmbeddingNet, loss: nn.Module):
    groups = model.param_groups(cfg.lr, cfg.backbone_lr_mult, cfg.weight_decay)
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:  # class centres / proxies owned by the loss: their own learning rate
        groups.append({"params": loss_params, "lr": cfg.lr * cfg.loss_lr_mult,
                       "weight_decay": 0.0, "name": "loss"})
    kw = {"momentum": 0.9} if cfg.optimizer.lower() == "sgd" else {}
    return _OPTIMIZERS[cfg.optimizer.lower()](groups, lr=cfg.lr, **kw)


@torch.no_grad()
def _embed(model: nn.Module, ds, cfg: TrainConfig, device: torch.device,
           amp: torch.dtype | None = None,
           channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`dmlkit.evaluate.embed`, with the run's precision, memory format and
    progress setting. Returns ``(N, D) float32`` embeddings and ``(N,)`` int64 labels."""
    was_training = model.training
    model.eval()
    embs, labs = [], []
    try:
        for x, y in tqdm(datasets.loader(ds, cfg, device), desc="embed", leave=False,
                         disable=not cfg.progress):
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp or torch.float32,
                                enabled=amp is not None):
                embs.append(model(x).float().cpu())
            labs.append(torch.as_tensor(y, dtype=torch.int64))
    finally:
        model.train(was_training)
    return torch.cat(embs).numpy(), torch.cat(labs).numpy()


def _evaluate(model, ds, cfg, device, metrics, gallery=None, amp=None,
              channels_last=False) -> dict:
    from .. import evaluate

    emb, labels = _embed(model, ds, cfg, device, amp, channels_last)
    kw = {}
    if gallery is not None:
        g_emb, g_labels = _embed(model, gallery, cfg, device, amp, channels_last)
        kw["gallery"] = (g_emb, g_labels)
        metrics = [m for m in metrics if m not in ("nmi", "f1")]  # cluster one set only
    return {k: float(v) for k, v in evaluate.evaluate(
        emb, labels, metrics=list(metrics), seed=cfg.seed, ks=cfg.ks, **kw).items()}


def _print_row(row: dict, log: EpochLog, bar=None) -> None:
    """One evaluated epoch as a line of the compact epoch table (a header first)."""
    for line in log.lines(row):
        (bar.write if bar is not None else print)(line)


class FitTrainer(Trainer):
    """The engine of :func:`fit`: image batches on a device (mixed precision, channels-last),
    a finite-loss check, validation-based model selection, ``last.pt`` / ``best.pt`` /
    ``history.csv`` every epoch, resumption, and the final test evaluation."""

    def __init__(self, cfg: TrainConfig):
        # under torchrun: one process per device; only rank 0 prints, logs and writes files
        self.rank, self.world = _distributed.init_from_env(cfg.device)
        if self.rank != 0:
            cfg = dataclasses.replace(cfg, verbose=False, progress=False)
        self.cfg = cfg
        device = self.device = _distributed.local_device(
            select_device(cfg.device, verbose=cfg.verbose))
        self.amp = amp_dtype(cfg.amp, device)
        if cfg.amp == "fp16" and device.type != "cuda" and cfg.verbose:
            print("amp ignored: mixed precision is used on CUDA only")
        seed_everything(cfg.seed)
        self.train_ds, self.val_ds, self.test_ds, self.gallery_ds = datasets.splits(cfg)
        classes = np.unique(np.asarray(self.train_ds.labels))
        loss = _build_loss(cfg, classes).to(device)
        # a loss with one parameter per class sees the training classes as 0..C-1
        self.label_map = (class_index(classes).to(device)
                          if hasattr(loss, "num_classes") and not isinstance(cfg.loss, nn.Module)
                          else None)
        model = _models.build_model(cfg.backbone, cfg.embedding_dim, pretrained=cfg.pretrained,
                                    normalize=cfg.normalize, freeze_bn=cfg.freeze_bn,
                                    in_channels=datasets.in_channels(self.train_ds)).to(device)
        self.channels_last = (cfg.channels_last if cfg.channels_last is not None
                              else device.type == "cuda" and cfg.backbone != "small_cnn")
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = _optimizer(cfg, model, loss)
        scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        super().__init__(model, loss, optimizer, scaler=scaler, grad_clip=cfg.grad_clip)
        # several processes: model gradients averaged in backward, distinct classes per process
        _distributed.average_gradients_in_backward(model)
        sampler = _distributed.pk_sampler(self.train_ds.labels, cfg.P, cfg.K, seed=cfg.seed)
        self.epoch_batches = EpochBatches(sampler, cfg.iterations_per_epoch)
        self.train_loader = datasets.loader(self.train_ds, cfg, device,
                                            batch_sampler=self.epoch_batches)
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("runs") / cfg.run_name()
        self.write = cfg.save_checkpoints and self.rank == 0
        self.paths = {"last": self.out_dir / "last.pt", "best": self.out_dir / "best.pt",
                      "history": self.out_dir / "history.csv",
                      "config": self.out_dir / "config.json"}
        self.start_epoch_number, self.best_score, self.best_epoch = 0, -math.inf, 0
        self.best_val: dict = {}
        self.best_state = None
        self.initial_test: dict = {}
        self.epoch_log = EpochLog()

    def _evaluate(self, ds, metrics, gallery=None) -> dict:
        """Metrics of ``ds`` in the training precision / memory format."""
        return _evaluate(self.model, ds, self.cfg, self.device, metrics, gallery, self.amp,
                         self.channels_last)

    # ------------------------------------------------------------------------- stages
    def start(self) -> None:
        cfg = self.cfg
        if self.write:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.paths["config"],
                              json.dumps(cfg.to_dict(), indent=2, default=str))
        if cfg.resume and self.paths["last"].exists():
            self.resume(self.paths["last"])
        elif cfg.resume and cfg.verbose:
            print(f"resume=True but {self.paths['last']} does not exist: starting from scratch")
        if self.start_epoch_number == 0 and cfg.eval_every > 0:  # the untrained network
            seed_everything(derived_seed(cfg.seed, 0))
            row = {"epoch": 0, "loss": float("nan"), "lr": cfg.lr, "epoch_time": 0.0,
                   "data_share": float("nan")}
            self.evaluate(0, row)
            self.history.append(row)
            if cfg.verbose:
                _print_row(row, self.epoch_log)

    def resume(self, path: Path) -> None:
        """Continue from checkpoint ``path`` (a :func:`load_checkpoint` error names a corrupt
        file and what to do)."""
        ck = load_checkpoint(path, map_location=self.device)
        check_resume_config(ck.get("config", {}), self.cfg.to_dict(), path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.loss.load_state_dict(ck["loss"])
        self.scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        self.history = list(ck["history"])
        self.start_epoch_number, self.best_score = int(ck["epoch"]), float(ck["best_score"])
        self.best_epoch, self.best_val = int(ck["best_epoch"]), dict(ck["best_val"])
        self.initial_test = dict(ck.get("initial_test", {}))
        if self.cfg.verbose:
            print(f"Resuming {self.out_dir} after epoch {self.start_epoch_number}")

    def epochs(self):
        cfg = self.cfg
        self.bar = tqdm(range(self.start_epoch_number + 1, cfg.epochs + 1), desc="epochs",
                        disable=not cfg.progress, initial=self.start_epoch_number,
                        total=cfg.epochs)
        return self.bar

    def start_epoch(self, epoch: int) -> None:
        seed_everything(derived_seed(self.cfg.seed, epoch))
        self.epoch_batches.set_epoch(epoch)
        super().start_epoch(epoch)

    def train_mode(self) -> None:
        self.model.train()
        self.loss.train()

    def batches(self, epoch: int):
        """The loader's batches, timing how long each one is waited for."""
        cuda = self.device.type == "cuda"
        self.data_time, t0 = 0.0, time.perf_counter()
        t_wait = time.perf_counter()
        for batch in tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False,
                          disable=not self.cfg.progress):
            self.data_time += time.perf_counter() - t_wait  # blocked waiting for the loader
            yield batch
            if cuda:
                torch.cuda.synchronize()  # the step's kernels count as compute, not data time
            t_wait = time.perf_counter()
        if cuda:
            torch.cuda.synchronize()
        self.elapsed = time.perf_counter() - t0

    def prepare_batch(self, batch) -> tuple:
        x, y = batch
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.label_map is not None:
            y = self.label_map[y]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def compute_loss(self, x, y) -> dict:
        _distributed.broadcast_buffers(self.model)     # several processes: rank 0's buffers
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                            enabled=self.amp is not None):
            emb = self.model(x)
        # several processes: the loss of the global batch (dmlkit.distributed.gather_batch)
        value = self.loss(*_distributed.gather_batch(emb.float(), y))
        if not torch.isfinite(value):
            raise FloatingPointError(f"loss became {value.item()} at epoch {self.epoch}, step "
                                     f"{self.steps}: lower lr or use amp='bf16' / None")
        return {"loss": value}

    def epoch_row(self, epoch: int) -> dict:
        return {"epoch": epoch, "loss": self.sums.get("loss", 0.0) / max(self.steps, 1),
                "lr": self.cfg.lr, "epoch_time": self.elapsed,
                "data_share": self.data_time / max(self.elapsed, 1e-12)}

    def should_evaluate(self, epoch: int) -> bool:
        cfg, last = self.cfg, epoch == self.cfg.epochs
        return (cfg.eval_every > 0 and (epoch % cfg.eval_every == 0 or last)) or (
            last and self.val_ds is not None and self.best_state is None)

    def evaluate(self, epoch: int, row: dict) -> None:
        """Validation metrics (a new best is kept, and saved as ``best.pt``); test metrics
        with ``track_test`` (or at epoch 0 with ``initial_test``), never used to select."""
        cfg = self.cfg
        if self.val_ds is not None:
            val = self._evaluate(self.val_ds, cfg.metrics)
            row.update({f"val_{k}": v for k, v in val.items()})
            score = val[cfg.select_metric]
            if score > self.best_score:
                self.best_score, self.best_epoch, self.best_val = score, epoch, val
                self.best_state = {k: v.detach().clone()
                                   for k, v in self.model.state_dict().items()}
                if self.write:
                    atomic_save({"model": self.best_state, "epoch": epoch, "val": val,
                                 "config": cfg.to_dict()}, self.paths["best"])
        if (cfg.track_test or (epoch == 0 and cfg.initial_test)) and self.test_ds is not None:
            names = cfg.final_metrics if epoch == 0 else cfg.metrics
            test = self._evaluate(self.test_ds, names, self.gallery_ds)
            keep = metric_keys(cfg.metrics, cfg.ks)
            row.update({f"test_{k}": v for k, v in test.items() if k in keep})
            if epoch == 0:
                self.initial_test = test

    def log(self, row: dict) -> None:
        cfg = self.cfg
        if cfg.verbose and cfg.eval_every > 0 and "val_" + cfg.select_metric in row:
            _print_row(row, self.epoch_log, self.bar)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}")

    def save_checkpoint(self, epoch: int) -> None:
        if not self.write:
            return
        atomic_write_csv(pd.DataFrame(self.history), self.paths["history"])
        ck = training_state(self.model, self.optimizer, self.loss, self.scaler, epoch,
                            self.history, self.best_score, self.best_epoch, self.best_val,
                            self.cfg.to_dict())
        ck["initial_test"] = self.initial_test
        atomic_save(ck, self.paths["last"])

    def finish(self) -> FitResult:
        """The best-on-validation model (never selected on the test classes), evaluated once
        on the test classes."""
        cfg, model = self.cfg, self.model
        self.bar.close()
        if self.val_ds is not None:
            if self.best_state is None and self.write and self.paths["best"].exists():
                self.best_state = load_checkpoint(self.paths["best"],
                                                  map_location=self.device)["model"]
            if self.best_state is not None:
                model.load_state_dict(self.best_state)
        model.eval()
        test_metrics = {}
        if self.test_ds is not None:
            test_metrics = self._evaluate(self.test_ds, cfg.final_metrics, self.gallery_ds)
            if cfg.verbose:
                which = (f"best val epoch {self.best_epoch}" if self.val_ds is not None
                         else "last epoch")
                print(textwrap.fill(f"test ({which}), %: " + ", ".join(
                    f"{short_metric_name(k)} {100 * v:.1f}" for k, v in test_metrics.items()),
                    width=88, break_long_words=False))
            if self.write:
                self.paths["metrics"] = atomic_write_text(
                    self.out_dir / "metrics.json",
                    json.dumps({"best_epoch": self.best_epoch, "val": self.best_val,
                                "test": test_metrics}, indent=2))
        return FitResult(model=model, history=pd.DataFrame(self.history),
                         test_metrics=test_metrics, best_val_metrics=self.best_val,
                         best_epoch=self.best_epoch, config=cfg,
                         out_dir=self.out_dir if self.write else None,
                         paths=self.paths if self.write else {}, loss=self.loss,
                         device=self.device, initial_test_metrics=self.initial_test)
