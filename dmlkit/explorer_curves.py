"""The weight explorer's curves: ``weights.weight_curve`` of both pairs, the grid at once.

:func:`curves` returns what :func:`dmlkit.weights.weight_curve` returns for the swept negative
and the swept positive pair. ``weight_curve`` differentiates the loss once per grid point (a
Python loop: 2 x 101 backward passes per redraw); here the same 1 x M batches, one per grid
point, run as one ``torch.func.vmap`` of the loss's ``compute`` (each row alone, exactly as
in the loop) and one backward pass of the rows' sum (the rows are independent, so the
gradient of the sum is each row's own). The weights equal the loop's (to rounding, 1e-16;
``tests/test_explorer.py`` compares them for every loss of the explorer). A loss whose
``compute`` vmap cannot run (an ``out=`` argument, a custom ``autograd.Function``: today
``multi_similarity``, ``triplet``, ``contrastive``, ``lifted_structure``, ``angular``) and a
tiled loss are drawn by the loop itself.
"""

from __future__ import annotations

import numpy as np

from . import weights as _weights

__all__ = ["curves", "vectorised"]

#: loss classes whose ``compute`` cannot run under ``torch.func.vmap`` (an ``out=`` argument,
#: a custom autograd.Function): their curves come from the loop of ``weights.weight_curve``
_LOOP_ONLY: set = set()


def _vmapped_weights(loss, pair, grid, context_pos, context_neg) -> np.ndarray:
    """The weights ``weights.weight_curve`` computes, the grid at once: the 1 x M batch of
    weight_curve (context references, then the swept pair), one row per grid point, the
    loss of each row by ``torch.func.vmap`` (each row alone, as in the loop) and dL/dS of
    their sum by one backward pass (the rows are independent)."""
    import torch

    from .losses.base import PairBatch

    ctx_p, ctx_n = list(map(float, context_pos)), list(map(float, context_neg))
    ref_labels = torch.tensor([0] * len(ctx_p) + [1 + k for k in range(len(ctx_n))]
                              + [0 if pair == "positive" else 1 + len(ctx_n)])
    labels = torch.tensor([0])
    pos = labels[:, None] == ref_labels[None, :]
    dummy = torch.zeros(1, 1, dtype=torch.float64)
    S = torch.tensor(ctx_p + ctx_n + [0.0], dtype=torch.float64).repeat(len(grid), 1)
    S[:, -1] = torch.as_tensor(grid, dtype=torch.float64)
    S.requires_grad_(True)

    def row_loss(row):
        return loss.compute(PairBatch(
            S=row[None, :], pos=pos, neg=~pos, labels=labels, ref_labels=ref_labels,
            embeddings=dummy, ref_embeddings=dummy.expand(len(ref_labels), 1),
            in_batch=False, normalized=True))

    (grad,) = torch.autograd.grad(torch.func.vmap(row_loss)(S).sum(), S, allow_unused=True)
    if grad is None:
        return np.zeros(len(grid))
    return (-grad[:, -1] if pair == "positive" else grad[:, -1]).detach().numpy()


def curves(loss, grid, context_pos, context_neg) -> dict:
    """``{"negative": WeightCurve, "positive": WeightCurve}`` of ``weights.weight_curve``;
    vectorised over the grid where the loss allows it (equal to the loop: tested)."""
    grid = np.asarray(grid, dtype=float)
    if type(loss) not in _LOOP_ONLY and getattr(loss, "chunk_size", None) is None:
        try:
            return {pair: _weights.WeightCurve(
                similarity=grid, weight=_vmapped_weights(loss, pair, grid, context_pos,
                                                         context_neg),
                pair=pair, loss_name=type(loss).__name__,
                context_pos=tuple(map(float, context_pos)),
                context_neg=tuple(map(float, context_neg)))
                for pair in ("negative", "positive")}
        except (RuntimeError, IndexError):   # vmap cannot run it: the loop, from now on
            _LOOP_ONLY.add(type(loss))
    return {pair: _weights.weight_curve(loss, pair, grid=grid, context_pos=context_pos,
                                        context_neg=context_neg)
            for pair in ("negative", "positive")}


def vectorised(loss) -> bool:
    """Whether :func:`curves` has drawn ``loss``'s class with vmap (False: the loop)."""
    return type(loss) not in _LOOP_ONLY and getattr(loss, "chunk_size", None) is None
