"""Discriminative deep metric learning, DDML (Hu et al. 2014; a DAML baseline).

Formula and pair weights: docs/formulas.md#ddml."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import PairBatch, PairLoss, zero_loss
from .registry import register
from .tiles import Tile, TileContext, TileFormulation, elementwise_grad

__all__ = ["DDMLLoss", "DDMLTiles"]

_REDUCTIONS = ("mean", "sum")


@register("ddml")
class DDMLLoss(PairLoss):
    r"""DDML loss: a smooth hinge on the squared distance around a threshold ``tau``.

        L = 1/2 sum_{i, j} g(1 - l_ij (tau - d_ij^2)),   g(z) = 1/beta log(1 + e^{beta z}),

    ``l_ij = +1`` for a positive pair and ``-1`` for a negative one: positives are pushed below
    ``d^2 = tau - 1``, negatives above ``tau + 1``. ``g`` is computed as
    ``softplus(beta z) / beta`` (stable for any z).

    Reduction (explicit, over the ordered positive + negative entries of S, diagonal
    excluded): ``"mean"`` (default) = mean of ``g`` over those entries; ``"sum"`` = the formula
    above read on the ordered matrix, ``1/2 sum_{ordered} g`` (= the sum over unordered pairs
    in-batch). Hu et al.'s weight-decay term on the network is not part of the loss.
    Degenerate batches (no positive pair or no negative pair) give a graph-connected 0, the
    package-wide convention.

    Args:
        tau: the distance threshold ``tau`` (default 2.0).
        beta: sharpness ``beta`` of the generalised logistic g (default 2.0).
        reduction: ``"mean"`` (default) or ``"sum"``.
        normalize: L2-normalise first (default True, so ``d^2 = 2 - 2 s`` is in [0, 4] and
            ``tau = 2`` puts the threshold at ``s = 0``).

    Defaults: Duan et al. 2018, who use DDML as a baseline, give no values for tau and beta;
    2.0 / 2.0 are dmlkit's choice for unit embeddings (Hu et al. 2014 use raw face
    descriptors; tune both per dataset).
    PML has no DDML loss.
    """

    hyperparameters = ("tau", "beta", "reduction")

    def __init__(self, tau: float = 2.0, beta: float = 2.0, reduction: str = "mean",
                 normalize: bool = True):
        super().__init__(normalize=normalize)
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose one of {_REDUCTIONS}")
        self.tau = float(tau)
        self.beta = float(beta)
        self.reduction = reduction

    def compute(self, batch: PairBatch) -> torch.Tensor:
        pos, neg = batch.pos, batch.neg
        if not bool(pos.any()) or not bool(neg.any()):
            return zero_loss(batch)
        pairs = pos | neg
        n_pairs = int(pairs.sum())
        d2 = batch.squared_distances()
        sign = torch.where(pos, 1.0, -1.0).to(d2.dtype)
        g = F.softplus(self.beta * (1.0 - sign * (self.tau - d2))) / self.beta
        total = torch.where(pairs, g, torch.zeros((), dtype=g.dtype, device=g.device)).sum()
        return 0.5 * total if self.reduction == "sum" else total / n_pairs

    def tiling_unsupported(self) -> str | None:
        if not self.normalize:
            return ("on raw embeddings the squared distances come from the embeddings, not "
                    "from S (use normalize=True)")
        return None

    def tile_formulation(self, ctx) -> DDMLTiles:
        """One pass: the sum of g over the negatives of the tiles; positives on the slots."""
        return DDMLTiles(self)

    def pair_term(self, sign: float):
        """g(1 - l (tau - d^2)) as a function of s (unit vectors), ``l = sign``."""
        def g(s):
            d2 = (2.0 - 2.0 * s).clamp_min(0.0)
            return F.softplus(self.beta * (1.0 - sign * (self.tau - d2))) / self.beta
        return g


class DDMLTiles(TileFormulation):
    """:class:`DDMLLoss` in tiles: a sum of per-pair terms, then one constant factor."""

    def __init__(self, loss: DDMLLoss):
        self.loss, self.g_pos, self.g_neg = loss, loss.pair_term(1.0), loss.pair_term(-1.0)

    def start(self, ctx: TileContext) -> dict:
        return {"total": ctx.zeros(())}

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        st["total"] += torch.where(tile.neg, self.g_neg(tile.S), 0.0).sum()

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        valid = ctx.slots[1]
        n_pos, n_neg = int(valid.sum()), int(ctx.n_neg.sum())
        st["empty"] = n_pos == 0 or n_neg == 0
        total = st["total"] + torch.where(valid, self.g_pos(st["s_pos"]), 0.0).sum()
        st["coef"] = 0.5 if self.loss.reduction == "sum" else 1.0 / max(n_pos + n_neg, 1)
        st["value"] = total * st["coef"]

    def value(self, st: dict, ctx: TileContext) -> torch.Tensor:
        return ctx.zeros(()) if st["empty"] else st["value"]

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        return None if st["empty"] else elementwise_grad(self.g_neg, tile.S, tile.neg,
                                                         st["coef"])

    def pair_grads(self, st: dict, ctx: TileContext) -> list:
        if st["empty"]:
            return []
        index, valid = ctx.slots
        return [(index, elementwise_grad(self.g_pos, st["s_pos"], valid, st["coef"]))]
