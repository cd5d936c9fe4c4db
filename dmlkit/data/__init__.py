"""Datasets, transforms and batch samplers for deep metric learning.

Embedded (no download): ``digits`` (scikit-learn's handwritten digits, classes 0-4 train /
5-9 test) and ``glyphs`` (procedural many-class glyphs, class-disjoint). Real photos:
``fashion_mnist`` (Xiao, Rasul and Vollgraf 2017; its IDX files from the data root,
torchvision's layout or Debian's ``dataset-fashion-mnist``; classes 0-4 train / 5-9 test) and
``image_folder`` (your own ``root/<class>/<image>``, split by classes). Benchmarks read from
their official archives: ``cub200``, ``cars196``, ``sop``, ``inshop``. Each dataset class
registers its name, aliases and facts (Recall@K list, protocol, native image size, name in the
papers' tables) with :func:`register_dataset`; :func:`dataset_info` reads them back.

>>> from dmlkit import data
>>> train = data.load_dataset("glyphs", "train", num_classes=20, images_per_class=8)
>>> train
Glyphs(split='train', images=160, classes=20)
>>> fit, val = data.train_val_split(train, val_fraction=0.2)     # class-disjoint validation
>>> fit, val
(LabeledSubset(split='fit', images=128, classes=16),
 LabeledSubset(split='val', images=32, classes=4))
>>> set(fit.original_labels) & set(val.original_labels)
set()
>>> sampler = data.PKSampler(fit.labels, P=4, K=4)     # batches of 4 classes x 4 images
>>> len(sampler), [len(batch) for batch in sampler]
(8, [16, 16, 16, 16, 16, 16, 16, 16])
"""

from __future__ import annotations

import os

from .base import LabeledDataset, LabeledSubset, contiguous_labels, train_val_split
from .benchmarks import CUB200, SOP, Archive, Cars196, DatasetNotFoundError, InShop
from .digits import Digits
from .download import DownloadError, data_root, download_url, extract_archive, md5sum
from .fashion_mnist import FashionMNIST
from .glyphs import DEFAULT_DIFFICULTY, Glyphs
from .idx import IDXError, read_idx
from .image_folder import BadImageError, ImageFolder, write_image_folder
from .registry import DATASETS, DatasetInfo, available, dataset_info, register_dataset
from .samplers import HardNegativeClassSampler, PKSampler, select_hard_classes
from .transforms import IMAGENET_MEAN, IMAGENET_STD, get_transforms

__all__ = [
    "CUB200",
    "DEFAULT_DIFFICULTY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOP",
    "Archive",
    "BadImageError",
    "DATASETS",
    "Cars196",
    "DatasetInfo",
    "DatasetNotFoundError",
    "Digits",
    "DownloadError",
    "FashionMNIST",
    "Glyphs",
    "HardNegativeClassSampler",
    "IDXError",
    "ImageFolder",
    "InShop",
    "LabeledDataset",
    "LabeledSubset",
    "PKSampler",
    "available",
    "contiguous_labels",
    "data_root",
    "dataset_info",
    "download_url",
    "extract_archive",
    "get_transforms",
    "load_dataset",
    "md5sum",
    "read_idx",
    "register_dataset",
    "select_hard_classes",
    "train_val_split",
    "write_image_folder",
]


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, transform=None, val_fraction: float = 0.2,
                 val_seed: int = 0, **kwargs) -> LabeledDataset:
    """A dataset by name (see :func:`available`) and split.

    Splits: ``"train"``, ``"test"`` for every dataset; ``"all"`` for the embedded ones and
    ``image_folder``; ``"query"`` / ``"gallery"`` for In-shop and ``fashion_mnist`` with
    ``protocol="query_gallery"``; ``"val"`` = ``round(val_fraction * C)`` held-out
    *training* classes (seeded by ``val_seed``) and ``"fit"`` = the remaining training classes
    (see :func:`train_val_split`; test classes are never used for model selection).

    Embedded datasets return float tensors in [0, 1] (``transform``, if given, is applied on
    top); benchmarks return ``get_transforms(train=split in ("train", "fit"))`` outputs unless
    ``transform`` is given. ``kwargs`` go to the dataset class (e.g. ``size`` for digits,
    ``num_classes`` / ``difficulty`` for glyphs, ``check_images`` for benchmarks,
    ``images_per_class`` / ``protocol`` for fashion_mnist, ``test_fraction`` / ``test_classes``
    for image_folder). ``root`` and ``download`` are ignored by digits; glyphs caches its
    arrays under ``root`` if given; image_folder reads the class folders in ``root``.
    """
    key = DATASETS.canonical(name)
    if split in ("val", "fit"):
        if transform is None and dataset_info(key).image_files:
            transform = get_transforms(train=split == "fit")
        full = load_dataset(key, "train", root=root, download=download, transform=transform,
                            **kwargs)
        fit, val = train_val_split(full, val_fraction=val_fraction, seed=val_seed)
        return val if split == "val" else fit
    accepts = DATASETS.parameters(key)  # None: takes **kwargs
    options = {k: v for k, v in (("root", root), ("download", download))
               if accepts is None or k in accepts}
    return DATASETS.get(key)(split, transform=transform, **options, **kwargs)
