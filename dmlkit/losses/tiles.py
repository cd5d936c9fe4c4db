"""The tiles a loss's tile formulation is written against: :class:`TileContext` (what every
tile of a batch shares: sizes, labels, the positive slots), :class:`Tile` (one block of S with
its masks), the positive slots inside a tile, and :class:`TileFormulation`, the interface of
(a) row statistics, (b) the value and (c) dL/dS on a tile that a loss states next to its
``compute``. The engine that streams the tiles and runs the formulations is
:mod:`dmlkit.losses.tiling`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

__all__ = ["WIDE_SLOTS", "SlotGradTiles", "Tile", "TileContext", "TileFormulation",
           "elementwise_grad", "lse_update_", "mask_non_negatives_", "slot_grad",
           "slot_tile_blocks"]

#: rows with more positives than this (a memory bank with few classes) read and write their
#: positive slots through the tiles instead of gathering (B, w, D) reference rows
WIDE_SLOTS = 64


@dataclass
class TileContext:
    """What every tile shares: sizes, labels, the positive slots and per-row counts."""

    B: int
    M: int
    in_batch: bool
    labels: torch.Tensor
    ref_labels: torch.Tensor
    dtype: torch.dtype
    device: torch.device
    normalized: bool
    embeddings: torch.Tensor            # the (promoted, normalised) queries, no grad
    ref_embeddings: torch.Tensor
    extra: dict = field(default_factory=dict)   # loss-specific inputs (e.g. attention)
    #: (B,) long or None: for each query one reference column that is not its positive although
    #: it has its label (a cross-batch memory's copy of the query itself); never a negative
    exclude: torch.Tensor | None = None

    @cached_property
    def slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The positives of every row, ``(index, valid)`` (B, w): :attr:`PairBatch.pos_slots`."""
        from .base import _left_align, _slots_from_labels
        index, valid = _slots_from_labels(self.labels, self.ref_labels, self.in_batch)
        if self.exclude is not None:
            valid = valid & (index != self.exclude[:, None])
            index, valid = _left_align(index, valid)
        return index, valid

    @cached_property
    def slot_columns(self) -> torch.Tensor:
        """(B, w) the positive columns of every row, ascending, padded with M (sorted rows
        for binary search)."""
        index, valid = self.slots
        return torch.where(valid, index, self.M).contiguous()

    @cached_property
    def wide(self) -> bool:
        """Rows with more positives than :data:`WIDE_SLOTS`: their slots are read and written
        through the tiles."""
        return self.slots[0].shape[1] > WIDE_SLOTS

    @cached_property
    def n_pos(self) -> torch.Tensor:
        """(B,) number of positives of each row."""
        return self.slots[1].sum(1)

    @cached_property
    def n_neg(self) -> torch.Tensor:
        """(B,) number of negatives of each row (neither a positive nor, in-batch, itself)."""
        n = self.M - self.n_pos - (1 if self.in_batch else 0)
        if self.exclude is not None:     # the excluded column: same label, not a positive
            n = n - (self.ref_labels[self.exclude] == self.labels).long()
        return n

    def zeros(self, *shape, dtype=None) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dtype or self.dtype, device=self.device)

    def full(self, shape, value, dtype=None) -> torch.Tensor:
        return torch.full(shape, value, dtype=dtype or self.dtype, device=self.device)


