"""Contrastive loss (Hadsell et al. 2006), in its distance and similarity forms.

Formulas and pair weights: docs/formulas.md#contrastive."""

from __future__ import annotations

import torch

from ..similarity import distances_from_similarity, mask_any
from ._fused import fused_loss, hinge_of_distance, relu_of_shift, slot_terms
from .base import PairBatch, PairLoss, zero_loss
from .registry import register
from .tiles import Tile, TileContext, TileFormulation, slot_grad

__all__ = ["ContrastiveLoss", "reduce_pair_terms"]

_FORMS = ("distance", "similarity")
_REDUCTIONS = ("mean", "sum", "mean_nonzero")


def reduce_pair_terms(pos_terms: torch.Tensor, neg_terms: torch.Tensor, pos: torch.Tensor,
                      neg: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce (B, M) per-pair terms (already 0 outside their mask) to a scalar.

    ``mean``: sum over all positive and negative entries / their number; ``sum``: the sum;
    ``mean_nonzero``: mean of the non-zero positive terms + mean of the non-zero negative
    terms (PML's ``AvgNonZeroReducer``; a part with no non-zero term contributes 0).
    """
    if reduction == "sum":
        return pos_terms.sum() + neg_terms.sum()
    if reduction == "mean":
        n = int(pos.sum()) + int(neg.sum())
        return (pos_terms.sum() + neg_terms.sum()) / max(n, 1)
    n_pos = int(((pos_terms != 0) & pos).sum())
    n_neg = int(((neg_terms != 0) & neg).sum())
    return pos_terms.sum() / max(n_pos, 1) + neg_terms.sum() / max(n_neg, 1)


@register("contrastive")
class ContrastiveLoss(PairLoss):
    r"""Contrastive loss on every positive and negative pair of the (B, M) matrix.

    ``form="distance"`` (default; Hadsell et al. 2006, as Sohn 2016 uses it), distance ``d_ij``:

        l_ij = 1{y_i = y_j} [d_ij - pos_margin]_+^power + 1{y_i != y_j} [margin - d_ij]_+^power

    with the paper's ``pos_margin=0, power=2``: ``d_ij^2`` and ``[margin - d_ij]_+^2``.

    ``form="similarity"`` (Wang et al. 2019b, eq. 5), cosine similarity ``s_ij``:

        l_ij = (1 - I_ij) [s_ij - lam]_+ - I_ij s_ij

    and with ``pos_margin=p`` set, the positive term becomes ``[p - s_ij]_+`` (PML's form).
    The pair weights of Wang et al. 2019b (eq. 6) are 1 for every positive pair and 1 for a
    negative pair with ``s_ij > lam`` (times the reduction's normalisation).

    Reduction (explicit, over the *ordered* entries of S; in-batch each unordered pair appears
    twice and the diagonal is excluded): ``"mean"`` (default) = sum of the terms / number of
    positive + negative entries; ``"sum"``; ``"mean_nonzero"`` = mean over the non-zero positive
    terms + mean over the non-zero negative terms (PML's ``AvgNonZeroReducer``).
    Degenerate batches: with no positive pair or no negative pair (one class; all singletons;
    a query batch sharing no label with the references) the loss is a graph-connected 0, the
    package-wide convention (PML would still average the pairs of the one kind present).

    Args:
        margin: ``m`` of the distance form (default 1.0).
        lam: ``lambda`` of the similarity form (default 0.5; the paper gives no value).
        form: ``"distance"`` (default) or ``"similarity"``.
        pos_margin: None (default: the papers' positive terms, ``d^power`` / ``-s``) or a
            number: the hinge ``[d - pos_margin]_+^power`` / ``[pos_margin - s]_+`` as in PML.
        power: exponent (>= 1) of the distance-form hinges (default 2, the paper; PML uses 1).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"mean_nonzero"``.
        normalize: L2-normalise the embeddings first (default True; Hadsell et al. use raw
            outputs: ``normalize=False``).

    PML mapping (tests): ``ContrastiveLoss(pos_margin=0, neg_margin=m)`` with its default
    ``LpDistance`` (normalised, power 1) and ``AvgNonZeroReducer`` ==
    ``contrastive(form="distance", margin=m, power=1, reduction="mean_nonzero")``;
    PML's hinge is never squared, so the paper's ``power=2`` has no PML counterpart.
    ``ContrastiveLoss(distance=CosineSimilarity(), pos_margin=p, neg_margin=l)`` ==
    ``contrastive(form="similarity", lam=l, pos_margin=p, reduction="mean_nonzero")``.
    """

    hyperparameters = ("margin", "lam", "form", "pos_margin", "power", "reduction")

    def __init__(self, margin: float = 1.0, lam: float = 0.5, form: str = "distance",
                 pos_margin: float | None = None, power: float = 2.0, reduction: str = "mean",
                 normalize: bool = True):
        super().__init__(normalize=normalize)
        if form not in _FORMS:
            raise ValueError(f"unknown form {form!r}; choose one of {_FORMS}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose one of {_REDUCTIONS}")
        if power < 1:
            raise ValueError(f"power must be >= 1 (a finite gradient at the hinge), got {power}")
        self.margin = float(margin)
        self.lam = float(lam)
        self.form = form
        self.pos_margin = None if pos_margin is None else float(pos_margin)
        self.power = float(power)
        self.reduction = reduction

    def closed_form_weights(self, batch: PairBatch) -> torch.Tensor:
        """Wang et al. 2019b, Sec. 4 (eq. 6): 1 for every positive pair and for every negative
        pair with ``s_ij > lam``, times the reduction's normalisation; similarity form without
        ``pos_margin`` only. (B, M)."""
        if self.form != "similarity" or self.pos_margin is not None:
            raise self._no_closed_form("contrastive(form='similarity') without pos_margin")
        S, pos, neg = batch.S, batch.pos, batch.neg
        zero = torch.zeros((), dtype=S.dtype, device=S.device)
        active = neg & (self.lam < S)
        if self.reduction == "sum":
            norm_p = norm_n = 1.0
        elif self.reduction == "mean":
            norm_p = norm_n = float(pos.sum() + neg.sum())
        else:  # mean_nonzero: the positive terms -s are non-zero wherever s != 0
            norm_p = max(float((pos & (S != 0)).sum()), 1.0)
            norm_n = max(float(active.sum()), 1.0)
        return torch.where(pos, 1.0 / norm_p, zero) + torch.where(active, 1.0 / norm_n, zero)

    def _hinge(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        return x * x if self.power == 2.0 else x if self.power == 1.0 else x ** self.power

    def compute(self, batch: PairBatch) -> torch.Tensor:
        if batch.pos_slots[0].shape[1] == 0 or not mask_any(batch.neg):
            return zero_loss(batch)
        if self.form == "distance" and not batch.normalized:
            return self._compute_dense(batch)
        return fused_loss(batch.S, lambda S: self._kernel(S, batch))

    def _positive_terms(self, s: torch.Tensor) -> torch.Tensor:
        if self.form == "similarity":
            return -s if self.pos_margin is None else torch.relu(self.pos_margin - s)
        if self.pos_margin is None and self.power == 2.0:
            return (2.0 - 2.0 * s).clamp_min(0.0)          # exact d^2, smooth at d = 0
        return self._hinge(distances_from_similarity(s) - (self.pos_margin or 0.0))

    def _kernel(self, S: torch.Tensor, batch: PairBatch):
        """Value and dL/dS: positives on the compact (B, w) slots, negatives in one fused
        pass over (B, M) (:mod:`dmlkit.losses._fused`)."""
        index, valid = batch.pos_slots
        p_terms, p_deriv = slot_terms(S, index, valid, self._positive_terms)
        mask_ = lambda X: batch.fill_non_negatives_(X, 0.0)  # noqa: E731
        if self.form == "distance":
            n_sum, n_nonzero, deriv = hinge_of_distance(S, self.margin, self.power, mask_)
        else:
            n_sum, n_nonzero, deriv = relu_of_shift(S, self.lam, mask_)
        if self.reduction == "sum":
            c_pos = c_neg = 1.0
        elif self.reduction == "mean":
            n = int(valid.sum()) + int(batch.neg_per_row.sum())
            c_pos = c_neg = 1.0 / max(n, 1)
        else:
            c_pos = 1.0 / max(int(((p_terms != 0) & valid).sum()), 1)
            c_neg = 1.0 / max(int(n_nonzero), 1)
        value = c_pos * p_terms.sum() + c_neg * n_sum
        deriv.mul_(c_neg).scatter_add_(1, index, p_deriv.mul_(c_pos))
        return value, deriv

    def tiling_unsupported(self) -> str | None:
        if self.form == "distance" and not self.normalize:
            return ("the distance form on raw embeddings reads the distances from the "
                    "embeddings, not from S (use normalize=True)")
        return None

    def tile_formulation(self, ctx) -> ContrastiveTiles:
        """One pass: the sums and non-zero counts of the negative terms per row (the fused
        kernels of :meth:`_kernel` on each tile); the positives on the slots."""
        return ContrastiveTiles(self)

    def _compute_dense(self, batch: PairBatch) -> torch.Tensor:
        """The formula on the full (B, M) masks with autograd: the path of the distance form
        on raw (un-normalised) embeddings, whose distances come from the embeddings."""
        pos, neg = batch.pos, batch.neg
        if self.form == "distance":
            d = batch.distances()
            if self.pos_margin is None and self.power == 2.0:
                p_terms = batch.squared_distances()       # exact d^2, smooth at d = 0
            else:
                p_terms = self._hinge(d - (self.pos_margin or 0.0))
            n_terms = self._hinge(self.margin - d)
        else:
            p_terms = self._positive_terms(batch.S)
            n_terms = torch.relu(batch.S - self.lam)
        zero = torch.zeros((), dtype=p_terms.dtype, device=p_terms.device)
        p_terms = torch.where(pos, p_terms, zero)
        n_terms = torch.where(neg, n_terms, zero)
        return reduce_pair_terms(p_terms, n_terms, pos, neg, self.reduction)


class ContrastiveTiles(TileFormulation):
    """:class:`ContrastiveLoss` in tiles: global sums and counts, then constant factors."""

    def __init__(self, loss: ContrastiveLoss):
        self.loss = loss

    def start(self, ctx: TileContext) -> dict:
        return {"n_sum": ctx.zeros(()), "n_nonzero": ctx.zeros((), dtype=torch.float64)}

    def _negatives(self, tile: Tile):
        mask_ = lambda X: tile.fill_non_negatives_(X, 0.0)  # noqa: E731
        if self.loss.form == "distance":
            return hinge_of_distance(tile.S, self.loss.margin, self.loss.power, mask_)
        return relu_of_shift(tile.S, self.loss.lam, mask_)

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        total, nonzero, _ = self._negatives(tile)
        st["n_sum"] += total
        st["n_nonzero"] += float(nonzero)

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        loss, (_, valid) = self.loss, ctx.slots
        st["empty"] = int(valid.sum()) == 0 or int(ctx.n_neg.sum()) == 0
        p_terms = torch.where(valid, loss._positive_terms(st["s_pos"]), 0.0)
        if loss.reduction == "sum":
            c_pos = c_neg = 1.0
        elif loss.reduction == "mean":
            n = int(valid.sum()) + int(ctx.n_neg.sum())
            c_pos = c_neg = 1.0 / max(n, 1)
        else:
            c_pos = 1.0 / max(int(((p_terms != 0) & valid).sum()), 1)
            c_neg = 1.0 / max(int(st["n_nonzero"]), 1)
        st["c_pos"], st["c_neg"] = c_pos, c_neg
        st["value"] = c_pos * p_terms.sum() + c_neg * st["n_sum"]

    def value(self, st: dict, ctx: TileContext) -> torch.Tensor:
        return st["value"] * 0.0 if st["empty"] else st["value"]

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if st["empty"]:
            return None
        return self._negatives(tile)[2].mul_(st["c_neg"])

    def pair_grads(self, st: dict, ctx: TileContext) -> list:
        if st["empty"]:
            return []
        index, valid = ctx.slots
        return [(index, slot_grad(self.loss._positive_terms, st["s_pos"], valid, st["c_pos"]))]
