"""N-pair losses (Sohn 2016, docs/references.md): N-pair-mc, N-pair-ovo and the (N+1)-tuplet.

Sohn's losses use un-normalised embeddings (``normalize=False`` by default here) with an L2
penalty on the embedding norms. The penalty is not a function of S, so it lives in
:meth:`PairLoss.regularizer` (the weight view of :func:`dmlkit.weights.pair_weights` ignores it).
Formulas and the hard negative class sampler: docs/formulas.md#n-pair-losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_embeddings_labels
from .base import PairBatch, PairLoss, zero_loss
from .lifted import masked_logsumexp
from .registry import register
from .tiles import (
    SlotGradTiles,
    Tile,
    TileContext,
    TileFormulation,
    elementwise_grad,
    lse_update_,
)

__all__ = ["NPairLoss", "NPairOVOLoss", "NPairTiles", "TupletLoss", "TupletTiles",
           "npair_pairing", "pairing_vectors"]


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

    def tile_formulation(self, ctx) -> NPairTiles:
        """Sohn's pairing from the labels (no (B, M) mask), then per anchor the streaming
        log-sum-exp (mc) or softplus sum (ovo) over the candidate columns
        (:class:`NPairTiles`)."""
        return NPairTiles(ovo=isinstance(self, NPairOVOLoss))

    def tiled_regularizer(self, embeddings, labels, ref_embeddings, ref_labels, ctx):
        anchors, cols, _ = pairing_vectors(ctx)
        if int(anchors.sum()) < 1 or int(cols.sum()) < 2:
            return 0.0
        return _l2_penalty(self.l2_reg, embeddings, anchors, ref_embeddings, cols)

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
    r"""Multi-class N-pair loss, N-pair-mc (Sohn 2016).

    For N pairs ``(f_i, f_i^+)`` of N different classes:

        L = 1/N sum_i log(1 + sum_{j != i} exp(f_i^T f_j^+ - f_i^T f_i^+))
          = 1/N sum_i [ logsumexp_j (f_i^T f_j^+) - f_i^T f_i^+ ]     (softmax cross-entropy)

    plus Sohn's penalty ``0.25 * l2_reg * (mean_i ||f_i||^2 + mean_i ||f_i^+||^2)`` on the
    embeddings of the N pairs (the form and default 0.002 of the TensorFlow ``npairs_loss``
    reference implementation; Sohn 2016 gives no value).

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
        of the N x N block with target i for row i (a handful of ops, as PML). A tiled loss
        (``chunk_size``) computes the same block in tiles."""
        if ref_embeddings is not None or ref_labels is not None or self.chunk_size is not None:
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
    r"""One-vs-one N-pair loss, N-pair-ovo (Sohn 2016).

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
    r"""(N+1)-tuplet loss (Sohn 2016) over every positive pair of the batch.

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

    def tile_formulation(self, ctx) -> TupletTiles:
        """Per row the streaming log-sum-exp (softplus form) or maximum with its ties (hinge
        form) over the negatives; the terms on the positive slots (:class:`TupletTiles`)."""
        return TupletTiles(self)

    def tiled_regularizer(self, embeddings, labels, ref_embeddings, ref_labels, ctx):
        if not bool(((ctx.n_pos > 0) & (ctx.n_neg > 0)).any()):
            return 0.0
        q_all = torch.ones(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
        r_all = torch.ones(ref_embeddings.shape[0], dtype=torch.bool,
                           device=ref_embeddings.device)
        return _l2_penalty(self.l2_reg, embeddings, q_all, ref_embeddings, r_all)

    def regularizer(self, batch: PairBatch) -> torch.Tensor | float:
        if not bool((batch.pos & batch.neg.any(1)[:, None]).any()):
            return 0.0
        q_all = torch.ones(batch.embeddings.shape[0], dtype=torch.bool,
                           device=batch.embeddings.device)
        r_all = torch.ones(batch.ref_embeddings.shape[0], dtype=torch.bool,
                           device=batch.ref_embeddings.device)
        return _l2_penalty(self.l2_reg, batch.embeddings, q_all, batch.ref_embeddings, r_all)


class TupletTiles(SlotGradTiles):
    """:class:`TupletLoss` in tiles. Softplus form: ``lse_i`` over the negatives streamed
    over the tiles, the terms ``softplus(lse_i - s_ip)`` on the slots, and a negative (i, n)
    gets ``dL/dlse_i softmax_n``. Hinge form: the hardest negative per row and the number of
    its ties (the dense ``amax`` shares its gradient evenly among them)."""

    def __init__(self, loss: TupletLoss):
        self.loss = loss

    def start(self, ctx: TileContext) -> dict:
        return {"m": ctx.full((ctx.B,), float("-inf")), "acc": ctx.zeros(ctx.B)}

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        rows = tile.rows
        X = tile.fill_non_negatives_(tile.S.clone(), float("-inf"))
        if self.loss.form == "softplus":
            lse_update_(st["m"][rows], st["acc"][rows], X)
            return
        top = X.amax(1)
        ties = (top[:, None] == X).sum(1).to(X.dtype)
        m, acc = st["m"][rows], st["acc"][rows]
        st["acc"][rows] = torch.where(top > m, ties, torch.where(top == m, acc + ties, acc))
        st["m"][rows] = torch.maximum(m, top)

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        valid = ctx.slots[1]
        has_neg = ctx.n_neg > 0
        ok = valid & has_neg[:, None]
        n_valid = int(ok.sum())
        st["empty"] = n_valid == 0
        if st["empty"]:
            return
        if self.loss.form == "softplus":
            stat = torch.where(has_neg, st["m"] + st["acc"].log(), 0.0)
        else:
            stat = torch.where(has_neg, st["m"], 0.0)
        st["stat"] = stat
        with torch.enable_grad():
            h = stat.detach().requires_grad_(True)
            s = st["s_pos"].detach().requires_grad_(True)
            if self.loss.form == "softplus":
                terms = F.softplus(h[:, None] - s)
            else:
                terms = torch.relu(h[:, None] - s + self.loss.margin)
            value = torch.where(ok, terms, 0.0).sum() / n_valid
            st["dh"], st["ds"] = torch.autograd.grad(value, (h, s))
        st["value"] = value.detach()

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if st["empty"]:
            return None
        rows, S = tile.rows, tile.S
        if self.loss.form == "softplus":
            w = torch.exp(S - st["stat"][rows, None]).mul_(st["dh"][rows, None])
        else:
            hit = st["stat"][rows, None] == S
            w = torch.where(hit, (st["dh"] / st["acc"].clamp_min(1))[rows, None], 0.0)
        return torch.where(tile.neg, w, 0.0)


def pairing_vectors(ctx: TileContext):
    """:func:`npair_pairing` from the labels alone, in O((B + M) log M): ``(anchors (B,),
    columns (M,), target (B,))`` with ``target[i]`` the column of anchor i's positive."""
    B, M, dev = ctx.B, ctx.M, ctx.device
    anchors = torch.zeros(B, dtype=torch.bool, device=dev)
    cols = torch.zeros(M, dtype=torch.bool, device=dev)
    target = torch.zeros(B, dtype=torch.long, device=dev)
    if ctx.in_batch:
        first, second = pair_indices(ctx.labels)
        anchors[first], cols[second], target[first] = True, True, second
        return anchors, cols, target
    order = torch.argsort(ctx.ref_labels, stable=True)
    ordered = ctx.ref_labels[order]
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first, classes = order[starts], ordered[starts]        # the first reference per class
    cols[first] = True
    at = torch.searchsorted(classes, ctx.labels).clamp_max(max(classes.numel() - 1, 0))
    if classes.numel():
        anchors = classes[at] == ctx.labels
        target = torch.where(anchors, first[at], 0)
    return anchors, cols, target