@dataclass
class Tile:
    """One (r, c) tile: ``S`` (no grad), its row and column offsets; the negative mask."""

    S: torch.Tensor
    r0: int
    c0: int
    ctx: TileContext
    #: ``[(lo, hi, Gp)]``: dL/ds_pn (hi - lo, w, c) between the positive slots p of the tile's
    #: rows lo:hi (tile-local) and its columns n, for a formulation whose terms couple a row's
    #: positives with the columns (angular's s_pn, see :func:`slot_tile_blocks`); the
    #: formulation's :meth:`TileFormulation.tile_grad` appends, the engine applies them
    slot_grads: list = field(default_factory=list)
    #: S already holds -inf on every pair that is not a negative (the engine wrote it in place
    #: for a formulation with :attr:`TileFormulation.masked_tiles`): S is the negatives only
    masked: bool = False
    #: the engine's scratch tensors of one sweep (:meth:`buffer`), None: fresh allocations
    workspace: dict | None = None
    #: the in-batch mirror (J, I) of a product (I, J): its buffers are not the tile's
    mirrored: bool = False

    @property
    def rows(self) -> slice:
        return slice(self.r0, self.r0 + self.S.shape[0])

    @property
    def cols(self) -> slice:
        return slice(self.c0, self.c0 + self.S.shape[1])

    @property
    def not_neg(self) -> torch.Tensor:
        """(r, c) bool: the pair is not a negative (same label; the diagonal in-batch)."""
        return self.elementwise("not_neg", lambda t: t.ctx.labels[t.rows, None]
                                == t.ctx.ref_labels[None, t.cols])

    def elementwise(self, key: str, fn) -> torch.Tensor:
        """``fn(tile)`` (r, c), computed once per key and shared with the in-batch mirror
        tile as its transpose (:mod:`dmlkit.losses.tiling` makes the mirror): for elementwise
        functions of S and the label masks only, which no caller may write into."""
        cached = self.__dict__.setdefault("_elementwise", {})
        if key not in cached:
            cached[key] = fn(self)
        return cached[key]

    def buffer(self, name: str) -> torch.Tensor:
        """An uninitialised tensor laid out as S (the mirror's transposed), for a result the
        formulation writes with ``out=``: one scratch tensor per name, reused by every tile of
        the sweep (so valid until the engine moves to the next tile; the tile and its mirror
        have their own). Reuse spares a fresh allocation, and its page faults, per tile."""
        if self.workspace is None:
            return torch.empty_like(self.S)
        n = self.S.numel()
        base = self.workspace.get((name, self.mirrored))
        if base is None or base.numel() < n or base.dtype != self.S.dtype:
            base = self.workspace[(name, self.mirrored)] = torch.empty(
                n, dtype=self.S.dtype, device=self.S.device)
        return base[:n].as_strided(self.S.shape, self.S.stride())

    def negatives_only(self) -> torch.Tensor:
        """S with -inf on every pair that is not a negative, (r, c), shared with the mirror
        tile (:meth:`elementwise`: never write into it). Written as a copy of S with -inf
        put on the few non-negative pairs (the rows' positive slots in the tile, the diagonal
        in-batch, the excluded column): O(r w) index writes instead of a masked pass. A
        :attr:`masked` tile is its own negatives only (no copy)."""
        if self.masked:
            return self.S
        return self.elementwise("negatives_only", lambda t: mask_non_negatives_(t.S.clone(), t))

    @property
    def neg(self) -> torch.Tensor:
        """(r, c) bool: the negative pairs of the tile."""
        return self.elementwise("neg", lambda t: ~t.not_neg)

    def fill_non_negatives_(self, X: torch.Tensor, value: float) -> torch.Tensor:
        """Set every entry of X that is not a negative pair to ``value``, in place."""
        return X.masked_fill_(self.not_neg, value)

    def col_ids(self) -> torch.Tensor:
        return torch.arange(self.c0, self.c0 + self.S.shape[1], device=self.S.device)


def mask_non_negatives_(X: torch.Tensor, tile: Tile) -> torch.Tensor:
    """Write -inf into X (the tile's shape) on every pair of the tile that is not a negative,
    in place, by index writes; returns X."""
    ctx, (r, c) = tile.ctx, tile.S.shape
    ninf = float("-inf")
    if ctx.wide:
        _, local, here = _slot_range(tile)
    else:
        index, valid = ctx.slots
        local = index[tile.rows] - tile.c0
        here = valid[tile.rows] & (local >= 0) & (local < c)
    rows, k = here.nonzero(as_tuple=True)
    X[rows, local[rows, k]] = ninf
    if ctx.in_batch:        # the diagonal: i == j inside the tile
        lo, hi = max(tile.r0, tile.c0), min(tile.r0 + r, tile.c0 + c)
        if lo < hi:
            i = torch.arange(lo, hi, device=X.device)
            X[i - tile.r0, i - tile.c0] = ninf
    elif ctx.exclude is not None:
        ex = ctx.exclude[tile.rows] - tile.c0
        rows = ((ex >= 0) & (ex < c)).nonzero()[:, 0]
        X[rows, ex[rows]] = ninf
    return X


