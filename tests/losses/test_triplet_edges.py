"""dmlkit.losses.triplet beyond test_triplet.py: the tiled path (TripletTiles) of every form x
mining x reduction against the per-triplet definition in value and gradient, in-batch and
query-vs-reference, degenerate batches (dense and tiled), the settings without a tile
formulation, and the edge cases of the counts and of the closed-form weights.

The gradient reference is the definition written on a (B, M, M) tensor of all triplets
(:func:`brute_triplet`, autograd), itself checked against the naive per-triplet loop."""

import dataclasses
import itertools

import pytest
import torch
from conftest import value_and_grads
import torch.nn.functional as F
from naive import naive_triplet
from naive.loss_testing import (
    assert_degenerate_batches_give_a_connected_zero,
    random_batch,
    random_pair_masks,
    random_qref,
)

from dmlkit import losses
from dmlkit.losses import triplet as triplet_module
from dmlkit.losses.base import make_batch
from dmlkit.losses.triplet import triplet_counts

FORMS = ["distance", "squared_distance", "similarity"]
MININGS = ["all", "semihard", "hard", "batch_hard"]
REDUCTIONS = ["mean_nonzero", "mean", "sum"]
COMBOS = list(itertools.product(FORMS, MININGS, REDUCTIONS))


def brute_from_scores(T, pos, neg, margin, mining, reduction):
    """The triplet loss by its definition on the (B, M, M) tensor of every triplet (i, p, n)
    of the scores T (higher = more similar): ``[T_in - T_ip + margin]_+`` over the kept
    ones, differentiable (torch, autograd)."""
    zero = torch.zeros((), dtype=T.dtype)
    if mining == "batch_hard":
        live = pos.any(1) & neg.any(1)
        hp = torch.where(pos, T, torch.full_like(T, float("inf"))).min(1).values
        hn = torch.where(neg, T, torch.full_like(T, float("-inf"))).max(1).values
        losses_ = torch.relu(torch.where(live, hn - hp + margin, zero))
        kept, n_considered = live, int(live.sum())
    else:
        a, b = T[:, :, None], T[:, None, :]                 # a[i, p], b[i, n]
        valid = pos[:, :, None] & neg[:, None, :]
        kept = valid
        if mining == "semihard":
            kept = kept & (b > a - margin) & (b < a)
        elif mining == "hard":
            kept = kept & (b > a)
        losses_ = torch.where(kept, torch.relu(b - a + margin), zero)
        n_considered = int(valid.sum()) if mining == "all" else int(kept.sum())
    total = losses_.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / max(n_considered, 1)
    return total / max(int(((losses_ > 0) & kept).sum()), 1)


def brute_triplet(q, ql, r=None, rl=None, margin=0.2, form="distance", mining="all",
                  reduction="mean_nonzero", normalize=True):
    """:func:`brute_from_scores` on the scores of the embeddings (T = s, -d^2 or -d)."""
    in_batch = r is None
    q = F.normalize(q, dim=1) if normalize else q
    r = q if in_batch else (F.normalize(r, dim=1) if normalize else r)
    rl = ql if in_batch else rl
    if form == "similarity":
        T = q @ r.T
    else:
        d2 = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
        T = -d2 if form == "squared_distance" else -(d2 + 1e-12).sqrt()
    same = ql[:, None] == rl[None, :]
    pos = same.clone()
    if in_batch:
        pos.fill_diagonal_(False)
    return brute_from_scores(T, pos, ~same, margin, mining, reduction)


def _grads(fn, *args):
    value, grads = value_and_grads(fn, *args)
    return float(value), grads


