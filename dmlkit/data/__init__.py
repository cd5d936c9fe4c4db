"""Datasets, transforms and batch samplers for deep metric learning.

Embedded (no download): ``digits`` (scikit-learn's handwritten digits, classes 0-4 train /
5-9 test) and ``glyphs`` (procedural many-class glyphs, class-disjoint). Benchmarks read from
their official archives: ``cub200``, ``cars196``, ``sop``, ``inshop``.

>>> from dmlkit import data
>>> train = data.load_dataset("glyphs", "train")
>>> fit, val = data.train_val_split(train, val_fraction=0.2)     # class-disjoint validation
>>> sampler = data.PKSampler(fit.labels, P=16, K=4)
"""

from __future__ import annotations

import difflib
import os

from .base import LabeledDataset, LabeledSubset, contiguous_labels, train_val_split
from .benchmarks import CUB200, SOP, Archive, Cars196, DatasetNotFoundError, InShop
from .digits import Digits
from .download import DownloadError, data_root, download_url, extract_archive, md5sum
from .glyphs import DEFAULT_DIFFICULTY, Glyphs
from .samplers import HardNegativeClassSampler, PKSampler, select_hard_classes
from .transforms import IMAGENET_MEAN, IMAGENET_STD, get_transforms

__all__ = [
    "CUB200",
    "DEFAULT_DIFFICULTY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOP",
    "Archive",
    "Cars196",
    "DatasetNotFoundError",
    "Digits",
    "DownloadError",
    "Glyphs",
    "HardNegativeClassSampler",
    "InShop",
    "LabeledDataset",
    "LabeledSubset",
    "PKSampler",
    "available",
    "contiguous_labels",
    "data_root",
    "download_url",
    "extract_archive",
    "get_transforms",
    "load_dataset",
    "md5sum",
    "select_hard_classes",
    "train_val_split",
]

_DATASETS = {"cars196": Cars196, "cub200": CUB200, "digits": Digits, "glyphs": Glyphs,
             "inshop": InShop, "sop": SOP}
_ALIASES = {"cub": "cub200", "cub2002011": "cub200", "cars": "cars196",
            "stanfordcars": "cars196", "stanfordonlineproducts": "sop", "online_products": "sop",
            "onlineproducts": "sop", "inshopclothes": "inshop", "deepfashioninshop": "inshop"}
_EMBEDDED = ("digits", "glyphs")


def available() -> list[str]:
    """Sorted dataset names: cars196, cub200, digits, glyphs, inshop, sop."""
    return sorted(_DATASETS)


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in _DATASETS:
        close = difflib.get_close_matches(str(name).lower(), available(), n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Known datasets: "
                         f"{', '.join(available())}")
    return key


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, transform=None, val_fraction: float = 0.2,
                 val_seed: int = 0, **kwargs) -> LabeledDataset:
    """A dataset by name (see :func:`available`) and split.

    Splits: ``"train"``, ``"test"`` for every dataset; ``"all"`` for the embedded ones;
    ``"query"`` / ``"gallery"`` for In-shop; ``"val"`` = ``round(val_fraction * C)`` held-out
    *training* classes (seeded by ``val_seed``) and ``"fit"`` = the remaining training classes
    (see :func:`train_val_split`; test classes are never used for model selection).

    Embedded datasets return float tensors in [0, 1] (``transform``, if given, is applied on
    top); benchmarks return ``get_transforms(train=split in ("train", "fit"))`` outputs unless
    ``transform`` is given. ``kwargs`` go to the dataset class (e.g. ``size`` for digits,
    ``num_classes`` / ``difficulty`` for glyphs, ``check_images`` for benchmarks). ``root`` and
    ``download`` are ignored by digits; glyphs caches its arrays under ``root`` if given.
    """
    key = _canonical(name)
    cls = _DATASETS[key]
    if split in ("val", "fit"):
        if transform is None and key not in _EMBEDDED:
            transform = get_transforms(train=split == "fit")
        full = load_dataset(key, "train", root=root, download=download, transform=transform,
                            **kwargs)
        fit, val = train_val_split(full, val_fraction=val_fraction, seed=val_seed)
        return val if split == "val" else fit
    if key == "digits":
        return cls(split, transform=transform, **kwargs)
    if key == "glyphs":
        return cls(split, root=root, transform=transform, **kwargs)
    return cls(split, root=root, download=download, transform=transform, **kwargs)
