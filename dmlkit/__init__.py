"""dmlkit: deep metric learning losses, weights, adversarial negatives, evaluation, training.

``from dmlkit import losses, weights, miners`` are imported eagerly; every other module (the
heavier ``evaluate``, ``data``, ``models``, ``train``, ``adversarial``, ``plotting``, ...) loads
on first use, so ``import dmlkit`` stays quick.

>>> import dmlkit
>>> dmlkit.tasks.__name__
'dmlkit.tasks'
>>> dmlkit.analysis
Traceback (most recent call last):
...
AttributeError: module 'dmlkit' has no attribute 'analysis'

"""

import importlib

__version__ = "0.1.0"

from . import losses, miners, weights

_LAZY = ("adversarial", "atomic", "data", "distributed", "evaluate", "explorer", "memory",
         "models", "nbrun", "notebook", "pairs", "plotting", "reality", "registry", "results",
         "seeding", "similarity", "tasks", "train")

__all__ = ["losses", "miners", "weights", *_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dmlkit' has no attribute {name!r}")
