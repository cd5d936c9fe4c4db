"""Triplet loss over all valid triplets of a batch (or mined ones), without a B x B x B tensor.

Counting trick: for anchor i write ``a_p = T_ip`` (positives) and ``b_n = T_in`` (negatives),
where T is the similarity (``form="similarity"``) or minus the (squared) distance. A triplet's
loss ``[b_n - a_p + margin]_+`` is linear in T wherever it is active, so the sum over the kept
triplets is ``sum_n b_n c_n - sum_p a_p c_p + margin * (#kept)`` with integer counts
``c_p = #{n kept with p}`` and ``c_n = #{p kept with n}``. The counts compare every negative of a
row with the row's w sorted positive thresholds (w = the most positives of a row, read from
:attr:`PairBatch.pos_slots`): one float comparison per threshold for w <= 32, else a binary search
(O(B M min(w, log w)) time, O(B M) memory). They are piecewise constant in S, so treating them as
constants gives the exact gradient. The counts are also the pair weights of
Wang et al. 2019b (eq. 8): ``W_ip = c_p``, ``W_in = c_n`` (times the reduction's 1/count).
Formulas: docs/formulas.md#triplet.
"""

from __future__ import annotations

import torch

from ..similarity import distances_from_similarity, mask_any
from .base import PairBatch, PairLoss, positive_slots, zero_loss
from .registry import register
from .tiles import Tile, TileContext, TileFormulation, elementwise_grad

__all__ = ["TripletLoss", "TripletTiles", "triplet_counts"]

_FORMS = ("distance", "squared_distance", "similarity")
_MININGS = ("all", "semihard", "hard", "batch_hard")
_REDUCTIONS = ("mean_nonzero", "mean", "sum")


#: up to this many thresholds per row a compare-and-count loop beats a binary search
_LOOP_WIDTH = 32


