"""Every loss of the seed papers, built on one similarity-matrix design.

>>> from dmlkit import losses
>>> loss = losses.build("multi_similarity", alpha=2, beta=50, lam=0.5, epsilon=0.1)
>>> value = loss(embeddings, labels)   # doctest: +SKIP
"""

from .base import PairBatch, PairLoss, make_batch
from .registry import available, build, get, register

# Importing the modules registers their losses. Each module is one family of losses.
from . import _loss_modules  # noqa: F401

__all__ = ["PairBatch", "PairLoss", "make_batch", "available", "build", "get", "register"]
