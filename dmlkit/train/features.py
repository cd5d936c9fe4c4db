"""A feature cache and embedding heads trained on it.

:func:`extract_features` runs a frozen backbone once over a data set and stores the features
on disk (atomic ``.pt``); :func:`fit_head` trains a linear or MLP embedding head on them in
seconds. The adversarial-generator notebooks train on these features.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x, y = torch.randn(40, 6, generator=g), torch.arange(40) % 5
>>> res = fit_head(x, y, "contrastive", embedding_dim=4, epochs=2, P=4, K=4)
>>> res.history["epoch"].tolist(), res.head(x[:3]).shape
([1, 2], torch.Size([3, 4]))
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .. import models as _models
from ..atomic import atomic_save
from ..seeding import derived_seed, seed_everything
from .batches import EpochBatches
from .config import DEFAULT_METRICS, metric_keys
from .datasets import in_channels
from .datasets import num_workers as default_workers
from .device import select_device
from .engine import Trainer

__all__ = ["EmbeddingHead", "HeadResult", "HeadTrainer", "extract_features", "fit_head"]


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
        random_init = not pretrained or _models.BACKBONES.canonical(model) == "small_cnn"
        key = (f"{dataset}-{split}-{model}{f'-random{seed}' if random_init else ''}-{image_size}"
               + (f"-{extra}" if extra else ""))
    path = _cache_path(cache_dir, key) if (cache_dir is not None and key) else None
    if path is not None and path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        return blob["features"], blob["labels"]

    dev = select_device(device, verbose=False)
    if isinstance(dataset, str):
        from .. import data

        if data.dataset_info(dataset).image_files:
            dataset_kwargs.setdefault("transform", data.get_transforms(
                False, image_size=image_size, resize=resize))
        dataset = data.load_dataset(dataset, split=split, **dataset_kwargs)
    if isinstance(model, str):
        with torch.random.fork_rng(devices=[]):  # a random backbone is the same for a seed
            torch.manual_seed(seed)
            model = _models.build_model(model, pretrained=pretrained,
                                        in_channels=in_channels(dataset))
    net = model.backbone if isinstance(model, _models.EmbeddingNet) else model
    was_training = net.training
    net.eval().to(dev)
    workers = default_workers(num_workers, dataset)
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


class HeadTrainer(Trainer):
    """The engine of :func:`fit_head`: P x K batches of features held on the device, the
    validation metrics every ``eval_every`` epochs, the best head kept in memory."""

    def __init__(self, head: nn.Module, loss: nn.Module, optimizer, features: torch.Tensor,
                 labels: torch.Tensor, batches: EpochBatches, *, epochs: int, val, metrics,
                 ks, select_metric: str, eval_every: int, seed: int, device: torch.device,
                 progress: bool):
        super().__init__(head, loss, optimizer)
        self.x_all, self.y_all, self.epoch_batches = features, labels, batches
        self.num_epochs, self.val, self.metrics, self.ks = epochs, val, metrics, ks
        self.select_metric, self.eval_every, self.seed = select_metric, eval_every, seed
        self.device, self.progress = device, progress
        self.best, self.best_epoch, self.best_val, self.best_state = -math.inf, 0, {}, None

    def val_metrics(self) -> dict:
        from .. import evaluate

        head = self.model
        head.eval()
        with torch.no_grad():
            z = head(torch.as_tensor(self.val[0], dtype=torch.float32).to(self.device))
        head.train()
        return {k: float(v) for k, v in evaluate.evaluate(
            z.cpu().numpy(), np.asarray(self.val[1]), metrics=list(self.metrics),
            ks=tuple(self.ks), seed=self.seed).items()}

    def start(self) -> None:
        if self.val is not None and self.eval_every > 0:  # the untrained head (not selected)
            row = {"epoch": 0, "loss": float("nan")}
            row.update({f"val_{k}": v for k, v in self.val_metrics().items()})
            self.history.append(row)

    def epochs(self):
        return tqdm(range(1, self.num_epochs + 1), desc="head", disable=not self.progress)

    def start_epoch(self, epoch: int) -> None:
        seed_everything(derived_seed(self.seed, epoch))
        self.epoch_batches.set_epoch(epoch)
        super().start_epoch(epoch)

    def batches(self, epoch: int):
        for idx in self.epoch_batches:
            idx_t = torch.as_tensor(idx, device=self.device)
            yield self.x_all[idx_t], self.y_all[idx_t]

    def should_evaluate(self, epoch: int) -> bool:
        return self.val is not None and self.eval_every > 0 and (
            epoch % self.eval_every == 0 or epoch == self.num_epochs)

    def evaluate(self, epoch: int, row: dict) -> None:
        m = self.val_metrics()
        row.update({f"val_{k}": v for k, v in m.items()})
        if m[self.select_metric] > self.best:
            self.best, self.best_epoch, self.best_val = m[self.select_metric], epoch, m
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def finish(self) -> HeadResult:
        head = self.model
        if self.best_state is not None:
            head.load_state_dict(self.best_state)
        head.eval()
        return HeadResult(head=head, history=pd.DataFrame(self.history),
                          best_val_metrics=self.best_val,
                          best_epoch=self.best_epoch if self.best_state is not None
                          else self.num_epochs, loss=self.loss)


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
    from .. import data, losses
    from .._checks import check_embeddings_labels

    features = torch.as_tensor(features, dtype=torch.float32)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    check_embeddings_labels(features, labels_t)
    if select_metric not in metric_keys(metrics, ks):
        raise ValueError(f"select_metric {select_metric!r} is not computed by metrics "
                         f"{list(metrics)}; choose one of {metric_keys(metrics, ks)}")
    dev = select_device(device, verbose=False)
    seed_everything(seed)
    head = EmbeddingHead(features.shape[1], embedding_dim, hidden_dim, normalize).to(dev)
    loss_mod = (losses.build(loss, **(loss_params or {})) if isinstance(loss, str)
                else loss).to(dev)
    params = [{"params": head.parameters()}]
    extra = [p for p in loss_mod.parameters() if p.requires_grad]
    if extra:
        params.append({"params": extra, "weight_decay": 0.0})
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    batches = EpochBatches(data.PKSampler(labels_t.numpy(), P, K, seed=seed),
                           iterations_per_epoch)
    return HeadTrainer(head, loss_mod, opt, features.to(dev), labels_t.to(dev), batches,
                       epochs=epochs, val=val, metrics=metrics, ks=ks,
                       select_metric=select_metric, eval_every=eval_every, seed=seed,
                       device=dev, progress=progress).run()
