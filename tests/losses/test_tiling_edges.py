"""Edges of the tiled path (dmlkit.losses.tiling) that the equality tests of test_tiling.py do
not reach: the budgets and tile sides of ``chunk_size="auto"`` against their closed forms, the
validation messages, and a query's excluded reference column (the cross-batch memory's own
slot) against the dense loss of the same masks."""

import math
import re

import numpy as np
import pytest
import torch
from conftest import value_and_grads
from tile_cache_spy import spy_on_tile_caches

from dmlkit import losses
from dmlkit.losses import tiles, tiling
from dmlkit.losses.base import PairBatch
from dmlkit.similarity import similarity_matrix


@pytest.fixture
def budgets():
    """Restore both budgets (and drop the slab) after a test that sets them."""
    auto, cache = tiling.auto_budget(), tiling.cache_budget()
    yield
    tiling.set_auto_budget(auto)
    tiling.set_cache_budget(cache)


# ------------------------------------------------------------------ budgets and tile sides
def test_budget_setters_take_their_smallest_values_and_name_bad_ones(budgets):
    tiling.set_auto_budget(1)
    assert tiling.auto_budget() == 1 and type(tiling.auto_budget()) is int
    tiling.set_cache_budget(0)
    assert tiling.cache_budget() == 0
    tiling.set_cache_budget(12345)
    assert tiling.cache_budget() == 12345
    for bad in (0, -1, True, 1.5, "1"):
        with pytest.raises(ValueError, match="^" + re.escape(
                f"the auto budget must be a positive number of bytes, got {bad!r}") + "$"):
            tiling.set_auto_budget(bad)
    for bad in (-1, False, 2.0, "1"):
        with pytest.raises(ValueError, match="^" + re.escape(
                f"the tile cache budget must be a number of bytes >= 0, got {bad!r}") + "$"):
            tiling.set_cache_budget(bad)
    assert tiling.auto_budget() == 1 and tiling.cache_budget() == 12345


def test_a_new_cache_budget_drops_the_kept_slab(budgets):
    x = torch.randn(12, 5, dtype=torch.float64).requires_grad_(True)
    losses.build("multi_similarity", chunk_size=4)(x, torch.arange(12) % 3).backward()
    assert tiling._SLABS                   # the slab is kept from call to call
    tiling.set_cache_budget(10 ** 6)
    assert tiling._SLABS == {}


def test_check_chunk_size():
    assert tiling.check_chunk_size(None) is None
    assert tiling.check_chunk_size("auto") == "auto"
    assert tiling.check_chunk_size(1) == 1
    got = tiling.check_chunk_size(np.int64(3))
    assert got == 3 and type(got) is int
    for bad in ("AUTO", 0, -1, True, 2.5, [4]):
        with pytest.raises(ValueError, match="^" + re.escape(
                f"chunk_size must be None, 'auto' or a positive int, got {bad!r}") + "$"):
            tiling.check_chunk_size(bad)


