"""scikit-learn's bundled handwritten digits (real data, no download)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

from .base import TensorImages
from .registry import register_dataset

__all__ = ["Digits"]

TRAIN_CLASSES = (0, 1, 2, 3, 4)
TEST_CLASSES = (5, 6, 7, 8, 9)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 64) float32 pixels 0..16 and int64 targets, read from scikit-learn's bundled
    ``digits.csv.gz`` without importing scikit-learn (slow), else via ``load_digits``."""
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(next(iter(spec.submodule_search_locations)), "datasets", "data",
                            "digits.csv.gz")
        if os.path.exists(path):
            raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return raw[:, :-1].copy(), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


@register_dataset("digits", display_name="digits (scikit-learn)", image_size=8,
                  embedded=True, split_note="digits 0-4 train, the unseen digits 5-9 test")
class Digits(TensorImages):
    """``sklearn.datasets.load_digits``: 1,797 grey 8x8 images of the digits 0-9.

    Class-disjoint split: ``"train"`` = digits 0-4 (901 images), ``"test"`` = digits 5-9
    (896 images), ``"all"`` = all ten. Pixels are scaled from 0..16 to [0, 1]; ``size`` > 8
    upsamples bilinearly. Items: ``(image (1, size, size) float32, label)``; ``class_ids``
    are the digits.
    """

    def __init__(self, split: str = "train", size: int = 8, transform=None):
        if split not in ("train", "test", "all"):
            raise ValueError(f"unknown split {split!r} for digits; known: train, test, all "
                             "(use train_val_split for a class-disjoint validation set)")
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        pixels, target = _load_digits()
        images = torch.from_numpy(pixels.reshape(-1, 1, 8, 8) / np.float32(16.0))
        if split != "all":
            keep = np.isin(target, TRAIN_CLASSES if split == "train" else TEST_CLASSES)
            images, target = images[torch.from_numpy(keep)], target[keep]
        if size != 8:
            images = F.interpolate(images, size=(int(size), int(size)), mode="bilinear",
                                   align_corners=False).clamp_(0.0, 1.0)
        super().__init__(images.contiguous(), target, split, transform)
        self.size = int(size)
