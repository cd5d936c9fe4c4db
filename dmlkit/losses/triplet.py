"""Triplet loss over all valid triplets of a batch (or mined ones), without a B x B x B tensor.

Counting trick: for anchor i write ``a_p = T_ip`` (positives) and ``b_n = T_in`` (negatives),
where T is the similarity (``form="similarity"``) or minus the (squared) distance. A triplet's
loss ``[b_n - a_p + margin]_+`` is linear in T wherever it is active, so the sum over the kept
triplets is ``sum_n b_n c_n - sum_p a_p c_p + margin * (#kept)`` with integer counts
``c_p = #{n kept with p}`` and ``c_n = #{p kept with n}``. The counts come from per-row sorting
and ``searchsorted`` (O(B M log M) time, O(B M) memory); they are piecewise constant in S, so
treating them as constants gives the exact gradient. The counts are also the pair weights of
seed 004 (Sec. 3): ``W_ip = c_p``, ``W_in = c_n`` (times the reduction's 1/count).
"""

from __future__ import annotations

import torch

from .base import PairBatch, PairLoss, zero_loss
from .registry import register

__all__ = ["TripletLoss", "triplet_counts"]

_FORMS = ("distance", "squared_distance", "similarity")
_MININGS = ("all", "semihard", "hard", "batch_hard")
_REDUCTIONS = ("mean_nonzero", "mean", "sum")


def _compact_sorted(values: torch.Tensor, keep: torch.Tensor, n_keep: torch.Tensor, width: int):
    """Per row, the kept entries of ``values`` in ascending order, padded with +inf.

    Returns ``(sorted_values (B, width), column_indices (B, width), valid (B, width))``.
    """
    inf = torch.tensor(float("inf"), dtype=values.dtype, device=values.device)
    vals, idx = torch.where(keep, values, inf).topk(width, dim=1, largest=False, sorted=True)
    valid = torch.arange(width, device=values.device)[None, :] < n_keep[:, None]
    return vals, idx, valid


#: below this many thresholds per row a compare-and-add loop beats a binary search
_LOOP_WIDTH = 16


def _rank_in(t_sorted: torch.Tensor, b: torch.Tensor, inclusive: bool) -> torch.Tensor:
    """Per row, how many of the sorted thresholds lie below each entry of ``b`` (``<`` or
    ``<=`` when inclusive); +inf padding never counts."""
    if t_sorted.shape[1] > _LOOP_WIDTH:
        return torch.searchsorted(t_sorted, b.contiguous(), right=inclusive)
    # a uint8 accumulator (width <= 16 < 255) avoids a bool -> int64 copy per threshold
    below = torch.zeros(b.shape, dtype=torch.uint8, device=b.device)
    for j in range(t_sorted.shape[1]):
        col = t_sorted[:, j:j + 1]
        below.add_((col <= b) if inclusive else (col < b))
    return below.long()


def _counts(thresholds: torch.Tensor, keep_pos: torch.Tensor, n_pos: torch.Tensor,
            b: torch.Tensor, neg: torch.Tensor, width: int, inclusive: bool):
    """For every negative n: ``#{p : t_p < b_n}`` (or ``<=`` when inclusive); for every positive p:
    ``#{n : b_n > t_p}`` (or ``>=``), with the same comparisons, in O(B M log width).

    The second count comes from the first: sorting the thresholds of a row, ``b_n`` exceeds the
    j-th smallest one exactly when at least j+1 thresholds lie below it, so a per-row histogram of
    the first counts and its suffix sums give the second without sorting the negatives.
    """
    t_sorted, t_idx, valid = _compact_sorted(thresholds, keep_pos, n_pos, width)
    below = _rank_in(t_sorted, b, inclusive)  # (B, M) in [0, width]
    below = below.masked_fill_(~neg, 0)       # non-negatives land in bin 0, which is never read
    hist = torch.zeros(b.shape[0], width + 1, dtype=b.dtype, device=b.device)
    hist.scatter_add_(1, below, torch.ones((), dtype=b.dtype, device=b.device).expand_as(b))
    at_least = hist.flip(1).cumsum(1).flip(1)          # at_least[:, j] = #{n : below_n >= j}
    # slot j (the j-th smallest threshold): #{n : below_n >= j + 1}
    per_slot = torch.where(valid, at_least[:, 1:], 0)
    c_pos = torch.zeros_like(b).scatter_add_(1, t_idx, per_slot)
    return c_pos, below.to(b.dtype)