def _closed_form_side(budget, itemsize):
    """min(1024, max(256, 256 floor(floor(sqrt(budget / (2 * 8 * itemsize))) / 256)))."""
    side = math.isqrt(budget // (2 * 8 * itemsize))
    return min(1024, max(256, side // 256 * 256))


@pytest.mark.parametrize("side", [100, 255, 256, 511, 512, 700, 1023, 1024, 1500, 5000])
def test_auto_chunk_is_its_closed_form(budgets, side):
    for itemsize in (4, 8):
        budget = side * side * 2 * tiling.DENSE_BUFFERS * itemsize
        want = _closed_form_side(budget, itemsize)
        assert tiling.auto_chunk(itemsize, budget) == want
        tiling.set_auto_budget(budget)
        assert tiling.auto_chunk(itemsize) == want
        if itemsize == 4:
            assert tiling.auto_chunk() == want           # float32 by default
    assert tiling.auto_chunk(4, 700 * 700 * 64) == 512 and tiling.auto_chunk(4, 1) == 256


@pytest.mark.parametrize("dtype,itemsize", [(torch.float64, 8), (torch.float32, 4),
                                            (torch.float16, 4), (torch.bfloat16, 4)])
def test_auto_is_dense_exactly_up_to_the_budget(budgets, dtype, itemsize):
    """Dense while DENSE_BUFFERS * B * M elements (or the loss's own count) of the compute
    dtype fit the budget, tiles of auto_chunk(itemsize) beyond (B != M)."""
    B, M = 10, 30
    need = tiling.DENSE_BUFFERS * B * M * itemsize
    tiling.set_auto_budget(need)
    assert tiling.resolve_chunk_size("auto", B, M, dtype) is None
    assert tiling.resolve_chunk_size("auto", M, B, dtype) is None
    tiling.set_auto_budget(need - 1)
    assert tiling.resolve_chunk_size("auto", B, M, dtype) == tiling.auto_chunk(itemsize) == 256
    tiling.set_auto_budget(700 * 700 * 2 * tiling.DENSE_BUFFERS * itemsize)
    assert tiling.resolve_chunk_size("auto", 2000, 3000, dtype) == 512
    tiling.set_auto_budget(1000 * itemsize)
    assert tiling.resolve_chunk_size("auto", B, M, dtype, dense_elements=1000) is None
    assert tiling.resolve_chunk_size("auto", B, M, dtype, dense_elements=1001) == 256
    for fixed in (None, 1, 7):
        assert tiling.resolve_chunk_size(fixed, B, M, dtype) == fixed
        assert tiling.resolve_chunk_size(fixed, B, M, dtype, dense_elements=1) == fixed


# ------------------------------------------------------------------ an excluded column
#: losses with a tile formulation, one per formulation family
EXCLUDE_LOSSES = [
    ("multi_similarity", {}),
    ("raw+semihard", dict(margin=0.4)),
    ("weighted_pair", dict(weighting="uniform", mining="hard")),
    ("binomial_deviance", {}),
    ("contrastive", {}),
    ("triplet", dict(mining="semihard")),
    ("triplet", dict(mining="batch_hard")),
    ("lifted_structure", {}),
    ("npair", {}),
    ("angular", {}),
    ("ddml", {}),
]


def _dense_with_exclusion(loss, q, ql, r, rl, exclude):
    """The dense loss of the masks the memory uses: column exclude[i] leaves the positives
    of row i and is no negative either (it has the row's label)."""
    S = similarity_matrix(q, r, normalize=loss.normalize)
    pos = ql[:, None] == rl[None, :]
    neg = ~pos
    pos[torch.arange(len(ql)), exclude] = False
    batch = PairBatch(S=S, pos=pos, neg=neg, labels=ql, ref_labels=rl, embeddings=q,
                      ref_embeddings=r, in_batch=False, normalized=loss.normalize)
    return loss.compute(batch) + loss.regularizer(batch)


@pytest.mark.parametrize("name,kw", EXCLUDE_LOSSES, ids=lambda v: str(v))
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("own_copy", [False, True])
def test_an_excluded_column_equals_the_dense_masks(monkeypatch, name, kw, wide, own_copy):
    """own_copy: each excluded column holds the query itself, as in a cross-batch memory; at
    similarity 1 it would be every row's hardest negative if a tile left it unmasked."""
    if wide:               # the positive slots through the tiles (a memory bank of few classes)
        monkeypatch.setattr(tiles, "WIDE_SLOTS", 1)
    g = torch.Generator().manual_seed(31)
    B, M, D = 6, 11, 4
    ql = torch.tensor([0, 1, 2, 0, 1, 2])
    rl = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0])
    # the columns of rows 0-5 are their own label's first, last and middle references (the
    # first and the last column of the bank included); every excluded column has the label
    exclude = torch.tensor([0, 7, 5, 10, 1, 8])
    assert torch.equal(rl[exclude], ql)
    q = torch.randn(B, D, generator=g, dtype=torch.float64)
    r = torch.randn(M, D, generator=g, dtype=torch.float64)
    if own_copy:
        r[exclude] = q
    leaves = [q.clone().requires_grad_(True), r.clone().requires_grad_(True)]
    torch.manual_seed(0)
    dense = losses.build(name, **kw)
    want = _dense_with_exclusion(dense, leaves[0], ql, leaves[1], rl, exclude)
    want_g = torch.autograd.grad(want, leaves)
    assert want_g[0].abs().max() > 0
    for chunk in (3, 4):     # 3 divides B = 6, neither divides M = 11
        torch.manual_seed(0)
        loss = losses.build(name, chunk_size=chunk, **kw)
        v, (gq, gr) = value_and_grads(
            lambda a, b, loss=loss, chunk=chunk: tiling.tiled_forward(loss, a, ql, b, rl, chunk,
                                                                      exclude=exclude), q, r)
        torch.testing.assert_close(v, want.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gq, want_g[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gr, want_g[1], rtol=1e-10, atol=1e-12)


def test_the_excluded_columns_are_checked():
    loss = losses.build("multi_similarity", chunk_size=4)
    q, ql = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 0])
    r, rl = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match=r"^exclude applies to query-vs-reference batches only$"):
        tiling.tiled_forward(loss, q, ql, exclude=torch.zeros(3, dtype=torch.long))
    for bad in (torch.zeros(2, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long),
                torch.zeros(3, dtype=torch.int32)):
        with pytest.raises(ValueError, match="^" + re.escape(
                f"exclude must be a (B,) int64 tensor of reference columns, got "
                f"{tuple(bad.shape)} {bad.dtype}") + "$"):
            tiling.tiled_forward(loss, q, ql, r, rl, exclude=bad)
    for bad in ([0, 5, 2], [-1, 1, 0]):
        with pytest.raises(ValueError, match=r"^exclude holds columns outside 0\.\.4$"):
            tiling.tiled_forward(loss, q, ql, r, rl, exclude=torch.tensor(bad))
    ok = tiling.tiled_forward(loss, q, ql, r, rl, exclude=[0, 4, 2])   # the extremes, a list
    assert torch.isfinite(ok)


# ------------------------------------------------------------------ the notebook's check
def test_dense_agreement_runs_the_tiles_of_its_chunk(monkeypatch):
    """The "tiled" side of dense_agreement is the engine with tiles of ``chunk`` (the dense
    side of both would agree trivially)."""
    chunks = []
    real = tiling.tiled_forward
    monkeypatch.setattr(tiling, "tiled_forward",
                        lambda *a, **k: chunks.append(a[5]) or real(*a, **k))
    g = torch.Generator().manual_seed(33)
    x, y = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.arange(9) % 3
    W_d, W_t, diffs = tiling.dense_agreement("multi_similarity", x, y, 4, beta=10.0)
    assert chunks and set(chunks) == {4}
    assert diffs["value_rel_diff"] <= 1e-14 and diffs["grad_rel_diff"] <= 1e-14
    assert diffs["weight_max_abs_diff"] <= 1e-15 < diffs["weight_max"]


def test_dense_agreement_reports_relative_differences():
    """float32, where the tiles round differently from the dense matrix: the value's and the
    gradient's differences are relative to the dense path's (both below 1 here), as their
    definitions, recomputed from the two losses."""
    g = torch.Generator().manual_seed(33)
    x, y = torch.randn(24, 8, generator=g), torch.arange(24) % 4
    W_d, W_t, diffs = tiling.dense_agreement("triplet", x, y, 5)
    (v_d, (g_d,)), (v_t, (g_t,)) = (value_and_grads(losses.build("triplet", **kw), x, y)
                                    for kw in ({}, dict(chunk_size=5)))
    assert abs(float(v_d)) < 1 and float(g_d.abs().max()) < 1
    assert diffs["value_rel_diff"] == abs(float(v_t) - float(v_d)) / abs(float(v_d))
    assert diffs["grad_rel_diff"] == float((g_t - g_d).abs().max() / g_d.abs().max())
    assert diffs["weight_max_abs_diff"] == float((W_t - W_d).abs().max())
    assert diffs["weight_max"] == float(W_d.abs().max())


