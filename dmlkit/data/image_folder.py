"""Your own images as a class-disjoint retrieval data set: ``root/<class>/<image>``.

Each sub-folder of ``root`` is one class (its name is the class name); every file below it
whose extension PIL can open (PNG, JPEG, WebP, TIFF, BMP, GIF, ...) is one image of that class.
Hidden files and folders (``.name``) are skipped; other files (``notes.txt``) are ignored with
a warning.

Classes are split, not images: the test classes are never seen in training (the DML
protocol). Either ``test_classes`` names them, or a seeded random ``test_fraction`` of the
classes is drawn. Every image of the split is opened and fully decoded once when the data set
is built (in a few threads; a result is remembered per file until it changes), so a damaged
or unreadable file is reported with its path *then*, never as a crash in the middle of an
epoch: an error listing them all, or (``skip_bad=True``) a warning and the files left out.

Command line: ``python -m dmlkit train --dataset image_folder --data-root DIR`` (options with
``--dataset-param test_fraction=0.3``, ``--dataset-param test_classes=cat,dog``,
``--dataset-param skip_bad=true``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .base import LabeledDataset, contiguous_labels
from .registry import register_dataset
from .transforms import get_transforms

__all__ = ["BadImageError", "ImageFolder", "find_bad_images", "image_extensions",
           "scan_image_folder", "write_image_folder"]

_SHOWN = 10                                      # paths listed in a message
_CHECKED: dict[tuple[str, int, int], str | None] = {}   # (path, mtime, size) -> problem


class BadImageError(ValueError):
    """Some image files cannot be read; the message lists them with their paths."""


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (``".png"``) of the formats PIL can open."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def scan_image_folder(root: str | os.PathLike) -> tuple[dict[str, list[Path]], list[Path]]:
    """``({class name: sorted image paths}, ignored non-image files)`` of ``root``.

    Classes are the sorted non-hidden sub-folders; images are searched recursively in each.
    Raises ValueError for a missing root, a root without class folders, or an empty class.
    """
    root = Path(root)
    if not root.exists():
        raise ValueError(f"image folder {str(root)!r} does not exist; expected "
                         "root/<class>/<image> (one sub-folder per class)")
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} is a file, not a folder; expected "
                         "root/<class>/<image> (one sub-folder per class)")
    extensions = image_extensions()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name))
    if not folders:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions]
        more = (f"; its {len(loose)} images lie directly in it: put each class's images in "
                "a folder of their own") if loose else ""
        raise ValueError(f"image folder {str(root)!r} has no class folders{more}. Expected "
                         "root/<class>/<image>, one sub-folder per class.")
    classes: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    empty = []
    for folder in folders:
        images = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            for name in sorted(filenames):
                if _hidden(name):
                    continue
                path = Path(dirpath, name)
                (images if path.suffix.lower() in extensions else ignored).append(path)
        if not images:
            empty.append(folder)
        classes[folder.name] = images
    if empty:
        raise ValueError(f"{len(empty)} class folder(s) of {str(root)!r} hold no image files: "
                         f"{', '.join(str(p) for p in empty[:_SHOWN])}. Add images or remove "
                         "the folder(s).")
    return classes, ignored


def _problem(path: Path) -> str | None:
    """None if ``path`` decodes to an RGB image as :meth:`ImageFolder._load` does, else why
    not (remembered per file until its size or modification time changes)."""
    try:
        stat = path.stat()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CHECKED:
        try:
            with Image.open(path) as img:
                img.convert("RGB").load()
            _CHECKED[key] = None
        except Exception as exc:  # any decoder error makes the file unusable
            _CHECKED[key] = f"{type(exc).__name__}: {exc}"
    return _CHECKED[key]


def find_bad_images(paths: list[Path], workers: int | None = None) -> list[tuple[Path, str]]:
    """``(path, problem)`` for each file of ``paths`` that PIL cannot decode fully."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 16:
        problems = [_problem(p) for p in paths]
    else:
        with ThreadPoolExecutor(workers) as pool:  # PIL's decoders release the GIL
            problems = list(pool.map(_problem, paths, chunksize=32))
    return [(p, why) for p, why in zip(paths, problems) if why is not None]


