"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms"): 70,000 grey 28 x 28 photos of Zalando articles in
ten classes, read from its four IDX files.

Where the files are read from (the first folder holding all four, each gzipped or not):

1. the data root itself or ``<root>/fashion_mnist`` (``root`` argument / ``--data-root``, else
   ``$DMLKIT_DATA``, else ``~/.cache/dmlkit``);
2. torchvision's layout ``<root>/FashionMNIST/raw`` (``download=True`` / ``--download``
   fetches the files there through ``torchvision.datasets.FashionMNIST`` where the network
   allows);
3. the folder of Debian's package ``dataset-fashion-mnist`` (``apt-get install
   dataset-fashion-mnist``; ``dpkg -L dataset-fashion-mnist`` lists
   ``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``).

Every file is checked (IDX magic number, dimensions, size, label range): a damaged one is
reported with its path and how to get a good copy, never read half-way.

Protocols (``protocol`` argument):

- ``"class_disjoint"`` (default, the registered protocol): ``"train"`` = classes 0-4
  (T-shirt/top, Trouser, Pullover, Dress, Coat) of the 60,000 training images (30,000
  images), ``"test"`` = the unseen classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) of
  the 10,000 test images (5,000), searched leave-one-out. Test images are new images *and*
  new classes.
- ``"query_gallery"``: all ten classes; ``"train"`` = the 60,000 training images, the 10,000
  test images are cut per class (seeded) into ``"query"`` and ``"gallery"`` halves;
  ``"test"`` = both. Queries are searched in the gallery (seen classes, unseen images).

``images_per_class`` keeps a seeded random subset of that many images per class in each part
(training file, test file) so CPU runs stay small.

>>> from dmlkit import data
>>> info = data.dataset_info("Fashion-MNIST")
>>> info.name, info.image_size, info.protocol, info.recall_ks
('fashion_mnist', 28, 'class_disjoint', (1, 2, 4, 8))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import TensorImages
from .benchmarks import DatasetNotFoundError
from .download import DownloadError, data_root
from .idx import IDXError, read_idx
from .registry import register_dataset

__all__ = ["CLASS_NAMES", "DEBIAN_FOLDER", "DEBIAN_PACKAGE", "FILES", "FashionMNIST",
           "find_fashion_mnist", "read_fashion_mnist"]

#: the ten classes, in label order
CLASS_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
TRAIN_CLASSES = (0, 1, 2, 3, 4)
TEST_CLASSES = (5, 6, 7, 8, 9)
#: the official file names (without ``.gz``): part -> (images, labels)
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
#: Debian's package of the files and the folder it installs them in (``dpkg -L``)
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
_SIDE = 28
_SPLITS = {"class_disjoint": ("train", "test"),
           "query_gallery": ("train", "test", "query", "gallery")}
_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidates(root) -> list[tuple[Path, str]]:
    """(folder, how to get a good copy there) in the order they are searched."""
    base = data_root(root)
    put = (f"replace it with the official file from {HOMEPAGE} (data/fashion/), or delete "
           "it to use another copy")
    return [(base, put), (base / "fashion_mnist", put),
            (base / "FashionMNIST" / "raw",
             "delete it and download again (download=True, command line --download)"),
            (DEBIAN_FOLDER, f"reinstall the package: apt-get install --reinstall "
                            f"{DEBIAN_PACKAGE}")]


def find_fashion_mnist(root=None) -> dict[str, Path] | None:
    """The four files (``"train-images-idx3-ubyte"`` -> path, ...) from the first folder that
    holds them all (see the module docstring), or None."""
    for folder, _ in _candidates(root):
        found = {stem: _file(folder, stem) for pair in FILES.values() for stem in pair}
        if all(found.values()):
            return found
    return None


