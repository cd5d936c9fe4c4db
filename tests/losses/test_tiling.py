"""The exact tiled path (dmlkit.losses.tiling): every covered loss equals its dense path in
value and in the gradient with respect to the queries and the references (float64, rel
1e-10), at chunk sizes that divide and do not divide B and M, in-batch and query-vs-reference,
on degenerate batches, with ties and duplicates; the weight view and Theorem 3.1 through the
tiles; chunk_size validation, "auto", uncovered losses and the training option."""

import pytest
import torch
import torch.nn.functional as F
from conftest import build_loss, value_and_grads
from tile_cache_spy import spy_on_tile_caches

from dmlkit import losses, precision, weights
from dmlkit.losses import tiles, tiling
from dmlkit.train.config import resolve_config

#: (loss name, parameters): every setting with a tile formulation
COVERED = [
    ("multi_similarity", {}),
    ("multi_similarity", dict(alpha=1.0, beta=20.0, lam=0.3, epsilon=0.3, reduction="sum")),
    ("raw", {}),
    ("vthm", {}),
    ("binomial+vthm", {}),
    ("raw+semihard", dict(margin=0.4)),
    ("weighted_pair", dict(weighting="uniform", mining="hard")),
    ("weighted_pair", dict(weighting="binomial", mining="semihard", margin=0.3)),
    ("weighted_pair", dict(weighting="raw", mining="none", normalize=False, beta=5.0)),
    ("binomial_deviance", {}),
    ("binomial_deviance", dict(alpha=3.0, beta=10.0, lam=0.2, reduction="sum")),
    ("contrastive", {}),
    ("contrastive", dict(power=1.0, reduction="mean_nonzero", margin=0.8)),
    ("contrastive", dict(pos_margin=0.2, power=1.5, reduction="sum")),
    ("contrastive", dict(form="similarity")),
    ("contrastive", dict(form="similarity", pos_margin=0.7, reduction="mean_nonzero")),
    ("contrastive", dict(form="similarity", normalize=False, lam=0.0)),
    *[("triplet", dict(mining=m, form=f))
      for m in ("all", "semihard", "hard", "batch_hard")
      for f in ("distance", "squared_distance", "similarity")],
    ("triplet", dict(reduction="mean", margin=0.5)),
    ("triplet", dict(mining="semihard", reduction="sum", margin=0.5)),
    ("triplet", dict(mining="batch_hard", reduction="mean")),
    ("triplet", dict(form="similarity", normalize=False, margin=1.0)),
    ("lifted_structure", {}),
    ("lifted_structure", dict(margin=0.3)),
    ("generalized_lifted_structure", {}),
    ("generalized_lifted_structure", dict(form="distance", margin=0.5)),
    ("generalized_lifted_structure", dict(lam=0.1, normalize=False)),
    ("ddml", {}),
    ("ddml", dict(tau=1.5, beta=10.0, reduction="sum")),
    ("npair", {}),
    ("npair", dict(normalize=True, l2_reg=0.0)),
    ("npair_ovo", {}),
    ("npair_ovo", dict(normalize=True, l2_reg=0.1)),
    ("tuplet", {}),
    ("tuplet", dict(form="hinge", margin=0.3)),
    ("tuplet", dict(normalize=True, l2_reg=0.0)),
    ("angular", {}),
    ("angular", dict(alpha=30.0)),
    ("angular", dict(alpha=20.0, normalize=False)),
    ("osm_caa", dict(num_classes=12, embedding_dim=5)),
    ("osm_caa", dict(num_classes=12, embedding_dim=5, attention="gaussian")),
    ("osm_caa", dict(num_classes=12, embedding_dim=5, attention="none", alpha=0.5)),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(COVERED)]

#: (loss name, parameters) without an exact tile formulation: a ValueError at build time
UNCOVERED = [
    ("raw+distance_weighted", {}),
    ("weighted_pair", dict(mining="distance_weighted")),
    ("osm_caa", dict(num_classes=4, embedding_dim=3, detach_weights=False)),
    ("contrastive", dict(normalize=False)),
    ("triplet", dict(normalize=False)),
    ("lifted_structure", dict(normalize=False)),
    ("ddml", dict(normalize=False)),
]


def _build(name, kw, chunk=None):
    torch.manual_seed(0)       # osm_caa draws its centres
    return losses.build(name, **kw) if chunk is None else losses.build(name, chunk_size=chunk,
                                                                       **kw)


def assert_same(got, want, rel=1e-10):
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * scale + 1e-300)