class NPairTiles(TileFormulation):
    """:class:`NPairLoss` (``ovo=False``) and :class:`NPairOVOLoss` in tiles: the pairing from
    the labels (:func:`pairing_vectors`), the anchor-positive similarity as a row-wise dot
    product; mc streams ``logsumexp_j s_ij`` over the candidate columns, ovo the sum of
    ``softplus(s_ij - s_ii+)`` over the other columns (and its derivative in s_ii+)."""

    def __init__(self, ovo: bool):
        self.ovo = ovo

    def start(self, ctx: TileContext) -> dict:
        return {"m": ctx.full((ctx.B,), float("-inf")), "acc": ctx.zeros(ctx.B),
                "dt": ctx.zeros(ctx.B)}

    def prepare(self, st: dict, ctx: TileContext) -> None:
        st["anchors"], st["cols"], st["target"] = pairing_vectors(ctx)
        n = int(st["anchors"].sum())
        st["empty"] = n < 1 or int(st["cols"].sum()) < 2
        st["inv_n"] = 1.0 / max(n, 1)
        st["s_t"] = (ctx.embeddings * ctx.ref_embeddings[st["target"]]).sum(1)

    def _mask(self, tile: Tile, st: dict) -> torch.Tensor:
        mask = st["anchors"][tile.rows, None] & st["cols"][None, tile.cols]
        if self.ovo:
            mask &= tile.col_ids()[None, :] != st["target"][tile.rows, None]
        return mask

    def _ovo_term(self, tile: Tile, st: dict):
        s_t = st["s_t"][tile.rows, None]
        return lambda s: F.softplus(s - s_t)

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        if st["empty"]:
            return
        rows, mask = tile.rows, self._mask(tile, st)
        if not self.ovo:
            lse_update_(st["m"][rows], st["acc"][rows],
                        torch.where(mask, tile.S, float("-inf")))
            return
        fn = self._ovo_term(tile, st)
        st["acc"][rows] += torch.where(mask, fn(tile.S), 0.0).sum(1)
        st["dt"][rows] -= elementwise_grad(fn, tile.S, mask, 1.0).sum(1)

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        if st["empty"]:
            return
        if self.ovo:
            per_anchor = torch.where(st["anchors"], st["acc"], 0.0)
        else:
            st["lse"] = torch.where(st["anchors"], st["m"] + st["acc"].log(), 0.0)
            per_anchor = torch.where(st["anchors"], st["lse"] - st["s_t"], 0.0)
        st["value"] = per_anchor.sum() * st["inv_n"]

    def value(self, st: dict, ctx: TileContext) -> torch.Tensor:
        return ctx.zeros(()) if st["empty"] else st["value"]

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if st["empty"]:
            return None
        mask = self._mask(tile, st)
        if self.ovo:
            return elementwise_grad(self._ovo_term(tile, st), tile.S, mask, st["inv_n"])
        w = torch.exp(tile.S - st["lse"][tile.rows, None]).mul_(st["inv_n"])
        return torch.where(mask, w, 0.0)

    def pair_grads(self, st: dict, ctx: TileContext) -> list:
        if st["empty"]:
            return []
        g = st["dt"] if self.ovo else torch.full_like(st["s_t"], -1.0)
        g = torch.where(st["anchors"], g * st["inv_n"], 0.0)
        return [(st["target"][:, None], g[:, None])]