def test_a_released_slab_is_allocated_again(budgets):
    g = torch.Generator().manual_seed(34)
    x, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.arange(12) % 3
    want = value_and_grads(losses.build("multi_similarity"), x, y)
    loss = losses.build("multi_similarity", chunk_size=4)
    for _ in range(2):
        tiling.release_cache_memory()
        assert tiling._SLABS == {}
        v, (gx,) = value_and_grads(loss, x, y)
        assert tiling._SLABS                      # the slab is back
        torch.testing.assert_close(v, want[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(gx, want[1][0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("in_batch", [True, False])
def test_the_cache_keeps_the_first_tiles_that_fit_its_budget_exactly(monkeypatch, budgets,
                                                                     in_batch):
    """A budget of exactly three 4 x 4 float64 tiles keeps the first three products of the
    sweep (row block 0 against column blocks 0, 4, 8), bit for bit q_I r_J^T, and no more."""
    made = spy_on_tile_caches(monkeypatch)
    g = torch.Generator().manual_seed(35)
    x, y = torch.randn(14, 5, generator=g, dtype=torch.float64), torch.arange(14) % 4
    r, ry = torch.randn(15, 5, generator=g, dtype=torch.float64), torch.arange(15) % 4
    args = (x, y) if in_batch else (x, y, r, ry)
    leaves = [a.clone().requires_grad_(True) if a.is_floating_point() else a for a in args]
    tiling.set_cache_budget(3 * 4 * 4 * 8)
    loss = losses.build("contrastive", chunk_size=4)       # reads the unmasked products
    loss(*leaves)
    (cache,) = made
    assert cache.used == 3 * 4 * 4 * 8
    assert sorted(cache.tiles) == [(0, 0), (0, 4), (0, 8)]
    q = torch.nn.functional.normalize(x, dim=1)
    ref = q if in_batch else torch.nn.functional.normalize(r, dim=1)
    for (i0, j0), S in cache.tiles.items():
        assert torch.equal(S, q[i0:i0 + 4] @ ref[j0:j0 + 4].t())


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("in_batch", [True, False])
def test_tiled_pair_grad_returns_the_similarity_matrix(normalize, in_batch):
    """The S beside the tiles' dL/dS is the dense similarity_matrix (a unit diagonal for a
    normalised batch against itself, |x_i|^2 otherwise)."""
    g = torch.Generator().manual_seed(36)
    x, y = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.arange(7) % 3
    r, ry = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.arange(7) % 2
    loss = losses.build("contrastive", form="similarity", normalize=normalize)
    ref = (None, None) if in_batch else (r, ry)
    S, _ = tiling.tiled_pair_grad(loss, x, y, *ref, chunk=3)
    want = similarity_matrix(x, ref[0], normalize=normalize)
    torch.testing.assert_close(S, want, rtol=1e-14, atol=1e-14)
    if in_batch and normalize:
        assert (S.diagonal() == 1.0).all()


@pytest.mark.parametrize("q_dtype,r_dtype", [(torch.float64, torch.float32),
                                             (torch.float32, torch.float64),
                                             (torch.float32, torch.float16),
                                             (torch.float64, torch.bfloat16)])
def test_references_of_another_dtype_are_converted_as_in_the_dense_path(q_dtype, r_dtype):
    """The references are promoted (half to float32) and cast to the queries' dtype, as the
    dense similarity_matrix does."""
    g = torch.Generator().manual_seed(37)
    q = torch.randn(6, 4, generator=g, dtype=torch.float64).to(q_dtype)
    r = torch.randn(9, 4, generator=g, dtype=torch.float64).to(r_dtype)
    ql, rl = torch.arange(6) % 3, torch.arange(9) % 3
    rel = 1e-10 if q_dtype == torch.float64 else 1e-5
    for name in ("multi_similarity", "contrastive"):
        (v_d, g_d), (v_t, g_t) = (value_and_grads(losses.build(name, **kw), q, ql, r, rl)
                                  for kw in ({}, dict(chunk_size=4)))
        assert v_t.dtype == v_d.dtype == q_dtype
        torch.testing.assert_close(v_t, v_d, rtol=rel, atol=rel)
        for a, b in zip(g_t, g_d):
            assert a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=rel, atol=rel * float(b.abs().max()))


@pytest.mark.parametrize("name", ["multi_similarity", "triplet", "angular"])
@pytest.mark.parametrize("wide", [False, True])
def test_references_without_a_gradient(monkeypatch, name, wide):
    """A bank of references that needs no gradient (a memory): the queries' gradient is the
    dense one, and the references get none."""
    if wide:
        monkeypatch.setattr(tiles, "WIDE_SLOTS", 1)
    g = torch.Generator().manual_seed(38)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64)
    r = torch.randn(9, 4, generator=g, dtype=torch.float64)
    ql, rl = torch.arange(5) % 3, torch.arange(9) % 3
    grads = []
    for kw in ({}, dict(chunk_size=4)):
        leaf = q.clone().requires_grad_(True)
        bank = r.clone()
        losses.build(name, **kw)(leaf, ql, bank, rl).backward()
        assert bank.grad is None
        grads.append(leaf.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10,
                               atol=1e-10 * float(grads[0].abs().max()))


# ------------------------------------------------------------------ the tile sweep
def test_query_vs_reference_tiles_cover_the_products_once_and_share_one_workspace():
    """Query-vs-reference, _tile_pairs yields every tile once, unmasked by default, none of
    them a mirror, its S the product q_I r_J^T; one scratch tensor per name for the sweep."""
    g = torch.Generator().manual_seed(39)
    q, ql = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.arange(7) % 2
    r, rl = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.arange(10) % 2
    loss = losses.build("multi_similarity")
    _, _, _, _, qn, rn, ctx = tiling._inputs(loss, q, ql, r, rl)
    S = qn @ rn.t()
    seen = torch.zeros(7, 10, dtype=torch.long)
    pointers = set()
    for tile, mirrored in tiling._tile_pairs(qn, rn, ctx, 4):
        assert mirrored is False and not tile.masked
        torch.testing.assert_close(tile.S, S[tile.rows, tile.cols], rtol=1e-14, atol=1e-14)
        pointers.add(tile.buffer("keep").data_ptr())
        seen[tile.rows, tile.cols] += 1
    assert (seen == 1).all() and len(pointers) == 1
    not_neg = ql[:, None] == rl[None, :]
    for tile, mirrored in tiling._tile_pairs(qn, rn, ctx, 4, masked=True):
        assert tile.masked and tile.negatives_only() is tile.S and mirrored is False
        want = S[tile.rows, tile.cols].masked_fill(not_neg[tile.rows, tile.cols], float("-inf"))
        torch.testing.assert_close(tile.S, want, rtol=1e-14, atol=1e-14)


def test_the_mirror_tile_shares_the_elementwise_results_as_their_transpose():
    """In-batch, an elementwise function of a tile is computed once for the tile and its
    mirror (J, I): the mirror reads the transpose without calling it again."""
    g = torch.Generator().manual_seed(40)
    x, y = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.arange(8) % 3
    _, _, _, _, q, _, ctx = tiling._inputs(losses.build("multi_similarity"), x, y, None, None)
    calls = []

    def twice(t):
        calls.append(t)
        return 2 * t.S

    for tile, mirrored in tiling._tile_pairs(q, q, ctx, 3):
        if mirrored:
            continue
        before = len(calls)
        torch.testing.assert_close(tile.elementwise("2s", twice), 2 * tile.S)
        mirror = tiling._mirror(tile)
        assert (mirror.r0, mirror.c0) == (tile.c0, tile.r0) and mirror.mirrored
        assert torch.equal(mirror.elementwise("2s", twice), 2 * tile.S.t())
        assert len(calls) == before + 1


@pytest.mark.parametrize("in_batch", [True, False])
def test_a_two_pass_formulation_keeps_the_tiles_of_its_last_pass_only(monkeypatch, budgets,
                                                                      in_batch):
    """Hard mining streams the tiles twice: the cache holds the second pass's products (each
    once, its byte count theirs) and the backward takes every one; the gradient is the dense
    one."""
    made = spy_on_tile_caches(monkeypatch)
    g = torch.Generator().manual_seed(41)
    x, y = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.arange(10) % 3
    r, ry = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.arange(9) % 3
    args = (x, y) if in_batch else (x, y, r, ry)
    kw = dict(weighting="uniform", mining="hard")
    want_v, want_g = value_and_grads(losses.build("weighted_pair", **kw), *args)
    tiling.set_cache_budget(10 ** 6)
    loss = losses.build("weighted_pair", chunk_size=4, **kw)
    ctx = tiling._inputs(loss, *args, *[None] * (4 - len(args)))[-1]
    assert loss.tile_formulation(ctx).passes == 2
    v, grads = value_and_grads(loss, *args)
    (cache,) = made
    rows = [4, 4, 2]                                   # 10 queries in blocks of 4
    cols = rows if in_batch else [4, 4, 1]             # 9 references
    one_sweep = sum(8 * rows[a] * cols[b] for a in range(3) for b in range(3)
                    if b >= a or not in_batch)         # in-batch: the blocks I <= J
    assert cache.used == one_sweep and cache.left == {}
    torch.testing.assert_close(v, want_v, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads, want_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_slab_is_the_same_tensor_from_call_to_call(budgets):
    """A slab of the right size is kept, not allocated again, by the next call of the same
    dtype (a larger budget replaces it)."""
    g = torch.Generator().manual_seed(42)
    x, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.arange(12) % 3
    loss = losses.build("multi_similarity", chunk_size=4)
    tiling.release_cache_memory()   # no earlier test's live cache holds the slab
    tiling.set_cache_budget(4096)
    value_and_grads(loss, x, y)
    slab = tiling._SLABS[torch.float64]
    assert slab.numel() == 4096 // 8
    value_and_grads(loss, x, y)
    assert tiling._SLABS[torch.float64] is slab
    tiling.set_cache_budget(8192)
    value_and_grads(loss, x, y)
    assert tiling._SLABS[torch.float64].numel() == 8192 // 8


@pytest.mark.parametrize("in_batch", [True, False])
def test_the_backward_multiplies_no_kept_tile_again(budgets, in_batch):
    """With every tile kept, the backward forms no S product (aten.mm) at all; with none kept
    it forms one per tile (3 x 3 blocks of 4, in-batch the 6 blocks I <= J)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountMM(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.mm = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.mm += func is torch.ops.aten.mm.default
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(43)
    x, y = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.arange(10) % 3
    r, ry = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.arange(9) % 3
    args = (x, y) if in_batch else (x, y, r, ry)
    counts = {}
    for budget in (0, 10 ** 6):
        tiling.set_cache_budget(budget)
        leaves = [a.clone().requires_grad_(True) if a.is_floating_point() else a for a in args]
        value = losses.build("multi_similarity", chunk_size=4)(*leaves)
        with CountMM() as mode:
            value.backward()
        counts[budget] = mode.mm
    assert counts[0] - counts[10 ** 6] == (6 if in_batch else 9)


# ------------------------------------------------------------------ the fused kernels' edges
def test_count_sums_in_its_own_dtype_while_exact_then_in_float64():
    """_count: a float32 indicator below 2^24 entries is summed in float32 (exact there), from
    2^24 entries in float64 (2^24 + 1 ones are not a float32 number); float64 stays float64."""
    from dmlkit.losses._fused import _count
    small = torch.ones(100)
    assert _count(small).dtype == torch.float32 and float(_count(small)) == 100
    assert _count(torch.ones(100, dtype=torch.float64)).dtype == torch.float64
    edge = torch.ones(2 ** 24)
    got = _count(edge)
    assert got.dtype == torch.float64 and float(got) == 2 ** 24
    del edge, got
    big = torch.ones(2 ** 24 + 1)
    got = _count(big)
    assert got.dtype == torch.float64 and float(got) == 2 ** 24 + 1


def _lse1p_reference(S, keep, scale, shift):
    z = (scale * (S - shift)).masked_fill(keep == 0, float("-inf"))
    return torch.logsumexp(torch.cat([z, torch.zeros(len(S), 1, dtype=S.dtype)], 1), 1) / \
        abs(scale)


def test_kept_lse1p_below_unit_scale_and_far_below_the_row_maximum():
    """scale 0.5 (0 < scale < 1: still the positive sign); a kept logit 79.5 below the "1"
    logit weighs e^-79.5 exactly, and one more than 80 below the row's shift weighs e^-80
    (the clamp that keeps denormals out of the kernel), the softmax weight of the formula
    otherwise."""
    from dmlkit.losses._fused import kept_lse1p
    S = torch.tensor([[0.3, -0.2, 0.9, 0.1], [-79.5, 0.0, 0.0, 0.0], [0.0, -85.0, 0.0, 0.0]],
                     dtype=torch.float64)
    keep = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]],
                        dtype=torch.float64)
    for scale, shift in ((0.5, 0.2), (1.0, 0.0)):
        leaf = S.clone().requires_grad_(True)
        got = kept_lse1p(leaf, keep, scale, shift)
        (g,) = torch.autograd.grad(got.sum(), leaf)
        ref_leaf = S.clone().requires_grad_(True)
        ref = _lse1p_reference(ref_leaf, keep, scale, shift)
        (want,) = torch.autograd.grad(ref.sum(), ref_leaf)
        torch.testing.assert_close(got, ref.detach(), rtol=1e-12, atol=1e-300)
        torch.testing.assert_close(g[:2], want[:2], rtol=1e-12, atol=1e-300)
        assert g[1, 0] > 0                 # e^-79.5 (times 2 at scale 0.5)
    # row 2 at scale 1: the logit -85 is 85 below the row's shift max(0, 0) = 0
    denom = 1.0 + 1.0 + math.exp(-80.0)
    assert float(g[2, 1]) == pytest.approx(math.exp(-80.0) / denom, rel=1e-12, abs=0)
    assert float(g[2, 0]) == pytest.approx(1.0 / denom, rel=1e-12)


def test_kept_lse1p_ignores_large_logits_it_does_not_keep():
    """float32, scale 100: entries that are not kept may lie far above the kept maximum
    (e^100 overflows float32); they add nothing, the value and the gradient stay finite and
    equal the formula's."""
    from dmlkit.losses._fused import kept_lse1p
    S = torch.tensor([[1.0, -0.5, -0.4], [0.9, 0.2, 1.0]])
    keep = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    leaf = S.clone().requires_grad_(True)
    got = kept_lse1p(leaf, keep, 100.0, 0.0)
    (g,) = torch.autograd.grad(got.sum(), leaf)
    ref_leaf = S.clone().requires_grad_(True)
    ref = _lse1p_reference(ref_leaf, keep, 100.0, 0.0)
    (want,) = torch.autograd.grad(ref.sum(), ref_leaf)
    assert torch.isfinite(got).all() and torch.isfinite(g).all()
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ exact ties of the kept pairs
#: KeptPairTiles settings (multi-similarity family, binomial deviance) with epsilon, margin and
#: lam on the same dyadic grid as the similarities below, so that every mining comparison can
#: tie exactly
KEPT_PAIR_TIES = [
    ("multi_similarity", dict(epsilon=0.25, lam=0.5)),
    ("multi_similarity", dict(epsilon=0.5, lam=0.5, alpha=2.0, beta=4.0, reduction="sum")),
    ("raw", dict(lam=0.5)),
    ("vthm", dict(epsilon=0.25)),
    ("binomial+vthm", dict(epsilon=0.25, lam=0.5)),
    ("raw+semihard", dict(margin=0.25, lam=0.5)),
    ("raw+semihard", dict(margin=0.5, lam=0.5, reduction="sum")),
    ("weighted_pair", dict(weighting="uniform", mining="hard")),
    ("weighted_pair", dict(weighting="binomial", mining="hard", lam=0.5)),
    ("weighted_pair", dict(weighting="binomial", mining="semihard", margin=0.25, lam=0.5)),
    ("weighted_pair", dict(weighting="uniform", mining="semihard", margin=0.5)),
    ("weighted_pair", dict(weighting="uniform", mining="vthm", epsilon=0.25)),
    ("weighted_pair", dict(weighting="uniform", mining="none", reduction="sum")),
    ("weighted_pair", dict(weighting="raw", mining="none", beta=5.0, lam=0.5)),
    ("binomial_deviance", dict(lam=0.5)),
]


def _dyadic_problems():
    """Batches whose similarities are exact multiples of 1/16 in any order of summation:
    unit vectors with entries in {0, +-1/2, +-1} (normalised: S in {0, +-1/2, +-1}), and
    unnormalised scalars on a grid of 1/4 (S = x_i r_j)."""
    g = torch.Generator().manual_seed(44)
    units = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [.5, .5, .5, .5],
                          [.5, .5, -.5, -.5], [-.5, .5, .5, -.5], [-1, 0, 0, 0],
                          [.5, -.5, .5, -.5]], dtype=torch.float64)
    u = units[torch.randint(0, len(units), (10,), generator=g)]
    ul = torch.randint(0, 3, (10,), generator=g)
    ur = units[torch.randint(0, len(units), (9,), generator=g)]
    url = torch.randint(0, 3, (9,), generator=g)
    grid = torch.arange(-4, 5, dtype=torch.float64) / 4
    x = grid[torch.randint(0, len(grid), (10, 1), generator=g)]
    xl = torch.randint(0, 3, (10,), generator=g)
    r = grid[torch.randint(0, len(grid), (9, 1), generator=g)]
    rl = torch.randint(0, 3, (9,), generator=g)
    return [(True, (u, ul)), (True, (u, ul, ur, url)), (False, (x, xl)), (False, (x, xl, r, rl))]


@pytest.mark.parametrize("name,kw", KEPT_PAIR_TIES, ids=lambda v: str(v))
def test_kept_pairs_at_exact_ties_equal_the_dense_masks(name, kw):
    """Similarities, epsilon, margins and lam on one dyadic grid: the mining comparisons
    (x + epsilon vs the hardest positive, the next positive above a negative minus the
    margin, the hardest negative's first column across tiles) tie exactly, and the tiles
    decide them as the dense miners do (value and gradients)."""
    for normalize, args in _dyadic_problems():
        torch.manual_seed(0)
        want_v, want_g = value_and_grads(losses.build(name, normalize=normalize, **kw), *args)
        for chunk in (1, 3):
            loss = losses.build(name, normalize=normalize, chunk_size=chunk, **kw)
            v, grads = value_and_grads(loss, *args)
            torch.testing.assert_close(v, want_v, rtol=1e-10, atol=1e-12)
            for a, b in zip(grads, want_g):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_vthm_keeps_negatives_with_the_miners_rounding():
    """x + epsilon == min positive in floating point although min positive - epsilon < x:
    the positive is kept (its test), the negative is not (its own test, rounded), so the row
    keeps no negative and adds nothing, in the tiles as in the dense loss."""
    b = 0.207491395289921
    a = b + 0.1
    assert a - 0.1 < b and not b + 0.1 > a
    q = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    r = torch.tensor([[a], [b], [-0.5], [-0.25]], dtype=torch.float64)
    ql, rl = torch.tensor([0, 2]), torch.tensor([0, 1, 2, 2])
    for name in ("multi_similarity", "vthm", "binomial+vthm"):
        want_v, want_g = value_and_grads(losses.build(name, normalize=False, epsilon=0.1),
                                         q, ql, r, rl)
        v, grads = value_and_grads(losses.build(name, normalize=False, epsilon=0.1,
                                                chunk_size=2), q, ql, r, rl)
        torch.testing.assert_close(v, want_v, rtol=1e-12, atol=0)
        for x, y in zip(grads, want_g):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=0)
        assert want_g[0][0, 0] == 0 and want_g[0][1, 0] != 0   # the first row adds nothing


