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

import math

import torch
import torch.nn.functional as F

from .. import miners as _miners
from ._fused import kept_lse1p
from .base import PairBatch, PairLoss, zero_loss
from .binomial import (
    binomial_anchor_terms,
    binomial_pair_weights,
    check_reduction,
    reduce_anchors,
)
from .registry import register
from .tiles import Tile, TileContext, TileFormulation, elementwise_grad

__all__ = [
    "PAIR_WEIGHTS", "TILED_MININGS", "WEIGHTINGS", "BinomialVTHMLoss", "KeptPairTiles",
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
            anchors = pos_keep.any(1) & (neg_keep.sum(1) > 0)
            # the largest kept logit: that of the hardest negative (-inf without negatives,
            # which the kernel clamps to the "1" logit 0; rows keeping nothing add 0)
            neg_top = (neg_max - self.lam) * self.beta
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


# =========================================================================== tiled form
#: log2(e): the tiles' softmax terms are exp2(log2(e) z) = exp(z), with the factor folded into
#: the coefficients of the one pass that forms z (exp2 is about 3.5x faster than exp on CPU)
LOG2E = 1.0 / math.log(2.0)

#: the minings with an exact tile formulation (row statistics of the tiles)
TILED_MININGS = ("none", "vthm", "hard", "semihard")


class KeptPairTiles(TileFormulation):
    """The tile formulation of :class:`WeightedPairLoss` (and of the binomial deviance loss):
    a mining as row statistics, a weighting as per-row accumulators over the kept pairs.

    Mining statistics: ``vthm`` the hardest positive (from the slots, before the pass) and
    the hardest negative (streamed); ``hard`` the hardest negative and its first column (a
    first pass); ``semihard`` per negative the next positive above it (the row's sorted
    slots) and per positive slot the largest negative below it (streamed). Weightings:
    ``raw`` a streaming log-sum-exp with the "1" as a zero logit; ``binomial`` sums of
    softplus terms and counts; ``uniform`` sums and counts. Positives live on the (B, w) slots.
    With vthm or no mining the kept negatives of a row are its largest ones, so the raw
    weighting's shift is the running maximum over all negatives (no masked pass), and the
    tiles need not count the kept negatives (a row keeps any iff it keeps its hardest).

    VTHM keeps a negative x of row i iff ``x + epsilon > min positive`` (the miner's
    expression, rounding included); the tiles compare x with the row's exact threshold
    (:func:`dmlkit.miners.vthm_negative_threshold`) instead: the same test, without the pass
    that adds epsilon.

    The raw weighting with vthm / no mining reads the tiles only through their negatives
    (``masked_tiles``: the engine writes -inf into the products in place) and, when the
    exponentials cannot overflow or underflow (:meth:`direct_exponentials`: normalised
    embeddings and beta, lam, B, M within the dtype's range, e.g. beta <= 80 in float32 at the
    defaults), computes ``P = exp2(beta log2(e) s)`` ONCE per tile product: in-batch the tile
    (I, J) and its mirror (J, I) share it, each row scales it by its own factor
    (``e^{-beta lam}`` in the sums, ``e^{-beta lam - lse_i} / m`` in dL/dS), so no running
    maximum is needed. Otherwise the rows' running maximum shifts the exponent, as in a
    streaming log-sum-exp.

    Deviation from the dense path (floating point only): on the tiles the raw weighting's
    exponentials are ``exp2(log2(e) z)`` (the factor folded into the one pass that forms z;
    exp2 is about 3.5x faster than exp on CPU), equal to ``exp(z)`` to about |z| ulp, and the
    direct form multiplies ``exp2(beta log2(e) s)`` by a row factor instead of shifting the
    exponent (a few ulp more).
    """

    def __init__(self, weighting: str, mining: str, alpha: float, beta: float, lam: float,
                 reduction: str, epsilon: float = 0.1, margin: float = 0.1):
        self.weighting, self.mining = weighting, mining
        self.alpha, self.beta, self.lam = alpha, beta, lam
        self.reduction, self.epsilon, self.margin = reduction, epsilon, margin
        self.passes = 2 if mining == "hard" else 1
        self.top_kept = mining in ("none", "vthm")     # the kept negatives are the largest
        #: raw weighting over the largest negatives: the tiles are read as negatives only
        self.fast = weighting == "raw" and self.top_kept and beta > 0
        self.masked_tiles = self.fast
        self.direct = False                            # set by start(): direct_exponentials

    # ------------------------------------------------------------------ mining
    def direct_exponentials(self, ctx: TileContext) -> bool:
        """Whether ``P = exp2(beta' s)`` (beta' = beta log2(e)) and the row factors stay within
        the dtype's normal range (exponents of 2 below 120 in float32, 1000 in float64), so
        the raw weighting needs no running maximum: |s| <= 1 (normalised, with 1e-3 for
        rounding), so |log2 P| <= beta'; the rows' sums of P stay below 2^(beta' + log2(M + 1));
        the factor ``e^{-beta lam - lse} / m`` has |log2| <= log2 B + beta' (|lam| +
        max(0, 1 - lam)) + log2(M + 1)."""
        if not (self.fast and ctx.normalized):
            return False
        limit = 1000.0 if ctx.dtype == torch.float64 else 120.0
        b = self.beta * LOG2E * (1.0 + 1e-3)
        log_m = math.log2(ctx.M + 1)
        factor = (math.log2(max(ctx.B, 1)) + b * (abs(self.lam) + max(0.0, 1.0 - self.lam))
                  + log_m)
        return b + log_m < limit and factor < limit

    def start(self, ctx: TileContext) -> dict:
        B, inf = ctx.B, float("inf")
        self.direct = self.direct_exponentials(ctx)
        st = {"neg_max": ctx.full((B,), -inf), "neg_arg": ctx.zeros(B, dtype=torch.long),
              "n_keep": ctx.zeros(B), "acc": ctx.zeros(B), "m": ctx.zeros(B)}
        if self.weighting == "raw":
            st["acc"] = ctx.full((B,), 1.0)      # the "1" of log(1 + sum): a zero logit
        if self.direct:
            st["p_sum"] = ctx.zeros(B)           # sum of the kept exp2(beta' s) of each row
        return st

    def _exponentials(self, tile: Tile) -> torch.Tensor:
        """``P = exp2(beta log2(e) x)`` on the tile's negatives (0 elsewhere), computed once
        for a tile and its in-batch mirror (:meth:`Tile.elementwise`)."""
        return tile.elementwise("exp2(beta' s)", lambda t: torch.mul(
            t.negatives_only(), self.beta * LOG2E, out=t.buffer("exp2")).exp2_())

    def prepare(self, st: dict, ctx: TileContext) -> None:
        index, valid = ctx.slots
        s_pos, inf = st["s_pos"], float("inf")
        if self.mining == "vthm":
            st["pos_min"] = s_pos.masked_fill(~valid, inf).amin(1) if index.shape[1] \
                else ctx.full((ctx.B,), inf)
            st["keep_above"] = _miners.vthm_negative_threshold(st["pos_min"],
                                                                self.epsilon)
        elif self.mining == "semihard":
            st["a_sorted"] = s_pos.masked_fill(~valid, inf).sort(1).values
            st["prev"] = torch.full_like(s_pos, -inf)
        elif self.mining == "none":
            st["pos_keep"] = valid

    def _neg_keep(self, tile: Tile, st: dict, X: torch.Tensor,
                  as_float: bool = False) -> torch.Tensor:
        """(r, c) kept negatives, bool (or 0 / 1 in S's dtype where ``as_float`` saves a
        conversion); X is the tile with -inf off its negatives."""
        S, rows = tile.S, tile.rows
        if self.mining == "none":
            return tile.neg
        if self.mining == "vthm":        # x > t  <=>  x + epsilon > min positive
            t = st["keep_above"][rows, None]
            if as_float:                 # 0 / 1 in S's dtype: a float multiplier
                return torch.gt(X, t, out=tile.buffer("keep"))
            return torch.gt(X, t)
        if self.mining == "hard":
            hit = tile.col_ids()[None, :] == st["neg_arg"][rows, None]
            return hit & st["live"][rows, None]
        a = st["a_sorted"][rows]                       # semihard: the next positive above s
        if a.shape[1] == 0:
            return torch.zeros_like(tile.not_neg)
        idx = torch.searchsorted(a, S.contiguous(), right=True)
        nxt = a.gather(1, idx.clamp_max(a.shape[1] - 1))
        nxt = torch.where(idx < a.shape[1], nxt, float("inf"))
        return tile.neg & (nxt - self.margin < S)

    def _hardest_negative(self, tile: Tile, st: dict, X: torch.Tensor) -> None:
        rows = tile.rows
        best, arg = X.max(1)                             # first column of the maximum
        better = best > st["neg_max"][rows]              # strict: earlier tiles win ties
        st["neg_arg"][rows] = torch.where(better, arg + tile.c0, st["neg_arg"][rows])
        st["neg_max"][rows] = torch.where(better, best, st["neg_max"][rows])

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        rows, S = tile.rows, tile.S
        X = tile.negatives_only()
        if self.mining == "hard" and k == 0:
            self._hardest_negative(tile, st, X)
            return
        need_max = self.mining == "vthm" or (self.top_kept and not self.direct)
        x_max = X.amax(1) if need_max else None
        if self.mining == "vthm":
            torch.maximum(st["neg_max"][rows], x_max, out=st["neg_max"][rows])
        elif self.mining == "semihard":
            prev = st["prev"][rows]
            for j in range(prev.shape[1]):
                below = X.masked_fill(st["s_pos"][rows, j:j + 1] <= X, float("-inf"))
                torch.maximum(prev[:, j], below.amax(1), out=prev[:, j])
        if self.direct:       # one exp2 per product, each row's sum of its kept entries
            P = self._exponentials(tile)
            if self.mining == "none":         # P is 0 off the negatives
                st["p_sum"][rows] += P.sum(1)
            else:
                st["p_sum"][rows] += self._neg_keep(tile, st, X, as_float=True).mul_(P).sum(1)
            return
        keep = self._neg_keep(tile, st, X, as_float=True).to(S.dtype)
        if not self.fast:    # (raw, vthm / none: only whether a row keeps any, read in finish)
            st["n_keep"][rows] += keep.sum(1)
        if self.fast:
            # z = beta (x - lam): its row maximum is beta (max x - lam), and z - shift is one
            # pass, beta x - (beta lam + shift); -inf off the negatives gives exp 0
            m, acc = st["m"][rows], st["acc"][rows]
            new = torch.maximum(m, (x_max - self.lam) * self.beta)   # >= 0: the zero logit
            E = torch.add(-(self.beta * self.lam + new)[:, None] * LOG2E, X,
                          alpha=self.beta * LOG2E).exp2_()
            if self.mining != "none":
                E.mul_(keep)
            acc.mul_(torch.exp(m - new)).add_(E.sum(1))
            m.copy_(new)
        elif self.weighting == "raw":
            z = X.sub(self.lam).mul_(self.beta)           # -inf off the negatives
            if not self.top_kept:
                z.masked_fill_(keep == 0, float("-inf"))
            m, acc = st["m"][rows], st["acc"][rows]
            new = torch.maximum(m, z.amax(1))             # >= 0: the zero logit
            acc.mul_(torch.exp(m - new)).add_(z.sub_(new[:, None]).exp_().mul_(keep).sum(1))
            m.copy_(new)
        elif self.weighting == "binomial":
            st["acc"][rows] += (F.softplus(self.beta * (S - self.lam)) * keep).sum(1)
        else:
            st["acc"][rows] += ((1.0 + S) * keep).sum(1)

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        index, valid = ctx.slots
        s_pos, inf = st["s_pos"], float("inf")
        if self.mining == "hard" and k == 0:
            st["live"] = (ctx.n_pos > 0) & (ctx.n_neg > 0)
            keep = torch.zeros_like(valid)
            if index.shape[1]:
                arg = s_pos.masked_fill(~valid, inf).argmin(1)
                keep.scatter_(1, arg[:, None], True)
            st["pos_keep"] = keep & valid & st["live"][:, None]
            return
        if self.mining == "vthm":
            st["pos_keep"] = valid & (s_pos - self.epsilon < st["neg_max"][:, None])
        elif self.mining == "semihard":
            st["pos_keep"] = valid & (s_pos - self.margin < st["prev"])
        if self.direct:       # m = 0: the sum itself, 1 + sum_kept e^{beta (s - lam)}
            st["acc"] = st["p_sum"].mul(math.exp(-self.beta * self.lam)).add_(1.0)
        if self.fast:
            # the tiles did not count the kept negatives; whether a row keeps any is all the
            # raw weighting needs: under vthm its hardest negative is kept iff any is
            # (x + epsilon rounds monotonically), without mining every negative is kept
            st["n_keep"] = (ctx.n_neg.to(s_pos.dtype) if self.mining == "none" else
                            (st["neg_max"] + self.epsilon > st["pos_min"]).to(s_pos.dtype))
        self._finish_weighting(st, ctx)
        if self.direct:       # dL/dS_ij = P_ij e^{-beta lam - lse_i} coef_i on kept pairs
            st["row_factor"] = torch.exp(-self.beta * self.lam - st["lse_neg"]).mul_(st["coef"])

    # ------------------------------------------------------------------ weighting
    def _pos_fn(self, s):
        if self.weighting == "raw":
            return -self.alpha * (s - self.lam)
        if self.weighting == "binomial":
            return F.softplus(-self.alpha * (s - self.lam))
        return 1.0 - s

    def _finish_weighting(self, st: dict, ctx: TileContext) -> None:
        keep, s_pos = st["pos_keep"], st["s_pos"]
        n_pos = keep.sum(1)
        st["live_rows"] = (n_pos > 0) & (st["n_keep"] > 0)
        if self.weighting == "raw":
            z = torch.where(keep, self._pos_fn(s_pos), float("-inf"))
            z = torch.cat([z, ctx.zeros(ctx.B, 1)], dim=1)
            st["lse_pos"] = torch.logsumexp(z, 1)
            st["lse_neg"] = st["m"] + st["acc"].log()
            per_row = st["lse_pos"] / self.alpha + st["lse_neg"] / self.beta
        else:
            st["n_pos_c"] = n_pos.clamp_min(1).to(s_pos.dtype)
            st["n_neg_c"] = st["n_keep"].clamp_min(1)
            pos_sum = torch.where(keep, self._pos_fn(s_pos), 0.0).sum(1)
            if self.weighting == "binomial":
                per_row = pos_sum / st["n_pos_c"] + st["acc"] / st["n_neg_c"]
            else:
                per_row = pos_sum + st["acc"]
        st["per_row"] = torch.where(st["live_rows"], per_row, 0.0)
        scale = 1.0 / ctx.B if self.reduction == "mean" else 1.0
        st["coef"] = st["live_rows"].to(s_pos.dtype) * scale

    def value(self, st: dict, ctx: TileContext) -> torch.Tensor:
        per_row = st["per_row"]
        return per_row.mean() if self.reduction == "mean" else per_row.sum()

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor:
        rows, S = tile.rows, tile.S
        X = tile.negatives_only()
        keep = self._neg_keep(tile, st, X, as_float=self.weighting != "binomial")
        coef = st["coef"][rows, None]
        if self.direct:
            P = self._exponentials(tile)
            factor = st["row_factor"][rows, None]
            if self.mining == "none":
                return torch.mul(P, factor, out=tile.buffer("keep"))
            return self._neg_keep(tile, st, X, as_float=True).mul_(P).mul_(factor)
        if self.weighting == "raw":   # softmax weights; <= 1 on kept pairs (clamp: rounding)
            shift = (self.beta * self.lam + st["lse_neg"][rows])[:, None]
            G = torch.add(-shift * LOG2E, X, alpha=self.beta * LOG2E).clamp_max_(0.0).exp2_()
            if self.mining != "none":     # off the negatives exp(-inf) is 0 already
                G.mul_(keep)
            return G.mul_(coef)
        if self.weighting == "binomial":
            return elementwise_grad(lambda s: F.softplus(self.beta * (s - self.lam)), S, keep,
                                    coef / st["n_neg_c"][rows, None])
        return keep.to(S.dtype).mul_(coef)

    def pair_grads(self, st: dict, ctx: TileContext) -> list:
        index, _ = ctx.slots
        keep, s_pos, coef = st["pos_keep"], st["s_pos"], st["coef"][:, None]
        if self.weighting == "raw":
            G = torch.where(keep, -torch.exp(self._pos_fn(s_pos) - st["lse_pos"][:, None]), 0.0)
            return [(index, G * coef)]
        if self.weighting == "binomial":
            coef = coef / st["n_pos_c"][:, None]
        return [(index, elementwise_grad(self._pos_fn, s_pos, keep, coef))]