def _sorted(t: torch.Tensor, slots) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the thresholds ``t`` (B, w) of the positive slots in ascending order (+inf
    padding) and the columns they belong to."""
    index, valid = slots
    t, order = t.masked_fill(~valid, float("inf")).sort(dim=1)
    return t, index.gather(1, order)


def _counts(b: torch.Tensor, t_sorted: torch.Tensor, inclusive: bool):
    """``c_neg[i, n] = #{j : t_ij < b_in}`` (``<=`` when inclusive), (B, M), and per threshold
    ``c_slot[i, j] = #{n : b_in > t_ij}`` (``>=``), (B, w), from the same comparisons.

    ``b`` is -inf outside the negatives, so they count nowhere; +inf thresholds count nothing.
    Narrow rows: one float comparison per threshold (a float result is several times cheaper
    than a bool one on CPU). Wide rows: a binary search, and the per-threshold counts from a
    histogram of the ranks: b exceeds the j-th smallest threshold exactly when at least j + 1
    thresholds lie below it.
    """
    B, width = t_sorted.shape
    if width <= _LOOP_WIDTH:
        compare = torch.ge if inclusive else torch.gt
        c_slot = torch.empty_like(t_sorted)
        c_neg = compare(b, t_sorted[:, :1], out=torch.empty_like(b))
        torch.sum(c_neg, dim=1, out=c_slot[:, 0])
        hit = torch.empty_like(b) if width > 1 else None
        for j in range(1, width):
            compare(b, t_sorted[:, j:j + 1], out=hit)
            c_neg.add_(hit)
            torch.sum(hit, dim=1, out=c_slot[:, j])
        return c_neg, c_slot
    below = torch.searchsorted(t_sorted, b.contiguous(), right=inclusive)   # (B, M) in [0, w]
    hist = torch.zeros(B, width + 1, dtype=b.dtype, device=b.device)
    hist.scatter_add_(1, below, torch.ones((), dtype=b.dtype, device=b.device).expand_as(b))
    at_least = hist.flip(1).cumsum(1).flip(1)          # at_least[:, j] = #{n : below_n >= j}
    c_slot = at_least[:, 1:]                            # slot j: #{n : below_n >= j + 1}
    return below.to(b.dtype), c_slot


def _signed_counts(V: torch.Tensor, fill_non_negatives_, slots, margin: float, mining: str,
                   sign: float = 1.0):
    """``C = c_neg - c_pos`` (B, M) for the scores ``T = sign * V`` (positive and negative
    entries are disjoint, so one matrix holds both) and the number of kept triplets; see
    :func:`triplet_counts`. Only the negatives are compared on the full matrix: the
    thresholds come from the (B, w) positive slots."""
    work = V.detach()
    if work.dtype in (torch.float16, torch.bfloat16):
        work = work.float()
    b = fill_non_negatives_(work.clone(), -sign * float("inf"))
    a = work.gather(1, slots[0])
    if sign < 0:
        b.neg_()
        a.neg_()
    t_lo, cols_lo = _sorted(a - margin if mining in ("all", "semihard") else a, slots)
    C, c_slot = _counts(b, t_lo, inclusive=False)
    C.scatter_add_(1, cols_lo, -c_slot)
    n_kept = c_slot.sum()
    if mining == "semihard":  # remove the triplets with b_n >= a_p
        t_hi, cols_hi = _sorted(a, slots)
        C_hi, c_slot_hi = _counts(b, t_hi, inclusive=True)
        C.sub_(C_hi).scatter_add_(1, cols_hi, c_slot_hi)
        n_kept = n_kept - c_slot_hi.sum()
    return C, n_kept


@torch.no_grad()
def triplet_counts(T: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float,
                   mining: str = "all", slots=None):
    """Integer counts of the kept triplets per positive and per negative pair.

    A triplet (i, p, n) is kept when ``lo_p < b_n < hi_p`` with ``a_p = T_ip``, ``b_n = T_in``:
    ``all``: lo = a - margin, hi = +inf (every triplet with a non-zero loss);
    ``hard``: lo = a, hi = +inf (the negative is closer than the positive);
    ``semihard`` (FaceNet): lo = a - margin, hi = a (farther than the positive, inside the margin).
    Returns ``(c_pos, c_neg, n_kept, n_total)``: (B, M) counts for positive / negative entries,
    the number of kept triplets and the number of valid triplets ``sum_i |P_i| |N_i|``.
    Both counts are derived from the same floating-point comparisons, so they always agree.
    ``slots``: the compacted positives ``(index, valid)`` of ``pos`` (see
    :attr:`dmlkit.losses.PairBatch.pos_slots`), computed from ``pos`` when omitted.
    """
    if slots is None:
        slots = positive_slots(pos)
    dtype = torch.float32 if T.dtype in (torch.float16, torch.bfloat16) else T.dtype
    n_total = (slots[1].sum(1).to(dtype) * neg.sum(1).to(dtype)).sum()
    if slots[0].shape[1] == 0 or not mask_any(neg):
        zeros = torch.zeros(T.shape, dtype=dtype, device=T.device)
        return zeros, zeros, zeros.sum(), n_total
    C, n_kept = _signed_counts(T, lambda X, value: X.masked_fill_(~neg, value), slots, margin,
                               mining)
    return (-C).clamp_min_(0), C.clamp_min(0), n_kept, n_total


@register("triplet")
class TripletLoss(PairLoss):
    r"""Triplet loss ``[T_an - T_ap + margin]_+`` over the triplets of a batch.

    Paper: Hoffer & Ailon 2015 / Schroff et al. 2015 (FaceNet); Zou et al. n.d., eq. 2 (distance
    form ``[D(x, x+) - D(x, x-) + m]_+``), Wang et al. 2019b, eq. 7 (similarity form
    ``[s_in - s_ip + lambda]_+``, where the paper's lambda is ``margin`` here).

    Args:
        margin: the margin m (lambda of Wang et al. 2019b). Default 0.2 (FaceNet's value for squared
            distances of unit vectors); PML's ``TripletMarginLoss`` defaults to 0.05.
        form: ``"distance"`` (T = -||f_a - f_x||, default, as PML), ``"squared_distance"``
            (T = -||f_a - f_x||^2, FaceNet) or ``"similarity"`` (T = s, Wang et al. 2019b).
        mining: which triplets enter the loss. ``"all"``: every valid triplet (anchor, positive of
            the anchor's class, negative of another class) in the batch; ``"semihard"`` (FaceNet):
            those with ``T_ap - margin < T_an < T_ap``; ``"hard"``: those with ``T_an > T_ap``;
            ``"batch_hard"`` (Hermans et al. 2017): one triplet per anchor, its hardest positive
            and hardest negative.
        reduction: ``"mean_nonzero"`` (default): the sum divided by the number of triplets with a
            non-zero loss (PML's ``AvgNonZeroReducer``); ``"mean"``: divided by the number of
            triplets considered (all valid / mined ones, zero losses included); ``"sum"``.
        normalize: L2-normalise embeddings first (default True).

    Cost: O(B M min(w, log w)) time and O(B M) memory via counts against sorted thresholds
    (module docstring), never a B x M x M tensor. With no valid triplet the loss is a
    graph-connected 0.
    """

    hyperparameters = ("margin", "form", "mining", "reduction")

    def __init__(self, margin: float = 0.2, form: str = "distance", mining: str = "all",
                 reduction: str = "mean_nonzero", normalize: bool = True):
        super().__init__(normalize=normalize)
        for value, allowed, what in ((form, _FORMS, "form"), (mining, _MININGS, "mining"),
                                     (reduction, _REDUCTIONS, "reduction")):
            if value not in allowed:
                raise ValueError(f"unknown triplet {what} {value!r}; choose one of {allowed}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin, self.form, self.mining, self.reduction = float(margin), form, mining, reduction

    def closed_form_weights(self, batch: PairBatch) -> torch.Tensor:
        """Wang et al. 2019b, Sec. 4 (eq. 8): the number of active triplets each pair is in,
        times the reduction's 1/count; ``form="similarity", mining="all"`` only. (B, M), by
        brute-force enumeration of the (B, M, M) triplets: for small analysis batches only."""
        if self.form != "similarity" or self.mining != "all":
            raise self._no_closed_form("triplet(form='similarity', mining='all')")
        S, pos, neg = batch.S, batch.pos, batch.neg
        # violation[i, p, n] = s_in - s_ip + margin > 0 over valid triplets
        valid = pos[:, :, None] & neg[:, None, :]
        active = valid & (S[:, None, :] - S[:, :, None] + self.margin > 0)
        c_pos, c_neg = active.sum(2).to(S.dtype), active.sum(1).to(S.dtype)
        n_active, n_valid = float(active.sum()), float(valid.sum())
        norm = {"sum": 1.0, "mean": n_valid, "mean_nonzero": n_active}[self.reduction]
        return (c_pos + c_neg) / max(norm, 1.0)

    def scores(self, batch: PairBatch) -> torch.Tensor:
        """T (B, M): higher means more similar."""
        V, sign = self._signed_scores(batch)
        return V if sign > 0 else -V

    def _signed_scores(self, batch: PairBatch) -> tuple[torch.Tensor, float]:
        """``(V, sign)`` with ``T = sign * V``: the distances themselves for the distance forms,
        so that no (B, M) pass is spent on the minus sign."""
        if self.form == "similarity":
            return batch.S, 1.0
        if self.form == "squared_distance":
            return batch.squared_distances(), -1.0
        return batch.distances(), -1.0

    def compute(self, batch: PairBatch) -> torch.Tensor:
        if self.mining == "batch_hard":
            return self._batch_hard(self.scores(batch), batch)
        slots = batch.pos_slots
        if slots[0].shape[1] == 0 or not mask_any(batch.neg):
            return zero_loss(batch)
        V, sign = self._signed_scores(batch)
        with torch.no_grad():
            C, n_kept = _signed_counts(V, batch.fill_non_negatives_, slots, self.margin,
                                       self.mining, sign)
        if n_kept == 0:
            return zero_loss(batch)
        V32 = V.float() if V.dtype in (torch.float16, torch.bfloat16) else V
        # sum over kept triplets of T_n - T_p + margin = sum(T * C) + margin * #kept
        total = sign * torch.dot(V32.reshape(-1), C.reshape(-1)) + self.margin * n_kept
        if self.reduction == "sum":
            return total
        if self.reduction == "mean" and self.mining == "all":
            n_total = (slots[1].sum(1) * batch.neg_per_row).sum().to(C.dtype)
            return total / n_total
        return total / n_kept

    def tiling_unsupported(self) -> str | None:
        if self.form != "similarity" and not self.normalize:
            return (f"the {self.form} form on raw embeddings reads the distances from the "
                    "embeddings, not from S (use normalize=True)")
        return None

    def tile_formulation(self, ctx) -> TripletTiles:
        """The counts against each row's sorted positive thresholds, tile by tile
        (:class:`TripletTiles`); batch-hard: the hardest negative per row."""
        return TripletTiles(self)

    def score_fn(self):
        """T as a function of S (unit vectors): s, -d(s) or -d(s)^2, as the dense path."""
        if self.form == "similarity":
            return lambda s: s
        if self.form == "squared_distance":
            return lambda s: -(2.0 - 2.0 * s).clamp_min(0.0)
        return lambda s: -distances_from_similarity(s)

    def _batch_hard(self, T: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        inf = float("inf")
        valid = batch.pos.any(1) & batch.neg.any(1)
        if not bool(valid.any()):
            return zero_loss(batch)
        hardest_pos = T.masked_fill(~batch.pos, inf).min(1).values[valid]
        hardest_neg = T.masked_fill(~batch.neg, -inf).max(1).values[valid]
        losses = torch.relu(hardest_neg - hardest_pos + self.margin)
        if self.reduction == "sum":
            return losses.sum()
        if self.reduction == "mean":
            return losses.mean()
        nonzero = (losses > 0).sum()
        return losses.sum() / nonzero.clamp_min(1)


def _ordered(t: torch.Tensor, slots):
    """Ascending thresholds (+inf padding) with the sort order and the columns it gives."""
    index, valid = slots
    t, order = t.masked_fill(~valid, float("inf")).sort(dim=1)
    return t, order, index.gather(1, order)


class TripletTiles(TileFormulation):
    """:class:`TripletLoss` in tiles. Mining all / semihard / hard: pass 0 gathers the
    positive slots, whose sorted thresholds (B, w) are the row statistics; pass 1 counts each
    tile's negatives against them (:func:`_counts`, as the dense path) and accumulates the
    per-threshold counts and the negatives' part of the value; the gradient is the counts
    times dT/dS. Batch-hard: the hardest negative (first column) per row in pass 0, the
    hardest positive from the slots."""

    def __init__(self, loss: TripletLoss):
        self.loss, self.T = loss, loss.score_fn()
        self.hard = loss.mining == "batch_hard"

    def start(self, ctx: TileContext) -> dict:
        inf = float("inf")
        return {"hn": ctx.full((ctx.B,), -inf), "hn_col": ctx.zeros(ctx.B, dtype=torch.long),
                "hn_s": ctx.zeros(ctx.B), "neg_total": ctx.zeros(())}

    def _b(self, tile: Tile):
        T = self.T(tile.S)
        return T, tile.fill_non_negatives_(T.clone(), float("-inf"))

    def _tile_counts(self, tile: Tile, st: dict, b: torch.Tensor):
        rows = tile.rows
        C, c_lo = _counts(b, st["t_lo"][rows], inclusive=False)
        c_hi = None
        if self.loss.mining == "semihard":
            C_hi, c_hi = _counts(b, st["t_hi"][rows], inclusive=True)
            C = C - C_hi
        return C, c_lo, c_hi

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        rows = tile.rows
        if self.hard:
            T, b = self._b(tile)
            best, arg = b.max(1)
            better = best > st["hn"][rows]
            st["hn_col"][rows] = torch.where(better, arg + tile.c0, st["hn_col"][rows])
            st["hn_s"][rows] = torch.where(better, tile.S.gather(1, arg[:, None])[:, 0],
                                           st["hn_s"][rows])
            st["hn"][rows] = torch.where(better, best, st["hn"][rows])
            return
        if st["empty"]:
            return
        T, b = self._b(tile)
        C, c_lo, c_hi = self._tile_counts(tile, st, b)
        st["c_lo"][rows] += c_lo
        if c_hi is not None:
            st["c_hi"][rows] += c_hi
        st["neg_total"] += (T * C).sum()

    def prepare(self, st: dict, ctx: TileContext) -> None:
        """The sorted thresholds of every row, from its positive slots."""
        loss, slots = self.loss, ctx.slots
        st["empty"] = slots[0].shape[1] == 0 or int(ctx.n_neg.sum()) == 0
        if self.hard:
            return
        a = self.T(st["s_pos"])
        shifted = a - loss.margin if loss.mining in ("all", "semihard") else a
        st["t_lo"], order, st["cols_lo"] = _ordered(shifted, slots)
        st["s_lo"] = st["s_pos"].gather(1, order)
        st["c_lo"] = torch.zeros_like(a)
        if loss.mining == "semihard":
            st["t_hi"], order, st["cols_hi"] = _ordered(a, slots)
            st["s_hi"] = st["s_pos"].gather(1, order)
            st["c_hi"] = torch.zeros_like(a)

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        loss = self.loss
        if self.hard:
            self._finish_hard(st, ctx)
            return
        if st["empty"]:
            st["n_kept"] = 0.0
            return
        total = st["neg_total"] - (self.T(st["s_lo"]) * st["c_lo"]).nan_to_num(0.0).sum()
        n_kept = st["c_lo"].sum()
        if loss.mining == "semihard":
            total = total + (self.T(st["s_hi"]) * st["c_hi"]).nan_to_num(0.0).sum()
            n_kept = n_kept - st["c_hi"].sum()
        st["n_kept"] = float(n_kept)
        if loss.reduction == "sum":
            st["coef"] = 1.0
        elif loss.reduction == "mean" and loss.mining == "all":
            st["coef"] = 1.0 / max(float((ctx.n_pos * ctx.n_neg).sum()), 1.0)
        else:
            st["coef"] = 1.0 / max(st["n_kept"], 1.0)
        st["value"] = (total + loss.margin * n_kept) * st["coef"]

    def _finish_hard(self, st: dict, ctx: TileContext) -> None:
        index, valid = ctx.slots
        live = (ctx.n_pos > 0) & (ctx.n_neg > 0)
        st["empty"] = not bool(live.any())
        if st["empty"]:
            return
        Tp = self.T(st["s_pos"]).masked_fill(~valid, float("inf"))
        hp, arg = Tp.min(1)
        st["hp_col"], st["hp_s"] = index.gather(1, arg[:, None])[:, 0], \
            st["s_pos"].gather(1, arg[:, None])[:, 0]
        pre = torch.where(live, st["hn"] - hp + self.loss.margin, 0.0)
        losses = torch.relu(pre)
        n = int(live.sum())
        red = self.loss.reduction
        coef = 1.0 if red == "sum" else 1.0 / n if red == "mean" else \
            1.0 / max(int(((losses > 0) & live).sum()), 1)
        st["value"] = losses.sum() * coef
        st["dpre"] = ((pre > 0) & live).to(pre.dtype) * coef

    def value(self, st: dict, ctx: TileContext) -> torch.Tensor:
        if st["empty"] or (not self.hard and st["n_kept"] == 0):
            return ctx.zeros(())
        return st["value"]

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if self.hard or st["empty"] or st["n_kept"] == 0:
            return None
        _, b = self._b(tile)
        C, _, _ = self._tile_counts(tile, st, b)
        return elementwise_grad(self.T, tile.S, tile.neg, C.mul_(st["coef"]))

    def pair_grads(self, st: dict, ctx: TileContext) -> list:
        if st["empty"]:
            return []
        if self.hard:
            s = torch.stack([st["hp_s"], st["hn_s"]], 1)
            sign = torch.tensor([-1.0, 1.0], dtype=s.dtype, device=s.device)
            keep = torch.ones_like(s, dtype=torch.bool)
            G = elementwise_grad(self.T, s, keep, st["dpre"][:, None] * sign)
            return [(torch.stack([st["hp_col"], st["hn_col"]], 1), G)]
        if st["n_kept"] == 0:
            return []
        valid = torch.isfinite(st["t_lo"])
        out = [(st["cols_lo"], elementwise_grad(self.T, st["s_lo"], valid,
                                                -st["c_lo"] * st["coef"]))]
        if self.loss.mining == "semihard":
            out.append((st["cols_hi"], elementwise_grad(self.T, st["s_hi"], valid,
                                                        st["c_hi"] * st["coef"])))
        return out