@torch.no_grad()
def triplet_counts(T: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float,
                   mining: str = "all"):
    """Integer counts of the kept triplets per positive and per negative pair.

    A triplet (i, p, n) is kept when ``lo_p < b_n < hi_p`` with ``a_p = T_ip``, ``b_n = T_in``:
    ``all``: lo = a - margin, hi = +inf (every triplet with a non-zero loss);
    ``hard``: lo = a, hi = +inf (the negative is closer than the positive);
    ``semihard`` (FaceNet): lo = a - margin, hi = a (farther than the positive, inside the margin).
    Returns ``(c_pos, c_neg, n_kept, n_total)``: (B, M) counts for positive / negative entries,
    the number of kept triplets and the number of valid triplets ``sum_i |P_i| |N_i|``.
    Both counts are derived from the same floating-point comparisons, so they always agree.
    """
    work = T.detach()
    if work.dtype in (torch.float16, torch.bfloat16):
        work = work.float()
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    n_total = (n_pos * n_neg).sum().to(work.dtype)
    width = int(n_pos.max()) if pos.numel() else 0
    if width == 0 or not bool(neg.any()):
        zeros = torch.zeros_like(work)
        return zeros, zeros, zeros.sum(), n_total
    lo = work - margin if mining in ("all", "semihard") else work
    c_pos, c_neg = _counts(lo, pos, n_pos, work, neg, width, inclusive=False)
    if mining == "semihard":  # remove the triplets with b_n >= a_p
        c_pos_hi, c_neg_hi = _counts(work, pos, n_pos, work, neg, width, inclusive=True)
        c_pos, c_neg = c_pos - c_pos_hi, c_neg - c_neg_hi
    return c_pos, c_neg, c_pos.sum(), n_total


@register("triplet")
class TripletLoss(PairLoss):
    r"""Triplet loss ``[T_an - T_ap + margin]_+`` over the triplets of a batch.

    Paper: Hoffer & Ailon 2015 / Schroff et al. 2015 (FaceNet); seed 001 eq. 2 (distance form
    ``[D(x, x+) - D(x, x-) + m]_+``), seed 004 eq. 7 (similarity form ``[s_in - s_ip + lambda]_+``,
    where seed 004's lambda is ``margin`` here).

    Args:
        margin: the margin m (seed 004's lambda). Default 0.2 (FaceNet's value for squared
            distances of unit vectors); PML's ``TripletMarginLoss`` defaults to 0.05.
        form: ``"distance"`` (T = -||f_a - f_x||, default, as PML), ``"squared_distance"``
            (T = -||f_a - f_x||^2, FaceNet) or ``"similarity"`` (T = s, seed 004).
        mining: which triplets enter the loss. ``"all"``: every valid triplet (anchor, positive of
            the anchor's class, negative of another class) in the batch; ``"semihard"`` (FaceNet):
            those with ``T_ap - margin < T_an < T_ap``; ``"hard"``: those with ``T_an > T_ap``;
            ``"batch_hard"`` (Hermans et al. 2017): one triplet per anchor, its hardest positive
            and hardest negative.
        reduction: ``"mean_nonzero"`` (default): the sum divided by the number of triplets with a
            non-zero loss (PML's ``AvgNonZeroReducer``); ``"mean"``: divided by the number of
            triplets considered (all valid / mined ones, zero losses included); ``"sum"``.
        normalize: L2-normalise embeddings first (default True).

    Cost: O(B M log M) time and O(B M) memory via sorted prefix counts (module docstring), never
    a B x M x M tensor. With no valid triplet the loss is a graph-connected 0.
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

    def scores(self, batch: PairBatch) -> torch.Tensor:
        """T (B, M): higher means more similar."""
        if self.form == "similarity":
            return batch.S
        if self.form == "squared_distance":
            return -batch.squared_distances()
        return -batch.distances()

    def compute(self, batch: PairBatch) -> torch.Tensor:
        T = self.scores(batch)
        if self.mining == "batch_hard":
            return self._batch_hard(T, batch)
        c_pos, c_neg, n_kept, n_total = triplet_counts(T, batch.pos, batch.neg, self.margin,
                                                       self.mining)
        if n_kept == 0:
            return zero_loss(batch)
        T32 = T.float() if T.dtype in (torch.float16, torch.bfloat16) else T
        # positive and negative entries are disjoint, so one signed count matrix carries both
        total = (T32 * (c_neg - c_pos)).sum() + self.margin * n_kept
        if self.reduction == "sum":
            return total
        if self.reduction == "mean":
            return total / (n_kept if self.mining != "all" else n_total)
        return total / n_kept

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
