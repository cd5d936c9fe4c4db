"""The tile formulation of the weighting x mining losses: :class:`KeptPairTiles`.

:class:`dmlkit.losses.multi_similarity.WeightedPairLoss` (multi-similarity, RAW, VTHM, the
ablations of Wang et al. 2019b, Table 1) and :class:`dmlkit.losses.binomial.BinomialDevianceLoss`
hand the tiled engine (:mod:`dmlkit.losses.tiles`) a :class:`KeptPairTiles`: the mining as row
statistics of the similarity tiles, the weighting as per-row accumulators over the kept pairs;
the same masks and values as the dense ``compute``. :data:`TILED_MININGS` are the minings it
reproduces exactly. Every name here is also importable from :mod:`dmlkit.losses.multi_similarity`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import miners as _miners
from .tiles import Tile, TileContext, TileFormulation, elementwise_grad

__all__ = ["LOG2E", "TILED_MININGS", "KeptPairTiles"]

#: log2(e): the tiles' softmax terms are exp2(log2(e) z) = exp(z), with the factor folded into
#: the coefficients of the one pass that forms z (on the CPU, docs/scaling.md: exp2 0.15 ms per
#: 1,024^2 tile, exp 0.5 ms)
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
    on the CPU measured in docs/scaling.md, exp2 took 0.15 ms per 1,024^2 tile and exp 0.5 ms),
    equal to ``exp(z)`` to about |z| ulp, and the
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
            # 0 in a row that is not live: its sum can be e^-m alone, which underflows to 0
            # once beta (s - lam) > ~100 in float32, and log 0 would make the gradient NaN
            st["lse_neg"] = torch.where(st["live_rows"], st["m"] + st["acc"].log(), 0.0)
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
