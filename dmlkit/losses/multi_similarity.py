"""Weighting x mining: the multi-similarity loss and the ablations of Wang et al. 2019b, Table 1.

A loss here is a named (weighting, mining) pair (Wang et al. 2019b, Sec. 3-5): a miner from
:mod:`dmlkit.miners` selects pairs (bool masks, computed under ``torch.no_grad()``), and a
weighting is a differentiable function of ``batch.S`` on the kept pairs, so
``dmlkit.weights.pair_weights`` reads the closed-form weights by autograd.

Weightings (per anchor i, on the kept sets P^_i, N^_i):

* ``"raw"`` (eq. 17): ``1/alpha log(1 + sum_{P^_i} e^{-alpha(s-lam)})
  + 1/beta log(1 + sum_{N^_i} e^{beta(s-lam)})`` (logsumexp with the 1 as a 0 logit);
* ``"binomial"`` (eq. 12): ``mean_{P^_i} softplus(-alpha(s-lam))
  + mean_{N^_i} softplus(beta(s-lam))``;
* ``"uniform"`` (VTHM alone, equal weights): ``sum_{P^_i} (1 - s) + sum_{N^_i} (1 + s)``,
  every kept pair has weight exactly 1 (x 1/m), non-negative for cosines.

Reduction over anchors: ``"mean"`` = 1/m with m = B query rows, ``"sum"`` the plain sum. An
anchor contributes only when it keeps at least one positive AND one negative; otherwise it
contributes 0 and still counts in m (official MS code: ``if len(neg_pair) < 1 or
len(pos_pair) < 1: continue`` then ``sum(loss) / batch_size``). Under VTHM (epsilon >= 0) the
two kept sets are both empty or both non-empty (in exact arithmetic), so this is also PML's
mean over all anchors.
"""

from __future__ import annotations

import torch

from .. import miners as _miners
from ._fused import kept_lse1p
from .base import PairBatch, PairLoss, zero_loss
from .binomial import (
    binomial_anchor_terms,
    binomial_pair_weights,
    check_reduction,
    reduce_anchors,
)
from .kept_pair_tiles import LOG2E, TILED_MININGS, KeptPairTiles
from .registry import register

__all__ = [
    "LOG2E", "PAIR_WEIGHTS", "TILED_MININGS", "WEIGHTINGS", "BinomialVTHMLoss", "KeptPairTiles",
    "MultiSimilarityLoss",
    "RAWDistanceWeightedLoss", "RAWLoss", "RAWSemiHardLoss", "VTHMLoss", "WeightedPairLoss",
    "raw_anchor_terms", "raw_pair_weights", "uniform_anchor_terms", "uniform_pair_weights",
]


