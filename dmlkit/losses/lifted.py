"""Lifted structure losses: the original (Oh Song et al. 2016) and the generalised one.

Both are log-sum-exp soft versions of "hardest negative / hardest positive" mining, computed
densely on the (B, M) matrix with masked :func:`masked_logsumexp` (masked entries are filled
with ``-inf`` before the reduction; rows with no kept entry are handled explicitly so that
neither the value nor the gradient is ever NaN).

Formulas and pair weights: docs/formulas.md#lifted-structure.
"""

from __future__ import annotations

import torch

from ..similarity import distances_from_similarity, unit_distances
from .base import PairBatch, PairLoss, zero_loss
from .registry import register
from .tiles import SlotGradTiles, Tile, TileContext, elementwise_grad, lse_update_

__all__ = ["GeneralizedLiftedStructureLoss", "GeneralizedLiftedTiles", "LiftedStructureLoss",
           "LiftedTiles", "masked_logsumexp"]


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = 1):
    """``log sum_{k: mask} exp(x_k)`` along ``dim``, stable, with empty rows handled.

    x: (B, M) float; mask: (B, M) bool. Returns ``(lse, nonempty)``: lse has ``dim`` reduced
    and is 0 (not -inf) where the row has no kept entry; ``nonempty`` flags the rows with at
    least one. Gradients are exactly 0 on masked entries and on empty rows (no NaN).
    """
    nonempty = mask.any(dim=dim)
    filled = x.masked_fill(~mask, float("-inf"))
    filled = torch.where(nonempty.unsqueeze(dim), filled, torch.zeros((), dtype=x.dtype,
                                                                       device=x.device))
    lse = torch.logsumexp(filled, dim=dim)
    return torch.where(nonempty, lse, torch.zeros((), dtype=lse.dtype, device=lse.device)), \
        nonempty


@register("lifted_structure")
class LiftedStructureLoss(PairLoss):
    r"""Lifted structured embedding loss (Oh Song et al. 2016).

    For every positive pair (i, j), with Euclidean distances ``d``:

        J_ij = log( sum_{k in N_i} exp(margin - d_ik) + sum_{l in N_j} exp(margin - d_jl) ) + d_ij
        L    = 1 / (2 |P|) * sum_{(i, j) in P} [J_ij]_+^2

    Reduction: ``P`` is the set of *ordered* positive entries of the (B, M) matrix; since
    ``J_ij = J_ji`` in-batch, this equals the paper's ``1/(2|P|)`` sum over unordered pairs.
    The log-sum-exp terms are computed per row (``a_i = logsumexp_{k in N_i}(margin - d_ik)``) and
    combined with ``logaddexp(a_i, a_j)``: O(B^2) memory.

    Query-vs-reference form (``loss(q, ql, ref, rl)``): the negatives ``N_j`` of a reference j
    among the references are not in the (B, M) matrix, so only the query-side term is used:
    ``J_ij = logsumexp_{k in N_i}(margin - d_ik) + d_ij`` (documented restriction). Pairs whose
    anchors have no negatives at all contribute 0 (and still count in |P|).

    Args:
        margin: ``m`` in the paper (default 1.0, the paper's value).
        normalize: L2-normalise the embeddings first (default True, so ``d = sqrt(2 - 2 s)``;
            the paper uses the raw embeddings: pass ``normalize=False``).

    Official code differences: the paper's Caffe code samples about as many negatives as
    positives per batch; here every negative of the batch is used. PML's
    ``LiftedStructureLoss(neg_margin=m, pos_margin=0)`` (default ``LpDistance``, normalised,
    ``MeanReducer``) gives the same value and gradient (proved in the tests).
    """

    hyperparameters = ("margin",)

    def __init__(self, margin: float = 1.0, normalize: bool = True):
        super().__init__(normalize=normalize)
        self.margin = float(margin)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        pos, neg = batch.pos, batch.neg
        n_pos = int(pos.sum())
        if n_pos == 0 or not bool(neg.any()):
            return zero_loss(batch)
        d = batch.distances()
        a_row, has_row = masked_logsumexp(self.margin - d, neg)           # (B,)
        if batch.in_batch:
            a_col, has_col = a_row, has_row
            ninf = torch.full_like(a_row, float("-inf"))
            a_i = torch.where(has_row, a_row, ninf)[:, None].expand_as(d)
            a_j = torch.where(has_col, a_col, ninf)[None, :].expand_as(d)
            valid = pos & (has_row[:, None] | has_col[None, :])
            # logaddexp(-inf, -inf) has a NaN gradient: feed 0s where the pair is invalid
            zero = torch.zeros((), dtype=d.dtype, device=d.device)
            lse = torch.logaddexp(torch.where(valid, a_i, zero), torch.where(valid, a_j, zero))
        else:
            valid = pos & has_row[:, None]
            lse = a_row[:, None].expand_as(d)
        J = lse + d
        terms = torch.where(valid, torch.relu(J) ** 2, torch.zeros((), dtype=d.dtype,
                                                                    device=d.device))
        return terms.sum() / (2.0 * n_pos)

    def tiling_unsupported(self) -> str | None:
        if not self.normalize:
            return ("on raw embeddings the distances come from the embeddings, not from S "
                    "(use normalize=True)")
        return None

    def tile_formulation(self, ctx) -> LiftedTiles:
        """Per row the streaming log-sum-exp of ``margin - d`` over its negatives; the
        positive pairs on the slots (:class:`LiftedTiles`)."""
        return LiftedTiles(self.margin)