# ------------------------------------------------------------------ the direct exponentials
def _direct_context(B, M, dtype=torch.float32, normalized=True):
    z = torch.zeros(1)
    return tiles.TileContext(B=B, M=M, in_batch=False, labels=z, ref_labels=z, dtype=dtype,
                             device=z.device, normalized=normalized, embeddings=z,
                             ref_embeddings=z)


def _direct_closed_form(beta, lam, B, M, dtype):
    """The docstring's bounds: b = beta log2(e) (1 + 1e-3), log_m = log2(M + 1); P and the
    sums need b + log_m < limit, the row factor log2 B + b (|lam| + max(0, 1 - lam)) + log_m <
    limit, with limit 1000 in float64 and 120 otherwise."""
    limit = 1000.0 if dtype == torch.float64 else 120.0
    b, log_m = _bound_terms(beta, M)
    return b + log_m < limit and _factor(b, lam, B, log_m) < limit


def _bound_terms(beta, M):
    return beta * (1.0 / math.log(2.0)) * (1.0 + 1e-3), math.log2(M + 1)


def _factor(b, lam, B, log_m):
    return math.log2(max(B, 1)) + b * (abs(lam) + max(0.0, 1.0 - lam)) + log_m


def _betas_on_the_bound(beta0, lam, B, M, limit):
    """Betas within 300 ulps of beta0 whose bound (the sums' or the factor's) is exactly
    the limit in floating point (where < and <= differ)."""
    found, beta = [], beta0
    for _ in range(300):
        beta = math.nextafter(beta, 0.0)
    for _ in range(600):
        b, log_m = _bound_terms(beta, M)
        if b + log_m == limit or _factor(b, lam, B, log_m) == limit:
            found.append(beta)
        beta = math.nextafter(beta, math.inf)
    return found


