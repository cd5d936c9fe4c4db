"""Angular loss (Wang et al. 2017) over all positive pairs: dense, or
exactly in tiles (:class:`AngularTiles`).

Formula and pair weights: docs/formulas.md#angular."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..similarity import similarity_matrix
from .base import PairBatch, PairLoss, zero_loss
from .registry import register
from .tiles import SlotGradTiles, Tile, TileContext, lse_update_, slot_tile_blocks
from .tiling import DENSE_BUFFERS

__all__ = ["AngularLoss", "AngularTiles"]


@register("angular")
class AngularLoss(PairLoss):
    r"""Angular loss, the N-pair (multi-class) form of Wang et al. 2017 (a DAML baseline).

    For each positive pair (a, p) and the negatives ``n in N_a`` of the batch, with unit
    embeddings and ``t = tan^2(alpha)``:

        l_ap = log(1 + sum_{n in N_a} exp(4 t (f_a + f_p)^T f_n - 2 (1 + t) f_a^T f_p))
             = softplus( logsumexp_{n in N_a} 4 t (s_an + s_pn) - 2 (1 + t) s_ap )

    a function of S only. The inner sum over n for all pairs (a, p) is a matrix product,
    ``sum_n [n in N_a] e^{4t s_an} e^{4t s_pn} = (A @ E^T)_ap`` with row-max shifts for stability,
    so no (B, M, M) tensor is formed (with un-normalised embeddings of very different norms the
    shifted products can underflow; they are clamped to the smallest float). Reduction: mean
    over all positive pairs (ordered entries of S; a pair whose anchor has no negative
    contributes 0 and still counts).

    Query-vs-reference form: a is a query, p and n are references; ``s_pn`` is then a
    reference-reference similarity, computed from the reference embeddings (in-batch it is
    ``batch.S`` itself, so :func:`dmlkit.weights.pair_weights` sees every term).

    ``chunk_size`` (tiles, :class:`AngularTiles`): the same loss without the (B, M) and
    (M, M) matrices, in O(B w M D) time for w positives per row (the dense product is
    O(B M^2)), so a memory bank of 10^5 references fits.

    Args:
        alpha: the angle bound in degrees (default 40; the paper reports 36-45 as best).
            ``alpha`` must be in (0, 90); large angles make ``4 t`` huge and the loss harsh.
            The dense path's shifted products underflow at large angles even for unit
            vectors: on a 32 x 16 batch of 8 classes it was exact to 1e-7 up to 75 degrees in
            float32 (0.8 % off at 78, 21 % at 80) and to 1e-15 up to 84 in float64 (4 % off
            at 86). The tiled path (``chunk_size``) is exact at every angle: use it there.
        normalize: L2-normalise first (default True; the loss is defined for unit vectors).

    PML mapping (tests): ``AngularLoss(alpha=a)`` == ``angular(alpha=a)`` in value and in the
    gradient through a normalisation layer. Difference: PML normalises the anchors and
    positives but multiplies by the *raw* reference embeddings ``f_n``; the two agree for unit
    inputs (and the gradients differ only along the radial directions, which a preceding
    normalisation removes).
    """

    hyperparameters = ("alpha",)

    def __init__(self, alpha: float = 40.0, normalize: bool = True):
        super().__init__(normalize=normalize)
        if not 0.0 < float(alpha) < 90.0:
            raise ValueError(f"alpha must be an angle in degrees in (0, 90), got {alpha}")
        self.alpha = float(alpha)

    def _coefficients(self) -> tuple[float, float]:
        t = math.tan(math.radians(self.alpha)) ** 2
        return 4.0 * t, 2.0 * (1.0 + t)

    def tile_formulation(self, ctx: TileContext) -> AngularTiles:
        return AngularTiles(*self._coefficients())

    def dense_elements(self, B: int, M: int) -> int:
        """The dense path also holds (M, M) buffers (R or S, V, E)."""
        return DENSE_BUFFERS * B * M + 3 * M * M

    def compute(self, batch: PairBatch) -> torch.Tensor:
        S, pos, neg = batch.S, batch.pos, batch.neg
        n_pos = int(pos.sum())
        if n_pos == 0 or not bool(neg.any()):
            return zero_loss(batch)
        c1, c2 = self._coefficients()
        if batch.in_batch:
            R = S
        else:
            R = similarity_matrix(batch.ref_embeddings, normalize=batch.normalized).to(S.dtype)
        zero = torch.zeros((), dtype=S.dtype, device=S.device)
        U = c1 * S                                        # (B, M): 4t s_an
        V = c1 * R                                        # (M, M): 4t s_pn
        has_neg = neg.any(1)
        mu = torch.where(neg, U, torch.full_like(U, float("-inf"))).amax(1)
        mu = torch.where(has_neg, mu, zero).detach()
        nu = V.amax(1).detach()
        A = torch.where(neg, torch.exp(U - mu[:, None]), zero)
        E = torch.exp(V - nu[:, None])
        T = A @ E.t()                                     # (B, M): sum_n A_an E_pn
        tiny = torch.finfo(T.dtype).tiny
        lse = torch.log(T.clamp_min(tiny)) + mu[:, None] + nu[None, :]
        valid = pos & has_neg[:, None]
        terms = torch.where(valid, F.softplus(lse - c2 * S), zero)
        return terms.sum() / n_pos


class AngularTiles(SlotGradTiles):
    """:class:`AngularLoss` in tiles. Per positive slot (a, k) with p = p_k(a), the inner
    log-sum-exp ``lse_ak = logsumexp_{n in N_a} c1 (s_an + s_pn)`` (c1 = 4t) streams over the
    column tiles: each tile brings ``s_an`` (the tile) and ``s_pn`` (the slots' rows against
    the tile's columns, :func:`~dmlkit.losses.tiles.slot_tile_blocks`). The value and
    ``dL/ds_ap``, ``dL/dlse`` come by autograd on the (B, w) slots (softplus as the dense
    path). A negative n then gets ``dL/ds_an = sum_k dL/dlse_ak c1 softmax_ak(n)`` on the
    tile, and ``dL/ds_pn`` is the same term per slot (``tile.slot_grads``), which the engine
    sends to r_p and r_n.

    Cost: w + 1 products per tile for w positives per row (the slot blocks hold about one
    tile's elements, so rows with more positives than the tile has rows go one at a time).

    Deviation from the dense path (floating point only): the dense path shifts the exponents
    by row maxima and clamps the product ``A E^T`` at the smallest float, so with un-normalised
    embeddings of very different norms it can underflow where the streamed log-sum-exp stays
    exact."""

    def __init__(self, c1: float, c2: float):
        self.c1, self.c2 = c1, c2

    def start(self, ctx: TileContext) -> dict:
        w = ctx.slots[0].shape[1]
        return {"m": ctx.full((ctx.B, w), float("-inf")), "acc": ctx.zeros(ctx.B, w)}

    def _exponents(self, tile: Tile, lo: int, hi: int, Sp: torch.Tensor) -> torch.Tensor:
        """c1 (s_an + s_pn) (hi - lo, w, c), -inf off the negatives and on padding slots."""
        valid = tile.ctx.slots[1][tile.r0 + lo:tile.r0 + hi]
        keep = tile.neg[lo:hi, None, :] & valid[:, :, None]
        return Sp.add_(tile.S[lo:hi, None, :]).mul_(self.c1).masked_fill_(~keep, float("-inf"))

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        for lo, hi, Sp in slot_tile_blocks(tile):
            z = self._exponents(tile, lo, hi, Sp)
            a = slice(tile.r0 + lo, tile.r0 + hi)
            lse_update_(st["m"][a].view(-1), st["acc"][a].view(-1), z.view(-1, z.shape[-1]))

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        valid = ctx.slots[1]
        n_pos = int(valid.sum())
        st["empty"] = n_pos == 0 or int(ctx.n_neg.sum()) == 0
        if st["empty"]:
            return
        live = valid & (ctx.n_neg > 0)[:, None]
        lse = torch.where(live, st["m"] + st["acc"].log(), 0.0)
        with torch.enable_grad():
            s = st["s_pos"].detach().requires_grad_(True)
            u = lse.requires_grad_(True)
            terms = torch.where(live, F.softplus(u - self.c2 * s), 0.0)
            value = terms.sum() / n_pos
            st["ds"], dlse = torch.autograd.grad(value, (s, u))
        st["lse"], st["coef"] = lse.detach(), dlse.mul_(self.c1)
        st["value"] = value.detach()

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if st["empty"]:
            return None
        G = torch.zeros_like(tile.S)
        for lo, hi, Sp in slot_tile_blocks(tile):
            z = self._exponents(tile, lo, hi, Sp)
            a = slice(tile.r0 + lo, tile.r0 + hi)
            Gp = z.sub_(st["lse"][a][:, :, None]).exp_().mul_(st["coef"][a][:, :, None])
            G[lo:hi] = Gp.sum(1)
            tile.slot_grads.append((lo, hi, Gp))
        return G