_GL_FORMS = ("similarity", "distance")


@register("generalized_lifted_structure")
class GeneralizedLiftedStructureLoss(PairLoss):
    r"""Generalised lifted structure loss (Hermans et al. 2017; Wang et al. 2019b, eq. 9).

    ``form="similarity"`` (default, Wang et al. 2019b, eq. 9, whose pair weights are eq. 10-11):

        L = 1/m sum_i [ log sum_{k in P_i} exp(-s_ik) + log sum_{k in N_i} exp(s_ik) + lam ]_+

    ``form="distance"`` (Hermans et al.'s own form, Euclidean distances ``d``):

        L = 1/m sum_i [ log sum_{k in P_i} exp(d_ik) + log sum_{k in N_i} exp(margin - d_ik) ]_+

    Reduction: ``1/m`` over *all* m anchors (rows of S); an anchor with no positive or no
    negative contributes 0 and still counts in m. Works unchanged in the query-vs-reference
    form (P_i, N_i are then the positives / negatives of query i among the references).

    Args:
        lam: ``lambda``, the margin of the similarity form (default 1.0: the paper gives no value;
            1.0 mirrors the margin 1 of the distance form).
        margin: the margin of the distance form (default 1.0, as PML).
        form: ``"similarity"`` (default) or ``"distance"``.
        normalize: L2-normalise the embeddings first (default True).

    Mapping to PML's ``GeneralizedLiftedStructureLoss(neg_margin, pos_margin)`` (which computes
    ``relu(logsumexp_P(margin(mat, pos_margin)) + logsumexp_N(margin(neg_margin, mat)))``):
    ``form="distance", margin=m`` == PML(neg_margin=m, pos_margin=0) with its default
    ``LpDistance``; ``form="similarity", lam=l`` == PML(distance=CosineSimilarity(),
    pos_margin=l, neg_margin=0). Difference: PML sets an empty log-sum-exp to 0 but keeps the
    other term, so an anchor without positives still gets ``[logsumexp_N ...]_+``; here such an
    anchor contributes 0 (the formula is undefined for it). The two agree whenever every anchor
    has a positive and a negative (the tests use such batches).
    """

    hyperparameters = ("lam", "margin", "form")

    def __init__(self, lam: float = 1.0, margin: float = 1.0, form: str = "similarity",
                 normalize: bool = True):
        super().__init__(normalize=normalize)
        if form not in _GL_FORMS:
            raise ValueError(f"unknown form {form!r}; choose one of {_GL_FORMS}")
        self.lam = float(lam)
        self.margin = float(margin)
        self.form = form

    def compute(self, batch: PairBatch) -> torch.Tensor:
        pos, neg = batch.pos, batch.neg
        if not bool(pos.any()) or not bool(neg.any()):
            return zero_loss(batch)
        if self.form == "similarity":
            S = batch.S
            lp, hp = masked_logsumexp(-S, pos)
            ln, hn = masked_logsumexp(S, neg)
            h = lp + ln + self.lam
        else:
            d = batch.distances()
            lp, hp = masked_logsumexp(d, pos)
            ln, hn = masked_logsumexp(self.margin - d, neg)
            h = lp + ln
        per_anchor = torch.where(hp & hn, torch.relu(h), torch.zeros((), dtype=h.dtype,
                                                                      device=h.device))
        return per_anchor.sum() / per_anchor.shape[0]

    def tiling_unsupported(self) -> str | None:
        if self.form == "distance" and not self.normalize:
            return ("the distance form on raw embeddings reads the distances from the "
                    "embeddings, not from S (use normalize=True)")
        return None

    def tile_formulation(self, ctx) -> GeneralizedLiftedTiles:
        """Per row the streaming log-sum-exp over its negatives; the positives' log-sum-exp
        on the slots (:class:`GeneralizedLiftedTiles`)."""
        return GeneralizedLiftedTiles(self)

    def closed_form_weights(self, batch: PairBatch) -> torch.Tensor:
        """Wang et al. 2019b, eq. 10-11: the softmax of ``-s`` over P_i and of ``s`` over N_i on
        the anchors whose hinge is active, times 1/m; similarity form only. (B, M)."""
        if self.form != "similarity":
            raise self._no_closed_form("generalized_lifted_structure(form='similarity')")
        S, pos, neg = batch.S, batch.pos, batch.neg
        zero = torch.zeros((), dtype=S.dtype, device=S.device)
        neg_inf = torch.tensor(float("-inf"), dtype=S.dtype, device=S.device)
        lp = torch.logsumexp(torch.where(pos, -S, neg_inf), 1)
        ln = torch.logsumexp(torch.where(neg, S, neg_inf), 1)
        live = (pos.any(1) & neg.any(1) & (lp + ln + self.lam > 0))[:, None]
        wp = torch.exp(-S - lp[:, None])           # eq. 10: softmax of -s over P_i
        wn = torch.exp(S - ln[:, None])            # eq. 11: softmax of s over N_i
        return (torch.where(pos & live, wp, zero) + torch.where(neg & live, wn, zero)) / S.shape[0]


