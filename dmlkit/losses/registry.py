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


class _LossRegistry(Registry):
    """The registry of losses: every loss also takes ``chunk_size`` (the tiled path of
    :mod:`dmlkit.losses.tiling`, a keyword of :class:`~dmlkit.losses.PairLoss`), which is not
    one of the paper's hyper-parameters listed by :meth:`parameters`."""

    def check_parameters(self, name, params, skip=()):
        super().check_parameters(name, [p for p in params if p != "chunk_size"], skip=skip)


#: every loss of the package, by name
LOSSES = _LossRegistry("loss", plural="losses")

register = LOSSES.register
get = LOSSES.get
build = LOSSES.build
available = LOSSES.available
parameters = LOSSES.parameters
