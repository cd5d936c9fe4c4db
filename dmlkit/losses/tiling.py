"""Exact tiled pair losses: the loss and its gradient without the (B, M) similarity matrix.

By Theorem 3.1 of Wang et al. 2019b the gradient of an S-based loss is
``sum_ij dL/dS_ij dS_ij/dtheta``, so a loss can be computed tile by tile when it is written as

(a) per-row statistics accumulated over column tiles without autograd (hardest positive /
    negative, log-sum-exp accumulators, counts, the sorted positive thresholds of a row),
    in one or more streaming passes,
(b) its value from those statistics, and
(c) ``G = dL/dS`` on a tile as a function of the tile ``S_tile``, its masks and the row
    statistics (plus ``G`` on a few pairs per row: the positive slots, the hardest pairs).

A loss states (a)-(c) in a :class:`TileFormulation` (its method ``tile_formulation``, next to
``compute`` in its own module). :class:`_TiledPairLoss` (a ``torch.autograd.Function``)
runs them: the forward pass streams the tiles ``S_IJ = Q_I R_J^T``; the backward pass
recomputes each tile, as flash attention does, and accumulates ``dQ_I += G_IJ R_J`` and
``dR_J += G_IJ^T Q_I``. Peak memory is O(chunk^2 + (B + M) D + B w) instead of O(B M), plus
the tile cache: the forward's last pass keeps its first S tiles for the backward up to
:func:`cache_budget` bytes (default 512 MiB, :func:`set_cache_budget` or the environment
variable ``DMLKIT_TILE_CACHE``; 0 recomputes every tile, with the same result), on CPU in
one slab of memory kept from call to call (:func:`release_cache_memory` frees it). In-batch
(R = Q) each off-diagonal tile product serves both tiles (I, J) and (J, I) (the mirror is a
transposed view, and elementwise functions of a tile that a formulation marks with
:meth:`Tile.elementwise`, such as S with -inf off the negatives, are computed once for
both). A formulation that reads tiles only through their negatives
(:attr:`TileFormulation.masked_tiles`) gets the products with -inf written in place, and
tile-shaped results can go into scratch tensors reused by every tile (:meth:`Tile.buffer`).

The positives of a row are few (w, read from the labels as :attr:`PairBatch.pos_slots`): the
engine computes their similarities ``s_pos`` (B, w) first, as row-wise dot products, and a
formulation handles every positive-pair term on these slots (so the hardest positive, the
sorted thresholds of the triplet counts, ... are known before the first tile pass, and most
losses need a single pass); the tiles only carry the negatives (``tile.neg``) and never the
diagonal (a sample is its own positive by label, excluded from the slots). A loss whose terms
couple a row's positives with the columns (angular: ``s_pn``) reads the slots' similarities to
the tile's columns through :func:`slot_tile_blocks` and records their gradient in
``tile.slot_grads``, which the engine sends to both references.

Exactness: the tiled value and gradient equal the dense ones up to floating-point summation
order (float64: relative 1e-15 in the tests, which require 1e-10). The one difference of
semantics: a positive and a negative whose similarities tie only up to rounding (the same
vector as a positive and as a negative reference, say) may compare differently, since
``s_pos`` and the tiles are different products; exact ties (exactly representable
similarities) compare as in the dense path.

``chunk_size`` (:attr:`PairLoss.chunk_size`): None = dense (the reference and default), an int =
tiles of at most that many rows and columns, ``"auto"`` = dense when the estimated dense buffers
(:data:`DENSE_BUFFERS` (B, M) matrices) fit :func:`auto_budget` bytes (default 2 GiB, set
with :func:`set_auto_budget` or the environment variable ``DMLKIT_TILING_BUDGET``), tiles of
:func:`auto_chunk` (1024) otherwise.

>>> import torch
>>> from dmlkit import losses
>>> emb, labels = torch.randn(40, 8, dtype=torch.float64), torch.arange(40) % 5
>>> dense = losses.build("multi_similarity")
>>> tiled = losses.build("multi_similarity", chunk_size=16)
>>> bool(torch.isclose(dense(emb, labels), tiled(emb, labels), rtol=1e-12))
True
>>> losses.build("multi_similarity", chunk_size=0)
Traceback (most recent call last):
...
ValueError: chunk_size must be None, 'auto' or a positive int, got 0
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import weakref

import torch
import torch.nn.functional as F

from .tiles import Tile, TileContext, TileFormulation, _slot_range, mask_non_negatives_

__all__ = [
    "DENSE_BUFFERS", "auto_budget", "auto_chunk", "cache_budget", "check_chunk_size",
    "dense_agreement", "release_cache_memory", "resolve_chunk_size", "set_auto_budget",
    "set_cache_budget",
    "tiled_forward", "tiled_pair_grad",
]

#: (B, M) buffers a dense loss is assumed to hold at its peak (S, masks, exp terms, gradient)
DENSE_BUFFERS = 8

_DEFAULT_BUDGET = 2 * 1024 ** 3
_budget = [int(os.environ.get("DMLKIT_TILING_BUDGET", _DEFAULT_BUDGET))]


def set_auto_budget(nbytes: int) -> None:
    """Set the memory budget (bytes) under which ``chunk_size="auto"`` stays dense."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Integral) or nbytes <= 0:
        raise ValueError(f"the auto budget must be a positive number of bytes, got {nbytes!r}")
    _budget[0] = int(nbytes)