def _negative_lse_start(ctx: TileContext) -> dict:
    return {"m": ctx.full((ctx.B,), float("-inf")), "acc": ctx.zeros(ctx.B)}


def _negative_lse(st: dict, ctx: TileContext) -> torch.Tensor:
    """The finished streaming log-sum-exp per row, 0 on rows without negatives."""
    lse = st["m"] + st["acc"].log()
    return torch.where(ctx.n_neg > 0, lse, 0.0)


class LiftedTiles(SlotGradTiles):
    """:class:`LiftedStructureLoss` in tiles: ``a_i = logsumexp_{N_i}(margin - d)`` streamed
    over the tiles; J and its derivatives on the (B, w) positive slots by autograd; a
    negative (i, k) gets ``dL/da_i softmax_k`` through ``d(s)``."""

    def __init__(self, margin: float):
        self.margin = margin

    def _x(self, s):
        return self.margin - distances_from_similarity(s)

    def start(self, ctx: TileContext) -> dict:
        return _negative_lse_start(ctx)

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        x = tile.fill_non_negatives_(unit_distances(tile.S).neg_().add_(self.margin),
                                     float("-inf"))
        lse_update_(st["m"][tile.rows], st["acc"][tile.rows], x)

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        index, valid = ctx.slots
        n_pos = int(valid.sum())
        st["empty"] = n_pos == 0 or int(ctx.n_neg.sum()) == 0
        if st["empty"]:
            return
        has_row = ctx.n_neg > 0
        st["a"] = _negative_lse(st, ctx)
        with torch.enable_grad():
            a = st["a"].detach().requires_grad_(True)
            s = st["s_pos"].detach().requires_grad_(True)
            d = distances_from_similarity(s)
            if ctx.in_batch:
                ninf = torch.full_like(a, float("-inf"))
                a_i = torch.where(has_row, a, ninf)[:, None].expand_as(d)
                a_j = torch.where(has_row, a, ninf)[index]
                ok = valid & (has_row[:, None] | has_row[index])
                zero = torch.zeros((), dtype=d.dtype, device=d.device)
                lse = torch.logaddexp(torch.where(ok, a_i, zero), torch.where(ok, a_j, zero))
            else:
                ok = valid & has_row[:, None]
                lse = a[:, None].expand_as(d)
            terms = torch.where(ok, torch.relu(lse + d) ** 2, 0.0)
            value = terms.sum() / (2.0 * n_pos)
            st["da"], st["ds"] = torch.autograd.grad(value, (a, s))
        st["value"] = value.detach()

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if st["empty"]:
            return None
        rows = tile.rows
        x = unit_distances(tile.S).neg_().add_(self.margin)
        w = torch.exp(x - st["a"][rows, None]).mul_(st["da"][rows, None])
        return elementwise_grad(self._x, tile.S, tile.neg, w)


