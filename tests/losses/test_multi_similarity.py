"""Weighting x mining losses (dmlkit.losses.multi_similarity: RAW / multi-similarity and the
Table-1 ablations, with binomial weighting): naive float64 loops, PML's MultiSimilarityLoss +
MultiSimilarityMiner, closed-form pair weights, gradcheck, degenerate batches, half precision
and the fast path of the MS loss against the generic code."""

import math

import pytest
import torch
from naive import (
    masks_to_sets,
    naive_binomial,
    naive_cos,
    naive_raw,
    naive_semihard_sets,
    naive_sets,
    naive_uniform,
    naive_vthm_sets,
    reduce,
)
from naive.loss_testing import (
    autograd_weights,
    label_layout_batches,
    rand_batch,
    through_masks,
    value_and_grad_S,
)
from optional_pml import pml_losses, pml_miners

from dmlkit import losses, miners
from dmlkit.losses.base import make_batch
from dmlkit.losses.multi_similarity import WeightedPairLoss

TABLE1 = ["binomial", "raw", "vthm", "binomial+vthm", "raw+distance_weighted", "raw+semihard",
          "raw+vthm"]


# ----------------------------------------------------------------------- values vs naive loops
PARAMS = [{"alpha": 2.0, "beta": 50.0, "lam": 0.5}, {"alpha": 1.0, "beta": 10.0, "lam": 0.3},
          {"alpha": 3.0, "beta": 40.0, "lam": 0.7}]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p", PARAMS)
@pytest.mark.parametrize("query_ref", [False, True])
def test_values_match_naive_loops(seed, p, query_ref):
    x, y = rand_batch(seed, B=13 if query_ref else 15)
    if query_ref:
        r, ry = rand_batch(seed + 100, B=11)
        args, S, (P, N) = (x, y, r, ry), naive_cos(x, r), naive_sets(y, ry)
    else:
        args, S, (P, N) = (x, y), naive_cos(x, x), naive_sets(y)
    a, b, lam = p["alpha"], p["beta"], p["lam"]
    eps, margin = 0.15, 0.3
    Pv, Nv = naive_vthm_sets(S, P, N, eps)
    Ps, Ns = naive_semihard_sets(S, P, N, margin)
    expected = {
        ("binomial", ()): reduce(naive_binomial(S, P, N, a, b, lam)),
        ("binomial_deviance", (("reduction", "sum"),)):
            reduce(naive_binomial(S, P, N, a, b, lam), "sum"),
        ("raw", ()): reduce(naive_raw(S, P, N, a, b, lam)),
        ("multi_similarity", (("epsilon", eps),)): reduce(naive_raw(S, Pv, Nv, a, b, lam)),
        ("raw+vthm", (("epsilon", eps), ("reduction", "sum"))):
            reduce(naive_raw(S, Pv, Nv, a, b, lam), "sum"),
        ("binomial+vthm", (("epsilon", eps),)): reduce(naive_binomial(S, Pv, Nv, a, b, lam)),
        ("raw+semihard", (("margin", margin),)): reduce(naive_raw(S, Ps, Ns, a, b, lam)),
    }
    for (name, extra), value in expected.items():
        got = losses.build(name, **p, **dict(extra))(*args)
        assert got.dtype == torch.float64
        assert abs(float(got) - value) < 1e-10 * max(1.0, abs(value)), name
    got = losses.build("vthm", epsilon=eps)(*args)
    assert abs(float(got) - reduce(naive_uniform(S, Pv, Nv))) < 1e-10
    # the generic class with the mining's parameters
    got = losses.build("weighted_pair", weighting="binomial", mining="semihard", margin=margin,
                       **p)(*args)
    assert abs(float(got) - reduce(naive_binomial(S, Ps, Ns, a, b, lam))) < 1e-10


