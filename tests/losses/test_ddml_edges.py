"""dmlkit.losses.ddml beyond test_ddml.py: the tiled path (DDMLTiles) against the naive per-pair
loop in value and gradient, in-batch and query-vs-reference, degenerate batches (dense and
tiled: a graph-connected 0), and the constructor's and the tiling's errors."""

import pytest
import torch
from naive import naive_ddml
from naive.loss_testing import assert_gradients_match_the_loop, random_batch, random_qref

from dmlkit import losses

SETTINGS = [
    {},
    {"tau": 1.0, "beta": 5.0, "reduction": "sum"},
    {"tau": 2.5, "beta": 0.7, "reduction": "mean"},
    {"tau": 3.0, "beta": 1.5, "reduction": "sum"},
]


@pytest.mark.parametrize("kw", SETTINGS, ids=range(len(SETTINGS)))
def test_tiled_equals_the_naive_loop(kw):
    loss = losses.build("ddml", chunk_size=3, **kw)
    x, y = random_batch(1, B=9, D=3)
    q, ql, r, rl = random_qref(2, B=5, M=7, D=3)
    assert float(loss(x, y)) == pytest.approx(naive_ddml(x, y, **kw), rel=1e-10, abs=1e-12)
    assert float(loss(q, ql, r, rl)) == pytest.approx(naive_ddml(q, ql, r, rl, **kw),
                                                      rel=1e-10, abs=1e-12)
    # the gradients of the tiled path (in-batch on 7 rows, query-vs-reference on both inputs)
    # against central differences of the naive loop
    assert_gradients_match_the_loop(loss, lambda *a: naive_ddml(*a, **kw),
                                    x[:7].contiguous(), y[:7], q, ql, r, rl)


def test_tiled_sum_and_mean_differ_by_the_pair_count():
    """"sum" is 1/2 the sum over the ordered pairs, "mean" the mean over them (B (B - 1))."""
    x, y = random_batch(4, B=8, D=3)
    s = float(losses.build("ddml", reduction="sum", chunk_size=3)(x, y))
    m = float(losses.build("ddml", reduction="mean", chunk_size=3)(x, y))
    assert s == pytest.approx(0.5 * 8 * 7 * m, rel=1e-12)


DEGENERATE = [
    ("one_class", torch.zeros(5, dtype=torch.long)),
    ("singletons", torch.arange(5)),
    ("one_sample", torch.zeros(1, dtype=torch.long)),
]


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("key,y", DEGENERATE, ids=[k for k, _ in DEGENERATE])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_degenerate_batches_give_a_connected_zero(chunk_size, key, y, reduction):
    loss = losses.build("ddml", reduction=reduction, chunk_size=chunk_size)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(len(y), 3, dtype=torch.float64, generator=g, requires_grad=True)
    value = loss(x, y)
    assert naive_ddml(x, y, reduction=reduction) == 0.0
    assert value.item() == 0.0
    value.backward()
    assert x.grad is not None and (x.grad == 0).all()


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_query_vs_reference_without_negatives_or_positives_is_zero(chunk_size):
    loss = losses.build("ddml", chunk_size=chunk_size)
    g = torch.Generator().manual_seed(5)
    q = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    r = torch.randn(4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    ql = torch.tensor([0, 0, 0])
    for rl in (torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)):
        assert naive_ddml(q, ql, r, rl) == 0.0
        value = loss(q, ql, r, rl)
        assert value.item() == 0.0
        gq, gr = torch.autograd.grad(value, (q, r))
        assert (gq == 0).all() and (gr == 0).all()


def test_one_positive_and_one_negative_pair():
    """Query-vs-reference with exactly one positive and one negative pair (the smallest
    non-degenerate batch): "mean" divides by 2 pairs."""
    g = torch.Generator().manual_seed(6)
    q = torch.randn(1, 3, dtype=torch.float64, generator=g)
    r = torch.randn(2, 3, dtype=torch.float64, generator=g)
    ql, rl = torch.tensor([0]), torch.tensor([0, 1])
    for reduction in ("mean", "sum"):
        expected = naive_ddml(q, ql, r, rl, reduction=reduction)
        assert expected > 0
        for chunk_size in (None, 1, 2):
            loss = losses.build("ddml", reduction=reduction, chunk_size=chunk_size)
            assert float(loss(q, ql, r, rl)) == pytest.approx(expected, rel=1e-12)


def test_beta_must_be_positive():
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"beta must be > 0, got {beta}"):
            losses.build("ddml", beta=beta)
    assert losses.build("ddml", beta=1e-3).beta == 1e-3


def test_unknown_reduction_is_named():
    with pytest.raises(ValueError, match=r"unknown reduction 'max'; choose one of "
                                         r"\('mean', 'sum'\)"):
        losses.build("ddml", reduction="max")


def test_raw_embeddings_have_no_tiles():
    with pytest.raises(ValueError, match="on raw embeddings the squared distances come from "
                                         r"the embeddings, not from S \(use normalize=True\)"):
        losses.build("ddml", normalize=False, chunk_size=4)
    assert losses.build("ddml").tiling_unsupported() is None
    assert losses.build("ddml", normalize=False).chunk_size is None


def test_defaults_are_the_documented_values():
    loss = losses.build("ddml")
    explicit = losses.build("ddml", tau=2.0, beta=2.0, reduction="mean", normalize=True)
    assert (loss.tau, loss.beta, loss.reduction, loss.normalize) == \
        (explicit.tau, explicit.beta, explicit.reduction, explicit.normalize)
    x, y = random_batch(2, B=7, D=3)
    expected = naive_ddml(x, y, tau=2.0, beta=2.0, reduction="mean", normalize=True)
    assert float(loss(x, y)) == pytest.approx(expected, rel=1e-12)
