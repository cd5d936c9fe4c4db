"""The base of every pair-based loss: embeddings -> similarity matrix S (+ masks) -> loss.

A subclass implements :meth:`PairLoss.compute`, a function of a :class:`PairBatch` that uses
``batch.S`` for every pairwise term. The same ``compute`` then serves

* in-batch training: ``loss(embeddings, labels)`` (S is B x B, the diagonal excluded),
* query-vs-reference batches: ``loss(embeddings, labels, ref_embeddings, ref_labels)``
  (S is B x M: memory banks, generated negatives),
* the weight analysis (:func:`dmlkit.weights.pair_weights`), which hands ``compute`` a leaf S
  and reads the per-pair weights from autograd.

A loss whose pair weights have a closed form (Wang et al. 2019b, Sec. 4;
docs/formulas.md#the-weight-view) states them next to ``compute`` in
:meth:`PairLoss.closed_form_weights`; :func:`dmlkit.weights.closed_form_weights` calls it.

>>> import torch
>>> from dmlkit.losses import make_batch
>>> batch = make_batch(torch.eye(3), torch.tensor([0, 0, 1]))
>>> batch.S.shape, batch.pos[0].tolist(), batch.neg[0].tolist()
(torch.Size([3, 3]), [False, True, False], [False, False, True])
>>> index, valid = batch.pos_slots           # the positives of each row, compacted: (B, w)
>>> index[:, 0].tolist(), valid[:, 0].tolist()
([1, 0, 0], [True, True, False])
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from .._checks import check_embeddings, check_embeddings_labels, check_labels
from ..precision import compute_dtype, full_precision_forward, promote
from ..similarity import distances_from_similarity, pair_masks, similarity_matrix, squared_distances

__all__ = ["PairBatch", "PairLoss", "check_batch_inputs", "make_batch", "positive_slots",
           "zero_loss"]


@dataclass
class PairBatch:
    """Everything a pair-based loss may look at.

    S: (B, M) similarities (cosine when the loss normalises); pos / neg: (B, M) bool masks of
    positive and negative pairs (the diagonal of an in-batch S is in neither); labels: (B,);
    ref_labels: (M,); embeddings / ref_embeddings: the raw (un-normalised) inputs, (B, D) / (M, D);
    in_batch: True when the references are the batch itself; normalized: whether S is cosine;
    label_masks: True when pos / neg are exactly ``pair_masks(labels, ref_labels)`` (as
    :func:`make_batch` builds them), which lets :attr:`pos_slots` read the positives from the
    labels instead of scanning the (B, M) mask. Masks of any other shape of pairs (e.g. the
    adversarial negatives) keep the default False.

    Losses read the positives through :attr:`pos_slots` ((B, w) with w the most positives of a
    row, usually a handful) and mask the negatives with :meth:`fill_non_negatives_`, so that
    no pass over the (B, M) matrix is spent on a boolean mask (slow on CPU).
    """

    S: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    labels: torch.Tensor
    ref_labels: torch.Tensor
    embeddings: torch.Tensor
    ref_embeddings: torch.Tensor
    in_batch: bool
    normalized: bool
    label_masks: bool = False

    @cached_property
    def pos_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The positives of every row, compacted: ``(index, valid)``, both (B, w).

        ``index[i, k]`` is the column of the k-th positive of row i (ascending columns; padding
        is column 0), ``valid`` marks the real entries; w is the largest row count (may be 0).
        """
        if self.label_masks:
            return _slots_from_labels(self.labels, self.ref_labels, self.in_batch)
        return positive_slots(self.pos)

    def fill_non_negatives_(self, X: torch.Tensor, value: float) -> torch.Tensor:
        """Set, in place, every entry of the (B, M) tensor X that is not a negative pair to
        ``value`` (0, +inf or -inf) and return X. With label masks only the positive slots
        and the diagonal are written (an order-independent scatter, no (B, M) pass)."""
        if not self.label_masks:
            return X.masked_fill_(~self.neg, value)
        index, valid = self.pos_slots
        if value == 0:
            X.scatter_reduce_(1, index, (~valid).to(X.dtype), "prod")
        elif value in (float("inf"), float("-inf")):
            other = -value
            src = torch.where(valid, value, other).to(X.dtype)
            X.scatter_reduce_(1, index, src, "amax" if value > 0 else "amin")
        else:
            raise ValueError(f"fill_non_negatives_ takes 0 or +-inf, got {value}")
        if self.in_batch:
            X.fill_diagonal_(value)
        return X

    @cached_property
    def neg_per_row(self) -> torch.Tensor:
        """The number of negatives of every row, (B,) int64 (from the slots with label masks:
        every column that is neither a positive nor, in-batch, the row itself)."""
        if not self.label_masks:
            return self.neg.sum(1)
        n_pos = self.pos_slots[1].sum(1)
        return self.S.shape[1] - n_pos - (1 if self.in_batch else 0)

    def distances(self) -> torch.Tensor:
        """Euclidean distances (B, M): from S for unit vectors, else from the raw embeddings."""
        if self.normalized:
            return distances_from_similarity(self.S)
        return self.squared_distances().add(1e-12).sqrt()

    def squared_distances(self) -> torch.Tensor:
        """Squared Euclidean distances (B, M): 2 - 2S for unit vectors, else from the embeddings."""
        if self.normalized:
            return (2.0 - 2.0 * self.S).clamp_min(0.0)
        q, r = promote(self.embeddings), promote(self.ref_embeddings)
        return squared_distances(q, None if self.in_batch else r)