@pytest.mark.parametrize("seed", range(3))
def test_raw_distance_weighted_matches_naive_on_sampled_pairs(seed):
    x, y = rand_batch(seed, B=16, D=8)
    S, (P, N) = naive_cos(x, x), naive_sets(y)
    batch = make_batch(x, y)
    pk, nk = miners.distance_weighted(batch.S, batch.pos, batch.neg, dim=8, num_negatives=2,
                                      generator=torch.Generator().manual_seed(seed))
    Pk, Nk = masks_to_sets(pk, nk)
    assert Pk == P and all(len(n) == min(2, len(m)) for n, m in zip(Nk, N))
    loss = losses.build("raw+distance_weighted", seed=seed, num_negatives=2)
    got = loss(x, y)
    assert abs(float(got) - reduce(naive_raw(S, Pk, Nk, 2.0, 50.0, 0.5))) < 1e-10
    again = losses.build("raw+distance_weighted", seed=seed, num_negatives=2)(x, y)
    assert float(again) == float(got)                     # reproducible with the seed


# ----------------------------------------------------------------------- PML equality
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha,beta,lam,epsilon", [(2, 50, 0.5, 0.1), (1, 10, 0.3, 0.3),
                                                    (3, 40, 0.7, 0.05), (2, 40, 0.5, 0.2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multi_similarity_equals_pml(seed, alpha, beta, lam, epsilon, dtype):
    x, y = rand_batch(seed, B=16, D=8, dtype=dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = losses.build("multi_similarity", alpha=alpha, beta=beta, lam=lam, epsilon=epsilon)
    v1 = ours(x1, y)
    miner = pml_miners.MultiSimilarityMiner(epsilon=epsilon)
    ref = pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=lam)
    v2 = ref(x2, y, miner(x2, y))
    v1.backward()
    v2.backward()
    assert float(v1.detach()) > 0
    assert abs(v1.item() - v2.item()) < 1e-6
    assert (x1.grad - x2.grad).abs().max() < 1e-6
    if dtype == torch.float64:
        assert abs(v1.item() - v2.item()) < 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_multi_similarity_equals_pml_query_vs_reference(seed):
    x, y = rand_batch(seed, B=10, D=8)
    r, ry = rand_batch(seed + 50, B=14, D=8)
    x1, r1 = x.clone().requires_grad_(), r.clone().requires_grad_()
    x2, r2 = x.clone().requires_grad_(), r.clone().requires_grad_()
    v1 = losses.build("raw+vthm")(x1, y, r1, ry)
    miner = pml_miners.MultiSimilarityMiner(epsilon=0.1)
    v2 = pml_losses.MultiSimilarityLoss()(x2, y, miner(x2, y, r2, ry), r2, ry)
    (v1 + 0).backward()
    v2.backward()
    assert abs(v1.item() - v2.item()) < 1e-12
    assert (x1.grad - x2.grad).abs().max() < 1e-12 and (r1.grad - r2.grad).abs().max() < 1e-12


def test_multi_similarity_documented_pml_exception():
    # PML returns 0 when the miner keeps <= 1 positive and <= 1 negative pair in the batch;
    # dmlkit returns the formula's value (one query, one positive, one negative reference)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    r = torch.tensor([[0.8, 0.6], [0.75, 0.66]], dtype=torch.float64)
    y, ry = torch.tensor([0]), torch.tensor([0, 1])
    mined = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y, r, ry)
    assert [len(t) for t in mined] == [1, 1, 1, 1]
    assert float(pml_losses.MultiSimilarityLoss()(x, y, mined, r, ry)) == 0.0
    S = naive_cos(x, r)
    expected = naive_raw(S, [[0]], [[1]], 2.0, 50.0, 0.5)[0]
    assert abs(float(losses.build("multi_similarity")(x, y, r, ry)) - expected) < 1e-12
    assert expected > 0.1