def assert_tiled_equals_dense(name, kw, args, chunks):
    v_dense, g_dense = value_and_grads(_build(name, kw), *args)
    for chunk in chunks:
        v, g = value_and_grads(_build(name, kw, chunk), *args)
        assert torch.isfinite(v)
        assert_same(v, v_dense)
        for a, b in zip(g, g_dense):
            assert_same(a, b)
    return v_dense, g_dense


def _batch(seed, B, D=5, C=4, M=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, D, generator=g, dtype=torch.float64)
    ql = torch.randint(0, C, (B,), generator=g)
    if M is None:
        return q, ql
    return q, ql, torch.randn(M, D, generator=g, dtype=torch.float64), \
        torch.randint(0, C, (M,), generator=g)


@pytest.mark.parametrize("name,kw", COVERED, ids=IDS)
class TestTiledEqualsDense:
    def test_in_batch(self, name, kw):
        # B = 12: chunk 4 divides it, 5 does not, 64 is one tile
        v, g = assert_tiled_equals_dense(name, kw, _batch(0, 12), (4, 5, 64))
        assert g[0].abs().max() > 0, "pick a batch with active pairs"

    def test_query_vs_reference(self, name, kw):
        # B = 8, M = 10: 2 divides both, 4 divides B only, 5 divides M only, 3 neither
        args = _batch(1, 8, M=10)
        v, g = assert_tiled_equals_dense(name, kw, args, (2, 3, 5))
        assert g[1].abs().max() > 0, "the references get a gradient"

    @pytest.mark.parametrize("layout", ["one_class", "singletons", "no_shared_label"])
    def test_degenerate_batches(self, name, kw, layout):
        g = torch.Generator().manual_seed(2)
        x = torch.randn(7, 5, generator=g, dtype=torch.float64)
        if layout == "no_shared_label":   # queries share no label with the references
            args = (x, torch.zeros(7, dtype=torch.long),
                    torch.randn(6, 5, generator=g, dtype=torch.float64), torch.arange(1, 7))
        else:
            args = (x, torch.zeros(7, dtype=torch.long) if layout == "one_class"
                    else torch.arange(7))
        v, grads = assert_tiled_equals_dense(name, kw, args, (2, 3))
        for gr in grads:
            assert torch.isfinite(gr).all()

    def test_ties_and_duplicates(self, name, kw):
        # one-hot vectors and their copies: every similarity is exactly 0 or 1 in any order of
        # summation, so the tiles see the dense matrix's ties bit for bit
        eye = torch.eye(5, dtype=torch.float64)
        x = eye[torch.tensor([0, 0, 1, 1, 2, 0, 3, 1, 2, 2])] * 2.0
        y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 0])
        assert_tiled_equals_dense(name, kw, (x, y), (3, 4))
        assert_tiled_equals_dense(name, kw, (x[:6], y[:6], x[4:], y[4:]), (2, 5))

    def test_weights_and_theorem_3_1_through_the_tiles(self, name, kw):
        x, y = _batch(3, 11)
        _, W_dense = weights.pair_weights(_build(name, kw), x, y)
        S, W = weights.pair_weights(_build(name, kw, 4), x, y)
        assert_same(W, W_dense)
        torch.manual_seed(0)
        _, _, diff = weights.theorem_3_1_check(_build(name, kw, 4), x, y)
        assert diff < 1e-10
        q, ql, r, rl = _batch(4, 6, M=9)
        _, W_dense = weights.pair_weights(_build(name, kw), q, ql, r, rl)
        _, W = weights.pair_weights(_build(name, kw, 4), q, ql, r, rl)
        assert_same(W, W_dense)


@pytest.mark.parametrize("name,kw", COVERED, ids=IDS)
def test_wide_rows_read_and_write_their_positives_through_the_tiles(monkeypatch, name, kw):
    """Rows with many positives (a memory bank of few classes) take the tile path for their
    positive slots; force it with a width limit of 1."""
    monkeypatch.setattr(tiles, "WIDE_SLOTS", 1)
    assert_tiled_equals_dense(name, kw, _batch(11, 12), (5,))
    assert_tiled_equals_dense(name, kw, _batch(12, 8, M=10), (3,))