def _beta_at(target, lam, B, M):
    """The beta that puts the tighter bound exactly at ``target`` (real arithmetic)."""
    log_m = math.log2(M + 1)
    per_beta = (1.0 + 1e-3) / math.log(2.0)
    sums = (target - log_m) / per_beta
    factor = (target - log_m - math.log2(max(B, 1))) / (per_beta * (abs(lam)
                                                                   + max(0.0, 1.0 - lam)))
    return min(sums, factor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_exponentials_is_its_closed_form_at_the_bounds(dtype):
    """On both sides of each bound (betas 1e-9 relative around the limit, B = 0 and 1, M = 0,
    lam below 0, between 0 and 1 and above 1), direct_exponentials is the closed form, and
    only for raw weighting over vthm / no mining of normalised embeddings."""
    from dmlkit.losses.kept_pair_tiles import KeptPairTiles
    limit = 1000.0 if dtype == torch.float64 else 120.0
    seen, on_bound = set(), 0
    for B, M in ((0, 0), (1, 1), (1, 7), (64, 1023), (4096, 65536)):
        for lam in (-0.7, 0.0, 0.5, 1.0, 1.6):
            for target in (limit, limit - 0.5, limit + 0.5):
                beta0 = _beta_at(target, lam, B, M)
                if beta0 <= 0:
                    continue
                exact = _betas_on_the_bound(beta0, lam, B, M, limit) if target == limit else []
                on_bound += len(exact)
                for beta in [beta0 * (1 + rel) for rel in (-1e-9, -1e-12, 0.0, 1e-12, 1e-9)]\
                        + exact:
                    want = _direct_closed_form(beta, lam, B, M, dtype)
                    seen.add(want)
                    for mining in ("vthm", "none"):
                        form = KeptPairTiles("raw", mining, 2.0, beta, lam, "mean")
                        assert form.direct_exponentials(_direct_context(B, M, dtype)) == want
                    ctx = _direct_context(B, M, dtype)
                    for weighting, mining in (("binomial", "vthm"), ("raw", "semihard"),
                                              ("raw", "hard"), ("uniform", "none")):
                        form = KeptPairTiles(weighting, mining, 2.0, beta, lam, "mean")
                        assert not form.direct_exponentials(ctx)
                    form = KeptPairTiles("raw", "vthm", 2.0, beta, lam, "mean")
                    assert not form.direct_exponentials(_direct_context(B, M, dtype, False))
    assert seen == {True, False} and on_bound > 0


# ------------------------------------------------------------------ one positive per row
@pytest.mark.parametrize("wide_slots", [64, 0])
def test_rows_with_exactly_one_positive(monkeypatch, wide_slots):
    """Classes of two (w = 1 positive slot per row): the slot blocks of angular's s_pn terms
    and, with WIDE_SLOTS = 0, the positive slots read through the tiles (a run of at most one
    slot per row, clamped to the single column of the slot table) equal the dense losses."""
    monkeypatch.setattr(tiles, "WIDE_SLOTS", wide_slots)
    g = torch.Generator().manual_seed(45)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    y = torch.arange(8) // 2
    r = torch.randn(7, 4, generator=g, dtype=torch.float64)
    ry = torch.tensor([3, 0, 5, 1, 6, 2, 7])     # one positive each for queries 0..7 but 4
    yq = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    settings = [("angular", {}), ("multi_similarity", {}), ("triplet", {}), ("contrastive", {}),
                ("lifted_structure", {}), ("raw+semihard", dict(margin=0.5)),
                ("weighted_pair", dict(weighting="uniform", mining="hard"))]
    for name, kw in settings:
        for args in ((x, y), (x, yq, r, ry)):
            want_v, want_g = value_and_grads(losses.build(name, **kw), *args)
            assert want_g[0].abs().max() > 0
            for chunk in (1, 3):
                v, grads = value_and_grads(losses.build(name, chunk_size=chunk, **kw), *args)
                torch.testing.assert_close(v, want_v, rtol=1e-10, atol=1e-12)
                for a, b in zip(grads, want_g):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------ the positive slots' similarities
@pytest.mark.parametrize("wide_slots", [64, 0])
@pytest.mark.parametrize("layout", ["in_batch", "reference", "exclude", "exclude_large"])
def test_slot_similarities_are_the_positives_dot_products_in_column_order(monkeypatch,
                                                                          wide_slots, layout):
    """s_pos[i, k] = q_i . r_j for the k-th positive column j of row i in ascending order
    (in-batch not i itself, never the excluded column), 0 on the padding slots; row-wise or,
    with WIDE_SLOTS = 0, one product per class."""
    monkeypatch.setattr(tiles, "WIDE_SLOTS", wide_slots)
    g = torch.Generator().manual_seed(46)
    q = torch.randn(7, 3, generator=g, dtype=torch.float64)
    ql = torch.tensor([0, 1, 0, 2, 0, 1, 3])
    r = torch.randn(9, 3, generator=g, dtype=torch.float64)
    rl = torch.tensor([1, 0, 0, 1, 2, 0, 1, 0, 2])
    exclude = torch.tensor([5, 8, 2, 4, 1, 0, 3]) if layout == "exclude" else None
    if layout == "exclude_large":    # classes of 20 and 10 references: a row's order of slots
        r = torch.randn(30, 3, generator=g, dtype=torch.float64)    # takes a stable sort
        rl = (torch.arange(30) % 3 != 0).long()
        ql = torch.tensor([1, 0, 1, 1, 0, 1, 1])
        exclude = torch.tensor([10, 0, 1, 29, 27, 2, 16])
    ref = (None, None) if layout == "in_batch" else (r, rl)
    loss = losses.build("multi_similarity", normalize=False)
    _, _, _, _, qq, rr, ctx = tiling._inputs(loss, q, ql, *ref, exclude=exclude)
    refs, labels = (q, ql) if layout == "in_batch" else (r, rl)
    cols = [[j for j in range(len(labels)) if labels[j] == ql[i]
             and not (layout == "in_batch" and j == i)
             and not (exclude is not None and j == int(exclude[i]))] for i in range(len(q))]
    w = max(len(c) for c in cols)
    want = torch.zeros(len(q), w, dtype=torch.float64)
    for i, c in enumerate(cols):
        for k, j in enumerate(c):
            want[i, k] = q[i] @ refs[j]
    assert ctx.wide == (wide_slots == 0) and ctx.slots[0].shape[1] == w
    for chunk in (1, 4):
        got = tiling._slot_similarities(qq, rr, ctx, chunk)
        torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-15)
        assert (got[~ctx.slots[1]] == 0).all()