def _not_found(root) -> DatasetNotFoundError:
    base = data_root(root)
    names = ", ".join(stem for pair in FILES.values() for stem in pair)
    lines = [f"Fashion-MNIST not found. Its four IDX files ({names}; gzipped or not) are read "
             "from the first of these folders that holds them all; get them in one of three "
             "ways:",
             f"  1. put them in the data root {str(base)!r} or {str(base / 'fashion_mnist')!r} "
             f"(root= argument, --data-root, $DMLKIT_DATA), from {HOMEPAGE};",
             f"  2. download them through torchvision into {str(base / 'FashionMNIST' / 'raw')!r}"
             " where the network allows: download=True (command line --download);",
             f"  3. install Debian's package: apt-get install {DEBIAN_PACKAGE} (files in "
             f"{str(DEBIAN_FOLDER)!r})."]
    partial = []
    for folder, _ in _candidates(root):
        have = [stem for pair in FILES.values() for stem in pair if _file(folder, stem)]
        if have:
            partial.append(f"{str(folder)!r} holds only {', '.join(have)}")
    if partial:
        lines.append("Incomplete: " + "; ".join(partial) + ".")
    return DatasetNotFoundError("\n".join(lines))


def _download(root) -> None:
    target = data_root(root)
    try:
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

        TorchvisionFashionMNIST(str(target), train=False, download=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        raise DownloadError(
            f"could not download Fashion-MNIST through torchvision into "
            f"{str(target / 'FashionMNIST' / 'raw')!r} ({exc}). Install Debian's package "
            f"instead (apt-get install {DEBIAN_PACKAGE}) or put the four files from "
            f"{HOMEPAGE} into {str(target)!r}.") from exc


def _hint(path: Path, root) -> str:
    for folder, how in _candidates(root):
        if path.parent == folder:
            return how
    return f"replace it with the official file from {HOMEPAGE}"


def _read_part(images_path: Path, labels_path: Path, part: str, root
               ) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(images (N, 28, 28) uint8, labels (N,) int64)`` of one part; cached."""
    stats = [(str(p), p.stat().st_mtime_ns, p.stat().st_size)
             for p in (images_path, labels_path)]
    key = tuple(stats)
    if key in _CACHE:
        return _CACHE[key]

    def corrupt(path: Path, problem: str) -> IDXError:
        return IDXError(f"{path} is not a valid Fashion-MNIST file: {problem}. To get a good "
                        f"copy: {_hint(path, root)}.")

    arrays = []
    for path, ndim in ((images_path, 3), (labels_path, 1)):
        try:
            values = read_idx(path)
        except IDXError as exc:
            raise corrupt(path, str(exc).split(": ", 1)[-1]) from exc
        if values.dtype != np.uint8 or values.ndim != ndim:
            raise corrupt(path, f"it holds {values.ndim}-d {values.dtype} values, expected "
                                f"{ndim}-d uint8 (magic number 0x000008{ndim:02x})")
        arrays.append(values)
    images, labels = arrays
    if images.shape[1:] != (_SIDE, _SIDE):
        raise corrupt(images_path, f"its images are {images.shape[1]} x {images.shape[2]} "
                                   f"pixels, expected {_SIDE} x {_SIDE}")
    if len(images) != len(labels):
        raise corrupt(labels_path, f"it holds {len(labels)} labels for the {len(images)} images "
                                   f"of {images_path.name}")
    if labels.size and int(labels.max()) > 9:
        raise corrupt(labels_path, f"it holds the label {int(labels.max())}, expected 0-9")
    _CACHE[key] = (images, labels.astype(np.int64))
    return _CACHE[key]


def read_fashion_mnist(root=None, download: bool = False
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "t10k": (images, labels)}`` from the first folder that
    holds the four files (uint8 ``(N, 28, 28)`` images, int64 labels 0-9); with ``download``,
    fetched through torchvision when no folder holds them."""
    files = find_fashion_mnist(root)
    if files is None and download:
        _download(root)
        files = find_fashion_mnist(root)
    if files is None:
        raise _not_found(root)
    return {part: _read_part(files[img], files[lab], part, root)
            for part, (img, lab) in FILES.items()}


def _subsample(labels: np.ndarray, keep: np.ndarray, n: int | None, rng) -> np.ndarray:
    """Sorted indices of ``keep`` (bool mask) with at most ``n`` per class (seeded)."""
    idx = np.flatnonzero(keep)
    if n is None:
        return idx
    chosen = [rng.permutation(idx[labels[idx] == c])[:n] for c in np.unique(labels[idx])]
    return np.sort(np.concatenate(chosen)) if chosen else idx


@register_dataset("fashion_mnist", display_name="Fashion-MNIST", aliases=("fmnist",),
                  image_size=_SIDE, image_files=False,
                  split_note="classes 0-4 of the training file train, the unseen classes 5-9 "
                             "of the test file test")
class FashionMNIST(TensorImages):
    """Fashion-MNIST from its IDX files; see the module docstring for the folders searched.

    Args:
        split: ``"train"`` or ``"test"``; also ``"query"`` / ``"gallery"`` with the
            query / gallery protocol.
        root: data root (see the module docstring); None: ``$DMLKIT_DATA`` or
            ``~/.cache/dmlkit``.
        download: download through torchvision when no folder holds the files.
        protocol: ``"class_disjoint"`` (classes 0-4 train / 5-9 test) or ``"query_gallery"``
            (all classes; test images cut into query and gallery halves).
        images_per_class: keep a random subset of this many images per class of each file
            (None: all 6,000 / 1,000); seeded by ``seed``.
        size: image side in pixels (28; other sizes are resampled bilinearly).
        seed: the subset and the query / gallery cut.

    Items: ``(image (1, size, size) float32 in [0, 1], label)``; ``class_ids`` are the
    Fashion-MNIST labels (``CLASS_NAMES[class_id]``); ``class_names`` maps them to names.
    """

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, transform=None, protocol: str = "class_disjoint",
                 images_per_class: int | None = None, size: int = _SIDE, seed: int = 0):
        if protocol not in _SPLITS:
            raise ValueError(f"unknown protocol {protocol!r} for fashion_mnist; known: "
                             f"{', '.join(_SPLITS)}")
        if split not in _SPLITS[protocol]:
            hint = ("query and gallery need protocol='query_gallery'"
                    if split in _SPLITS["query_gallery"] else
                    "use train_val_split for a class-disjoint validation set")
            raise ValueError(f"unknown split {split!r} for fashion_mnist with the {protocol} "
                             f"protocol; known: {', '.join(_SPLITS[protocol])} ({hint})")
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        low = 2 if protocol == "query_gallery" else 1
        if images_per_class is not None and (int(images_per_class) != images_per_class
                                             or images_per_class < low):
            raise ValueError(f"images_per_class must be None or an integer >= {low}, got "
                             f"{images_per_class!r}")
        parts = read_fashion_mnist(root, download)
        part = "train" if split == "train" else "t10k"
        images, labels = parts[part]
        rng = np.random.default_rng([int(seed), 0 if part == "train" else 1])
        if protocol == "class_disjoint":
            classes = TRAIN_CLASSES if split == "train" else TEST_CLASSES
            idx = _subsample(labels, np.isin(labels, classes), images_per_class, rng)
        else:
            idx = _subsample(labels, np.ones(len(labels), bool), images_per_class, rng)
            if split in ("query", "gallery"):
                idx = self._cut(idx, labels, split, rng)
        pixels = torch.from_numpy(images[idx]).unsqueeze(1).float().div_(255.0)
        if size != _SIDE:
            pixels = F.interpolate(pixels, size=(int(size), int(size)), mode="bilinear",
                                   align_corners=False).clamp_(0.0, 1.0)
        class_ids = np.arange(10) if protocol == "query_gallery" and split != "train" else None
        super().__init__(pixels.contiguous(), labels[idx], split, transform, class_ids)
        self.protocol, self.size = protocol, int(size)
        self.indices = idx  # positions in the official file (training file for "train")
        self.class_names = {int(c): CLASS_NAMES[int(c)] for c in self.class_ids}

    @staticmethod
    def _cut(idx: np.ndarray, labels: np.ndarray, split: str, rng) -> np.ndarray:
        """Per class, a random half (rounded down) of ``idx`` as queries, the rest gallery."""
        keep = []
        for c in np.unique(labels[idx]):
            mine = rng.permutation(idx[labels[idx] == c])
            n_query = len(mine) // 2
            keep.append(mine[:n_query] if split == "query" else mine[n_query:])
        return np.sort(np.concatenate(keep))