def write_image_folder(root: str | os.PathLike, images, labels, class_names=None) -> dict:
    """Write in-memory images as ``root/<class>/<nnnn>.png`` (each file atomically): the
    layout :class:`ImageFolder` reads, e.g. to try it on a data set you already have.

    ``images``: ``(N, C, H, W)`` with C = 1 or 3, floats in [0, 1] (or uint8); ``labels``:
    ``(N,)``; ``class_names``: ``{label: name}`` (default ``class<label>``; a ``/`` in a name
    becomes ``-``). Returns ``{class folder name: number of images}``.

    >>> import tempfile, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> write_image_folder(root, np.zeros((3, 1, 4, 4)), [0, 1, 1], {0: "T-shirt/top"})
    {'T-shirt-top': 1, 'class1': 2}
    >>> len(ImageFolder("all", root=root))
    3
    """
    from ..atomic import atomic_write_with

    arr = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or len(arr) != len(labels):
        raise ValueError(f"images must be (N, 1 or 3, H, W) with one label each; got images "
                         f"{arr.shape} and {len(labels)} labels")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    names = dict(class_names or {})
    counts: dict[str, int] = {}
    for i, (img, label) in enumerate(zip(arr, labels)):
        name = str(names.get(int(label), f"class{int(label)}")).replace("/", "-").strip()
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        atomic_write_with(Path(root, name, f"{i:04d}.png"),
                          lambda fh, pil=pil: pil.save(fh, format="PNG"))
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _listed(items: list, fmt: Callable) -> str:
    shown = "; ".join(fmt(x) for x in items[:_SHOWN])
    return shown + (f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _test_class_names(names: list[str], test_classes, test_fraction: float,
                      seed: int) -> list[str]:
    if test_classes is not None:
        if isinstance(test_classes, str):
            test_classes = [c for c in test_classes.split(",") if c.strip()]
        wanted = [str(c).strip() for c in test_classes]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise ValueError(f"test_classes {unknown} are not class folders; the classes are "
                             f"{names}")
        if not wanted or len(set(wanted)) >= len(names):
            raise ValueError(f"test_classes must name at least one class and leave at least "
                             f"one for training; got {wanted} of the classes {names}")
        return sorted(set(wanted))
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = min(max(round(float(test_fraction) * len(names)), 1), len(names) - 1)
    chosen = np.random.default_rng(int(seed)).choice(len(names), n_test, replace=False)
    return [names[i] for i in sorted(chosen)]


@register_dataset("image_folder", display_name="image folder (your images)",
                  aliases=("folder", "imagefolder", "own images"),
                  split_note="a seeded share (test_fraction) of the class folders, or the "
                             "test_classes named, test; the other classes train")
class ImageFolder(LabeledDataset):
    """Images in ``root/<class>/<image>`` with a class-disjoint train / test split.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (every class).
        root: the folder holding one sub-folder per class (command line ``--data-root``).
        transform: applied to the RGB PIL image (default: :func:`get_transforms`, random crop
            and flip for ``"train"``, centre crop otherwise).
        test_fraction: share of the classes drawn (seeded) as test classes (default 0.5;
            at least one class each side).
        test_classes: the test classes by folder name (a list, or a comma-separated string
            from the command line); overrides ``test_fraction``.
        seed: the draw of the test classes and of the ``images_per_class`` subset.
        images_per_class: keep at most this many images per class (a seeded subset).
        skip_bad: leave unreadable images out with a warning instead of raising
            :class:`BadImageError`.
        check_images: decode every image once now (default); False only lists the files
            (faster for a large folder you trust; a bad file then fails when it is loaded,
            naming its path).

    ``class_ids`` index the sorted class names of the whole folder (train and test ids never
    overlap); ``class_names[class_id]`` is the folder name; ``paths`` the image files;
    ``skipped`` the ``(path, problem)`` of the images left out; ``ignored`` non-image files.
    """

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None,
                 transform: Callable | None = None, test_fraction: float = 0.5,
                 test_classes: Iterable[str] | str | None = None, seed: int = 0,
                 images_per_class: int | None = None, skip_bad: bool = False,
                 check_images: bool = True):
        if split not in ("train", "test", "all"):
            raise ValueError(f"unknown split {split!r} for image_folder; known: train, test, "
                             "all (use train_val_split for a class-disjoint validation set)")
        if root is None:
            raise ValueError("image_folder needs the folder of your images: root=DIR (command "
                             "line --data-root DIR), holding one sub-folder per class "
                             "(root/<class>/<image>)")
        if images_per_class is not None and (int(images_per_class) != images_per_class
                                             or images_per_class < 1):
            raise ValueError(f"images_per_class must be None or an integer >= 1, got "
                             f"{images_per_class!r}")
        self.root, self.split = Path(root), split
        folders, self.ignored = scan_image_folder(self.root)
        names = list(folders)
        if self.ignored:
            warnings.warn(f"{len(self.ignored)} file(s) in {str(self.root)!r} are not images "
                          f"PIL can open and were ignored: {_listed(self.ignored, str)}",
                          stacklevel=2)
        if split != "all" and len(names) < 2:
            raise ValueError(f"a class-disjoint {split} split needs at least 2 class folders "
                             f"in {str(self.root)!r}, found {len(names)}: {names} (split='all'"
                             " takes every class)")
        self.test_classes = ([] if split == "all" else
                             _test_class_names(names, test_classes, test_fraction, seed))
        wanted = {"all": names, "test": self.test_classes,
                  "train": [n for n in names if n not in self.test_classes]}[split]
        rng = np.random.default_rng([int(seed), 1])
        paths, original = [], []
        for name in wanted:
            files = folders[name]
            if images_per_class is not None and len(files) > images_per_class:
                keep = np.sort(rng.choice(len(files), int(images_per_class), replace=False))
                files = [files[i] for i in keep]
            paths += files
            original += [names.index(name)] * len(files)
        self.skipped: list[tuple[Path, str]] = find_bad_images(paths) if check_images else []
        if self.skipped:
            listing = _listed(self.skipped, lambda item: f"{item[0]} ({item[1]})")
            if not skip_bad:
                raise BadImageError(
                    f"{len(self.skipped)} of the {len(paths)} images of the {split} split in "
                    f"{str(self.root)!r} cannot be read: {listing}. Replace or delete them, or "
                    "pass skip_bad=True (command line --dataset-param skip_bad=true) to leave "
                    "them out.")
            warnings.warn(f"left out {len(self.skipped)} unreadable image(s) of "
                          f"{str(self.root)!r}: {listing}", stacklevel=2)
            bad = {p for p, _ in self.skipped}
            kept = [(p, c) for p, c in zip(paths, original) if p not in bad]
            emptied = sorted({names[c] for c in original} - {names[c] for _, c in kept})
            if emptied:
                raise BadImageError(f"no readable image is left in the class folder(s) "
                                    f"{emptied} of {str(self.root)!r}: {listing}")
            paths, original = [p for p, _ in kept], [c for _, c in kept]
        self.paths = paths
        self.labels, self.class_ids = contiguous_labels(np.asarray(original, dtype=np.int64))
        self.class_names = dict(enumerate(names))
        self.transform = (get_transforms(train=split == "train") if transform is None
                          else transform)

    def _load(self, index: int):
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as exc:  # the file changed after the scan
            raise BadImageError(f"cannot read the image {path} ({type(exc).__name__}: {exc}); "
                                "it changed or was removed after the data set was built"
                                ) from exc
