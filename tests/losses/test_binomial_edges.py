"""dmlkit.losses.binomial beyond test_binomial.py: the value against the naive per-anchor loop
in every setting, dense and tiled (its KeptPairTiles formulation), in-batch and
query-vs-reference, in value and gradient; degenerate batches (a graph-connected 0); the
reduction's check and the per-anchor helpers on arbitrary masks."""

import math

import pytest
import torch
from naive import naive_binomial, naive_cos, naive_sets, reduce, softplus
from naive.loss_testing import (
    assert_gradients_match_the_loop,
    rand_batch,
    random_batch,
    random_qref,
)

from dmlkit import losses
from dmlkit.losses.base import make_batch
from dmlkit.losses.binomial import (binomial_anchor_terms, binomial_pair_weights,
                                    check_reduction, reduce_anchors)

SETTINGS = [
    {},
    {"reduction": "sum"},
    {"alpha": 1.0, "beta": 10.0, "lam": 0.2, "reduction": "mean"},
    {"alpha": 3.0, "beta": 4.0, "lam": -0.1, "reduction": "sum"},
]
DEFAULTS = {"alpha": 2.0, "beta": 50.0, "lam": 0.5, "reduction": "mean"}


def naive_value(x, y, r=None, ry=None, **kw):
    p = DEFAULTS | kw
    S = naive_cos(x, x if r is None else r)
    P, N = naive_sets(y, ry)
    return reduce(naive_binomial(S, P, N, p["alpha"], p["beta"], p["lam"]), p["reduction"])


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("kw", SETTINGS, ids=range(len(SETTINGS)))
def test_equals_the_naive_loop(kw, chunk_size):
    loss = losses.build("binomial", chunk_size=chunk_size, **kw)
    x, y = rand_batch(1, B=9, D=3)                  # with a singleton anchor
    q, ql, r, rl = random_qref(2, B=5, M=7, D=3)
    assert float(loss(x, y)) == pytest.approx(naive_value(x, y, **kw), rel=1e-10, abs=1e-12)
    assert float(loss(q, ql, r, rl)) == pytest.approx(naive_value(q, ql, r, rl, **kw),
                                                      rel=1e-10, abs=1e-12)
    if chunk_size is None:      # the dense gradient: test_binomial's eq. 13-14 weights
        return
    # the tiled gradients against central differences of the naive loop
    assert_gradients_match_the_loop(loss, lambda *a: naive_value(*a, **kw), x, y, q, ql, r, rl)


def test_defaults_are_the_paper_values():
    """alpha = 2, beta = 50, lam = 0.5 (Wang et al. 2019b), mean over anchors, cosine S."""
    x, y = random_batch(3, B=10, D=4)
    default = losses.build("binomial")
    explicit = losses.build("binomial", alpha=2.0, beta=50.0, lam=0.5, reduction="mean",
                            normalize=True)
    assert (default.alpha, default.beta, default.lam, default.reduction, default.normalize) == \
        (explicit.alpha, explicit.beta, explicit.lam, explicit.reduction, explicit.normalize)
    assert float(default(x, y)) == pytest.approx(naive_value(x, y), rel=1e-10)
    # normalize=False: S is the plain dot product
    raw = losses.build("binomial", normalize=False)
    S = (x @ x.t()).tolist()
    P, N = naive_sets(y)
    assert float(raw(x, y)) == pytest.approx(reduce(naive_binomial(S, P, N, 2.0, 50.0, 0.5)),
                                             rel=1e-10)


