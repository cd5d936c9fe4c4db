"""dmlkit.losses.multi_similarity beyond test_multi_similarity.py: the tiled path of every
weighting x tiled mining with the miners' default parameters against the naive loops, the
settings without a tile formulation, and the constructor's errors."""

import math

import pytest
import torch
from naive import (
    masks_to_sets,
    naive_binomial,
    naive_cos,
    naive_hard,
    naive_raw,
    naive_semihard_sets,
    naive_sets,
    naive_uniform,
    naive_vthm_sets,
    reduce,
)
from naive.loss_testing import rand_batch

from dmlkit import losses, miners
from dmlkit.losses.base import make_batch

NAIVE = {"raw": naive_raw, "binomial": naive_binomial,
         "uniform": lambda S, P, N, a, b, lam: naive_uniform(S, P, N)}


def _kept_sets(mining, S, P, N, S_t, y, ry):
    if mining == "none":
        return P, N
    if mining == "vthm":
        return naive_vthm_sets(S, P, N, 0.1)            # the miner's default epsilon
    if mining == "semihard":
        return naive_semihard_sets(S, P, N, 0.1)        # the miner's default margin
    pos = y[:, None] == ry[None, :]
    neg = ~pos
    if S_t.shape[0] == S_t.shape[1] and torch.equal(y, ry):
        pos.fill_diagonal_(False)
    return masks_to_sets(*naive_hard(S_t, pos, neg))


@pytest.mark.parametrize("mining", ["none", "vthm", "semihard", "hard"])
def test_tiled_weightings_with_default_mining_parameters_equal_the_loops(mining):
    x, y = rand_batch(4, B=11, D=3)
    r, ry = rand_batch(5, B=9, D=3)
    for args in ((x, y), (x, y, r, ry)):
        ref, ref_y = (args[2], args[3]) if len(args) == 4 else (x, y)
        S = naive_cos(x, ref)
        P, N = naive_sets(y, None if len(args) == 2 else ry)
        Pk, Nk = _kept_sets(mining, S, P, N, torch.tensor(S, dtype=torch.float64), y, ref_y)
        assert sum(map(len, Pk)) > 0 and sum(map(len, Nk)) > 0
        for weighting, naive in NAIVE.items():
            for reduction in ("mean", "sum"):
                loss = losses.build("weighted_pair", weighting=weighting, mining=mining,
                                    reduction=reduction, alpha=3.0, beta=20.0, lam=0.4,
                                    chunk_size=4)
                expected = reduce(naive(S, Pk, Nk, 3.0, 20.0, 0.4), reduction)
                got = float(loss(*args))
                assert got == pytest.approx(expected, rel=1e-10, abs=1e-12), \
                    (weighting, mining, reduction, len(args))


@pytest.mark.parametrize("name,kw,expected", [
    ("multi_similarity", {"epsilon": 0.3}, lambda S, P, N: naive_vthm_sets(S, P, N, 0.3)),
    ("raw+semihard", {"margin": 0.25}, lambda S, P, N: naive_semihard_sets(S, P, N, 0.25)),
])
def test_tiled_named_losses_pass_their_mining_parameter(name, kw, expected):
    x, y = rand_batch(6, B=12, D=3)
    S = naive_cos(x, x)
    Pk, Nk = expected(S, *naive_sets(y))
    got = float(losses.build(name, chunk_size=5, **kw)(x, y))
    assert got == pytest.approx(reduce(naive_raw(S, Pk, Nk, 2.0, 50.0, 0.5)), rel=1e-10)


def test_settings_without_a_tile_formulation_say_why():
    why = ("distance-weighted sampling draws its negatives at random from each whole row of "
           "S; a tiled pass cannot reproduce the dense draw")
    with pytest.raises(ValueError, match=r"\(chunk_size=4\): distance-weighted sampling draws "
                                         r"its negatives at random from each whole row of S; "
                                         r"a tiled pass cannot reproduce the dense draw$"):
        losses.build("raw+distance_weighted", chunk_size=4)
    assert losses.build("raw+distance_weighted").tiling_unsupported() == why
    for mining in ("none", "vthm", "semihard", "hard"):
        assert losses.build("weighted_pair", mining=mining).tiling_unsupported() is None