def auto_budget() -> int:
    """The memory budget (bytes) of ``chunk_size="auto"`` (default 2 GiB)."""
    return _budget[0]


_DEFAULT_CACHE = 512 * 1024 ** 2
_cache_budget = [int(os.environ.get("DMLKIT_TILE_CACHE", _DEFAULT_CACHE))]


def set_cache_budget(nbytes: int) -> None:
    """Set the bytes of S tiles the forward pass may keep for the backward pass (0: recompute
    every tile; the results are the same either way)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Integral) or nbytes < 0:
        raise ValueError(f"the tile cache budget must be a number of bytes >= 0, got {nbytes!r}")
    _cache_budget[0] = int(nbytes)
    with _slab_lock:
        _SLABS.clear()               # a cache in use keeps its own reference


def cache_budget() -> int:
    """The bytes of S tiles kept from the forward for the backward pass (default 512 MiB)."""
    return _cache_budget[0]


def check_chunk_size(value):
    """Validate a ``chunk_size``: None, ``"auto"`` or a positive int (ValueError otherwise)."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"chunk_size must be None, 'auto' or a positive int, got {value!r}")
    return int(value)


def _itemsize(dtype: torch.dtype) -> int:
    return 8 if dtype == torch.float64 else 4


#: the tile side of ``"auto"`` (measured fastest on CPU: 1024 beats 2048 and 4096 at B =
#: 16,384 by 20-40 %, smaller tiles stay in cache), unless the budget needs smaller ones
AUTO_CHUNK = 1024


