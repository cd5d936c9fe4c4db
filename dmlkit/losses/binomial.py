"""Binomial deviance loss (Yi et al. 2014; Wang et al. 2019b, eq. 12) and its per-anchor terms.

References: docs/references.md; formulas: docs/formulas.md#binomial-deviance."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import PairBatch, PairLoss
from .registry import register

__all__ = ["REDUCTIONS", "BinomialDevianceLoss", "binomial_anchor_terms", "binomial_pair_weights",
           "check_reduction", "reduce_anchors"]

REDUCTIONS = ("mean", "sum")


def check_reduction(reduction: str) -> str:
    """Validate a reduction over anchors ("mean" = 1/m, "sum" = the paper's plain sum)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; known reductions: "
                         f"{', '.join(REDUCTIONS)}")
    return reduction


def reduce_anchors(per_anchor: torch.Tensor, reduction: str, pos_keep: torch.Tensor,
                   neg_keep: torch.Tensor) -> torch.Tensor:
    """(B,) per-anchor losses -> 0-dim, counting only anchors with a kept positive AND negative.

    An anchor without a (kept) positive or without a (kept) negative contributes 0 but still
    counts in the mean over all B anchors (official MS code: ``if len(neg_pair) < 1 or
    len(pos_pair) < 1: continue`` and ``sum(loss) / batch_size``). The zero stays connected to
    S, so a degenerate batch (one class, all singletons) gives a finite zero that backpropagates.
    """
    valid = pos_keep.any(dim=1) & neg_keep.any(dim=1)
    per_anchor = torch.where(valid, per_anchor, per_anchor * 0.0)
    return per_anchor.mean() if reduction == "mean" else per_anchor.sum()


def binomial_anchor_terms(S: torch.Tensor, pos_keep: torch.Tensor, neg_keep: torch.Tensor,
                          alpha: float, beta: float, lam: float) -> torch.Tensor:
    """Per-anchor binomial deviance on the kept pairs, (B,).

    ``1/|P_i| sum_{k in P_i} softplus(-alpha (s_ik - lam)) +
    1/|N_i| sum_{k in N_i} softplus(beta (s_ik - lam))``, an empty set contributing 0.
    ``softplus`` keeps beta = 50 finite in any precision.
    """
    zero = torch.zeros((), dtype=S.dtype, device=S.device)
    pos_terms = torch.where(pos_keep, F.softplus(-alpha * (S - lam)), zero)
    neg_terms = torch.where(neg_keep, F.softplus(beta * (S - lam)), zero)
    n_pos = pos_keep.sum(dim=1).clamp_min(1).to(S.dtype)
    n_neg = neg_keep.sum(dim=1).clamp_min(1).to(S.dtype)
    return pos_terms.sum(dim=1) / n_pos + neg_terms.sum(dim=1) / n_neg


def binomial_pair_weights(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, alpha: float,
                          beta: float, lam: float) -> torch.Tensor:
    """Closed-form weights (B, M) of :func:`binomial_anchor_terms` (Wang et al. 2019b, eq. 13-14).

    ``alpha sigmoid(alpha (lam - s)) / |P_i|`` on the pairs of ``pos`` and
    ``beta sigmoid(beta (s - lam)) / |N_i|`` on those of ``neg``, on the anchors with both
    sets non-empty (0 elsewhere); without the reduction's 1/m.
    """
    zero = torch.zeros((), dtype=S.dtype, device=S.device)
    live = (pos.any(1) & neg.any(1))[:, None]
    n_p = pos.sum(1, keepdim=True).clamp_min(1).to(S.dtype)
    n_n = neg.sum(1, keepdim=True).clamp_min(1).to(S.dtype)
    wp = alpha * torch.sigmoid(alpha * (lam - S)) / n_p
    wn = beta * torch.sigmoid(beta * (S - lam)) / n_n
    return torch.where(pos & live, wp, zero) + torch.where(neg & live, wn, zero)


@register("binomial_deviance", "binomial")
class BinomialDevianceLoss(PairLoss):
    r"""Binomial deviance loss (Yi et al. 2014, "Deep metric learning for person
    re-identification"; the form of Wang et al. 2019b, eq. 12).

    .. math::
        L = \frac{1}{m}\sum_i \Big[\frac{1}{|P_i|}\sum_{k\in P_i}
            \log(1 + e^{-\alpha(s_{ik}-\lambda)})
          + \frac{1}{|N_i|}\sum_{k\in N_i}\log(1 + e^{\beta(s_{ik}-\lambda)})\Big]

    on cosine similarities ``s`` (``normalize=True``). Defaults alpha = 2, beta = 50,
    lam = 0.5 (Wang et al. 2019b).

    Reduction: ``reduction="mean"`` (default) divides the sum over anchors by m = B, the number
    of query rows, so the value does not grow with the batch and matches the 1/m of the MS loss
    (eq. 17) in the Table-1 ablation; ``reduction="sum"`` is eq. 12's plain sum. An anchor
    without a positive or without a negative (no valid triplet) contributes 0 and still counts
    in m, as in the official MS code; so one-class and all-singleton batches give 0.

    Pair weights (``dmlkit.weights.pair_weights``, W = -dL/dS positives, +dL/dS negatives) are
    eq. 13-14 exactly with ``reduction="sum"``; with ``"mean"`` they are eq. 13-14 times 1/B:
    ``(1/|P_i|) alpha e^{alpha(lam-s)}/(1+e^{alpha(lam-s)})`` and
    ``(1/|N_i|) beta e^{beta(s-lam)}/(1+e^{beta(s-lam)})`` on anchors with both sets
    non-empty, 0 on the others.

    Shapes: embeddings (B, D), labels (B,), optional references (M, D) / (M,). Returns 0-dim.
    """

    hyperparameters = ("alpha", "beta", "lam", "reduction")

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, lam: float = 0.5,
                 reduction: str = "mean", normalize: bool = True):
        super().__init__(normalize=normalize)
        self.alpha, self.beta, self.lam = float(alpha), float(beta), float(lam)
        self.reduction = check_reduction(reduction)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        per_anchor = binomial_anchor_terms(batch.S, batch.pos, batch.neg,
                                           self.alpha, self.beta, self.lam)
        return reduce_anchors(per_anchor, self.reduction, batch.pos, batch.neg)

    def tile_formulation(self, ctx):
        """Sums of the softplus terms and counts per row over the tiles
        (:class:`dmlkit.losses.kept_pair_tiles.KeptPairTiles` without mining)."""
        from .kept_pair_tiles import KeptPairTiles
        return KeptPairTiles("binomial", "none", self.alpha, self.beta, self.lam,
                             self.reduction)

    def closed_form_weights(self, batch: PairBatch) -> torch.Tensor:
        """Wang et al. 2019b, eq. 13-14 (:func:`binomial_pair_weights`), / m for "mean". (B, M)."""
        W = binomial_pair_weights(batch.S, batch.pos, batch.neg, self.alpha, self.beta, self.lam)
        return W / (batch.S.shape[0] if self.reduction == "mean" else 1.0)