DEGENERATE = [torch.zeros(5, dtype=torch.long), torch.arange(5), torch.zeros(1, dtype=torch.long)]


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("y", DEGENERATE, ids=["one_class", "singletons", "one_sample"])
def test_degenerate_batches_give_a_connected_zero(y, reduction, chunk_size):
    loss = losses.build("binomial", reduction=reduction, chunk_size=chunk_size)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(len(y), 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert naive_value(x, y, reduction=reduction) == 0.0
    value = loss(x, y)
    assert value.item() == 0.0
    value.backward()
    assert x.grad is not None and (x.grad == 0).all()


def test_check_reduction_names_the_known_ones():
    assert check_reduction("mean") == "mean" and check_reduction("sum") == "sum"
    with pytest.raises(ValueError, match=r"^unknown reduction 'max'; known reductions: "
                                         r"mean, sum$"):
        check_reduction("max")


def _masks():
    """Arbitrary (not label) masks: a row with both sets, one with positives only, one with
    negatives only, one with a single positive and negative, one with neither."""
    pos = torch.tensor([[1, 1, 0, 0, 0, 0],
                        [1, 1, 1, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 1, 0, 0],
                        [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    neg = torch.tensor([[0, 0, 1, 1, 1, 0],
                        [0, 0, 0, 0, 0, 0],
                        [1, 1, 0, 1, 0, 1],
                        [0, 0, 0, 0, 1, 0],
                        [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    g = torch.Generator().manual_seed(11)
    S = torch.rand(5, 6, generator=g, dtype=torch.float64) * 2 - 1
    return S, pos, neg


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_anchor_terms_and_weights_on_arbitrary_masks(dtype):
    S, pos, neg = _masks()
    S = S.to(dtype)
    a, b, lam = 2.0, 7.0, 0.3
    P = [torch.nonzero(row).flatten().tolist() for row in pos]
    N = [torch.nonzero(row).flatten().tolist() for row in neg]
    Sl = S.double().tolist()
    # the per-anchor terms: an empty set contributes 0 (the other set's mean stays)
    expected = []
    for i in range(5):
        t = sum(softplus(-a * (Sl[i][j] - lam)) for j in P[i]) / max(len(P[i]), 1)
        t += sum(softplus(b * (Sl[i][j] - lam)) for j in N[i]) / max(len(N[i]), 1)
        expected.append(t)
    terms = binomial_anchor_terms(S, pos, neg, a, b, lam)
    assert terms.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(terms.double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=tol, atol=tol)
    # only anchors with both sets count; every anchor counts in the mean
    valid = [bool(P[i]) and bool(N[i]) for i in range(5)]
    assert valid == [True, False, False, True, False]
    kept = [e if v else 0.0 for e, v in zip(expected, valid)]
    for reduction, den in (("mean", 5), ("sum", 1)):
        got = reduce_anchors(terms, reduction, pos, neg)
        assert float(got) == pytest.approx(sum(kept) / den, rel=tol)
    # eq. 13-14 weights on the same masks
    W = binomial_pair_weights(S, pos, neg, a, b, lam)
    assert W.dtype == dtype
    ref = torch.zeros(5, 6, dtype=torch.float64)
    for i in range(5):
        if not valid[i]:
            continue
        for j in P[i]:
            ref[i, j] = a / (1 + math.exp(-a * (lam - Sl[i][j]))) / len(P[i])
        for j in N[i]:
            ref[i, j] = b / (1 + math.exp(-b * (Sl[i][j] - lam))) / len(N[i])
    torch.testing.assert_close(W.double(), ref, rtol=tol, atol=tol)


def test_reduce_anchors_keeps_the_graph_of_invalid_anchors():
    S, pos, neg = _masks()
    S = S.clone().requires_grad_(True)
    value = reduce_anchors(binomial_anchor_terms(S, pos, neg, 2.0, 50.0, 0.5), "sum",
                           pos & False, neg)
    assert value.item() == 0.0
    (g,) = torch.autograd.grad(value, S)
    assert (g == 0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_closed_form_weights_query_vs_reference(reduction):
    """eq. 13-14 on a (B, M) batch with B != M; "mean" divides by m = B, the query rows."""
    q, ql, r, rl = random_qref(3, B=4, M=9, D=3)
    a, b, lam = 2.0, 50.0, 0.5
    loss = losses.build("binomial", reduction=reduction)
    W = loss.closed_form_weights(make_batch(q, ql, r, rl))
    S = naive_cos(q, r)
    P, N = naive_sets(ql, rl)
    m = 4 if reduction == "mean" else 1
    ref = torch.zeros(4, 9, dtype=torch.float64)
    for i in range(4):
        if not P[i] or not N[i]:
            continue
        for j in P[i]:
            ref[i, j] = a / (1 + math.exp(-a * (lam - S[i][j]))) / len(P[i]) / m
        for j in N[i]:
            ref[i, j] = b / (1 + math.exp(-b * (S[i][j] - lam))) / len(N[i]) / m
    assert (ref > 0).any()
    torch.testing.assert_close(W, ref, rtol=1e-9, atol=1e-14)
