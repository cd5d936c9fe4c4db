"""The data of a :func:`dmlkit.train.fit` run: class-disjoint splits and their loaders.

Train and test classes are disjoint (docs/formulas.md#data-protocols); the validation split is a
share of the *training* classes (:func:`dmlkit.data.train_val_split`). A data set read from image
files gets augmentation for training and a centre crop for evaluation; one with a
query / gallery protocol (In-shop) gives its query split as the test set and a gallery.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from .. import data
from .config import TrainConfig

__all__ = ["in_channels", "in_memory", "loader", "num_workers", "splits"]


def _load(cfg: TrainConfig, split: str, train: bool):
    kw = dict(cfg.dataset_kwargs)
    if data.dataset_info(cfg.dataset).image_files:
        kw.setdefault("transform", data.get_transforms(train, image_size=cfg.image_size,
                                                       resize=cfg.resize))
    return data.load_dataset(cfg.dataset, split=split, root=cfg.data_root,
                             download=cfg.download, **kw)


def splits(cfg: TrainConfig):
    """(train, val or None, test, gallery or None) following the class-disjoint protocol.

    ``cfg.dataset`` is a name, a Dataset with ``.labels`` (its training classes are split into
    fit / validation), or a dict ``{"train": ds, "test": ds, "val": ds, "gallery": ds}``.
    """
    if isinstance(cfg.dataset, str):
        info = data.dataset_info(cfg.dataset)
        train_aug = _load(cfg, "train", train=True)
        train_eval = _load(cfg, "train", train=False) if info.image_files else train_aug
        # a data set with a protocol option (fashion_mnist) says which one it follows
        if getattr(train_aug, "protocol", info.protocol) == "query_gallery":
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


def in_memory(ds) -> bool:
    """True for a data set (or a subset of one) whose images are one tensor in memory."""
    while hasattr(ds, "dataset"):
        ds = ds.dataset
    return hasattr(ds, "images") and isinstance(ds.images, torch.Tensor)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one: what PyTorch's
    data loader compares its worker count with before warning), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def num_workers(requested: int | None, ds) -> int:
    """``requested``, or 0 for in-memory data and ``min(8, usable CPUs)`` otherwise."""
    if requested is not None:
        return int(requested)
    return 0 if in_memory(ds) else min(8, usable_cpus())


def in_channels(ds) -> int:
    """Channels of the data set's images (C of its first ``(C, H, W)`` item; else 3)."""
    x, _ = ds[0]
    return int(x.shape[0]) if torch.is_tensor(x) and x.dim() == 3 else 3


def loader(ds, cfg: TrainConfig, device: torch.device, batch_sampler=None) -> DataLoader:
    """A training loader over ``batch_sampler``, or (None) an evaluation loader in data set
    order with ``cfg.batch_size_eval``."""
    workers = num_workers(cfg.num_workers, ds)
    kw = {"num_workers": workers, "pin_memory": device.type == "cuda",
          "persistent_workers": False}
    if workers > 0:
        kw["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **kw)
    return DataLoader(ds, batch_size=cfg.batch_size_eval, shuffle=False, **kw)
