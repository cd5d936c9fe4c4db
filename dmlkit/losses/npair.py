"""N-pair losses (Sohn, NeurIPS 2016; seed 002): N-pair-mc, N-pair-ovo and the (N+1)-tuplet.

Sohn's losses use un-normalised embeddings (``normalize=False`` by default here) with an L2
penalty on the embedding norms. The penalty is not a function of S, so it lives in
:meth:`PairLoss.regularizer` (the weight view of :func:`dmlkit.weights.pair_weights` ignores it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_embeddings_labels
from .base import PairBatch, PairLoss, zero_loss
from .lifted import masked_logsumexp
from .registry import register

__all__ = ["NPairLoss", "NPairOVOLoss", "TupletLoss", "npair_pairing"]


def _first_of_class(labels: torch.Tensor, rank: int) -> torch.Tensor:
    """(n,) bool: the sample is the ``rank``-th (0-based) of its class in batch order."""
    same = labels[:, None] == labels[None, :]
    idx = torch.arange(labels.shape[0], device=labels.device)
    earlier = idx[None, :] < idx[:, None]                  # j comes before i
    return (same & earlier).sum(1) == rank


def npair_pairing(batch: PairBatch):
    """The (anchor, positive) pairing of a labelled batch for the N-pair losses.

    In-batch: for every class with >= 2 samples, the first sample (batch order) is the anchor
    ``f_i`` and the second its positive ``f_i^+``; the candidate columns are the positives of
    all these classes. This is exactly the pairing of PML's ``NPairsLoss`` (the first anchor
    of each label among all positive pairs, with its first positive).
    Query-vs-reference: every query with a reference of its class is an anchor; the candidate
    columns are the first reference of each class (one "positive" per class).

    Returns ``(anchors, columns, target)``: (B,) bool, (M,) bool and (B, M) bool with exactly
    one True per anchor row (its positive column).
    """
    same = batch.labels[:, None] == batch.ref_labels[None, :]
    if batch.in_batch:
        first = _first_of_class(batch.labels, 0)
        cols = _first_of_class(batch.labels, 1)
        anchors = first & (same & cols[None, :]).any(1)
    else:
        cols = _first_of_class(batch.ref_labels, 0)
        anchors = (same & cols[None, :]).any(1)
    target = same & anchors[:, None] & cols[None, :]
    return anchors, cols, target


def pair_indices(labels: torch.Tensor):
    """Indices of Sohn's pairs in a labelled batch, in O(B log B): for every class with at least
    two samples, its first (anchor) and second (positive) sample in batch order."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    idx = torch.arange(labels.shape[0], device=labels.device)
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    rank = idx - torch.cummax(torch.where(starts, idx, 0), 0).values
    second = order[rank == 1]
    first = order[(rank == 0) & torch.roll(rank == 1, -1)] if labels.numel() > 1 else second
    return first, second


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (x * x).sum(1)


def _l2_penalty(l2_reg: float, q: torch.Tensor, q_mask: torch.Tensor, r: torch.Tensor,
                r_mask: torch.Tensor) -> torch.Tensor | float:
    """Sohn's penalty, as TF ``npairs_loss``: ``0.25 l2_reg (mean |f_i|^2 + mean |f_i^+|^2)``."""
    if l2_reg == 0 or not bool(q_mask.any()) or not bool(r_mask.any()):
        return 0.0
    return 0.25 * l2_reg * (_sq_norms(q[q_mask]).mean() + _sq_norms(r[r_mask]).mean())