def slot_tile_blocks(tile: Tile):
    """Yield ``(lo, hi, Sp)``: the similarities ``Sp`` (hi - lo, w, c) between the positive
    slots p of the tile's rows lo:hi (tile-local) and the tile's columns n, the reference-
    reference ``s_pn`` (in-batch: entries of S). Row blocks of about one tile's elements;
    padding slots (``ctx.slots[1]`` False) hold meaningless values for the caller to mask."""
    index = tile.ctx.slots[0][tile.rows]
    rows, w = index.shape
    if w == 0:
        return
    r = tile.ctx.ref_embeddings
    cols = r[tile.cols].t()
    step = max(1, rows // w)
    for lo in range(0, rows, step):
        hi = min(lo + step, rows)
        yield lo, hi, (r[index[lo:hi].reshape(-1)] @ cols).view(hi - lo, w, -1)


def _slot_range(tile: Tile) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The positive slots of the tile's rows that fall in its columns: ``(slot, local, here)``
    (r, k) with k <= the tile width: slot positions, their tile-local columns (clamped) and
    which are real. A row's valid slots are its positive columns in ascending order, so
    those in [c0, c1) are one run of slots, found by binary search (O(r k) per tile, not
    O(r w) for rows with w positives)."""
    cols = tile.ctx.slot_columns[tile.rows]
    c = tile.S.shape[1]
    bounds = torch.tensor([tile.c0, tile.c0 + c], device=cols.device, dtype=cols.dtype)
    lo_hi = torch.searchsorted(cols, bounds.expand(cols.shape[0], 2).contiguous())
    start, end = lo_hi[:, 0], lo_hi[:, 1]
    width = int((end - start).max()) if cols.shape[0] else 0
    slot = start[:, None] + torch.arange(width, device=cols.device)[None, :]
    here = slot < end[:, None]
    slot = slot.clamp_max_(max(cols.shape[1] - 1, 0))
    local = (cols.gather(1, slot) - tile.c0).clamp_(0, max(c - 1, 0))
    return slot, local, here


class TileFormulation:
    """A loss written for the tiling engine (see the module docstring).

    ``state`` is a dict of per-row tensors that the formulation fills; the engine first puts
    ``state["s_pos"]``, the (B, w) similarities of the positive slots (row-wise dot products),
    and calls :meth:`prepare`; then ``passes`` streaming passes over the tiles call
    :meth:`accumulate` (``k`` = the pass), each followed by :meth:`finish`. :meth:`value` gives
    the 0-dim loss; :meth:`tile_grad` dL/dS on a tile (None: no term on the tile's pairs);
    :meth:`pair_grads` dL/dS on a few pairs per row, ``[(index (B, k), G (B, k))]`` (columns,
    0 where G is 0).
    """

    passes: int = 1
    #: True: the formulation reads a tile's S only through :meth:`Tile.negatives_only`, so the
    #: engine writes -inf on the tile's non-negative pairs into the product itself (before the
    #: tile cache keeps it), which spares a copy of every tile in both passes
    masked_tiles: bool = False

    def start(self, ctx: TileContext) -> dict:
        return {}

    def prepare(self, state: dict, ctx: TileContext) -> None:
        pass

    def accumulate(self, k: int, tile: Tile, state: dict) -> None:
        pass

    def finish(self, k: int, state: dict, ctx: TileContext) -> None:
        pass

    def value(self, state: dict, ctx: TileContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def tile_grad(self, tile: Tile, state: dict) -> torch.Tensor | None:
        return None

    def pair_grads(self, state: dict, ctx: TileContext) -> list:
        return []


class SlotGradTiles(TileFormulation):
    """A formulation whose :meth:`finish` sets ``state["empty"]`` (no term at all),
    ``state["value"]`` and ``state["ds"]``, dL/ds on the (B, w) positive slots (by autograd
    on the slots: their terms are few)."""

    def value(self, state: dict, ctx: TileContext) -> torch.Tensor:
        return ctx.zeros(()) if state["empty"] else state["value"]

    def pair_grads(self, state: dict, ctx: TileContext) -> list:
        return [] if state["empty"] else [(ctx.slots[0], state["ds"])]


def lse_update_(m: torch.Tensor, acc: torch.Tensor, z: torch.Tensor) -> None:
    """Streaming log-sum-exp of the rows of z (r, c) (-inf = excluded) into the running max
    ``m`` and sum ``acc = sum exp(z - m)`` (r,), in place; the row's value is ``m + log acc``."""
    new = torch.maximum(m, z.amax(1))
    safe = torch.where(torch.isfinite(new), new, torch.zeros((), dtype=new.dtype,
                                                             device=new.device))
    acc.mul_(torch.exp(m - safe)).add_(torch.exp(z - safe[:, None]).sum(1))
    m.copy_(new)


def elementwise_grad(fn, S: torch.Tensor, keep: torch.Tensor, scale) -> torch.Tensor:
    """``d/dS sum(keep * scale * fn(S))`` by autograd on the tile (the derivative semantics of
    the dense path: clamps, softplus thresholds); ``scale`` a number or an (r, 1) tensor."""
    with torch.enable_grad():
        s = S.detach().requires_grad_(True)
        terms = torch.where(keep, fn(s), 0.0)
        w = torch.as_tensor(scale, dtype=terms.dtype, device=terms.device).expand_as(terms)
        (g,) = torch.autograd.grad(terms, s, grad_outputs=w)
    return g


def slot_grad(fn, s: torch.Tensor, keep: torch.Tensor, scale) -> torch.Tensor:
    """:func:`elementwise_grad` on the (B, w) positive slots."""
    return elementwise_grad(fn, s, keep, scale)