def _logsumexp_with_zero(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log(1 + sum_{keep} e^{logits}) per row; 0 for a row with nothing kept (finite grads)."""
    x = logits.masked_fill(~keep, float("-inf"))
    x = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    return torch.logsumexp(x, dim=1)


def raw_anchor_terms(S: torch.Tensor, pos_keep: torch.Tensor, neg_keep: torch.Tensor,
                     alpha: float, beta: float, lam: float) -> torch.Tensor:
    """Per-anchor RAW / multi-similarity terms (Wang et al. 2019b, eq. 17, no 1/m), (B,)."""
    pos_part = _logsumexp_with_zero(-alpha * (S - lam), pos_keep) / alpha
    neg_part = _logsumexp_with_zero(beta * (S - lam), neg_keep) / beta
    return pos_part + neg_part


def uniform_anchor_terms(S: torch.Tensor, pos_keep: torch.Tensor, neg_keep: torch.Tensor,
                         alpha: float = 0.0, beta: float = 0.0, lam: float = 0.0
                         ) -> torch.Tensor:
    """Per-anchor equal-weight terms ``sum_{P^_i}(1 - s) + sum_{N^_i}(1 + s)``, (B,).

    alpha, beta, lam are accepted for a uniform signature and ignored.
    """
    zero = torch.zeros((), dtype=S.dtype, device=S.device)
    return (torch.where(pos_keep, 1.0 - S, zero).sum(dim=1)
            + torch.where(neg_keep, 1.0 + S, zero).sum(dim=1))


def raw_pair_weights(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, alpha: float,
                     beta: float, lam: float) -> torch.Tensor:
    """Closed-form weights (B, M) of :func:`raw_anchor_terms` on the kept masks
    (Wang et al. 2019b, eq. 15-16), without the reduction's 1/m."""
    zero = torch.zeros((), dtype=S.dtype, device=S.device)
    # positive: 1 / (sum_{k in P} e^{alpha (s_ij - s_ik)} + e^{alpha (s_ij - lam)})
    ep = torch.where(pos, torch.exp(-alpha * S), zero).sum(1, keepdim=True)
    wp = 1.0 / (torch.exp(alpha * S) * ep + torch.exp(alpha * (S - lam)))
    en = torch.where(neg, torch.exp(beta * S), zero).sum(1, keepdim=True)
    wn = 1.0 / (torch.exp(-beta * S) * en + torch.exp(-beta * (S - lam)))
    return torch.where(pos, wp, zero) + torch.where(neg, wn, zero)


def uniform_pair_weights(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                         alpha: float = 0.0, beta: float = 0.0, lam: float = 0.0
                         ) -> torch.Tensor:
    """Closed-form weights (B, M) of :func:`uniform_anchor_terms`: 1 on every kept pair."""
    return (pos | neg).to(S.dtype)


#: weighting name -> per-anchor terms (B,) of the kept pairs
WEIGHTINGS = {
    "raw": raw_anchor_terms,
    "binomial": binomial_anchor_terms,
    "uniform": uniform_anchor_terms,
}

#: weighting name -> its closed-form pair weights (B, M) on the kept pairs
PAIR_WEIGHTS = {
    "raw": raw_pair_weights,
    "binomial": binomial_pair_weights,
    "uniform": uniform_pair_weights,
}


@register("weighted_pair")
class WeightedPairLoss(PairLoss):
    r"""A pair weighting applied to the pairs kept by a miner (Wang et al. 2019b's recipe).

    ``L = 1/m sum_i h(S_i, P^_i, N^_i)`` with ``h`` the weighting (``"raw"``, ``"binomial"``,
    ``"uniform"``; see the module docstring) and ``P^_i, N^_i`` the pairs of anchor i kept by
    ``mining`` (a name of :mod:`dmlkit.miners`: ``"none"``, ``"vthm"``, ``"semihard"``,
    ``"hard"``, ``"distance_weighted"``), whose hyper-parameters are passed as keyword
    arguments (``epsilon=``, ``margin=``, ``cutoff=``, ...). ``distance_weighted`` gets the
    embedding dimension from the batch unless ``dim`` is given. Masks are computed on
    ``S.detach()`` under ``torch.no_grad()``: mining selects, it is not differentiated.

    Defaults alpha = 2, beta = 50, lam = 0.5; ``reduction="mean"`` (1/m, m = B rows) or
    ``"sum"``; an anchor without a kept positive or without a kept negative contributes 0 and
    counts in m (official MS code), so degenerate batches give a graph-connected 0.

    Pair weights (W = -dL/dS positives, +dL/dS negatives) on kept pairs, times 1/m for "mean":
    raw: eq. 15-16 ``1/(sum_{k in P^_i} e^{alpha(s_ij - s_ik)} + e^{alpha(s_ij - lam)})`` and
    ``1/(sum_{k in N^_i} e^{-beta(s_ij - s_ik)} + e^{-beta(s_ij - lam)})``; binomial: eq. 13-14
    with |P^_i|, |N^_i|; uniform: 1. Pairs not kept, and pairs of anchors that do not count,
    have weight 0.
    """

    hyperparameters = ("weighting", "mining", "alpha", "beta", "lam", "reduction",
                       "mining_params")

    def __init__(self, weighting: str = "raw", mining: str = "vthm", alpha: float = 2.0,
                 beta: float = 50.0, lam: float = 0.5, reduction: str = "mean",
                 normalize: bool = True, **mining_params):
        super().__init__(normalize=normalize)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; known weightings: "
                             f"{', '.join(sorted(WEIGHTINGS))}")
        self.weighting = weighting
        self.mining = _miners.get(mining).__name__
        self._mine = _miners.build(self.mining, **mining_params)   # validates the names
        self._needs_dim = ("dim" in _miners.parameters(self.mining)
                           and "dim" not in mining_params)
        self.mining_params = dict(mining_params)
        self.alpha, self.beta, self.lam = float(alpha), float(beta), float(lam)
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"alpha and beta must be > 0, got alpha={alpha}, beta={beta}")
        self.reduction = check_reduction(reduction)

    def tiling_unsupported(self) -> str | None:
        if self.mining == "distance_weighted":
            return ("distance-weighted sampling draws its negatives at random from each whole "
                    "row of S; a tiled pass cannot reproduce the dense draw")
        if self.mining not in TILED_MININGS:
            return f"mining {self.mining!r} has no tile formulation"
        return None

    def tile_formulation(self, ctx) -> KeptPairTiles:
        """Mining as row statistics, weighting as per-row accumulators
        (:class:`KeptPairTiles`); the same masks and values as :meth:`compute`."""
        p = self.mining_params
        return KeptPairTiles(self.weighting, self.mining, self.alpha, self.beta, self.lam,
                             self.reduction, epsilon=float(p.get("epsilon", 0.1)),
                             margin=float(p.get("margin", 0.1)))

    def mine(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, M) bool masks (pos_keep, neg_keep) of the kept pairs."""
        extra = {"dim": batch.embeddings.shape[1]} if self._needs_dim else {}
        with torch.no_grad():
            return self._mine(batch.S.detach(), batch.pos, batch.neg, **extra)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        pos_keep, neg_keep = self.mine(batch)
        per_anchor = WEIGHTINGS[self.weighting](batch.S, pos_keep, neg_keep,
                                                self.alpha, self.beta, self.lam)
        return reduce_anchors(per_anchor, self.reduction, pos_keep, neg_keep)

    def closed_form_weights(self, batch: PairBatch) -> torch.Tensor:
        """The weighting's closed form (:data:`PAIR_WEIGHTS`: eq. 15-16, 13-14 or 1) on the
        mined pairs of the anchors that count, divided by m for "mean"; any mining but the
        random ``distance_weighted``. (B, M)."""
        if self.mining == "distance_weighted":
            raise self._no_closed_form("a deterministic mining (not distance_weighted)")
        pos_keep, neg_keep = self.mine(batch)
        live = (pos_keep.any(1) & neg_keep.any(1))[:, None]
        W = PAIR_WEIGHTS[self.weighting](batch.S, pos_keep & live, neg_keep & live,
                                         self.alpha, self.beta, self.lam)
        return W / (batch.S.shape[0] if self.reduction == "mean" else 1.0)


@register("multi_similarity", "ms", "raw+vthm")
class MultiSimilarityLoss(WeightedPairLoss):
    r"""Multi-similarity loss (Wang et al. 2019b, eq. 17): RAW weighting on VTHM pairs.

    .. math::
        L = \frac{1}{m}\sum_i\Big[\frac{1}{\alpha}\log\big(1+\sum_{k\in\hat P_i}
            e^{-\alpha(s_{ik}-\lambda)}\big) + \frac{1}{\beta}\log\big(1+\sum_{k\in\hat N_i}
            e^{\beta(s_{ik}-\lambda)}\big)\Big]

    with VTHM (:func:`dmlkit.miners.vthm`): keep negative k if ``s_ik + epsilon > min_{P_i} s``,
    positive k if ``s_ik - epsilon < max_{N_i} s``. Defaults alpha = 2, beta = 50, lam = 0.5,
    epsilon = 0.1 (paper; the official MS code uses beta = 40 for its configs, pass beta=40).
    Reduction "mean": 1/m over all B anchors, anchors with empty kept sets contribute 0 and
    count (as the official code). Official-code difference: it drops positives with
    ``s >= 1 - 1e-5`` (its way of removing the anchor itself); here the diagonal is excluded
    by index and near-duplicate positives are kept.

    Equal to PML's ``MultiSimilarityLoss(alpha, beta, base=lam)`` applied to the pairs of
    ``MultiSimilarityMiner(epsilon)`` (``loss_fn(emb, labels, miner(emb, labels))``) in value
    and gradient with the defaults (tested), with one exception: when the miner keeps at
    most one positive AND at most one negative pair in the whole batch, PML returns 0 while
    this returns the formula's value.
    Pair weights: eq. 15-16 on kept pairs, times 1/m (see :class:`WeightedPairLoss`).
    """

    hyperparameters = ("alpha", "beta", "lam", "epsilon", "reduction")

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, lam: float = 0.5,
                 epsilon: float = 0.1, reduction: str = "mean", normalize: bool = True):
        super().__init__("raw", "vthm", alpha, beta, lam, reduction, normalize,
                         epsilon=epsilon)
        self.epsilon = float(epsilon)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        """VTHM + RAW with the positives compacted to (B, w) and one float pass over the
        negatives; the same masks and values as the generic ``WeightedPairLoss.compute``
        (tested against it, against a loop and against PML)."""
        S = batch.S
        index, valid = batch.pos_slots
        if index.shape[1] == 0:
            return zero_loss(batch)
        inf = float("inf")
        s_pos = S.gather(1, index)
        with torch.no_grad():
            S_neg = batch.fill_non_negatives_(S.detach().clone(), -inf)   # -inf off the negatives
            neg_max = S_neg.amax(1)
            sp = s_pos.detach().masked_fill(~valid, inf)
            pos_min = sp.amin(1)
            # VTHM with the miner's expressions (dmlkit.miners.vthm)
            pos_keep = valid & (sp - self.epsilon < neg_max[:, None])
            neg_keep = torch.gt(S_neg.add_(self.epsilon), pos_min[:, None],
                                out=torch.empty_like(S_neg))
            neg_any = neg_keep.sum(1) > 0
            anchors = pos_keep.any(1) & neg_any
            # the largest kept logit: that of the hardest negative; 0 (the "1" logit) in a row
            # that keeps no negative, whose term is then log(1) = 0 with a zero gradient (the
            # hardest negative's logit there would make the kernel's e^-m underflow to a 0
            # denominator: NaN gradients once beta (s - lam) > ~100 in float32)
            neg_top = torch.where(neg_any, (neg_max - self.lam) * self.beta, 0.0)
        pos_part = kept_lse1p(s_pos, pos_keep.to(S.dtype), -self.alpha, self.lam)
        neg_part = kept_lse1p(S, neg_keep, self.beta, self.lam, neg_top)
        per_anchor = torch.where(anchors, pos_part + neg_part, 0.0)
        return per_anchor.mean() if self.reduction == "mean" else per_anchor.sum()


@register("raw")
class RAWLoss(WeightedPairLoss):
    """RAW weighting (Wang et al. 2019b, eq. 17) on ALL pairs (no mining); Table 1 "RAW".

    Defaults alpha = 2, beta = 50, lam = 0.5, reduction "mean" (1/m). Weights eq. 15-16 with
    the full P_i, N_i, times 1/m.
    """

    hyperparameters = ("alpha", "beta", "lam", "reduction")

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, lam: float = 0.5,
                 reduction: str = "mean", normalize: bool = True):
        super().__init__("raw", "none", alpha, beta, lam, reduction, normalize)


@register("vthm")
class VTHMLoss(WeightedPairLoss):
    """VTHM alone (Wang et al. 2019b, Table 1 "VTHM"): equal weights on the VTHM-kept pairs.

    ``L = 1/m sum_i [ sum_{k in P^_i} (1 - s_ik) + sum_{k in N^_i} (1 + s_ik) ]``: every kept
    pair has weight exactly 1/m (1 with reduction "sum"), every other pair 0. The paper does
    not give a formula for this ablation; this is the simplest loss with equal weights.
    Default epsilon = 0.1.
    """

    hyperparameters = ("epsilon", "reduction")

    def __init__(self, epsilon: float = 0.1, reduction: str = "mean", normalize: bool = True):
        super().__init__("uniform", "vthm", reduction=reduction, normalize=normalize,
                         epsilon=epsilon)
        self.epsilon = float(epsilon)


@register("binomial+vthm")
class BinomialVTHMLoss(WeightedPairLoss):
    """Binomial deviance (eq. 12) on VTHM-kept pairs (Wang et al. 2019b, Table 1 "Binomial+VTHM").

    ``1/m sum_i [mean_{P^_i} softplus(-alpha(s-lam)) + mean_{N^_i} softplus(beta(s-lam))]``,
    the means over the kept sets (empty: 0). Defaults alpha = 2, beta = 50, lam = 0.5,
    epsilon = 0.1. Weights eq. 13-14 with |P^_i|, |N^_i|, times 1/m.
    """

    hyperparameters = ("alpha", "beta", "lam", "epsilon", "reduction")

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, lam: float = 0.5,
                 epsilon: float = 0.1, reduction: str = "mean", normalize: bool = True):
        super().__init__("binomial", "vthm", alpha, beta, lam, reduction, normalize,
                         epsilon=epsilon)
        self.epsilon = float(epsilon)


@register("raw+semihard")
class RAWSemiHardLoss(WeightedPairLoss):
    """RAW weighting on FaceNet semi-hard pairs (Wang et al. 2019b, Table 1 "RAW+SemiHard").

    Mining :func:`dmlkit.miners.semihard`: the pairs of at least one triplet with
    ``s_ip - margin < s_in < s_ip``. Defaults alpha = 2, beta = 50, lam = 0.5, margin = 0.1
    (FaceNet's squared-distance margin 0.2 in similarity units; the paper does not state it).
    """

    hyperparameters = ("alpha", "beta", "lam", "margin", "reduction")

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, lam: float = 0.5,
                 margin: float = 0.1, reduction: str = "mean", normalize: bool = True):
        super().__init__("raw", "semihard", alpha, beta, lam, reduction, normalize,
                         margin=margin)
        self.margin = float(margin)


@register("raw+distance_weighted")
class RAWDistanceWeightedLoss(WeightedPairLoss):
    """RAW weighting with distance-weighted negative sampling (Wang et al. 2019b, Table 1 "RAW+DW").

    Mining :func:`dmlkit.miners.distance_weighted` (Wu et al. 2017): all positives, and
    ``num_negatives`` negatives per anchor drawn with probability ∝ 1/q(d) (d clipped at
    ``cutoff`` = 0.5, zero beyond ``nonzero_loss_cutoff`` = 1.4), q for the unit sphere of the
    embedding dimension. ``seed`` (int) makes the draws reproducible with a private
    ``torch.Generator``; ``None`` uses torch's global generator. Defaults alpha = 2,
    beta = 50, lam = 0.5, one negative per anchor.
    """

    hyperparameters = ("alpha", "beta", "lam", "cutoff", "nonzero_loss_cutoff",
                       "num_negatives", "seed", "reduction")

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, lam: float = 0.5,
                 cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, num_negatives: int = 1,
                 seed: int | None = None, reduction: str = "mean", normalize: bool = True):
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        super().__init__("raw", "distance_weighted", alpha, beta, lam, reduction, normalize,
                         cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff,
                         num_negatives=num_negatives, generator=generator)
        self.cutoff, self.nonzero_loss_cutoff = float(cutoff), float(nonzero_loss_cutoff)
        self.num_negatives, self.seed = int(num_negatives), seed
