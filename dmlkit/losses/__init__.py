"""Every loss of the papers (docs/references.md), built on one similarity-matrix design.

One module per family of losses (:mod:`~dmlkit.losses.contrastive`, ...), each imported here;
importing a module registers its losses in :data:`LOSSES` (``@register(name)``).

>>> import torch
>>> from dmlkit import losses
>>> loss = losses.build("multi_similarity", alpha=2, beta=50, lam=0.5, epsilon=0.1)
>>> embeddings, labels = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
>>> loss(embeddings, labels).shape            # a 0-dim tensor
torch.Size([])
>>> "multi_similarity" in losses.available()
True
"""

# one module per family of losses; importing it registers its losses
from . import angular
from . import binomial
from . import contrastive
from . import ddml
from . import lifted
from . import multi_similarity
from . import npair
from . import osm_caa
from . import proxy
from . import tiling
from . import triplet
from .base import PairBatch, PairLoss, make_batch
from .registry import LOSSES, available, build, get, parameters, register

__all__ = [
    "LOSSES", "PairBatch", "PairLoss", "angular", "available", "binomial", "build", "contrastive",
    "ddml", "get", "lifted", "make_batch", "multi_similarity", "npair", "osm_caa", "parameters",
    "proxy", "register", "tiling", "triplet",
]