@pytest.mark.parametrize("form,mining,reduction", COMBOS)
def test_brute_force_reference_is_the_naive_loop(form, mining, reduction):
    x, y = random_batch(1, B=9, D=3)
    q, ql, r, rl = random_qref(2, B=5, M=7, D=3)
    kw = dict(margin=0.3, form=form, mining=mining, reduction=reduction)
    assert float(brute_triplet(x, y, **kw)) == pytest.approx(
        naive_triplet(x, y, 0.3, form, mining, reduction), rel=1e-10, abs=1e-12)
    assert float(brute_triplet(q, ql, r, rl, **kw)) == pytest.approx(
        naive_triplet(q, ql, 0.3, form, mining, reduction, ref=r, ref_lab=rl),
        rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("form,mining,reduction", COMBOS)
def test_tiled_equals_the_definition(form, mining, reduction):
    kw = dict(margin=0.3, form=form, mining=mining, reduction=reduction)
    x, y = random_batch(1, B=9, D=3)
    q, ql, r, rl = random_qref(2, B=5, M=7, D=3)
    v_ref, (g_ref,) = _grads(lambda e: brute_triplet(e, y, **kw), x)
    assert v_ref > 0
    for chunk, width in ((2, 32), (4, 0)):      # the comparison loop, the binary search
        loss = losses.build("triplet", chunk_size=chunk, **kw)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(triplet_module, "_LOOP_WIDTH", width)
            v, (g,) = _grads(lambda e, loss=loss: loss(e, y), x)
        assert v == pytest.approx(v_ref, rel=1e-10, abs=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)
    v_ref, g_ref = _grads(lambda a, b: brute_triplet(a, ql, b, rl, **kw), q, r)
    v, g = _grads(lambda a, b: losses.build("triplet", chunk_size=3, **kw)(a, ql, b, rl), q, r)
    assert v == pytest.approx(v_ref, rel=1e-10, abs=1e-12)
    for got, want in zip(g, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def _unit(*degrees):
    t = torch.tensor(degrees, dtype=torch.float64) * torch.pi / 180
    return torch.stack([t.cos(), t.sin()], 1)


def _few_triplet_batches():
    """Query-vs-reference batches on the unit circle with margin 0.3: query A (label 0) is
    far inside its margin, query B (label 1) has exactly one triplet with a non-zero loss,
    query C (label 3) has no positive. First batch: B's only violating negative is closer
    than its positive (kept by "hard", not by "semihard"); second: farther, inside the margin
    (kept by "semihard", not by "hard")."""
    q, ql = _unit(0, 90, 200), torch.tensor([0, 1, 3])
    rl = torch.tensor([0, 1, 2])
    return [(q, ql, _unit(350, 150, 95), rl), (q, ql, _unit(350, 150, 155), rl)]


#: where tiles run: dense, tiles of 2 (the comparison loop), tiles of 2 with the binary search
PATHS = ["dense", "tiles", "tiles-binary-search"]


def _build(path, monkeypatch, **kw):
    if path == "tiles-binary-search":
        monkeypatch.setattr(triplet_module, "_LOOP_WIDTH", 0)
    return losses.build("triplet", **kw) if path == "dense" else \
        losses.build("triplet", chunk_size=2, **kw)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("form,mining,reduction", COMBOS)
def test_one_violating_triplet_equals_the_definition(form, mining, reduction, path,
                                                     monkeypatch):
    kw = dict(margin=0.3, form=form, mining=mining, reduction=reduction)
    loss = _build(path, monkeypatch, **kw)
    for q, ql, r, rl in _few_triplet_batches():
        # one triplet with a non-zero loss: its loss is the sum and the mean over non-zeros
        one = brute_triplet(q, ql, r, rl, **{**kw, "mining": "all", "reduction": "sum"})
        assert float(one) > 0
        assert float(one) == pytest.approx(float(brute_triplet(
            q, ql, r, rl, **{**kw, "mining": "all", "reduction": "mean_nonzero"})))
        want = _grads(lambda a, b, ql=ql, rl=rl: brute_triplet(a, ql, b, rl, **kw), q, r)
        got = _grads(lambda a, b, ql=ql, rl=rl: loss(a, ql, b, rl), q, r)
        assert got[0] == pytest.approx(want[0], rel=1e-10, abs=1e-12)
        for g, w in zip(got[1], want[1]):
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mining", MININGS)
def test_degenerate_batches_give_a_connected_zero(mining, path, monkeypatch):
    loss = _build(path, monkeypatch, mining=mining)
    g = torch.Generator().manual_seed(0)
    assert_degenerate_batches_give_a_connected_zero(loss, g)
    # query-vs-reference: every reference has the label of query 0, which keeps positives and
    # no negative; query 1 the reverse: no triplet, whatever the reduction
    for reduction in REDUCTIONS:
        loss = _build(path, monkeypatch, mining=mining, reduction=reduction)
        q = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
        r = torch.randn(3, 3, dtype=torch.float64, generator=g, requires_grad=True)
        value = loss(q, torch.tensor([0, 1]), r, torch.zeros(3, dtype=torch.long))
        value.backward()
        assert value.item() == 0.0 and (q.grad == 0).all() and (r.grad == 0).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mining", MININGS)
def test_one_negative_per_row_equals_the_definition(mining, path, monkeypatch):
    # labels 0, 0, 0, 1: rows 0-2 have two positives and one negative, row 3 no positive
    x, _ = random_batch(4, B=4, D=3)
    y = torch.tensor([0, 0, 0, 1])
    for reduction in REDUCTIONS:
        kw = dict(margin=1.0, form="similarity", mining=mining, reduction=reduction)
        want = _grads(lambda e, kw=kw: brute_triplet(e, y, **kw), x)
        assert want[0] > 0
        got = _grads(lambda e, kw=kw: _build(path, monkeypatch, **kw)(e, y), x)
        assert got[0] == pytest.approx(want[0], rel=1e-10)
        torch.testing.assert_close(got[1][0], want[1][0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mining", MININGS)
def test_hinges_exactly_at_zero_equal_the_definition(mining, path, monkeypatch):
    # one-hot embeddings: cosines 0 and 1, so margin 1 puts triplets exactly on the hinge,
    # where the loss and its derivative are 0 (and a mined triplet is not kept)
    # (anchor 2 of the first batch: its hardest positive has cosine 1, its hardest negative 0)
    eye = torch.eye(4, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    batches = [(eye[[0, 0, 1, 1, 2, 0]], torch.tensor([0, 0, 1, 1, 2, 2])),
               (eye[torch.randint(0, 4, (14,), generator=g)], torch.randint(0, 3, (14,),
                                                                             generator=g))]
    for (x, y), reduction in itertools.product(batches, REDUCTIONS):
        kw = dict(margin=1.0, form="similarity", mining=mining, reduction=reduction)
        want = _grads(lambda e, kw=kw, y=y: brute_triplet(e, y, **kw), x)
        got = _grads(lambda e, kw=kw, y=y: _build(path, monkeypatch, **kw)(e, y), x)
        assert got[0] == pytest.approx(want[0], rel=1e-12, abs=1e-15)
        torch.testing.assert_close(got[1][0], want[1][0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mining", MININGS)
def test_one_positive_per_row_equals_the_definition(mining, path, monkeypatch):
    # pairs of labels: every row has exactly one positive slot
    x, _ = random_batch(4, B=8, D=3)
    y = torch.arange(8) // 2
    kw = dict(margin=0.5, mining=mining, reduction="sum")
    want = _grads(lambda e: brute_triplet(e, y, **kw), x)
    assert want[0] > 0
    got = _grads(lambda e: _build(path, monkeypatch, **kw)(e, y), x)
    assert got[0] == pytest.approx(want[0], rel=1e-10)
    torch.testing.assert_close(got[1][0], want[1][0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("mining", MININGS)
def test_arbitrary_pair_masks_equal_the_definition(mining, reduction):
    # masks of any shape of pairs: row 0 keeps positives and no negative, row 1 the reverse
    x, y = random_batch(5, B=7, D=3)
    batch = make_batch(x, y)
    pos, neg = random_pair_masks(7, seed=6)
    pos[0], neg[0] = True, False
    pos[1], neg[1] = False, True
    batch = dataclasses.replace(batch, pos=pos, neg=neg, label_masks=False)
    loss = losses.build("triplet", margin=0.4, form="similarity", mining=mining,
                        reduction=reduction)
    got = loss.compute(batch)
    want = brute_from_scores(batch.S, pos, neg, 0.4, mining, reduction)
    assert float(want) > 0
    assert float(got) == pytest.approx(float(want), rel=1e-12)


@pytest.mark.parametrize("mining", ["all", "semihard", "hard"])
def test_half_precision_scores_are_counted_in_float32(mining):
    # a PairBatch holding a half S: the loss is that of the same (exact) values in float32
    x, y = random_batch(6, B=10, D=4)
    batch = make_batch(x, y)
    S = batch.S.half()
    loss = losses.build("triplet", margin=0.3, form="similarity", mining=mining,
                        reduction="sum")
    got = loss.compute(dataclasses.replace(batch, S=S))
    assert got.dtype == torch.float32
    want = brute_from_scores(S.double(), batch.pos, batch.neg, 0.3, mining, "sum")
    assert float(want) > 0
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def naive_counts(T, pos, neg, margin):
    """The ``all`` counts by the definition, triplet by triplet."""
    c_pos, c_neg = torch.zeros(T.shape, dtype=torch.float64), torch.zeros(T.shape,
                                                                            dtype=torch.float64)
    for i, p, n in itertools.product(range(T.shape[0]), range(T.shape[1]), range(T.shape[1])):
        if pos[i, p] and neg[i, n] and float(T[i, n]) > float(T[i, p]) - margin:
            c_pos[i, p] += 1
            c_neg[i, n] += 1
    return c_pos, c_neg


def test_triplet_counts_without_triplets_are_zeros_in_the_scores_dtype():
    g = torch.Generator().manual_seed(7)
    T = torch.randn(4, 6, dtype=torch.float64, generator=g)
    some = torch.rand(4, 6, generator=g) < 0.5
    none = torch.zeros(4, 6, dtype=torch.bool)
    for pos, neg in ((none, some), (some, none), (none, none)):
        c_pos, c_neg, n_kept, n_total = triplet_counts(T, pos, neg, 0.5)
        for t in (c_pos, c_neg):
            assert t.shape == T.shape and t.dtype == torch.float64 and not t.any()
        assert n_kept.dtype == n_total.dtype == torch.float64
        assert float(n_kept) == float(n_total) == 0.0
    # with triplets: the same dtype
    c_pos, c_neg, n_kept, n_total = triplet_counts(T, some, ~some, 0.5)
    assert {t.dtype for t in (c_pos, c_neg, n_kept, n_total)} == {torch.float64}
    assert float(n_total) == float((some.sum(1) * (~some).sum(1)).sum())


def test_triplet_counts_with_one_positive_per_row_equal_the_naive_loop():
    g = torch.Generator().manual_seed(8)
    T = torch.randn(5, 7, dtype=torch.float64, generator=g)
    pos = torch.zeros(5, 7, dtype=torch.bool)
    pos[torch.arange(5), torch.arange(5) + 1] = True       # one positive per row
    neg = ~pos
    c_pos, c_neg, n_kept, _ = triplet_counts(T, pos, neg, 0.5)
    e_pos, e_neg = naive_counts(T, pos, neg, 0.5)
    assert e_pos.sum() > 0
    assert torch.equal(c_pos, e_pos) and torch.equal(c_neg, e_neg)
    assert float(n_kept) == float(e_pos.sum())


def test_triplet_counts_of_half_scores_are_float32_and_exact():
    # 100 x 100 masks with ~25 positives and ~50 negatives a row: more valid triplets than
    # the largest half value (65504)
    g = torch.Generator().manual_seed(9)
    T = torch.randn(100, 100, generator=g).half()
    u = torch.rand(100, 100, generator=g)
    pos, neg = u < 0.25, u > 0.5
    c_pos, c_neg, n_kept, n_total = triplet_counts(T, pos, neg, 0.5)
    assert {t.dtype for t in (c_pos, c_neg, n_kept, n_total)} == {torch.float32}
    exact = int((pos.sum(1) * neg.sum(1)).sum())
    assert exact > 65504 and float(n_total) == exact
    e_pos, e_neg = naive_counts(T[:6].double(), pos[:6], neg[:6], 0.5)
    assert torch.equal(c_pos[:6].double(), e_pos) and torch.equal(c_neg[:6].double(), e_neg)
    # no positive at all: zeros, still float32
    c_pos, _, n_kept, n_total = triplet_counts(T, torch.zeros_like(pos), neg, 0.5)
    assert c_pos.dtype == n_total.dtype == torch.float32 and float(n_kept) == 0.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_closed_form_weights_on_exact_ties(reduction):
    """Wang et al. 2019b eq. 8 counts the triplets with s_in - s_ip + lambda > 0 (strictly):
    one-hot embeddings give cosines 0 and 1, so lambda = 1 puts triplets exactly on 0."""
    g = torch.Generator().manual_seed(10)
    x = torch.eye(3, dtype=torch.float64)[torch.randint(0, 3, (9,), generator=g)]
    y = torch.randint(0, 2, (9,), generator=g)
    batch = make_batch(x, y)
    S, pos, neg = batch.S, batch.pos, batch.neg
    W = torch.zeros_like(S)
    n_active = n_valid = 0
    for i, p, n in itertools.product(range(9), repeat=3):
        if pos[i, p] and neg[i, n]:
            n_valid += 1
            if float(S[i, n]) - float(S[i, p]) + 1.0 > 0:
                n_active += 1
                W[i, p] += 1
                W[i, n] += 1
    ties = sum(1 for i, p, n in itertools.product(range(9), repeat=3)
               if pos[i, p] and neg[i, n] and float(S[i, n]) - float(S[i, p]) + 1.0 == 0)
    assert ties > 0 and n_active > 0
    norm = {"sum": 1, "mean": n_valid, "mean_nonzero": n_active}[reduction]
    loss = losses.build("triplet", margin=1.0, form="similarity", reduction=reduction)
    torch.testing.assert_close(loss.closed_form_weights(batch), W / norm, rtol=1e-15,
                               atol=0.0)


def test_closed_form_weights_name_the_supported_settings():
    batch = make_batch(*random_batch(0, B=6))
    for kw in ({"form": "distance"}, {"form": "similarity", "mining": "hard"}):
        with pytest.raises(ValueError, match=r"with these settings; supported: "
                                             r"triplet\(form='similarity', mining='all'\)$"):
            losses.build("triplet", **kw).closed_form_weights(batch)


def test_option_errors_name_the_option_and_the_choices():
    for kw, what in (({"form": "cosine"}, "form"), ({"mining": "hardest"}, "mining"),
                     ({"reduction": "max"}, "reduction")):
        value = next(iter(kw.values()))
        with pytest.raises(ValueError, match=rf"^unknown triplet {what} '{value}'; "
                                             r"choose one of \("):
            losses.build("triplet", **kw)
    with pytest.raises(ValueError, match=r"^margin must be >= 0, got -0.1$"):
        losses.build("triplet", margin=-0.1)


@pytest.mark.parametrize("mining", MININGS)
def test_margin_zero_is_allowed_and_the_default_is_facenets_0_2(mining):
    x, y = random_batch(2, B=10, D=3)
    zero = losses.build("triplet", margin=0, mining=mining, reduction="sum")
    assert float(zero(x, y)) == pytest.approx(naive_triplet(x, y, 0.0, "distance", mining,
                                                            "sum"), rel=1e-10, abs=1e-12)
    default = losses.build("triplet", mining=mining)
    assert default.margin == 0.2
    assert float(default(x, y)) == pytest.approx(naive_triplet(
        x, y, 0.2, "distance", mining, "mean_nonzero"), rel=1e-10)


def test_raw_embedding_distances_have_no_tiles():
    for form in ("distance", "squared_distance"):
        with pytest.raises(ValueError, match=rf"cannot be computed in tiles \(chunk_size=4\): "
                                             rf"the {form} form on raw embeddings reads the "
                                             r"distances from the embeddings, not from S "
                                             r"\(use normalize=True\)$"):
            losses.build("triplet", form=form, normalize=False, chunk_size=4)
        assert losses.build("triplet", form=form).tiling_unsupported() is None
    assert losses.build("triplet", form="similarity", normalize=False).tiling_unsupported() \
        is None


@pytest.mark.parametrize("mining", MININGS)
def test_tiled_similarity_of_raw_embeddings_equals_the_definition(mining):
    x, y = random_batch(3, B=9, D=3)
    x = x * 0.6
    kw = dict(margin=0.5, form="similarity", mining=mining, reduction="mean")
    want = _grads(lambda e: brute_triplet(e, y, normalize=False, **kw), x)
    assert want[0] > 0
    loss = losses.build("triplet", chunk_size=4, normalize=False, **kw)
    got = _grads(lambda e: loss(e, y), x)
    assert got[0] == pytest.approx(want[0], rel=1e-10)
    torch.testing.assert_close(got[1][0], want[1][0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_batch_hard_ties_take_the_first_column(path, monkeypatch):
    """Two identical hardest negatives (columns 2 and 4, in different tiles): the gradient
    goes to the first one, as torch.max's documented first index in the definition."""
    a, p, n, z = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.8, 0.6, 0], [0, 0, 1]],
                              dtype=torch.float64)
    x = torch.stack([a, p, n, z, n])               # n: the hardest negative of rows 0 and 1
    y = torch.tensor([0, 0, 1, 2, 1])
    for reduction in REDUCTIONS:
        kw = dict(margin=1.0, form="similarity", mining="batch_hard", reduction=reduction)
        want = _grads(lambda e, kw=kw: brute_triplet(e, y, **kw), x)
        got = _grads(lambda e, kw=kw: _build(path, monkeypatch, **kw)(e, y), x)
        assert got[0] == pytest.approx(want[0], rel=1e-12)
        torch.testing.assert_close(got[1][0], want[1][0], rtol=1e-10, atol=1e-12)
        assert want[1][0][2].abs().max() > 0 and float(want[1][0][4].abs().max()) != \
            float(want[1][0][2].abs().max())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mining", ["all", "semihard", "hard"])
def test_a_single_negative_pair_equals_the_definition(mining, path, monkeypatch):
    # one query, one positive and one negative reference: a single triplet in the batch
    q, ql, rl = _unit(0), torch.tensor([0]), torch.tensor([0, 1])
    r = _unit(60, 65) if mining == "semihard" else _unit(150, 95)
    kw = dict(margin=0.3, mining=mining, reduction="sum")
    want = _grads(lambda a, b: brute_triplet(a, ql, b, rl, **kw), q, r)
    assert want[0] > 0
    got = _grads(lambda a, b: _build(path, monkeypatch, **kw)(a, ql, b, rl), q, r)
    assert got[0] == pytest.approx(want[0], rel=1e-10)
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("form", ["distance", "similarity"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_mean_over_a_single_triplet(form, chunk):
    """One query, one positive, one negative: 'mean' over all triplets divides by 1 (tiled too)."""
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    r = torch.tensor([[0.6, 0.8], [0.8, 0.6]], dtype=torch.float64)
    ql, rl = torch.tensor([0]), torch.tensor([0, 1])
    loss = losses.build("triplet", form=form, mining="all", reduction="mean", chunk_size=chunk)
    expected = naive_triplet(q, ql, 0.2, form, "all", "mean", ref=r, ref_lab=rl)
    assert expected > 0
    assert float(loss(q, ql, r, rl)) == pytest.approx(expected, rel=1e-12)
