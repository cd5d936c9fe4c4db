"""The dataset registry: each dataset class registers its name, aliases and facts.

A dataset module decorates its class with :func:`register_dataset`; the facts (the papers'
Recall@K list, the evaluation protocol, the native image size, the name in the papers' tables)
are read back with :func:`dataset_info`, so training, evaluation and results code need no
per-dataset branches.

>>> from dmlkit import data
>>> info = data.dataset_info("CUB-200-2011")
>>> info.name, info.display_name, info.recall_ks
('cub200', 'CUB-200-2011', (1, 2, 4, 8, 16, 32))
>>> data.dataset_info("In-shop").protocol, data.dataset_info("glyphs").image_size
('query_gallery', 32)
>>> data.dataset_info("cub-2000")
Traceback (most recent call last):
...
ValueError: unknown dataset 'cub-2000'. Did you mean 'cub200'? Known datasets: cars196, cub200, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..registry import Registry

__all__ = ["DATASETS", "PROTOCOLS", "DatasetInfo", "available", "dataset_info",
           "register_dataset"]

#: canonical dataset name -> dataset class (``split``, ``transform`` and, where the class takes
#: them, ``root`` / ``download`` keyword arguments)
DATASETS = Registry("dataset")

#: ``class_disjoint``: the test split is searched leave-one-out (train / test classes
#: disjoint); ``query_gallery``: queries are searched in a separate gallery split.
PROTOCOLS: tuple[str, ...] = ("class_disjoint", "query_gallery")

#: the Recall@K list for data sets that no paper reports on
_DEFAULT_RECALL_KS = (1, 2, 4, 8)


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of dmlkit needs to know about a dataset.

    Attributes:
        name: canonical name (:func:`available`).
        display_name: the name in the papers' results tables (``"CUB-200-2011"``).
        aliases: other accepted spellings (case, ``-``, ``_`` and spaces are ignored anyway).
        recall_ks: the papers' Recall@K list for this dataset.
        image_size: native side in pixels of an embedded dataset's images (its ``size``
            option's default); None for datasets read from image files.
        image_files: read from image files (augmentation for training, centre crop for
            evaluation); False for tensors generated or bundled in memory.
        protocol: ``"class_disjoint"`` or ``"query_gallery"`` (see :data:`PROTOCOLS`).
        embedded: ships with dmlkit or its dependencies (no download).
        split_note: which classes (and images) form the train and test splits, in words.
    """

    name: str
    display_name: str
    aliases: tuple[str, ...] = ()
    recall_ks: tuple[int, ...] = _DEFAULT_RECALL_KS
    image_size: int | None = None
    image_files: bool = True
    protocol: str = "class_disjoint"
    embedded: bool = False
    split_note: str = ""


def register_dataset(name: str, *, display_name: str, aliases: Iterable[str] = (),
                     recall_ks: Iterable[int] = _DEFAULT_RECALL_KS,
                     image_size: int | None = None, protocol: str = "class_disjoint",
                     embedded: bool = False, image_files: bool | None = None,
                     split_note: str = "") -> Callable:
    """Class decorator: register a dataset under ``name`` with its facts (:class:`DatasetInfo`).

    ``image_files`` defaults to ``not embedded``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    info = DatasetInfo(name=name, display_name=display_name, aliases=tuple(aliases),
                       recall_ks=tuple(int(k) for k in recall_ks), image_size=image_size,
                       image_files=not embedded if image_files is None else bool(image_files),
                       protocol=protocol, embedded=bool(embedded), split_note=str(split_note))

    def deco(cls):
        return DATASETS.add(name, cls, aliases=info.aliases, info=info)

    return deco


def dataset_info(name: str) -> DatasetInfo:
    """The registered facts of a dataset, by any of its names or aliases.

    Unknown names raise a ValueError with the closest names and the known datasets.
    """
    return DATASETS.facts(name)["info"]


def available() -> list[str]:
    """Sorted dataset names: cars196, cub200, digits, fashion_mnist, glyphs, image_folder,
    inshop, sop."""
    return DATASETS.available()