def check_batch_inputs(embeddings, labels, ref_embeddings=None, ref_labels=None):
    """Validate a batch: ``(emb, labels, ref, ref_labels, in_batch)`` (the references are the
    batch itself when none are given); ValueError on bad input."""
    emb, lab = check_embeddings_labels(embeddings, labels)
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("ref_embeddings and ref_labels must be given together")
    if ref_embeddings is None:
        return emb, lab, emb, lab, True
    ref = check_embeddings(ref_embeddings, "ref_embeddings")
    ref_lab = check_labels(ref_labels, ref.shape[0], "ref_labels", device=emb.device)
    if ref.shape[1] != emb.shape[1]:
        raise ValueError(f"ref_embeddings have dimension {ref.shape[1]} but embeddings have "
                         f"{emb.shape[1]}")
    return emb, lab, ref, ref_lab, False


def make_batch(embeddings, labels, ref_embeddings=None, ref_labels=None,
               normalize: bool = True) -> PairBatch:
    """Validate the inputs and build the :class:`PairBatch` (S and masks) a loss consumes."""
    emb, lab, ref, ref_lab, in_batch = check_batch_inputs(embeddings, labels, ref_embeddings,
                                                          ref_labels)
    S = similarity_matrix(emb, None if in_batch else ref, normalize=normalize)
    pos, neg = pair_masks(lab, None if in_batch else ref_lab)
    return PairBatch(S=S, pos=pos, neg=neg, labels=lab, ref_labels=ref_lab, embeddings=emb,
                     ref_embeddings=ref, in_batch=in_batch, normalized=normalize,
                     label_masks=True)


def _left_align(index: torch.Tensor, valid: torch.Tensor):
    """Move each row's valid slots to the front (keeping their order) and drop empty columns."""
    order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)
    index, valid = index.gather(1, order), valid.gather(1, order)
    width = int(valid.sum(1).max()) if valid.numel() else 0
    index, valid = index[:, :width], valid[:, :width]
    return torch.where(valid, index, 0), valid