def test_raw_semihard_shifts_by_the_kept_negatives_only():
    """Raw weighting over semihard negatives, beta = 1000: a negative above every positive
    (not kept) lies 0.8 above the kept one, so e^(beta (x_kept - x_top)) = e^-800 underflows;
    the streaming log-sum-exp shifts by the largest KEPT logit and stays finite, equal to the
    dense loss in value and gradients."""
    q = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    r = torch.tensor([[-0.15], [-0.2], [0.6], [0.1], [-0.3]], dtype=torch.float64)
    ql, rl = torch.tensor([0, 1]), torch.tensor([0, 1, 1, 1, 0])
    kw = dict(normalize=False, beta=1000.0, lam=-0.5, margin=0.1)
    want_v, want_g = value_and_grads(losses.build("raw+semihard", **kw), q, ql, r, rl)
    assert torch.isfinite(want_v) and want_v > 0
    for chunk in (1, 2, 5):
        v, grads = value_and_grads(losses.build("raw+semihard", chunk_size=chunk, **kw),
                                   q, ql, r, rl)
        torch.testing.assert_close(v, want_v, rtol=1e-10, atol=0)
        for a, b in zip(grads, want_g):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_lse_update_shifts_each_row_by_its_own_maximum():
    """The streaming log-sum-exp of rows 1000 apart: m + log acc is each row's logsumexp
    (a shared shift would underflow the lower row), -inf entries excluded, over two updates."""
    z1 = torch.tensor([[0.0, 1.0, float("-inf")], [1000.0, 999.0, 998.0]], dtype=torch.float64)
    z2 = torch.tensor([[2.0, float("-inf")], [997.0, 1001.0]], dtype=torch.float64)
    m = torch.full((2,), float("-inf"), dtype=torch.float64)
    acc = torch.zeros(2, dtype=torch.float64)
    tiles.lse_update_(m, acc, z1)
    torch.testing.assert_close(m + acc.log(), torch.logsumexp(z1, 1), rtol=1e-14, atol=0)
    tiles.lse_update_(m, acc, z2)
    want = torch.logsumexp(torch.cat([z1, z2], 1), 1)
    torch.testing.assert_close(m + acc.log(), want, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name,kw,scale", [("multi_similarity", dict(lam=-16.0), 1.0),
                                           ("multi_similarity", {}, 5.0),
                                           ("raw", dict(lam=-16.0), 1.0)])