class _NPairBase(PairLoss):
    hyperparameters = ("l2_reg",)

    def __init__(self, l2_reg: float = 0.002, normalize: bool = False):
        super().__init__(normalize=normalize)
        if l2_reg < 0:
            raise ValueError(f"l2_reg must be >= 0, got {l2_reg}")
        self.l2_reg = float(l2_reg)

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None) -> torch.Tensor:
        """In-batch, only the N x N block of anchors vs positives is computed: Sohn's pairing of
        the batch equals the query-vs-reference pairing of (anchors, positives), so ``compute``
        is the same function on a B/K times smaller matrix (pair_weights still sees all of S)."""
        if ref_embeddings is not None or ref_labels is not None:
            return super().forward(embeddings, labels, ref_embeddings, ref_labels)
        emb, lab = check_embeddings_labels(embeddings, labels)
        anchors, positives = pair_indices(lab)
        if anchors.numel() < 2:  # no negative class: the graph-connected zero of compute()
            return super().forward(emb, lab)
        return super().forward(emb[anchors], lab[anchors], emb[positives], lab[positives])

    def _valid(self, batch: PairBatch):
        anchors, cols, target = npair_pairing(batch)
        return anchors, cols, target, int(anchors.sum()) >= 1 and int(cols.sum()) >= 2

    def regularizer(self, batch: PairBatch) -> torch.Tensor | float:
        anchors, cols, _, ok = self._valid(batch)
        if not ok:
            return 0.0
        return _l2_penalty(self.l2_reg, batch.embeddings, anchors, batch.ref_embeddings, cols)


@register("npair")
class NPairLoss(_NPairBase):
    r"""Multi-class N-pair loss, N-pair-mc (Sohn 2016; seed 002).

    For N pairs ``(f_i, f_i^+)`` of N different classes:

        L = 1/N sum_i log(1 + sum_{j != i} exp(f_i^T f_j^+ - f_i^T f_i^+))
          = 1/N sum_i [ logsumexp_j (f_i^T f_j^+) - f_i^T f_i^+ ]     (softmax cross-entropy)

    plus Sohn's penalty ``0.25 * l2_reg * (mean_i ||f_i||^2 + mean_i ||f_i^+||^2)`` on the
    embeddings of the N pairs (the form and default 0.002 of the TensorFlow ``npairs_loss``
    reference implementation; the slides in seed 002 give no value).

    Pairing of a general labelled batch (:func:`npair_pairing`): per class with >= 2 samples,
    the first two samples in batch order; other samples are unused. Reduction: mean over the N
    anchors. With fewer than 2 classes (no negative), the loss (and the penalty) is 0.

    Args:
        l2_reg: weight of the L2 penalty on the embedding norms (default 0.002; 0 disables).
        normalize: L2-normalise the embeddings first (default False, as Sohn).

    PML mapping (tests): ``NPairsLoss()`` (``DotProductSimilarity`` with normalised
    embeddings, no penalty) == ``npair(normalize=True, l2_reg=0)``;
    ``NPairsLoss(distance=DotProductSimilarity(normalize_embeddings=False))`` ==
    ``npair(normalize=False, l2_reg=0)`` (same pairing, same mean over anchors).
    """

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None) -> torch.Tensor:
        """In-batch: the N pairs are N distinct classes, so the loss is the softmax cross-entropy
        of the N x N block with target i for row i (a handful of ops, as PML)."""
        if ref_embeddings is not None or ref_labels is not None:
            return super().forward(embeddings, labels, ref_embeddings, ref_labels)
        emb, lab = check_embeddings_labels(embeddings, labels)
        anchors, positives = pair_indices(lab)
        if anchors.numel() < 2:
            return super().forward(emb, lab)
        n = anchors.numel()
        raw = emb[torch.cat([anchors, positives])]          # one gather: one index backward
        x = raw.float() if raw.dtype in (torch.float16, torch.bfloat16) else raw
        if self.normalize:
            x = F.normalize(x, dim=1)
        S = x[:n] @ x[n:].t()
        value = F.cross_entropy(S, torch.arange(n, device=S.device))
        if self.l2_reg == 0:
            return value
        every = torch.ones(n, dtype=torch.bool, device=S.device)
        return value + _l2_penalty(self.l2_reg, raw[:n], every, raw[n:], every)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        anchors, cols, target, ok = self._valid(batch)
        if not ok:
            return zero_loss(batch)
        S = batch.S
        lse, _ = masked_logsumexp(S, anchors[:, None] & cols[None, :])
        s_pos = torch.where(target, S, torch.zeros((), dtype=S.dtype, device=S.device)).sum(1)
        per_anchor = torch.where(anchors, lse - s_pos, torch.zeros((), dtype=S.dtype,
                                                                   device=S.device))
        return per_anchor.sum() / int(anchors.sum())