def positive_slots(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compact a (B, M) bool mask to ``(index, valid)``, both (B, w): per row the columns of its
    True entries in ascending order, padded with column 0 (``valid`` False); w = the largest
    row count."""
    counts = mask.sum(1)
    width = int(counts.max()) if mask.numel() else 0
    rows, cols = mask.nonzero(as_tuple=True)          # row-major: ascending columns per row
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel(), device=mask.device) - starts[rows]
    index = torch.zeros(mask.shape[0], width, dtype=torch.long, device=mask.device)
    index[rows, slot] = cols
    valid = torch.arange(width, device=mask.device)[None, :] < counts[:, None]
    return index, valid


def _slots_from_labels(labels: torch.Tensor, ref_labels: torch.Tensor, in_batch: bool):
    """:func:`positive_slots` of ``pair_masks(labels, ref_labels)`` in O((B + M) log M + B w):
    the positives of row i are the references with label ``labels[i]`` (minus i in-batch)."""
    order = torch.argsort(ref_labels, stable=True)   # equal labels keep ascending columns
    sorted_ref = ref_labels[order]
    start = torch.searchsorted(sorted_ref, labels)
    count = torch.searchsorted(sorted_ref, labels, right=True) - start
    width = int(count.max()) if count.numel() else 0
    k = torch.arange(width, device=labels.device)
    valid = k[None, :] < count[:, None]
    index = order[(start[:, None] + k[None, :]).clamp_max(max(ref_labels.numel() - 1, 0))]
    index = torch.where(valid, index, 0)
    if in_batch:   # the anchor itself is not its own positive
        valid &= index != torch.arange(labels.numel(), device=labels.device)[:, None]
        return _left_align(index, valid)
    return index, valid


def _with_chunk_size(init):
    """A subclass's ``__init__`` that also takes the keyword ``chunk_size`` (set, and
    validated, once the loss is fully built; its signature stays that of the paper's
    hyper-parameters, so ``losses.parameters`` does not list it)."""

    @functools.wraps(init)
    def __init__(self, *args, chunk_size=None, **kwargs):
        init(self, *args, **kwargs)
        if chunk_size is not None:
            self.chunk_size = chunk_size

    return __init__


class PairLoss(nn.Module):
    """Base class: ``forward(embeddings, labels, ref_embeddings=None, ref_labels=None)``.

    Subclasses set ``self.normalize`` (L2-normalise embeddings before S; default True) and
    implement :meth:`compute`. Terms that are not functions of S (e.g. N-pair's L2 penalty on
    the embedding norms) go in :meth:`regularizer`; the weight view covers only :meth:`compute`.
    Returns a 0-dim float tensor (float32 for half-precision inputs). Every ``forward``
    (this one and a subclass's) follows the precision policy of docs/precision.md: a
    half-precision input is cast to float32 once, on entry, and autocast is disabled within.

    ``chunk_size`` (constructor keyword of every loss, ``losses.build(name, chunk_size=...)``,
    or the attribute): None (default) = the dense (B, M) path; an int = the exact tiled path
    of :mod:`dmlkit.losses.tiling` with tiles of at most that many rows and columns, for the
    losses that state a :meth:`tile_formulation`; ``"auto"`` = dense when the dense buffers fit
    :func:`dmlkit.losses.tiling.auto_budget`, tiled otherwise. A loss or setting without an
    exact tile formulation raises a ValueError when chunk_size is set (:meth:`tiling_unsupported`
    says why).
    """

    #: the paper's symbols of the hyper-parameters, for reprs and result tables
    hyperparameters: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _with_chunk_size(cls.__dict__["__init__"])
        forward = cls.__dict__.get("forward")
        if forward is not None and not getattr(forward, "full_precision", False):
            cls.forward = full_precision_forward(forward)   # the precision policy

    def __init__(self, normalize: bool = True):
        super().__init__()
        self.normalize = bool(normalize)
        self._chunk_size = None

    @property
    def chunk_size(self):
        """None (dense), an int (tile side) or ``"auto"``; see the class docstring."""
        return getattr(self, "_chunk_size", None)

    @chunk_size.setter
    def chunk_size(self, value) -> None:
        from .tiling import check_chunk_size
        value = check_chunk_size(value)
        if value is not None:
            reason = self.tiling_unsupported()
            if reason:
                raise ValueError(f"{type(self).__name__} cannot be computed in tiles "
                                 f"(chunk_size={value!r}): {reason}")
        self._chunk_size = value

    def tiling_unsupported(self) -> str | None:
        """Why this loss (with these settings) has no exact tile formulation, or None."""
        if type(self).tile_formulation is PairLoss.tile_formulation:
            return "it has no tile formulation (use chunk_size=None)"
        return None

    def tile_formulation(self, ctx):  # pragma: no cover - abstract
        """The :class:`~dmlkit.losses.tiles.TileFormulation` of this loss for a batch."""
        raise NotImplementedError

    def tiled_regularizer(self, embeddings, labels, ref_embeddings, ref_labels, ctx):
        """The non-S terms on the tiled path (:meth:`regularizer` needs the dense batch)."""
        return 0.0

    def tiled_chunk(self, B: int, M: int, dtype: torch.dtype) -> int | None:
        """The tile side this loss uses on a (B, M) problem: None = dense."""
        if self.chunk_size is None:
            return None
        from .tiling import resolve_chunk_size
        return resolve_chunk_size(self.chunk_size, B, M, compute_dtype(dtype),
                                  self.dense_elements(B, M))

    def dense_elements(self, B: int, M: int) -> int:
        """Elements the dense path holds at its peak on a (B, M) problem, for ``"auto"``
        (default :data:`~dmlkit.losses.tiling.DENSE_BUFFERS` (B, M) buffers)."""
        from .tiling import DENSE_BUFFERS
        return DENSE_BUFFERS * B * M

    @full_precision_forward
    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None) -> torch.Tensor:
        if self.chunk_size is not None:
            chunk = self.tiled_chunk(len(embeddings), len(labels if ref_labels is None
                                                          else ref_labels),
                                     torch.as_tensor(embeddings).dtype)
            if chunk is not None:
                from .tiling import tiled_forward
                return tiled_forward(self, embeddings, labels, ref_embeddings, ref_labels,
                                     chunk)
        batch = make_batch(embeddings, labels, ref_embeddings, ref_labels, self.normalize)
        return self.compute(batch) + self.regularizer(batch)

    def compute(self, batch: PairBatch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def regularizer(self, batch: PairBatch) -> torch.Tensor | float:
        return 0.0

    def closed_form_weights(self, batch: PairBatch) -> torch.Tensor:
        """The closed-form weight W (B, M) of every pair of ``batch`` (Wang et al. 2019b, Sec. 4).

        It includes the loss's own reduction, so it EQUALS the autograd weights of
        :func:`dmlkit.weights.pair_weights` (W_ij = -dL/dS_ij on positives, +dL/dS_ij on
        negatives, 0 elsewhere). Losses with a closed form override this; the base raises a
        ValueError (their weights come from autograd only).
        """
        raise self._no_closed_form()

    def _no_closed_form(self, supported: str | None = None) -> ValueError:
        """The error of :meth:`closed_form_weights` for a loss (or these settings) without one;
        ``supported`` names the settings that have one."""
        if supported is None:
            return ValueError(f"no closed form for {type(self).__name__}: its pair weights come "
                              "from autograd only (dmlkit.weights.pair_weights)")
        return ValueError(f"no closed form for {type(self).__name__} with these settings; "
                          f"supported: {supported}")

    def extra_repr(self) -> str:
        parts = [f"{k}={getattr(self, k)!r}" for k in self.hyperparameters if hasattr(self, k)]
        parts.append(f"normalize={self.normalize}")
        if self.chunk_size is not None:
            parts.append(f"chunk_size={self.chunk_size!r}")
        return ", ".join(parts)


def zero_loss(batch: PairBatch) -> torch.Tensor:
    """A finite zero that is still connected to the graph (so backward() works, grads are 0)."""
    return batch.S.sum() * 0.0
