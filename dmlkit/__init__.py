"""dmlkit: deep metric learning losses, weights, adversarial negatives, evaluation, training.

``from dmlkit import losses, weights, miners`` are imported eagerly; the heavier parts
(``evaluate``, ``data``, ``models``, ``train``, ``adversarial``, ``plotting``, ``notebook``)
load on first use, so ``import dmlkit`` stays quick.
"""

import importlib

__version__ = "0.1.0"

from . import losses, miners, weights

_LAZY = ("evaluate", "data", "models", "train", "adversarial", "plotting", "notebook", "nbrun",
         "analysis", "reporting", "similarity")

__all__ = ["losses", "miners", "weights", *_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dmlkit' has no attribute {name!r}")