@pytest.mark.parametrize("name,kw", [c for c in COVERED if not c[1]], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_lower_precision_is_computed_in_float32(name, kw, dtype):
    """Both paths compute in float32 (docs/precision.md): the values differ by float32
    arithmetic (each within its measured float64 tolerance), and the half gradients, the
    float32 ones rounded once, by at most one ulp of the dtype entry by entry (two float32
    gradients on either side of a rounding midpoint; float16 ulps bottom out at 2^-24)."""
    x, y = _batch(5, 16, D=8)
    xh = (3 * x).to(dtype)
    v_dense, (g_dense,) = value_and_grads(_build(name, kw), xh, y)
    v, (g,) = value_and_grads(_build(name, kw, 5), xh, y)
    assert v.dtype == v_dense.dtype == torch.float32 and g.dtype == g_dense.dtype == dtype
    assert torch.isfinite(v) and torch.isfinite(g.float()).all()
    scale = float(g_dense.float().abs().max())
    assert scale > 0
    if dtype == torch.float32:
        torch.testing.assert_close(v, v_dense, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g, g_dense, rtol=1e-5, atol=1e-5 * scale)
        return
    tol = sum(precision.tolerance("loss", name, path, dtype, "value", "fp64")
              for path in ("dense", "tiled"))
    assert abs(float(v) - float(v_dense)) <= tol * abs(float(v_dense))
    ulp = 2 * precision.UNIT_ROUNDOFF[dtype]
    floor = 2.0 ** -24 if dtype == torch.float16 else 0.0
    torch.testing.assert_close(g.double(), g_dense.double(), rtol=ulp,
                               atol=floor + 1e-6 * scale)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "big", True, [4]])
def test_bad_chunk_size_is_named(bad):
    with pytest.raises(ValueError, match="chunk_size"):
        losses.build("multi_similarity", chunk_size=bad)
    loss = losses.build("triplet")
    with pytest.raises(ValueError, match="chunk_size"):
        loss.chunk_size = bad
    with pytest.raises(ValueError, match="chunk_size"):
        resolve_config(None, {"chunk_size": bad})


@pytest.mark.parametrize("name,kw", UNCOVERED, ids=[f"{n}-{i}" for i, (n, _) in
                                                     enumerate(UNCOVERED)])
def test_uncovered_loss_fails_at_build_time(name, kw):
    with pytest.raises(ValueError, match="cannot be computed in tiles") as err:
        losses.build(name, chunk_size=64, **kw)
    assert len(str(err.value).split(":", 1)[1].strip()) > 10    # it says why
    with pytest.raises(ValueError, match="cannot be computed in tiles"):
        losses.build(name, chunk_size="auto", **kw)
    assert losses.build(name, chunk_size=None, **kw).chunk_size is None


def test_every_registered_loss_is_covered_or_refuses():
    """A loss added later without a tile formulation refuses by default."""
    covered = {losses.get(n) for n, _ in COVERED}
    for name in losses.available():
        try:
            loss = build_loss(name, chunk_size=8)
        except ValueError as err:
            assert "cannot be computed in tiles" in str(err)
        else:
            assert type(loss) in covered, f"{name} tiles but has no equality test here"
            assert loss.chunk_size == 8


def test_chunk_size_keyword_attribute_and_repr():
    loss = losses.get("multi_similarity")(beta=40.0, chunk_size=128)
    assert loss.chunk_size == 128 and "chunk_size=128" in repr(loss)
    assert "chunk_size" not in repr(losses.build("multi_similarity"))
    assert "chunk_size" not in losses.parameters("multi_similarity")
    loss.chunk_size = None
    assert loss.chunk_size is None


def test_auto_is_dense_within_the_budget_and_tiled_beyond(monkeypatch):
    x, y = _batch(6, 40)
    calls = []
    real = tiling.tiled_forward
    monkeypatch.setattr(tiling, "tiled_forward", lambda *a: calls.append(a[-1]) or real(*a))
    auto = losses.build("multi_similarity", chunk_size="auto")
    v_dense, (g_dense,) = value_and_grads(losses.build("multi_similarity"), x, y)
    v, (g,) = value_and_grads(auto, x, y)
    assert calls == [] and torch.equal(v, v_dense) and torch.equal(g, g_dense)
    before = tiling.auto_budget()
    try:
        tiling.set_auto_budget(tiling.DENSE_BUFFERS * 40 * 40 * 8 - 1)   # just too small
        v, (g,) = value_and_grads(auto, x, y)
        assert calls == [tiling.auto_chunk(8)]
        assert_same(v, v_dense)
        assert_same(g, g_dense)
    finally:
        tiling.set_auto_budget(before)
    assert tiling.resolve_chunk_size("auto", 4096, 4096, torch.float32) is None
    assert tiling.resolve_chunk_size("auto", 65536, 65536, torch.float32) >= 256
    with pytest.raises(ValueError, match="budget"):
        tiling.set_auto_budget(0)