# ----------------------------------------------------------------------- closed-form weights
@pytest.mark.parametrize("seed", range(2))
def test_pair_weights_are_the_closed_forms(seed):
    x, y = rand_batch(seed, B=16)
    a, b, lam, m = 2.0, 50.0, 0.5, 16
    # multi-similarity, eq. 15-16 on VTHM pairs, / m
    loss = losses.build("multi_similarity")
    batch, S, W = autograd_weights(loss, x, y)
    pk, nk = miners.vthm(S, batch.pos, batch.neg, 0.1)
    Pk, Nk = masks_to_sets(pk, nk)
    s = S.tolist()
    closed = [[0.0] * m for _ in range(m)]
    for i in range(m):
        for j in Pk[i]:
            den = sum(math.exp(a * (s[i][j] - s[i][k])) for k in Pk[i])
            closed[i][j] = 1 / (den + math.exp(a * (s[i][j] - lam)))
        for j in Nk[i]:
            den = sum(math.exp(-b * (s[i][j] - s[i][k])) for k in Nk[i])
            closed[i][j] = 1 / (den + math.exp(-b * (s[i][j] - lam)))
    torch.testing.assert_close(W, torch.tensor(closed, dtype=torch.float64) / m,
                               rtol=1e-10, atol=1e-14)
    assert (W[~(pk | nk)] == 0).all()
    # VTHM alone: equal weights 1/m on the kept pairs
    batch, S, W = autograd_weights(losses.build("vthm"), x, y)
    torch.testing.assert_close(W, (pk | nk).double() / m, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name,kw", [
    ("multi_similarity", {}), ("multi_similarity", {"reduction": "sum", "epsilon": 0.3}),
    ("raw", {"beta": 10.0}), ("vthm", {}), ("binomial+vthm", {}), ("raw+semihard", {}),
    ("weighted_pair", {"weighting": "binomial", "mining": "hard"}),
])
def test_closed_form_weights_equal_autograd(name, kw):
    x, y = rand_batch(3, B=16)
    loss = losses.build(name, **kw)
    batch, _, W = autograd_weights(loss, x, y)
    assert W.abs().max() > 0
    # rtol 1e-8: torch.softplus is linear above 20 (relative error e^-20 ~ 2e-9)
    torch.testing.assert_close(loss.closed_form_weights(batch), W, rtol=1e-8, atol=1e-14)


def test_distance_weighted_has_no_closed_form():
    x, y = rand_batch(0)
    with pytest.raises(ValueError, match="no closed form for RAWDistanceWeightedLoss"):
        losses.build("raw+distance_weighted", seed=0).closed_form_weights(make_batch(x, y))


# ----------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("name,kw", [
    ("binomial", {}), ("raw", {}), ("multi_similarity", {"beta": 10.0}), ("vthm", {}),
    ("binomial+vthm", {"beta": 10.0}), ("raw+semihard", {"margin": 0.3}),
    ("raw+distance_weighted", {"seed": 3}),
])
def test_gradcheck(name, kw):
    x, y = rand_batch(11, B=10, D=4)
    r, ry = rand_batch(12, B=7, D=4)

    def f(xx, rr):   # a fresh loss per call: the distance-weighted draws repeat with the seed
        loss = losses.build(name, **kw)
        return loss(xx, y) + loss(xx, y, rr, ry)

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), r.requires_grad_()),
                                    fast_mode=name == "raw+distance_weighted")


# ----------------------------------------------------------------------- fast path
@pytest.mark.parametrize("params", [{}, {"beta": 200.0, "lam": 0.0}, {"epsilon": 0.5},
                                    {"alpha": 5.0, "reduction": "sum"}])
def test_multi_similarity_fast_path_equals_generic(params):
    loss = losses.build("multi_similarity", **params)
    for key, batch in label_layout_batches(1):
        for b in (batch, through_masks(batch)):
            v_fast, g_fast = value_and_grad_S(loss.compute, b)
            v_gen, g_gen = value_and_grad_S(lambda x: WeightedPairLoss.compute(loss, x), b)
            assert v_fast == pytest.approx(v_gen, abs=1e-12), key
            assert torch.allclose(g_fast, g_gen, atol=1e-12), key


