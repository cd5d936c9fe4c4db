"""The four DML benchmarks read from their official archives / folder layouts.

Layout under the data root (``root`` argument, else ``$DMLKIT_DATA``, else
``~/.cache/dmlkit``); each dataset may live in ``<root>/<folder>/`` or directly in ``<root>``.
An official archive placed there is verified (MD5 where known) and extracted on first use.

=========  ==============================  ============================================
dataset    folder / archive(s)             files read
=========  ==============================  ============================================
cub200     ``cub200/CUB_200_2011.tgz``     ``CUB_200_2011/images.txt``,
                                           ``image_class_labels.txt``, ``classes.txt``,
                                           ``images/<class>/<file>.jpg``
cars196    ``cars196/car_ims.tgz``,        ``car_ims/000001.jpg ...``, ``cars_annos.mat``
           ``cars196/cars_annos.mat``      (``annotations``: relative_im_path, class, ...)
sop        ``sop/Stanford_Online_          ``Stanford_Online_Products/Ebay_train.txt``,
           Products.zip``                  ``Ebay_test.txt`` (``image_id class_id
                                           super_class_id path``), images
inshop     ``inshop/img.zip`` (the         ``img/...jpg``, ``Eval/list_eval_partition.txt``
           dataset's ``Img/img.zip``),     (count line, header line, then ``image_name
           ``inshop/Eval/list_eval_        item_id evaluation_status``)
           partition.txt``
=========  ==============================  ============================================

Class-disjoint splits (docs/formulas.md#data-protocols): CUB classes 1-100 train / 101-200 test;
Cars196 classes 1-98 / 99-196; SOP ``Ebay_train.txt`` / ``Ebay_test.txt``; In-shop
``train`` / ``query`` + ``gallery`` from ``list_eval_partition.txt`` (``split="test"`` is
query and gallery together; retrieval evaluation searches the gallery with the queries).
Labels are contiguous within a split; ``class_ids`` keeps the official ids (In-shop item
``id_00000123`` -> 123). In-shop query and gallery share one mapping, so equal labels mean
the same item.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .base import LabeledDataset, contiguous_labels
from .download import DownloadError, data_root, download_url, extract_archive, verify_archive
from .registry import register_dataset
from .transforms import get_transforms

__all__ = ["CUB200", "SOP", "Archive", "Cars196", "DatasetNotFoundError", "InShop"]


class DatasetNotFoundError(ValueError):
    """The dataset (or some of its files) is not on disk; the message says how to get it."""


@dataclass(frozen=True)
class Archive:
    """One official file: where it comes from, its MD5 (None: unknown) and whether to unpack."""

    filename: str
    url: str | None
    md5: str | None
    extract: bool = True
    note: str = ""


def _read_lines(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as fh:
        return [line.split() for line in fh if line.strip()]


class _Benchmark(LabeledDataset):
    """Shared logic: locate / extract / download, check files, load images with PIL."""

    folder: str = ""
    title: str = ""
    homepage: str = ""
    archives: tuple[Archive, ...] = ()
    markers: tuple[str, ...] = ()        # annotation files that must exist
    splits: tuple[str, ...] = ("train", "test")

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, transform: Callable | None = None,
                 check_images: bool = True):
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} for {self.folder}; known splits: "
                             f"{', '.join(self.splits)} (use train_val_split or split='val' in "
                             "load_dataset for a class-disjoint validation set)")
        self.split = split
        self.base = self._locate(data_root(root), download)
        paths, original, class_ids = self._parse(split)
        self.paths = [self.base / p for p in paths]
        self.labels, self.class_ids = contiguous_labels(np.asarray(original), class_ids)
        if check_images:
            self._check_images()
        self.transform = get_transforms(train=split == "train") if transform is None \
            else transform

    # ----------------------------------------------------------------- locating the files
    def _candidates(self, root: Path) -> list[Path]:
        return [root / self.folder, root]

    def _missing(self, base: Path) -> list[str]:
        return [m for m in self.markers if not (base / m).is_file()]

    def _archive_path(self, base: Path, archive: Archive) -> Path | None:
        for p in (base / archive.filename, base / Path(archive.filename).name):
            if p.is_file():
                return p
        return None

    def _locate(self, root: Path, download: bool) -> Path:
        for base in self._candidates(root):
            if not self._missing(base):
                return base
        for base in self._candidates(root):  # official archives placed by hand
            found = [self._archive_path(base, a) for a in self.archives]
            if self.archives and all(found):
                self._unpack(base, found)
                if not self._missing(base):
                    return base
        target = root / self.folder
        if download:
            self._download(target)
            if not self._missing(target):
                return target
        raise self._not_found(root)

    def _unpack(self, base: Path, files: list[Path]) -> None:
        for archive, path in zip(self.archives, files):
            verify_archive(path, archive.md5)
            if archive.extract:
                extract_archive(path, base)

    def _download(self, target: Path) -> None:
        files = []
        for archive in self.archives:
            path = target / archive.filename
            if archive.url is None:
                if not path.is_file():
                    raise DatasetNotFoundError(
                        f"{self.title} has no direct download URL ({archive.note}); fetch "
                        f"{archive.filename!r} by hand and put it in {str(target)!r}.")
            else:
                try:
                    download_url(archive.url, path, md5=archive.md5)
                except DownloadError as exc:
                    raise DownloadError(f"{self.title}: {exc}") from exc
            files.append(path)
        self._unpack(target, files)

    def _not_found(self, root: Path) -> DatasetNotFoundError:
        target = root / self.folder
        missing = self._missing(target)
        lines = [(f"{self.title} not found under {str(root)!r}: missing "
                 f"{', '.join(str(target / m) for m in missing)}."),
                 ("Get the official files and put them in "
                 f"{str(target)!r} (they are extracted on first use), or pass download=True:")]
        for a in self.archives:
            where = a.url if a.url else f"(no direct URL) {a.note}"
            md5 = f" md5 {a.md5}" if a.md5 else ""
            lines.append(f"  - {a.filename}: {where}{md5}")
        lines.append(f"Homepage: {self.homepage}. Root: root= argument, else $DMLKIT_DATA, "
                     "else ~/.cache/dmlkit.")
        return DatasetNotFoundError("\n".join(lines))

    def _check_images(self) -> None:
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise DatasetNotFoundError(
                f"{self.title} in {str(self.base)!r} is incomplete: {len(missing)} of "
                f"{len(self.paths)} images listed in the annotation files are missing: "
                f"{shown}{more}. Re-extract the official archive(s) "
                f"{', '.join(a.filename for a in self.archives)}.")

    # ------------------------------------------------------------------- reading items
    def _parse(self, split: str):  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, index: int):
        with Image.open(self.paths[index]) as img:
            return img.convert("RGB")


@register_dataset("cub200", display_name="CUB-200-2011", aliases=("cub", "CUB-200-2011"),
                  recall_ks=(1, 2, 4, 8, 16, 32),
                  split_note="classes 1-100 train, 101-200 test")
class CUB200(_Benchmark):
    """CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species.

    Split: classes 1-100 train (5,864 images), 101-200 test (5,924), ignoring the official
    classification ``train_test_split.txt`` (the DML protocol). Reads ``images.txt``
    (``<image_id> <class_folder>/<file>.jpg``), ``image_class_labels.txt``
    (``<image_id> <class_id>``) and ``classes.txt``.
    """

    folder = "cub200"
    title = "CUB-200-2011"
    homepage = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
    archives = (Archive("CUB_200_2011.tgz",
                        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                        "97eceeb196236b17998738112f37df78"),)
    markers = ("CUB_200_2011/images.txt", "CUB_200_2011/image_class_labels.txt",
               "CUB_200_2011/classes.txt")
    num_train_classes = 100

    def _parse(self, split):
        d = self.base / "CUB_200_2011"
        images = {int(r[0]): r[1] for r in _read_lines(d / "images.txt")}
        labels = {int(r[0]): int(r[1]) for r in _read_lines(d / "image_class_labels.txt")}
        self.class_names = {int(r[0]): r[1] for r in _read_lines(d / "classes.txt")}
        if set(images) != set(labels):
            raise DatasetNotFoundError(f"{d / 'images.txt'} and image_class_labels.txt list "
                                       "different image ids: the files are damaged")
        ids = sorted(images)
        cls = np.array([labels[i] for i in ids], dtype=np.int64)
        keep = cls <= self.num_train_classes if split == "train" else cls > self.num_train_classes
        paths = [Path("CUB_200_2011", "images", images[i]) for i, k in zip(ids, keep) if k]
        return paths, cls[keep], None


@register_dataset("cars196", display_name="Cars196", aliases=("cars", "Stanford Cars"),
                  recall_ks=(1, 2, 4, 8, 16, 32),
                  split_note="classes 1-98 train, 99-196 test")
class Cars196(_Benchmark):
    """Cars196 / Stanford Cars (Krause et al. 2013): 16,185 images of 196 car models.

    Split: classes 1-98 train (8,054 images), 99-196 test (8,131), ignoring the official
    classification split (the ``test`` field). Reads ``cars_annos.mat`` (``annotations``
    struct array with ``relative_im_path`` such as ``car_ims/000001.jpg`` and ``class`` in
    1..196; ``class_names``) with ``scipy.io.loadmat``. The original Stanford URLs have been
    offline since 2023; the MD5s are those of the original files.
    """

    folder = "cars196"
    title = "Cars196"
    homepage = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
    archives = (
        Archive("car_ims.tgz", "http://ai.stanford.edu/~jkrause/car196/car_ims.tgz",
                "d5c8f0aa497503f355e17dc7886c3f14"),
        Archive("cars_annos.mat", "http://ai.stanford.edu/~jkrause/car196/cars_annos.mat",
                "b407c6086d669747186bd1d764ff9dbc", extract=False),
    )
    markers = ("cars_annos.mat",)
    num_train_classes = 98

    def _locate(self, root, download):
        base = super()._locate(root, download)
        if not (base / "car_ims").is_dir():  # annotations there but images not extracted
            archive = self._archive_path(base, self.archives[0])
            if archive is not None:
                verify_archive(archive, self.archives[0].md5)
                extract_archive(archive, base)
        return base

    def _parse(self, split):
        from scipy.io import loadmat

        mat = loadmat(self.base / "cars_annos.mat")
        ann = mat["annotations"].ravel()
        paths = [str(np.asarray(a).ravel()[0]) for a in ann["relative_im_path"]]
        cls = np.array([int(np.asarray(c).ravel()[0]) for c in ann["class"]], dtype=np.int64)
        if "class_names" in mat:
            names = mat["class_names"].ravel()
            self.class_names = {i + 1: str(np.asarray(n).ravel()[0]) for i, n in enumerate(names)}
        keep = cls <= self.num_train_classes if split == "train" else cls > self.num_train_classes
        return [Path(p) for p, k in zip(paths, keep) if k], cls[keep], None


@register_dataset("sop", display_name="Stanford Online Products",
                  aliases=("Stanford Online Products", "online products"),
                  recall_ks=(1, 10, 100, 1000),
                  split_note="the products of Ebay_train.txt train, those of Ebay_test.txt "
                             "test")
class SOP(_Benchmark):
    """Stanford Online Products (Oh Song et al. 2016): 120,053 images of 22,634 products.

    Split: ``Ebay_train.txt`` (11,318 classes, 59,551 images) / ``Ebay_test.txt`` (11,316
    classes, 60,502 images); each file has the header ``image_id class_id super_class_id
    path`` then one line per image (``path`` relative to ``Stanford_Online_Products/``).
    ``super_class_ids`` (12 categories) are kept as an attribute.
    """

    folder = "sop"
    title = "Stanford Online Products"
    homepage = "https://cvgl.stanford.edu/projects/lifted_struct/"
    archives = (Archive("Stanford_Online_Products.zip",
                        "ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
                        "7f73d41a2f44250d4779881525aea32e"),)
    markers = ("Stanford_Online_Products/Ebay_train.txt",
               "Stanford_Online_Products/Ebay_test.txt")

    def _parse(self, split):
        name = "Ebay_train.txt" if split == "train" else "Ebay_test.txt"
        rows = _read_lines(self.base / "Stanford_Online_Products" / name)
        if rows and rows[0][0] == "image_id":
            rows = rows[1:]
        cls = np.array([int(r[1]) for r in rows], dtype=np.int64)
        self.super_class_ids = np.array([int(r[2]) for r in rows], dtype=np.int64)
        paths = [Path("Stanford_Online_Products", r[3]) for r in rows]
        return paths, cls, None


@register_dataset("inshop", display_name="In-shop",
                  aliases=("In-shop Clothes", "DeepFashion In-shop"),
                  recall_ks=(1, 10, 20, 30, 40, 50), protocol="query_gallery",
                  split_note="the train items of list_eval_partition.txt train; the other "
                             "items' query images searched in their gallery images")
class InShop(_Benchmark):
    """In-shop Clothes Retrieval (Liu et al. 2016, DeepFashion): 52,712 images, 7,982 items.

    Splits from ``Eval/list_eval_partition.txt``: ``train`` (3,997 items, 25,882 images),
    ``query`` (14,218) and ``gallery`` (12,612) over the 3,985 test items, and ``test`` =
    query + gallery. Query and gallery labels share one mapping (same label = same item).
    The files are only distributed through the DeepFashion Google Drive folder (no direct URL
    to download from): put ``img.zip`` (from ``Img/``) and ``list_eval_partition.txt`` (from
    ``Eval/``) into ``<root>/inshop/`` or ``<root>/inshop/Eval/``.
    """

    folder = "inshop"
    title = "In-shop Clothes Retrieval"
    homepage = "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html"
    _note = ("DeepFashion In-shop Google Drive folder linked from " + homepage)
    archives = (Archive("img.zip", None, None, note=_note),
                Archive("Eval/list_eval_partition.txt", None, None, extract=False,
                        note=_note))
    markers = ("Eval/list_eval_partition.txt",)
    splits = ("train", "test", "query", "gallery")

    def _archive_path(self, base, archive):
        found = super()._archive_path(base, archive)
        if found is None and archive.filename == "img.zip" and (base / "Img/img.zip").is_file():
            found = base / "Img/img.zip"
        return found

    def _locate(self, root, download):
        for base in self._candidates(root):
            partition = base / "Eval/list_eval_partition.txt"
            loose = base / "list_eval_partition.txt"
            if not partition.is_file() and loose.is_file():
                partition.parent.mkdir(exist_ok=True)
                os.replace(loose, partition)
            if partition.is_file() and not (base / "img").is_dir():
                archive = self._archive_path(base, self.archives[0])
                if archive is not None:
                    extract_archive(archive, base)
        return super()._locate(root, download)

    def _parse(self, split):
        rows = _read_lines(self.base / "Eval/list_eval_partition.txt")
        rows = [r for r in rows if len(r) == 3 and r[0] != "image_name"]
        wanted = {"train": ("train",), "query": ("query",), "gallery": ("gallery",),
                  "test": ("query", "gallery")}[split]
        item = np.array([int(r[1].split("_")[-1]) for r in rows], dtype=np.int64)
        status = np.array([r[2] for r in rows])
        keep = np.isin(status, wanted)
        class_ids = None
        if split != "train":  # one mapping over all test items for query and gallery
            class_ids = np.unique(item[np.isin(status, ("query", "gallery"))])
        self.partition = status[keep]
        paths = [Path(r[0]) for r, k in zip(rows, keep) if k]
        return paths, item[keep], class_ids
