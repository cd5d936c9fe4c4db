"""The loss registry: name -> loss class, one :class:`dmlkit.registry.Registry` (``"loss"``).

Each loss module registers its classes with ``@register(name, ...)`` (every name is listed by
:func:`available`); ``build`` checks the keyword names against the class's parameters.

>>> from dmlkit import losses
>>> losses.build("multi_similarity", beta=40)
MultiSimilarityLoss(alpha=2.0, beta=40.0, lam=0.5, epsilon=0.1, reduction='mean', normalize=True)
>>> losses.get("Multi-Similarity") is losses.get("ms")
True
>>> losses.build("triplet", gamma=3)
Traceback (most recent call last):
...
ValueError: loss 'triplet' has no parameter(s) ['gamma']; its parameters are ['margin', ...]
"""

from __future__ import annotations

from ..registry import Registry

__all__ = ["LOSSES", "available", "build", "get", "parameters", "register"]

#: every loss of the package, by name
LOSSES = Registry("loss", plural="losses")

register = LOSSES.register
get = LOSSES.get
build = LOSSES.build
available = LOSSES.available
parameters = LOSSES.parameters