class GeneralizedLiftedTiles(SlotGradTiles):
    """:class:`GeneralizedLiftedStructureLoss` in tiles: the negatives' log-sum-exp per row
    streamed over the tiles, the positives' on the slots; the hinge's derivative is a
    per-row factor times the softmax weights."""

    def __init__(self, loss: GeneralizedLiftedStructureLoss):
        self.loss = loss
        if loss.form == "similarity":
            self.y_pos, self.x_neg = (lambda s: -s), (lambda s: s)
        else:
            self.y_pos = distances_from_similarity
            self.x_neg = lambda s: loss.margin - distances_from_similarity(s)

    def start(self, ctx: TileContext) -> dict:
        return _negative_lse_start(ctx)

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        x = tile.fill_non_negatives_(self.x_neg(tile.S.clone()), float("-inf"))
        lse_update_(st["m"][tile.rows], st["acc"][tile.rows], x)

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        valid = ctx.slots[1]
        st["empty"] = int(valid.sum()) == 0 or int(ctx.n_neg.sum()) == 0
        if st["empty"]:
            return
        st["ln"] = _negative_lse(st, ctx)
        live = (ctx.n_pos > 0) & (ctx.n_neg > 0)
        with torch.enable_grad():
            s = st["s_pos"].detach().requires_grad_(True)
            lp, _ = masked_logsumexp(self.y_pos(s), valid)
            h = lp + st["ln"] + (self.loss.lam if self.loss.form == "similarity" else 0.0)
            per_anchor = torch.where(live, torch.relu(h), 0.0)
            value = per_anchor.sum() / ctx.B
            (st["ds"],) = torch.autograd.grad(value, s)
        st["coef"] = (live & (h.detach() > 0)).to(s.dtype) / ctx.B
        st["value"] = value.detach()

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if st["empty"]:
            return None
        rows = tile.rows
        w = torch.exp(self.x_neg(tile.S) - st["ln"][rows, None]).mul_(st["coef"][rows, None])
        return elementwise_grad(self.x_neg, tile.S, tile.neg, w)
