"""Similarity matrices and pair masks: the input of every pair-based loss.

A loss sees ``S`` (B x M), where row i is a query (an anchor of the batch) and column j a
reference (the same batch for in-batch training, or a memory bank / generated negatives),
plus boolean masks of the positive and negative pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["similarity_matrix", "pair_masks", "squared_distances", "distances_from_similarity"]


class _SymmetricGram(torch.autograd.Function):
    """``S = Q Q^T`` whose backward is one matrix product, ``(G + G^T) Q``, instead of the two
    (``G Q`` and ``G^T Q``) that autograd makes for the two operands of ``q @ q.t()``."""

    @staticmethod
    def forward(ctx, q):
        ctx.save_for_backward(q)
        return q @ q.t()

    @staticmethod
    def backward(ctx, grad):
        (q,) = ctx.saved_tensors
        return (grad + grad.t()) @ q


def similarity_matrix(query: torch.Tensor, reference: torch.Tensor | None = None,
                      normalize: bool = True) -> torch.Tensor:
    """Inner products ``S[i, j] = <q_i, r_j>`` (cosine similarities when ``normalize``).

    query: (B, D); reference: (M, D) or None for the batch itself. Returns (B, M) in float32 at
    least (half-precision inputs are promoted so that exp(beta * s) stays finite).
    """
    q = query.float() if query.dtype in (torch.float16, torch.bfloat16) else query
    if normalize:
        q = F.normalize(q, dim=1)
    if reference is None:
        return _SymmetricGram.apply(q)
    r = reference.float() if reference.dtype in (torch.float16, torch.bfloat16) else reference
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
    same = labels[:, None] == ref[None, :]
    neg = ~same
    pos = same
    if in_batch:
        eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
        pos = same & ~eye
    return pos, neg


def squared_distances(query: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances (B, M), clamped at 0, computed without a (B, M, D) tensor."""
    r = query if reference is None else reference
    sq = (query * query).sum(1, keepdim=True) + (r * r).sum(1)[None, :] - 2.0 * query @ r.t()
    return sq.clamp_min(0.0)


def distances_from_similarity(S: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance between unit vectors from their cosine similarity: sqrt(2 - 2 s).

    ``eps`` keeps the gradient finite at d = 0 (identical vectors).
    """
    return (2.0 - 2.0 * S).clamp_min(0.0).add(eps).sqrt()