def test_dense_path_is_untouched_without_chunk_size(monkeypatch):
    monkeypatch.setattr(tiling, "tiled_forward", lambda *a: pytest.fail("tiled path used"))
    x, y = _batch(7, 10)
    assert torch.isfinite(losses.build("multi_similarity")(x, y))


def test_one_row_and_column_per_tile():
    x, y = _batch(10, 9)
    for name in ("multi_similarity", "triplet", "lifted_structure"):
        assert_tiled_equals_dense(name, {}, (x, y), (1,))


def test_tiles_never_hold_a_full_matrix(monkeypatch):
    """Every (.., ..) product the engine forms is at most chunk x chunk."""
    seen = []
    real = tiling._tile_pairs

    def spy(q, r, ctx, chunk, *cache):
        for tile, mirror in real(q, r, ctx, chunk, *cache):
            seen.append(tuple(tile.S.shape))
            yield tile, mirror

    monkeypatch.setattr(tiling, "_tile_pairs", spy)
    x, y = _batch(8, 30)
    value_and_grads(losses.build("triplet", chunk_size=7), x, y)
    assert seen and max(max(s) for s in seen) <= 7


def test_train_option_reaches_the_loss():
    from dmlkit.train.fitting import _build_loss
    cfg = resolve_config(None, {"chunk_size": "512", "loss": "multi_similarity"})
    assert cfg.chunk_size == 512 and _build_loss(cfg).chunk_size == 512
    assert resolve_config(None, {"chunk_size": "auto"}).chunk_size == "auto"
    assert resolve_config(None, {}).chunk_size is None
    with pytest.raises(ValueError, match="cannot be computed in tiles"):
        _build_loss(resolve_config(None, {"chunk_size": 64, "loss": "raw+distance_weighted"}))


@pytest.mark.parametrize("wide", [False, True])
def test_query_vs_reference_with_a_large_bank_in_tiles(monkeypatch, wide):
    """B = 4 queries against M = 300 references in tiles of 32 (the memory-bank case); wide:
    the ~43 positives of each row reach the tiles as runs of slots found by binary search,
    some tiles holding none of a row's positives."""
    if wide:
        monkeypatch.setattr(tiles, "WIDE_SLOTS", 8)
    g = torch.Generator().manual_seed(9)
    q = F.normalize(torch.randn(4, 6, generator=g, dtype=torch.float64), dim=1)
    r = torch.randn(300, 6, generator=g, dtype=torch.float64)
    ref_labels = torch.where(torch.arange(300) < 150, torch.arange(300) % 7, 5)
    args = (q, torch.arange(4) % 3, r, ref_labels)
    for name in ("multi_similarity", "contrastive", "triplet", "lifted_structure"):
        assert_tiled_equals_dense(name, {}, args, (32, 7))


@pytest.mark.parametrize("in_batch", [True, False])
@pytest.mark.parametrize("budget", [0, 3 * 4 * 4 * 8, 10 ** 9])
def test_forward_tiles_kept_for_the_backward_change_nothing(monkeypatch, in_batch, budget):
    """The tile cache (none, a budget of three 4 x 4 float64 tiles, all tiles) gives the
    recomputing path's value and gradients; the backward takes each kept tile once and
    recomputes the rest, and a second backward (retain_graph) recomputes them all."""
    made = spy_on_tile_caches(monkeypatch)
    args = _batch(13, 14) if in_batch else _batch(14, 9, M=11)
    before = tiling.cache_budget()
    try:
        tiling.set_cache_budget(0)
        want_v, want_g = value_and_grads(_build("multi_similarity", {}, 4), *args)
        assert made == []
        tiling.set_cache_budget(budget)
        leaves = [a.detach().clone().requires_grad_(True) if a.is_floating_point() else a
                  for a in args]
        value = _build("multi_similarity", {}, 4)(*leaves)
        if budget:
            (cache,) = made
            assert 0 < cache.used <= budget
            assert cache.used == sum(t.numel() * t.element_size() for t in cache.tiles.values())
        value.backward(retain_graph=True)
        grads = [a.grad.clone() for a in leaves if a.is_floating_point()]
        if budget:
            assert cache.left == {}           # every kept tile was taken
        for a in leaves:
            if a.is_floating_point():
                a.grad = None
        value.backward()
        again = [a.grad for a in leaves if a.is_floating_point()]
    finally:
        tiling.set_cache_budget(before)
    assert_same(value.detach(), want_v, rel=1e-14)
    for got, second, want in zip(grads, again, want_g):
        assert_same(got, want, rel=1e-14)
        assert_same(second, want, rel=1e-14)