# ----------------------------------------------------------------------- degenerate & precision
ALL_DEFAULT = [*TABLE1, "multi_similarity"]


def all_losses():
    out = [(n, losses.build(n)) for n in ALL_DEFAULT]
    torch.manual_seed(0)
    osm = losses.build("osm_caa", num_classes=6, embedding_dim=5, classifier_weight=0.0)
    out.append(("osm_caa", osm.double()))
    return out


@pytest.mark.parametrize("case", ["one_class", "singletons", "single_sample", "pair_diff"])
def test_degenerate_batches_finite(case):
    g = torch.Generator().manual_seed(0)
    labels = {"one_class": [1] * 6, "singletons": [0, 1, 2, 3, 4, 5], "single_sample": [2],
              "pair_diff": [0, 1]}[case]
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 5, generator=g, dtype=torch.float64)
    for name, loss in all_losses():
        xx = x.clone().requires_grad_()
        v = loss(xx, y)
        v.backward()
        assert v.dim() == 0 and torch.isfinite(v), (name, case)
        assert torch.isfinite(xx.grad).all(), (name, case)
        # no anchor has both a positive and a negative: every weighting x mining loss is 0
        if name != "osm_caa" or case == "single_sample":
            assert v.item() == 0.0 and (xx.grad == 0).all(), (name, case)
        elif case != "pair_diff":        # (the pair's distance may exceed alpha: then 0)
            assert v.item() > 0, (name, case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("beta", [50.0, 100.0])
def test_half_precision_finite(dtype, beta):
    x, y = rand_batch(1, B=16, D=8, dtype=torch.float32)
    x[1] = x[0] * 1.01       # a near-duplicate pair: s ~ 1, exp(beta * 0.5) would overflow fp16
    y[1] = (y[0] + 1) % 4
    xh = x.to(dtype)
    for name in ["binomial", "raw", "multi_similarity", "binomial+vthm", "raw+semihard"]:
        loss = losses.build(name, beta=beta, lam=0.0)
        xx = xh.clone().requires_grad_()
        v = loss(xx, y)
        v.backward()
        assert v.dtype == torch.float32 and torch.isfinite(v), name
        assert torch.isfinite(xx.grad).all() and xx.grad.abs().sum() > 0, name
        ref = loss(xh.float(), y)        # same rounded inputs in float32
        assert abs(v.item() - ref.item()) < 1e-4 * max(1.0, ref.item()), name
    loss = losses.build("osm_caa", num_classes=5, embedding_dim=8)
    xx = xh.clone().requires_grad_()
    v = loss(xx, y)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(xx.grad).all()



# ----------------------------------------------------------------------- registry
def test_table1_names_build_and_are_finite():
    x, y = rand_batch(0, B=16, D=8, dtype=torch.float32)
    values = {}
    for name in TABLE1:
        values[name] = float(losses.build(name)(x, y))
        assert math.isfinite(values[name]) and values[name] > 0, name
    assert isinstance(losses.build("RAW+VTHM"), losses.get("multi_similarity"))
    assert isinstance(losses.build("raw + vthm"), losses.get("ms"))
    assert values["raw+vthm"] == float(losses.build("multi_similarity")(x, y))
    assert losses.get("binomial") is losses.get("binomial_deviance")
    assert losses.get("Raw+Distance-Weighted") is losses.get("raw+distance_weighted")
    with pytest.raises(ValueError, match="Known losses"):
        losses.build("raw+vthm2")
    with pytest.raises(ValueError, match="no parameter"):
        losses.build("multi_similarity", margin=0.1)
    with pytest.raises(ValueError, match="known weightings"):
        losses.build("weighted_pair", weighting="lifted")
    with pytest.raises(ValueError, match="Known miners"):
        losses.build("weighted_pair", mining="hardest")
    with pytest.raises(ValueError, match="no parameter"):
        losses.build("weighted_pair", mining="vthm", margin=0.2)
    with pytest.raises(ValueError, match="reduction"):
        losses.build("raw", reduction="max")