def test_shifted_raw_form_with_logits_beyond_the_exponent_range(name, kw, scale):
    """Unnormalised embeddings (the shifted streaming form, not the direct one): logits
    beta (s - lam) of 750 to 850 (lam = -16 on unit vectors) or up to ~1,200 (|s| up to 25),
    whose exponentials overflow float64 (above e^709) unless each row is shifted by its
    largest kept logit; tiled equals dense."""
    g = torch.Generator().manual_seed(47)
    x = torch.nn.functional.normalize(torch.randn(10, 4, generator=g, dtype=torch.float64),
                                      dim=1) * scale
    y = torch.arange(10) % 3
    loss = losses.build(name, normalize=False, **kw)
    want_v, want_g = value_and_grads(loss, x, y)
    assert torch.isfinite(want_v) and want_g[0].abs().max() > 0
    for chunk in (3, 4):
        v, grads = value_and_grads(losses.build(name, normalize=False, chunk_size=chunk, **kw),
                                   x, y)
        torch.testing.assert_close(v, want_v, rtol=1e-10, atol=0)
        torch.testing.assert_close(grads[0], want_g[0], rtol=1e-10,
                                   atol=1e-12 * float(want_g[0].abs().max()))


def test_raw_semihard_shifts_each_row_by_its_own_kept_maximum():
    """Raw weighting over semihard negatives, beta = 1000: the kept logits of the two rows
    are 1800 apart, so a shift shared by the rows would underflow the lower row's sum; the
    tiles shift each row by its own largest kept logit (tiled equals dense, finite)."""
    q = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    r = torch.tensor([[0.95], [0.9], [-0.85], [-0.9]], dtype=torch.float64)
    ql, rl = torch.tensor([0, 1]), torch.tensor([0, 1, 1, 0])
    kw = dict(normalize=False, beta=1000.0, lam=-0.5, margin=0.1)
    want_v, want_g = value_and_grads(losses.build("raw+semihard", **kw), q, ql, r, rl)
    assert torch.isfinite(want_v) and (want_g[0] != 0).all()
    for chunk in (1, 4):
        v, grads = value_and_grads(losses.build("raw+semihard", chunk_size=chunk, **kw),
                                   q, ql, r, rl)
        torch.testing.assert_close(v, want_v, rtol=1e-10, atol=0)
        for a, b in zip(grads, want_g):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighting", ["uniform", "binomial", "raw"])