def test_no_tiles_are_kept_without_a_gradient(monkeypatch):
    monkeypatch.setattr(tiling, "_TileCache", lambda *a: pytest.fail("a cache was made"))
    x, y = _batch(15, 12)
    with torch.no_grad():
        assert torch.isfinite(losses.build("triplet", chunk_size=5)(x, y))
    assert torch.isfinite(losses.build("triplet", chunk_size=5)(x, y))   # x needs no grad


@pytest.mark.parametrize("bad", [-1, 1.5, "1GB", True])
def test_bad_cache_budget_is_named(bad):
    with pytest.raises(ValueError, match="cache budget"):
        tiling.set_cache_budget(bad)


def test_dense_agreement_reports_the_differences():
    x, y = _batch(16, 13)
    W_d, W_t, diffs = tiling.dense_agreement("angular", x, y, 4, alpha=35.0)
    _, want = weights.pair_weights(losses.build("angular", alpha=35.0), x, y)
    assert torch.equal(W_d, want)
    assert diffs["weight_max"] == float(want.abs().max()) > 0
    assert diffs["weight_max_abs_diff"] == float((W_t - W_d).abs().max()) <= 1e-15
    assert 0 <= diffs["value_rel_diff"] <= 1e-14 and 0 <= diffs["grad_rel_diff"] <= 1e-14


def test_both_exponential_forms_of_multi_similarity_equal_the_dense_path(monkeypatch):
    """The raw weighting over vthm / no mining: P = exp2(beta' s) shared by a tile and its
    mirror (the direct form), and the rows' running maximum (the shifted form, used when the
    direct one could leave the dtype's range) both equal the dense path."""
    from dmlkit.losses.multi_similarity import KeptPairTiles
    cases = [("multi_similarity", {}), ("raw", {}),
             ("multi_similarity", dict(beta=20.0, lam=0.3, epsilon=0.3, reduction="sum"))]
    for direct in (True, False):
        monkeypatch.setattr(KeptPairTiles, "direct_exponentials",
                            lambda self, ctx, d=direct: self.fast and d)
        for name, kw in cases:
            assert_tiled_equals_dense(name, kw, _batch(17, 13), (4, 6))
            assert_tiled_equals_dense(name, kw, _batch(18, 7, M=11), (3, 11))


def test_direct_exponentials_only_within_the_dtype_range():
    from dmlkit.losses.multi_similarity import KeptPairTiles

    def ctx(B, M, dtype=torch.float32, normalized=True):
        z = torch.zeros(1)
        return tiles.TileContext(B=B, M=M, in_batch=False, labels=z, ref_labels=z, dtype=dtype,
                                 device=z.device, normalized=normalized, embeddings=z,
                                 ref_embeddings=z)

    def form(beta=50.0, lam=0.5, mining="vthm", weighting="raw"):
        return KeptPairTiles(weighting, mining, 2.0, beta, lam, "mean")

    assert form().direct_exponentials(ctx(65536, 65536))               # the defaults
    assert form().direct_exponentials(ctx(256, 262144))                # a memory bank
    assert form(mining="none").direct_exponentials(ctx(4096, 4096))
    assert not form().direct_exponentials(ctx(4096, 4096, normalized=False))
    assert not form(beta=100.0).direct_exponentials(ctx(4096, 4096))   # 2^144 > float32
    assert form(beta=100.0).direct_exponentials(ctx(4096, 4096, torch.float64))
    assert not form(lam=2.0).direct_exponentials(ctx(4096, 4096))      # e^{-beta lam}
    assert not form(mining="semihard").direct_exponentials(ctx(64, 64))
    assert not form(weighting="binomial").direct_exponentials(ctx(64, 64))


def test_direct_form_in_float32_at_a_real_batch_size():
    """float32, B = 2,048 unit vectors in 8-image classes (the benchmark's layout): the tiled
    multi-similarity loss in its direct form is the dense one to float32 rounding."""
    g = torch.Generator().manual_seed(19)
    x = F.normalize(torch.randn(2048, 64, generator=g), dim=1)
    y = torch.arange(2048) % 256
    v_d, (g_d,) = value_and_grads(losses.build("multi_similarity"), x, y)
    v_t, (g_t,) = value_and_grads(losses.build("multi_similarity", chunk_size=512), x, y)
    assert_same(v_t, v_d, rel=1e-5)
    assert_same(g_t, g_d, rel=1e-4)
    assert g_d.abs().max() > 0