def test_constructor_errors():
    assert losses.build("weighted_pair", alpha=1.0, beta=1.0).beta == 1.0    # > 0 suffices
    for kw in ({"alpha": 0.0}, {"beta": -1.0}, {"beta": 0.0}, {"alpha": -2.0, "beta": 5.0}):
        with pytest.raises(ValueError, match=r"alpha and beta must be > 0, got alpha="):
            losses.build("weighted_pair", **kw)
    with pytest.raises(ValueError, match=r"^unknown weighting 'x'; known weightings: "
                                         r"binomial, raw, uniform$"):
        losses.build("weighted_pair", weighting="x")
    loss = losses.build("weighted_pair", alpha=1, beta=3, lam=0.25, mining="semihard",
                        margin=0.2)
    assert (loss.alpha, loss.beta, loss.lam, loss.mining) == (1.0, 3.0, 0.25, "semihard")
    assert loss.mining_params == {"margin": 0.2}
    assert all(type(v) is float for v in (loss.alpha, loss.beta, loss.lam))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("kw", [{}, {"cutoff": 0.7, "nonzero_loss_cutoff": 1.2,
                                     "num_negatives": 3}])
def test_raw_distance_weighted_samples_with_its_documented_parameters(normalize, kw):
    # the documented defaults: cutoff 0.5, nonzero_loss_cutoff 1.4, one negative per anchor
    params = {"cutoff": 0.5, "nonzero_loss_cutoff": 1.4, "num_negatives": 1, **kw}
    x, y = rand_batch(2, B=14, D=5)
    x = x * 0.6
    batch = make_batch(x, y, normalize=normalize)
    pk, nk = miners.distance_weighted(batch.S, batch.pos, batch.neg, dim=5,
                                      generator=torch.Generator().manual_seed(7), **params)
    Pk, Nk = masks_to_sets(pk, nk)
    assert any(len(n) == params["num_negatives"] for n in Nk)
    S = naive_cos(x, x) if normalize else (x @ x.T).tolist()
    loss = losses.build("raw+distance_weighted", seed=7, normalize=normalize, **kw)
    assert loss.normalize is normalize
    expected = reduce(naive_raw(S, Pk, Nk, 2.0, 50.0, 0.5))
    assert float(loss(x, y)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_closed_form_weights_of_anchors_that_do_not_count_and_of_references():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    r = torch.randn(6, 3, generator=g, dtype=torch.float64)
    # every reference of label 0: the label-0 queries have positives and no negative, the
    # label-1 query negatives and no positive; no anchor counts, every weight is 0
    loss = losses.build("raw")
    batch = make_batch(x, torch.tensor([0, 1, 0, 0]), r, torch.zeros(6, dtype=torch.long))
    assert torch.equal(loss.closed_form_weights(batch), torch.zeros(4, 6, dtype=torch.float64))
    # 4 queries x 6 references: the mean is over the 4 anchors (eq. 15-16, / m)
    y, ry = torch.tensor([0, 1, 0, 2]), torch.tensor([0, 1, 2, 1, 0, 2])
    batch = make_batch(x, y, r, ry)
    S, a, b, lam = naive_cos(x, r), 2.0, 50.0, 0.5
    P, N = naive_sets(y, ry)
    W = torch.zeros(4, 6, dtype=torch.float64)
    for i in range(4):
        for j in P[i]:
            W[i, j] = 1 / (sum(math.exp(a * (S[i][j] - S[i][k])) for k in P[i])
                           + math.exp(a * (S[i][j] - lam)))
        for j in N[i]:
            W[i, j] = 1 / (sum(math.exp(-b * (S[i][j] - S[i][k])) for k in N[i])
                           + math.exp(-b * (S[i][j] - lam)))
    torch.testing.assert_close(loss.closed_form_weights(batch), W / 4, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match=r"supported: a deterministic mining "
                                         r"\(not distance_weighted\)$"):
        losses.build("raw+distance_weighted", seed=0).closed_form_weights(batch)


@pytest.mark.parametrize("name,sets,weighting", [
    ("raw", lambda S, P, N: (P, N), naive_raw),
    ("multi_similarity", lambda S, P, N: naive_vthm_sets(S, P, N, 0.1), naive_raw),
    ("binomial+vthm", lambda S, P, N: naive_vthm_sets(S, P, N, 0.1), naive_binomial),
    ("raw+semihard", lambda S, P, N: naive_semihard_sets(S, P, N, 0.1), naive_raw),
    ("vthm", lambda S, P, N: naive_vthm_sets(S, P, N, 0.1), NAIVE["uniform"]),
    ("weighted_pair", lambda S, P, N: naive_vthm_sets(S, P, N, 0.1), naive_raw),
])
def test_named_losses_with_their_documented_defaults(name, sets, weighting):
    # alpha = 2, beta = 50, lam = 0.5, epsilon = 0.1, margin = 0.1, reduction "mean",
    # normalised embeddings (the docstrings)
    x, y = rand_batch(8, B=13, D=4)
    x = x * 3
    S = naive_cos(x, x)
    Pk, Nk = sets(S, *naive_sets(y))
    expected = reduce(weighting(S, Pk, Nk, 2.0, 50.0, 0.5))
    assert float(losses.build(name)(x, y)) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # normalize=False: S is the plain dot product (x scaled down to keep exp(50 s) finite)
    x = x / 4
    S = [[sum(a * b for a, b in zip(u, v)) for v in x.tolist()] for u in x.tolist()]
    Pk, Nk = sets(S, *naive_sets(y))
    expected = reduce(weighting(S, Pk, Nk, 2.0, 50.0, 0.5))
    assert float(losses.build(name, normalize=False)(x, y)) == pytest.approx(
        expected, rel=1e-10, abs=1e-12)


def test_named_losses_report_the_hyperparameters_they_were_given():
    expected = {
        ("binomial+vthm", (("epsilon", 0.3), ("beta", 40))):
            "alpha=2.0, beta=40.0, lam=0.5, epsilon=0.3, reduction='mean', normalize=True",
        ("raw+semihard", (("margin", 0.2),)):
            "alpha=2.0, beta=50.0, lam=0.5, margin=0.2, reduction='mean', normalize=True",
        ("multi_similarity", (("epsilon", 0.2), ("reduction", "sum"))):
            "alpha=2.0, beta=50.0, lam=0.5, epsilon=0.2, reduction='sum', normalize=True",
        ("vthm", (("epsilon", 0.3), ("reduction", "sum"))):
            "epsilon=0.3, reduction='sum', normalize=True",
        ("raw+distance_weighted", (("cutoff", 0.6), ("nonzero_loss_cutoff", 1.3),
                                   ("num_negatives", 2), ("seed", 3))):
            "alpha=2.0, beta=50.0, lam=0.5, cutoff=0.6, nonzero_loss_cutoff=1.3, "
            "num_negatives=2, seed=3, reduction='mean', normalize=True",
    }
    for (name, kw), text in expected.items():
        assert losses.build(name, **dict(kw)).extra_repr() == text, name


def _exact_rows(columns, ry):
    """Queries e_1, e_2, ... and references whose dot products (normalize=False) are exactly
    the given floats: row i of S is columns[i]."""
    x = torch.eye(len(columns), dtype=torch.float64)
    r = torch.tensor(columns, dtype=torch.float64).T.contiguous()
    return x, torch.zeros(len(columns), dtype=torch.long), r, torch.tensor(ry)


def test_multi_similarity_counts_only_anchors_keeping_both_kinds_under_rounding():
    # VTHM keeps both kinds or neither in exact arithmetic; in floats, row 0 keeps its
    # positive (0.08 - 0.1 < -0.02) and no negative (-0.02 + 0.1 > 0.08 is False), row 2 its
    # negative and no positive; only row 1 counts (the formula's anchors, 1/m with m = 3)
    x, y, r, ry = _exact_rows([[0.08, -0.02], [0.3, 0.25], [-0.25, -0.35]], [0, 1])
    assert 0.08 - 0.1 < -0.02 and not -0.02 + 0.1 > 0.08
    assert not -0.25 - 0.1 < -0.35 and -0.35 + 0.1 > -0.25
    expected = naive_raw([[0.3, 0.25]], [[0]], [[1]], 2.0, 50.0, 0.5)[0] / 3
    loss = losses.build("multi_similarity", epsilon=0.1, normalize=False)
    assert float(loss(x, y, r, ry)) == pytest.approx(expected, rel=1e-12)


def test_multi_similarity_keeps_a_positive_only_strictly_below_the_hardest_negative_plus_eps():
    # s_p - eps == max negative exactly (0.75 - 0.5 == 0.25): that positive is not kept
    x, y, r, ry = _exact_rows([[0.75, 0.5, 0.25]], [0, 0, 1])
    S = [[0.75, 0.5, 0.25]]
    Pk, Nk = naive_vthm_sets(S, [[0, 1]], [[2]], 0.5)
    assert Pk == [[1]] and Nk == [[2]]
    expected = naive_raw(S, Pk, Nk, 2.0, 50.0, 0.5)[0]
    loss = losses.build("multi_similarity", epsilon=0.5, normalize=False)
    assert float(loss(x, y, r, ry)) == pytest.approx(expected, rel=1e-12)


def test_distance_weighted_mining_keeps_a_given_dimension():
    # dim given: the sphere's dimension of the sampling law is not read from the batch
    x, y = rand_batch(3, B=14, D=5)
    batch = make_batch(x, y)
    pk, nk = miners.distance_weighted(batch.S, batch.pos, batch.neg, dim=20,
                                      generator=torch.Generator().manual_seed(4))
    Pk, Nk = masks_to_sets(pk, nk)
    loss = losses.build("weighted_pair", mining="distance_weighted", dim=20,
                        generator=torch.Generator().manual_seed(4))
    expected = reduce(naive_raw(naive_cos(x, x), Pk, Nk, 2.0, 50.0, 0.5))
    assert float(loss(x, y)) == pytest.approx(expected, rel=1e-10)


def test_an_anchor_keeping_only_a_negative_under_rounding_does_not_count():
    # eps = 0.3: row 0 keeps its negative (0.514 + 0.3 > 0.814) and not its positive
    # (0.814 - 0.3 < 0.514 is False); its negative's term would be large (s > lam)
    x, y, r, ry = _exact_rows([[0.814, 0.514], [0.3, 0.25]], [0, 1])
    assert not 0.814 - 0.3 < 0.514 and 0.514 + 0.3 > 0.814
    expected = naive_raw([[0.3, 0.25]], [[0]], [[1]], 2.0, 50.0, 0.5)[0] / 2
    loss = losses.build("multi_similarity", epsilon=0.3, normalize=False)
    assert float(loss(x, y, r, ry)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["multi_similarity", "raw+vthm", "raw+semihard", "raw"])
@pytest.mark.parametrize("chunk", [None, 3])
def test_rows_keeping_no_negative_at_a_large_logit_have_finite_gradients(name, chunk):
    """beta (s - lam) = 100 (1 + 0.5) > 103 for the hardest negatives: e^-150 underflows to 0
    in float32. A row that keeps no negative still contributes 0 with a zero gradient (it used
    to divide 0 by that 0: NaN gradients in float32, dense and tiled); the float32 value and
    gradient equal the float64 ones."""
    rows = [[1, 0, 0], [1, 0.1, 0], [0.6, 0.8, 0], [0.5, 0.8, 0.3], [0, 0, 1], [0.1, 0, 1],
            [0.9, 0.3, 0.1], [0.2, 0.1, 1]]
    x = torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float64))
    y = torch.tensor([0, 0, 1, 1, 2, 2, 1, 0])
    loss = losses.build(name, beta=100.0, lam=-0.5, chunk_size=chunk)
    out = {}
    for dtype in (torch.float64, torch.float32):
        xx = x.to(dtype).requires_grad_(True)
        value = loss(xx, y)
        (g,) = torch.autograd.grad(value, xx)
        out[dtype] = float(value), g.double()
    batch = make_batch(x, y)
    kept = miners.vthm(batch.S, batch.pos, batch.neg)[1] if "semihard" not in name else None
    if kept is not None:                  # some row keeps no negative
        assert not bool(kept.any(1).all())
    assert out[torch.float64][1].abs().max() > 0
    assert out[torch.float32][0] == pytest.approx(out[torch.float64][0], rel=1e-5)
    torch.testing.assert_close(out[torch.float32][1], out[torch.float64][1], rtol=1e-4,
                               atol=1e-6)
