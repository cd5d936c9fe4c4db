"""Similarity matrices and pair masks: the input of every pair-based loss.

A loss sees ``S`` (B x M), where row i is a query (an anchor of the batch) and column j a
reference (the same batch for in-batch training, or a memory bank / generated negatives),
plus boolean masks of the positive and negative pairs.

>>> import torch
>>> from dmlkit.similarity import pair_masks, similarity_matrix
>>> similarity_matrix(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))      # cosine, unit diagonal
tensor([[1.0000, 0.6000],
        [0.6000, 1.0000]])
>>> pos, neg = pair_masks(torch.tensor([0, 0, 1]))    # the diagonal is in neither
>>> pos[0].tolist(), neg[0].tolist()
([False, True, False], [False, False, True])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import HALF_DTYPES, without_autocast

__all__ = ["similarity_matrix", "pair_masks", "squared_distances", "distances_from_similarity",
           "mask_any"]


def mask_any(mask: torch.Tensor) -> bool:
    """``bool(mask.any())`` for a bool tensor, read through a uint8 view (on CPU a bool
    reduction measured about 40 times slower than the same reduction over bytes:
    docs/losses.md)."""
    return mask.numel() > 0 and bool(mask.view(torch.uint8).max())


class _SymmetricGram(torch.autograd.Function):
    """``S = Q Q^T`` whose backward is one matrix product, ``(G + G^T) Q``, instead of the two
    (``G Q`` and ``G^T Q``) that autograd makes for the two operands of ``q @ q.t()``.
    ``G^T`` is materialised by a blocked transpose copy (chosen over adding a transposed view,
    which was slower when timed on a CPU; that timing is not among the saved benchmarks).

    With ``unit_diagonal`` (the rows of q are unit vectors) the diagonal is set to exactly 1,
    its value as a function of the normalised embeddings, and carries no gradient; rounding
    would otherwise leave some ``s_ii`` above 1, outside the domain of ``sqrt(2 - 2 s)``.
    """

    @staticmethod
    def forward(ctx, q, unit_diagonal):
        ctx.save_for_backward(q)
        ctx.unit_diagonal = unit_diagonal
        S = q @ q.t()
        if unit_diagonal:
            S.fill_diagonal_(1.0)
        return S

    @staticmethod
    def backward(ctx, grad):
        (q,) = ctx.saved_tensors
        # under autocast S (hence grad) is in half precision while q is not: the backward
        # product runs in q's dtype (a backward outside the autocast block has no casts)
        G = grad.t().to(q.dtype).contiguous().add_(grad)
        if ctx.unit_diagonal:
            G.fill_diagonal_(0.0)
        return G @ q, None


@without_autocast
def similarity_matrix(query: torch.Tensor, reference: torch.Tensor | None = None,
                      normalize: bool = True) -> torch.Tensor:
    """Inner products ``S[i, j] = <q_i, r_j>`` (cosine similarities when ``normalize``).

    query: (B, D); reference: (M, D) or None for the batch itself. Returns (B, M) in float32 at
    least: half-precision inputs are promoted (so that exp(beta * s) stays finite) and the
    product runs with autocast disabled (the precision policy, docs/precision.md).
    """
    q = query.float() if query.dtype in HALF_DTYPES else query
    if normalize:
        q = F.normalize(q, dim=1)
    if reference is None:
        return _SymmetricGram.apply(q, normalize)
    r = reference.float() if reference.dtype in HALF_DTYPES else reference
    r = r.to(q.dtype)
    if normalize:
        r = F.normalize(r, dim=1)
    return q @ r.t()


def pair_masks(labels: torch.Tensor, ref_labels: torch.Tensor | None = None):
    """Boolean (B, M) masks of positive and negative pairs.

    With ``ref_labels=None`` the references are the batch itself and the diagonal (a sample
    with itself) is neither positive nor negative.
    """
    in_batch = ref_labels is None
    ref = labels if in_batch else ref_labels
    pos = labels[:, None] == ref[None, :]
    neg = ~pos
    if in_batch:
        pos.fill_diagonal_(False)
    return pos, neg


@without_autocast
def squared_distances(query: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances (B, M), clamped at 0, computed without a (B, M, D) tensor
    (in the inputs' dtype, autocast disabled: docs/precision.md)."""
    r = query if reference is None else reference
    sq = (query * query).sum(1, keepdim=True) + (r * r).sum(1)[None, :] - 2.0 * query @ r.t()
    return sq.clamp_min(0.0)


def unit_distances(S: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``sqrt(max(2 - 2 s, 0) + eps)`` into one new buffer, without autograd (the forward of
    :func:`distances_from_similarity`, shared with the fused loss kernels)."""
    return S.mul(-2.0).add_(2.0).clamp_min_(0.0).add_(eps).sqrt_()


def zero_where_clamped_(X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Zero, in place, the entries of a derivative X where ``2 - 2 s`` was clamped (``s > 1``,
    duplicates by rounding; the unit diagonal is exactly 1). One max() when there are none."""
    if bool(S.max() > 1):
        X.masked_fill_(S > 1, 0.0)
    return X


class _DistanceFromSimilarity(torch.autograd.Function):
    """:func:`unit_distances` with one buffer forward and one pass backward, ``dd/ds = -1 / d``
    (0 where ``2 - 2 s`` was clamped)."""

    @staticmethod
    def forward(ctx, S, eps):
        d = unit_distances(S, eps)
        ctx.save_for_backward(S, d)
        return d

    @staticmethod
    def backward(ctx, grad):
        S, d = ctx.saved_tensors
        return zero_where_clamped_(grad.div(d).neg_(), S), None


def distances_from_similarity(S: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance between unit vectors from their cosine similarity: sqrt(2 - 2 s).

    ``eps`` keeps the gradient finite at d = 0 (identical vectors).
    """
    return _DistanceFromSimilarity.apply(S, eps)