def test_masked_tiles_hold_minus_inf_off_the_negatives():
    """For a formulation with masked_tiles the engine writes -inf on every non-negative pair
    (the positives by label, the diagonal) into the product itself; the negatives keep S."""
    x, y = _batch(20, 11)
    q = F.normalize(x, dim=1)
    ctx = tiling._inputs(losses.build("multi_similarity"), x, y, None, None)[-1]
    S = q @ q.t()
    not_neg = (y[:, None] == y[None, :])
    seen = torch.zeros_like(S, dtype=torch.bool)
    for tile, _ in tiling._tile_pairs(q, q, ctx, 4, masked=True):
        assert tile.negatives_only() is tile.S
        want = S[tile.rows, tile.cols].masked_fill(not_neg[tile.rows, tile.cols], float("-inf"))
        torch.testing.assert_close(tile.S, want, rtol=1e-14, atol=1e-14)
        seen[tile.rows, tile.cols] = True
    assert seen.all()


def test_tile_buffers_are_reused_per_name_and_laid_out_as_the_tile():
    x, y = _batch(21, 10)
    q = F.normalize(x, dim=1)
    ctx = tiling._inputs(losses.build("multi_similarity"), x, y, None, None)[-1]
    first = {}
    for tile, mirrored in tiling._tile_pairs(q, q, ctx, 4):
        buf = tile.buffer("keep")
        assert buf.shape == tile.S.shape and buf.stride() == tile.S.stride()
        first.setdefault(mirrored, buf.data_ptr())
        assert buf.data_ptr() == first[mirrored]          # one scratch tensor per name
    assert first[True] != first[False]                    # the mirror has its own
    lone = tiles.Tile(torch.zeros(2, 3), 0, 0, ctx)
    assert lone.buffer("keep").shape == (2, 3)           # no workspace: a fresh tensor


def test_tile_cache_memory_is_reused_across_calls_and_never_shared_by_live_graphs(monkeypatch):
    """Consecutive tiled calls write their kept tiles into the same CPU slab; two graphs
    alive at once (both forwards before either backward) do not share it, and both
    gradients are the recomputing path's."""
    made = spy_on_tile_caches(monkeypatch)

    def kept_storage(cache):
        return {t.untyped_storage().data_ptr() for t in cache.tiles.values()}

    (x1, y1), (x2, y2) = _batch(22, 12), _batch(23, 12)
    loss = losses.build("multi_similarity", chunk_size=4)
    before = tiling.cache_budget()
    try:
        tiling.set_cache_budget(0)
        want = [value_and_grads(loss, x, y)[1][0] for x, y in ((x1, y1), (x2, y2))]
        tiling.set_cache_budget(10 ** 6)
        a = x1.clone().requires_grad_(True)
        loss(a, y1).backward()
        b = x2.clone().requires_grad_(True)
        vb = loss(b, y2)
        first_slab = kept_storage(made[1])
        vb.backward()
        a2, b2 = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
        va, vb = loss(a2, y1), loss(b2, y2)            # both alive: separate memory
        assert len(first_slab) == 1 and kept_storage(made[2]) == first_slab
        assert kept_storage(made[3]).isdisjoint(first_slab)
        vb.backward()
        va.backward()
    finally:
        tiling.set_cache_budget(before)
    for got, w in ((a.grad, want[0]), (b.grad, want[1]), (a2.grad, want[0]),
                   (b2.grad, want[1])):
        assert_same(got, w, rel=1e-14)
    tiling.release_cache_memory()
    assert tiling._SLABS == {}


def test_threads_calling_tiled_losses_get_their_own_tiles():
    """Two threads running tiled forward + backward at once: each gradient is the one of a
    single-threaded run (the cache slab is taken and given back under a lock)."""
    import threading
    batches = [_batch(24 + k, 24) for k in range(2)]
    loss = losses.build("multi_similarity", chunk_size=4)
    want = [value_and_grads(loss, x, y)[1][0] for x, y in batches]
    errors = []

    def work(k):
        x, y = batches[k]
        for _ in range(10):
            got = value_and_grads(loss, x, y)[1][0]
            if not torch.allclose(got, want[k], rtol=1e-13, atol=1e-15):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