def test_hard_mining_rows_with_a_single_negative(weighting):
    """Hard mining where three rows have exactly one negative (and the fourth no positive):
    those rows count (tiled equals dense, their gradient non-zero)."""
    g = torch.Generator().manual_seed(48)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    kw = dict(weighting=weighting, mining="hard")
    want_v, want_g = value_and_grads(losses.build("weighted_pair", **kw), x, y)
    assert want_v != 0
    for chunk in (1, 3):
        v, grads = value_and_grads(losses.build("weighted_pair", chunk_size=chunk, **kw), x, y)
        torch.testing.assert_close(v, want_v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads[0], want_g[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tiled_forward_promotes_half_queries_to_float32(dtype):
    """Called directly (as the memory bank does), the engine computes half embeddings in
    float32: the value equals that of the float32 copy of the same rounded values."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 4, generator=g).to(dtype)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2])
    loss = losses.build("multi_similarity")
    got = tiling.tiled_forward(loss, x, y, chunk=4)
    want = tiling.tiled_forward(loss, x.float(), y, chunk=4)
    assert got.dtype == torch.float32
    assert float(got) == float(want)


def test_hard_mining_finds_its_negative_beyond_the_integers_of_float32():
    """A float32 memory bank of 2^24 + 2 references (D = 1, unnormalised): the hardest
    negative is the last column, 2^24 + 1, which float32 cannot hold (it rounds to 2^24, a
    weaker negative). Its column is kept as an integer: the value and the query's gradient
    equal the dense loss of the three references that matter (the positive, the last two)."""
    M = 2 ** 24 + 2
    r = torch.zeros(M, 1)
    r[0], r[M - 2], r[M - 1] = 1.0, 0.5, 0.9
    rl = torch.ones(M, dtype=torch.long)
    rl[0] = 0
    q, ql = torch.tensor([[1.0]]), torch.tensor([0])
    kw = dict(weighting="uniform", mining="hard", normalize=False)
    loss = losses.build("weighted_pair", chunk_size=2 ** 20, **kw)
    v, (gq,) = value_and_grads(lambda a: loss(a, ql, r, rl), q)
    dense = losses.build("weighted_pair", **kw)
    want_v, (want_gq,) = value_and_grads(
        lambda a: dense(a, ql, r[[0, M - 2, M - 1]].double(), torch.tensor([0, 1, 1])),
        q.double())
    assert float(v) == pytest.approx(float(want_v), rel=1e-6)
    torch.testing.assert_close(gq.double(), want_gq, rtol=1e-6, atol=0)