def auto_chunk(itemsize: int = 4, budget: int | None = None) -> int:
    """The tile side of ``"auto"``: :data:`AUTO_CHUNK`, or less when :data:`DENSE_BUFFERS`
    square tiles would take more than half the budget (a multiple of 256, at least 256)."""
    budget = auto_budget() if budget is None else budget
    side = int(math.sqrt(budget / (2 * DENSE_BUFFERS * itemsize)))
    return min(AUTO_CHUNK, max(256, side // 256 * 256))


def resolve_chunk_size(chunk_size, B: int, M: int, dtype: torch.dtype,
                       dense_elements: int | None = None) -> int | None:
    """The tile side for a (B, M) problem: None (dense) or an int. ``dense_elements``: the
    elements the dense path holds at its peak (default :data:`DENSE_BUFFERS` B M)."""
    if chunk_size is None or not isinstance(chunk_size, str):
        return chunk_size
    size = _itemsize(dtype)
    elements = DENSE_BUFFERS * B * M if dense_elements is None else dense_elements
    if elements * size <= auto_budget():
        return None
    return auto_chunk(size)


def _apply_slot_grads(tile: Tile, r: torch.Tensor, d_ref: torch.Tensor | None) -> None:
    """The gradient of the tile's ``slot_grads`` (dL/ds_pn): d r_p += Gp r_n, d r_n += Gp^T r_p
    (p and n are references; in-batch both are queries and ``d_ref`` is dQ)."""
    if d_ref is None or not tile.slot_grads:
        return
    index = tile.ctx.slots[0][tile.rows]
    rc = r[tile.cols]
    for lo, hi, Gp in tile.slot_grads:
        idx = index[lo:hi].reshape(-1)
        flat = Gp.reshape(-1, Gp.shape[-1]).to(r.dtype)
        d_ref.index_add_(0, idx, flat @ rc)
        d_ref[tile.cols] += flat.t() @ r[idx]


def _blocks(n: int, chunk: int):
    return [(i, min(i + chunk, n)) for i in range(0, n, chunk)]


def _slot_rows(chunk: int, width: int, dim: int) -> int:
    """Rows per block of a (rows, w, D) gather: about four tiles' worth of elements."""
    return max(1, 4 * chunk * chunk // max(1, width * dim))


def _slot_similarities(q, r, ctx: TileContext, chunk: int) -> torch.Tensor:
    """``s_pos`` (B, w): the similarity of every positive slot (0 on padding), before the
    formulation's passes: row-wise dot products, or for wide rows a pass over the tiles."""
    index, valid = ctx.slots
    out = ctx.zeros(ctx.B, index.shape[1])
    if index.shape[1] == 0:
        return out
    if ctx.wide:                      # one product per class: its queries x its references
        for c in torch.unique(ctx.labels):
            rows = (ctx.labels == c).nonzero()[:, 0]
            cols = (ctx.ref_labels == c).nonzero()[:, 0]      # ascending: the slots' order
            block = q[rows] @ r[cols].t()
            if ctx.in_batch:                                   # rows == cols: drop i itself
                keep = ~torch.eye(len(rows), dtype=torch.bool, device=block.device)
                block = block[keep].view(len(rows), len(rows) - 1)
            elif ctx.exclude is not None:      # drop each row's excluded column, keep order
                keep = cols[None, :] != ctx.exclude[rows][:, None]
                order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
                block = block.gather(1, order)[:, :int(keep.sum(1).max())]
            out[rows, :block.shape[1]] = block
        return out.masked_fill_(~valid, 0.0)
    for i0, i1 in _blocks(ctx.B, _slot_rows(chunk, index.shape[1], q.shape[1])):
        out[i0:i1] = torch.einsum("rd,rkd->rk", q[i0:i1], r[index[i0:i1]])
    return out.masked_fill_(~valid, 0.0)


def _split_slot_grads(pairs: list, ctx: TileContext):
    """For wide rows, the pair gradients on the positive slots (summed, (B, w)) go into the
    tiles; the others stay pairs."""
    index = ctx.slots[0]
    if not ctx.wide:
        return None, pairs
    on_slots = [g for idx, g in pairs if idx is index]
    rest = [(idx, g) for idx, g in pairs if idx is not index]
    return (sum(on_slots) if on_slots else None), rest


def _tile_grad(form, tile: Tile, state: dict, slot_G) -> torch.Tensor | None:
    """The formulation's dL/dS on a tile plus, for wide rows, its positive slots' share."""
    G = form.tile_grad(tile, state)
    if slot_G is None:
        return G
    slot, local, here = _slot_range(tile)
    G = torch.zeros_like(tile.S) if G is None else G
    if slot.shape[1] == 0:
        return G
    values = torch.where(here, slot_G[tile.rows].gather(1, slot), 0.0).to(G.dtype)
    return G.scatter_add_(1, local, values)


#: CPU memory of the tile cache, kept from one call to the next: ``{dtype: flat tensor}``
#: (a fresh 512 MiB would be page-faulted in again at every step; CUDA's caching allocator
#: reuses memory by itself). :func:`release_cache_memory` frees it.
_SLABS: dict = {}
_slab_owner: list = [None]          # a weak reference to the cache using the slab, or None
_slab_lock = threading.Lock()       # taking and giving back the slab (threads calling losses)


def release_cache_memory() -> None:
    """Free the CPU memory the tile cache keeps between calls (it is allocated again, up to
    :func:`cache_budget`, by the next tiled call that needs a gradient)."""
    with _slab_lock:
        _SLABS.clear()
        _slab_owner[0] = None


class _TileCache:
    """S tiles of the forward's last pass, kept for the backward pass up to a byte budget
    (the first tiles of the sweep; the backward takes each once, and recomputes the others).
    On CPU the tiles are written into one slab of memory kept between calls (so a training
    step does not fault in fresh pages for them); a second cache alive at the same time (two
    tiled losses in one graph) allocates its own tiles."""

    def __init__(self, budget: int):
        self.budget, self.used, self.tiles, self.reading = budget, 0, {}, False
        self.slab: torch.Tensor | None = None

    def _slab_view(self, a: torch.Tensor, cols: int) -> torch.Tensor | None:
        """Where the product of ``a`` (rows, D) with ``cols`` columns goes in the slab, or
        None (not on CPU, or the slab is another live cache's)."""
        if a.device.type != "cpu":
            return None
        if self.slab is None:
            with _slab_lock:
                owner = _slab_owner[0]
                if owner is not None and owner() is not None:
                    return None                   # in use by another live cache
                numel = self.budget // a.element_size()
                slab = _SLABS.get(a.dtype)
                if slab is None or slab.numel() < numel:
                    _SLABS.pop(a.dtype, None)
                    slab = _SLABS[a.dtype] = torch.empty(numel, dtype=a.dtype)
                self.slab = slab
                _slab_owner[0] = weakref.ref(self)
        start = self.used // a.element_size()
        return self.slab[start:start + a.shape[0] * cols].view(a.shape[0], cols)

    def product(self, a: torch.Tensor, b: torch.Tensor, key: tuple) -> torch.Tensor:
        if self.reading:
            S = self.tiles.pop(key, None)
            return a @ b.t() if S is None else S
        size = a.shape[0] * b.shape[0] * a.element_size()
        if self.used + size > self.budget:
            return a @ b.t()
        out = self._slab_view(a, b.shape[0])
        S = a @ b.t() if out is None else torch.mm(a, b.t(), out=out)
        self.tiles[key] = S
        self.used += size
        return S

    def release(self) -> None:
        """The backward is done with the tiles: the slab is free for the next call."""
        self.tiles, self.slab = {}, None
        with _slab_lock:
            owner = _slab_owner[0]
            if owner is not None and owner() is self:
                _slab_owner[0] = None


def _product(a, b, key, cache: _TileCache | None) -> torch.Tensor:
    return a @ b.t() if cache is None else cache.product(a, b, key)


def _new_tile(S: torch.Tensor, r0: int, c0: int, ctx: TileContext, masked: bool,
              workspace: dict | None = None) -> Tile:
    """The tile of the product S at (r0, c0); ``masked``: -inf written on its non-negative
    pairs in place (again on a cached product: the same index writes, harmless);
    ``workspace``: the sweep's scratch tensors (:meth:`Tile.buffer`)."""
    tile = Tile(S, r0, c0, ctx, masked=masked, workspace=workspace)
    if masked:
        mask_non_negatives_(S, tile)
    return tile


def _mirror(tile: Tile) -> Tile:
    """In-batch, the tile (J, I) as a transposed view of (I, J), with its mask if known."""
    mirror = Tile(tile.S.t(), tile.c0, tile.r0, tile.ctx, masked=tile.masked,
                  workspace=tile.workspace, mirrored=True)
    if "_elementwise" in tile.__dict__:
        mirror.__dict__["_elementwise"] = {k: v.t() for k, v in
                                           tile.__dict__["_elementwise"].items()}
    return mirror


def _tile_pairs(q: torch.Tensor, r: torch.Tensor, ctx: TileContext, chunk: int,
                cache: _TileCache | None = None, masked: bool = False):
    """Yield ``(tile, mirror)``: every tile once; in-batch the tile (J, I) is the transpose of
    (I, J) and comes from the same product (``mirror`` True). ``cache``: keep (forward) or
    reuse (backward) the products; ``masked``: tiles of the negatives only
    (:attr:`TileFormulation.masked_tiles`). The tiles share one workspace: a consumer
    finishes with a tile before it takes the next."""
    workspace = {}
    if ctx.in_batch:
        blocks = _blocks(ctx.B, chunk)
        for a, (i0, i1) in enumerate(blocks):
            for (j0, j1) in blocks[a:]:
                S = _product(q[i0:i1], q[j0:j1], (i0, j0), cache)
                tile = _new_tile(S, i0, j0, ctx, masked, workspace)
                yield tile, False
                if j0 != i0:     # a transposed view: formulations never write into tile.S
                    yield _mirror(tile), True
        return
    for i0, i1 in _blocks(ctx.B, chunk):
        for j0, j1 in _blocks(ctx.M, chunk):
            S = _product(q[i0:i1], r[j0:j1], (i0, j0), cache)
            yield _new_tile(S, i0, j0, ctx, masked, workspace), False


# =========================================================================== the engine
def _run_passes(form: TileFormulation, q, r, ctx: TileContext, chunk: int,
                cache: _TileCache | None = None) -> dict:
    """The formulation's streaming passes; the last one fills ``cache``."""
    state = form.start(ctx)
    state["s_pos"] = _slot_similarities(q, r, ctx, chunk)
    form.prepare(state, ctx)
    for k in range(form.passes):
        last = cache if k == form.passes - 1 else None
        for tile, _ in _tile_pairs(q, r, ctx, chunk, last, form.masked_tiles):
            form.accumulate(k, tile, state)
        form.finish(k, state, ctx)
    return state


def _pair_grad_into(dq, dr, q, r, pairs, chunk: int) -> None:
    """dq_i += sum_k G_ik r_{idx_ik}; dr_{idx_ik} += G_ik q_i, in row chunks."""
    for index, G in pairs:
        if index.shape[1] == 0:
            continue
        for i0, i1 in _blocks(index.shape[0], _slot_rows(chunk, index.shape[1], q.shape[1])):
            idx, g = index[i0:i1], G[i0:i1].to(q.dtype)
            dq[i0:i1] += torch.einsum("rk,rkd->rd", g, r[idx])
            if dr is not None:    # None: the references need no gradient (a memory bank)
                dr.index_add_(0, idx.reshape(-1), (g[:, :, None] * q[i0:i1, None, :])
                              .reshape(-1, q.shape[1]))


class _TiledPairLoss(torch.autograd.Function):
    """The tiled loss of (Q, R): forward streams the tiles, backward recomputes them."""

    @staticmethod
    def forward(fctx, q, r, form, ctx, chunk):
        needs_grad = any(fctx.needs_input_grad[:2])
        cache = _TileCache(cache_budget()) if needs_grad and cache_budget() > 0 else None
        with torch.no_grad():
            state = _run_passes(form, q, r, ctx, chunk, cache)
            value = form.value(state, ctx)
        fctx.save_for_backward(q, r)
        fctx.form, fctx.state, fctx.tctx, fctx.chunk = form, state, ctx, chunk
        fctx.cache = cache
        return value

    @staticmethod
    def backward(fctx, grad):
        q, r = fctx.saved_tensors
        form, state, ctx, chunk = fctx.form, fctx.state, fctx.tctx, fctx.chunk
        cache, fctx.cache = fctx.cache, None      # taken once (retain_graph: recomputed)
        if cache is not None:
            cache.reading = True
        with torch.no_grad():
            dq = torch.zeros_like(q)
            want_r = ctx.in_batch or fctx.needs_input_grad[1]
            dr = dq if ctx.in_batch else (torch.zeros_like(r) if want_r else None)
            slot_G, pairs = _split_slot_grads(form.pair_grads(state, ctx), ctx)
            if ctx.in_batch:
                _symmetric_backward(form, state, q, ctx, chunk, dq, slot_G, cache)
            else:
                for tile, _ in _tile_pairs(q, r, ctx, chunk, cache, form.masked_tiles):
                    G = _tile_grad(form, tile, state, slot_G)
                    if G is not None:
                        dq[tile.rows].addmm_(G, r[tile.cols])
                        if dr is not None:
                            dr[tile.cols].addmm_(G.t(), q[tile.rows])
                    _apply_slot_grads(tile, r, dr)
            _pair_grad_into(dq, dr, q, r, pairs, chunk)
        if cache is not None:
            cache.release()
        dq.mul_(grad)
        if ctx.in_batch:   # q and r are the same tensor: its whole gradient goes once
            return dq, None, None, None, None
        return dq, (dr.mul_(grad) if dr is not None else None), None, None, None


def _symmetric_backward(form, state, q, ctx, chunk, dq, slot_G=None, cache=None) -> None:
    """In-batch: per block pair I <= J one product S_IJ (or the forward's, from ``cache``),
    H = G_IJ + G_JI^T, and dQ_I += H Q_J, dQ_J += H^T Q_I (the symmetric Gram's backward, tile
    by tile)."""
    blocks, workspace = _blocks(ctx.B, chunk), {}
    for a, (i0, i1) in enumerate(blocks):
        for (j0, j1) in blocks[a:]:
            S = _product(q[i0:i1], q[j0:j1], (i0, j0), cache)
            tile = _new_tile(S, i0, j0, ctx, form.masked_tiles, workspace)
            G = _tile_grad(form, tile, state, slot_G)
            _apply_slot_grads(tile, q, dq)
            if j0 != i0:
                tile = _mirror(tile)                 # a view: the mirror tile's G is laid
                Gt = _tile_grad(form, tile, state, slot_G)   # out as S^T, so Gt^T is S's
                _apply_slot_grads(tile, q, dq)
                if Gt is not None:
                    Gt = Gt.t()
                    G = Gt if G is None else G.add_(Gt)
                if G is not None:
                    dq[i0:i1].addmm_(G, q[j0:j1])
                    dq[j0:j1].addmm_(G.t(), q[i0:i1])
            elif G is not None:
                G = G.t().contiguous().add_(G)       # a blocked copy beats a strided add
                dq[i0:i1].addmm_(G, q[i0:i1])


def _inputs(loss, embeddings, labels, ref_embeddings, ref_labels, exclude=None):
    """Validated, promoted (and normalised) Q, R with labels: the input of the engine."""
    from .base import check_batch_inputs
    emb, lab, ref, ref_lab, in_batch = check_batch_inputs(embeddings, labels, ref_embeddings,
                                                          ref_labels)
    q = emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb
    if loss.normalize:
        q = F.normalize(q, dim=1)
    if in_batch:
        r = q
    else:
        r = ref.float() if ref.dtype in (torch.float16, torch.bfloat16) else ref
        r = r.to(q.dtype)
        if loss.normalize:
            r = F.normalize(r, dim=1)
    ctx = TileContext(B=q.shape[0], M=r.shape[0], in_batch=in_batch, labels=lab,
                      ref_labels=ref_lab, dtype=q.dtype, device=q.device,
                      normalized=loss.normalize, embeddings=q.detach(),
                      ref_embeddings=r.detach(), exclude=_check_exclude(exclude, lab, r))
    return emb, lab, ref, ref_lab, q, r, ctx


def _check_exclude(exclude, labels, r):
    if exclude is None:
        return None
    ex = torch.as_tensor(exclude, device=labels.device)
    if ex.shape != labels.shape or ex.dtype != torch.long:
        raise ValueError(f"exclude must be a (B,) int64 tensor of reference columns, got "
                         f"{tuple(ex.shape)} {ex.dtype}")
    if ex.numel() and (int(ex.min()) < 0 or int(ex.max()) >= r.shape[0]):
        raise ValueError(f"exclude holds columns outside 0..{r.shape[0] - 1}")
    return ex


def tiled_forward(loss, embeddings, labels, ref_embeddings=None, ref_labels=None,
                  chunk: int = 1024, exclude=None) -> torch.Tensor:
    """The loss of a :class:`~dmlkit.losses.PairLoss` computed in tiles of ``chunk`` (its
    ``tile_formulation()``), plus its non-S terms (``tiled_regularizer``). exclude: (B,)
    reference columns removed from each query's positives (query-vs-reference only; the
    cross-batch memory's own slot of each query)."""
    if exclude is not None and ref_embeddings is None:
        raise ValueError("exclude applies to query-vs-reference batches only")
    emb, lab, ref, ref_lab, q, r, ctx = _inputs(loss, embeddings, labels, ref_embeddings,
                                                ref_labels, exclude)
    form = loss.tile_formulation(ctx)
    value = _TiledPairLoss.apply(q, r, form, ctx, int(chunk))
    return value + loss.tiled_regularizer(emb, lab, ref, ref_lab, ctx)


@torch.no_grad()
def tiled_pair_grad(loss, embeddings, labels, ref_embeddings=None, ref_labels=None,
                    chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, dL/dS)`` (B, M) assembled from the tiles the engine uses (for the weight view:
    :func:`dmlkit.weights.pair_weights` of a tiled loss). Dense output: analysis sizes."""
    _, _, _, _, q, r, ctx = _inputs(loss, embeddings, labels, ref_embeddings, ref_labels)
    form = loss.tile_formulation(ctx)
    state = _run_passes(form, q, r, ctx, int(chunk))
    S = q @ r.t()
    if ctx.in_batch and ctx.normalized:
        S.fill_diagonal_(1.0)
    G = torch.zeros_like(S)
    index = ctx.slots[0]
    for tile, _ in _tile_pairs(q, r, ctx, int(chunk), masked=form.masked_tiles):
        g = form.tile_grad(tile, state)
        if g is not None:
            G[tile.rows, tile.cols] += g
        if ctx.in_batch:     # s_pn terms are entries of S in-batch (query-vs-reference: not S)
            for lo, hi, Gp in tile.slot_grads:
                rows = index[tile.r0 + lo:tile.r0 + hi].reshape(-1, 1)
                G.index_put_((rows, tile.col_ids()[None, :]), Gp.reshape(rows.shape[0], -1)
                             .to(G.dtype), accumulate=True)
    for index, g in form.pair_grads(state, ctx):
        G.scatter_add_(1, index, g.to(G.dtype))
    return S, G


def dense_agreement(name: str, embeddings, labels, chunk: int, **params):
    """How far the tiled loss ``name`` (tiles of ``chunk``) is from its dense path on one
    in-batch problem: ``(W_dense, W_tiled, diffs)`` with the pair weights of both
    (:func:`dmlkit.weights.pair_weights`) and ``diffs`` = the largest absolute weight
    difference, the largest weight, and the relative differences of the value and of the
    gradient with respect to the embeddings (notebook 11's check)."""
    from .. import weights
    from .registry import build

    dense, tiled = build(name, **params), build(name, chunk_size=chunk, **params)
    results = []
    for loss in (dense, tiled):
        _, W = weights.pair_weights(loss, embeddings, labels)
        x = embeddings.detach().clone().requires_grad_(True)
        value = loss(x, labels)
        value.backward()
        results.append((W, float(value.detach()), x.grad))
    (W_d, v_d, g_d), (W_t, v_t, g_t) = results
    diffs = {"weight_max_abs_diff": float((W_t - W_d).abs().max()),
             "weight_max": float(W_d.abs().max()),
             "value_rel_diff": abs(v_t - v_d) / max(abs(v_d), 1e-300),
             "grad_rel_diff": float((g_t - g_d).abs().max() / g_d.abs().max().clamp_min(1e-300))}
    return W_d, W_t, diffs
