"""Common dataset interface: labels, class ids, class-disjoint validation splits.

Every dataset in :mod:`dmlkit.data` is a :class:`LabeledDataset`:

- ``labels``: ``(N,)`` int64 numpy array of *contiguous* labels ``0 .. num_classes - 1``;
- ``class_ids``: ``(num_classes,)`` int64 array, the original class id of each contiguous label
  (``class_ids[labels]`` gives each sample's original class, also ``original_labels``);
- ``num_classes``, ``__len__``, ``__getitem__(i) -> (image, label)``.

Model selection must never look at test classes, so :func:`train_val_split` holds out whole
*training* classes (class-disjoint, like the train/test protocol itself).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["LabeledDataset", "LabeledSubset", "contiguous_labels", "train_val_split"]


def contiguous_labels(original: np.ndarray, class_ids: np.ndarray | None = None):
    """Map original class ids to ``0 .. C-1``.

    Returns ``(labels, class_ids)`` with ``class_ids[labels] == original``. When ``class_ids``
    is given (sorted unique ids shared by several partitions, e.g. In-shop query and gallery)
    that mapping is used so labels agree across the partitions.
    """
    original = np.asarray(original, dtype=np.int64)
    if class_ids is None:
        class_ids = np.unique(original)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    labels = np.searchsorted(class_ids, original)
    if original.size and (labels.max() >= class_ids.size
                          or not np.array_equal(class_ids[labels], original)):
        raise ValueError("class_ids does not contain every original label")
    return labels.astype(np.int64), class_ids


class LabeledDataset(Dataset):
    """Base class: subclasses set ``labels`` and ``class_ids`` and implement ``_load(i)``."""

    labels: np.ndarray
    class_ids: np.ndarray
    transform = None

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def original_labels(self) -> np.ndarray:
        """Each sample's original class id (as in the official annotation files)."""
        return self.class_ids[self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def _load(self, index: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        image = self._load(int(index) % len(self))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        split = getattr(self, "split", "?")
        return (f"{type(self).__name__}(split={split!r}, images={len(self)}, "
                f"classes={self.num_classes})")


class LabeledSubset(LabeledDataset):
    """The samples ``indices`` of ``dataset``, relabelled to contiguous labels.

    ``class_ids`` keeps the *original* class ids of the parent dataset.
    """

    def __init__(self, dataset: LabeledDataset, indices, split: str = "subset"):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.split = split
        parent_original = np.asarray(dataset.class_ids)[np.asarray(dataset.labels)]
        self.labels, self.class_ids = contiguous_labels(parent_original[self.indices])

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        image, _ = self.dataset[int(self.indices[index])]
        return image, int(self.labels[index])


def train_val_split(dataset: LabeledDataset, val_fraction: float = 0.2, seed: int = 0,
                    min_val_classes: int = 2) -> tuple[LabeledSubset, LabeledSubset]:
    """Class-disjoint split of a *training* set into (fit, val) for model selection.

    ``round(val_fraction * num_classes)`` classes (at least ``min_val_classes``, at most
    ``num_classes - 1``) are drawn at random with ``seed``; all their images go to ``val``.
    No test class is ever touched, so validation R@K / MAP@R follow the same zero-shot protocol
    as the test set.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_classes = dataset.num_classes
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes to hold some out, got {n_classes}")
    n_val = round(val_fraction * n_classes)
    n_val = min(max(n_val, min_val_classes, 1), n_classes - 1)
    rng = np.random.default_rng(seed)
    val_classes = np.sort(rng.choice(n_classes, n_val, replace=False))
    labels = np.asarray(dataset.labels)
    is_val = np.isin(labels, val_classes)
    return (LabeledSubset(dataset, np.flatnonzero(~is_val), split="fit"),
            LabeledSubset(dataset, np.flatnonzero(is_val), split="val"))


class TensorImages(LabeledDataset):
    """In-memory image tensor ``(N, C, H, W)`` float in [0, 1] plus original labels."""

    def __init__(self, images: torch.Tensor, original: np.ndarray, split: str,
                 transform=None, class_ids: np.ndarray | None = None):
        self.images = images
        self.labels, self.class_ids = contiguous_labels(original, class_ids)
        self.split = split
        self.transform = transform

    def _load(self, index: int):
        return self.images[index]