@register("npair_ovo")
class NPairOVOLoss(_NPairBase):
    r"""One-vs-one N-pair loss, N-pair-ovo (Sohn 2016; seed 002).

        L = 1/N sum_i sum_{j != i} log(1 + exp(f_i^T f_j^+ - f_i^T f_i^+))

    (softplus), with the same pairing, penalty, defaults and reduction (mean over the N
    anchors of the per-anchor sum) as :class:`NPairLoss`. PML has no one-vs-one N-pair loss.
    """

    def compute(self, batch: PairBatch) -> torch.Tensor:
        anchors, cols, target, ok = self._valid(batch)
        if not ok:
            return zero_loss(batch)
        S = batch.S
        zero = torch.zeros((), dtype=S.dtype, device=S.device)
        s_pos = torch.where(target, S, zero).sum(1, keepdim=True)
        others = anchors[:, None] & cols[None, :] & ~target
        terms = torch.where(others, F.softplus(S - s_pos), zero)
        return terms.sum() / int(anchors.sum())


_TUPLET_FORMS = ("softplus", "hinge")


@register("tuplet")
class TupletLoss(PairLoss):
    r"""(N+1)-tuplet loss (Sohn 2016; seed 002) over every positive pair of the batch.

    For each positive pair (anchor a, positive p) with the negatives ``N_a`` of the batch:

        softplus form (default):  l_ap = log(1 + sum_{n in N_a} exp(f_a^T f_n - f_a^T f_p))
        hinge form:               l_ap = [ max_{n in N_a} f_a^T f_n - f_a^T f_p + margin ]_+

    For one negative (N = 2) these are Sohn's "(2+1)-tuplet" ``log(1 + exp(.))`` and its hinge
    triplet ``max(0, .)``; for several negatives the hinge is the hardest-negative limit of the
    softplus form. Reduction: mean over the positive pairs whose anchor has >= 1 negative (0 if
    there is none). Penalty (``regularizer``): ``0.25 * l2_reg * (mean_q ||f||^2 + mean_r ||f||^2)``
    over the queries and the references (in-batch: ``0.5 * l2_reg * mean ||f_i||^2``), applied
    when the batch has at least one valid tuplet.

    Args:
        form: ``"softplus"`` (default) or ``"hinge"``.
        margin: margin of the hinge form (default 0.0, Sohn's).
        l2_reg: L2 penalty weight on the embedding norms (default 0.002, as N-pair).
        normalize: L2-normalise first (default False, as Sohn).
    """

    hyperparameters = ("form", "margin", "l2_reg")

    def __init__(self, form: str = "softplus", margin: float = 0.0, l2_reg: float = 0.002,
                 normalize: bool = False):
        super().__init__(normalize=normalize)
        if form not in _TUPLET_FORMS:
            raise ValueError(f"unknown form {form!r}; choose one of {_TUPLET_FORMS}")
        if l2_reg < 0:
            raise ValueError(f"l2_reg must be >= 0, got {l2_reg}")
        self.form = form
        self.margin = float(margin)
        self.l2_reg = float(l2_reg)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        S, pos, neg = batch.S, batch.pos, batch.neg
        has_neg = neg.any(1)
        valid = pos & has_neg[:, None]
        n_valid = int(valid.sum())
        if n_valid == 0:
            return zero_loss(batch)
        zero = torch.zeros((), dtype=S.dtype, device=S.device)
        if self.form == "softplus":
            lse, _ = masked_logsumexp(S, neg)
            terms = F.softplus(lse[:, None] - S)
        else:
            hardest = torch.where(neg, S, torch.full_like(S, float("-inf"))).amax(1)
            hardest = torch.where(has_neg, hardest, zero)
            terms = torch.relu(hardest[:, None] - S + self.margin)
        return torch.where(valid, terms, zero).sum() / n_valid

    def regularizer(self, batch: PairBatch) -> torch.Tensor | float:
        if not bool((batch.pos & batch.neg.any(1)[:, None]).any()):
            return 0.0
        q_all = torch.ones(batch.embeddings.shape[0], dtype=torch.bool,
                           device=batch.embeddings.device)
        r_all = torch.ones(batch.ref_embeddings.shape[0], dtype=torch.bool,
                           device=batch.ref_embeddings.device)
        return _l2_penalty(self.l2_reg, batch.embeddings, q_all, batch.ref_embeddings, r_all)
