"""dmlkit.losses.contrastive beyond test_contrastive.py: the tiled path (its tile formulation)
of every form x reduction against the naive per-pair loop, in value and gradient, degenerate
batches in tiles, and the settings without a tile formulation."""

from dataclasses import replace

import pytest
import torch
from naive import naive_contrastive
from naive.loss_testing import (
    assert_degenerate_batches_give_a_connected_zero,
    numeric_grad,
    random_batch,
    random_qref,
)

from dmlkit import losses
from dmlkit.losses import contrastive
from dmlkit.losses.base import make_batch

SETTINGS = [
    {},
    {"margin": 0.8, "power": 1.0, "pos_margin": 0.2, "reduction": "sum"},
    {"margin": 1.3, "power": 3.0, "reduction": "mean_nonzero"},
    {"form": "similarity", "lam": 0.1},
    {"form": "similarity", "lam": 0.0, "pos_margin": 0.9, "reduction": "sum"},
    {"form": "similarity", "lam": 0.2, "reduction": "mean_nonzero"},
    {"margin": 0.9, "power": 2.0, "pos_margin": 0.3, "reduction": "mean"},
]


@pytest.mark.parametrize("kw", SETTINGS, ids=range(len(SETTINGS)))
def test_tiled_equals_the_naive_loop(kw):
    loss = losses.build("contrastive", chunk_size=3, **kw)
    x, y = random_batch(1, B=9, D=3)
    q, ql, r, rl = random_qref(2, B=5, M=7, D=3)
    assert float(loss(x, y)) == pytest.approx(naive_contrastive(x, y, **kw), rel=1e-10,
                                              abs=1e-12)
    assert float(loss(q, ql, r, rl)) == pytest.approx(naive_contrastive(q, ql, r, rl, **kw),
                                                      rel=1e-10, abs=1e-12)
    # the gradient of the tiled path against central differences of the naive loop
    x, y = x[:7, :2].contiguous(), y[:7]
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xx, y), xx)
    expected = numeric_grad(lambda e: naive_contrastive(e, y, **kw), x)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["distance", "similarity"])
def test_tiled_degenerate_batches_give_a_connected_zero(form):
    loss = losses.build("contrastive", form=form, chunk_size=2)
    assert_degenerate_batches_give_a_connected_zero(loss)


def test_distance_form_on_raw_embeddings_has_no_tiles():
    with pytest.raises(ValueError, match="reads the distances from the embeddings"):
        losses.build("contrastive", normalize=False, chunk_size=4)
    assert losses.build("contrastive", form="similarity", normalize=False).tiling_unsupported() \
        is None
    assert losses.build("contrastive").tiling_unsupported() is None


# ------------------------------------------------------------------ the mutation review's cases
def _unit(*rows):
    x = torch.tensor(rows, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def test_reduce_pair_terms_counts_from_one():
    """The public reducer on a single positive entry: 'mean' divides by 1, 'mean_nonzero' by the
    one non-zero positive term (its definition, whatever the loss's own guards)."""
    pos = torch.tensor([[False, True]])
    neg = torch.zeros(1, 2, dtype=torch.bool)
    p_terms = torch.tensor([[0.0, 0.75]], dtype=torch.float64)
    n_terms = torch.zeros(1, 2, dtype=torch.float64)
    reduce = contrastive.reduce_pair_terms
    assert float(reduce(p_terms, n_terms, pos, neg, "mean")) == 0.75
    assert float(reduce(p_terms, n_terms, pos, neg, "sum")) == 0.75
    assert float(reduce(p_terms, n_terms, pos, neg, "mean_nonzero")) == 0.75
    # one non-zero negative term among two negatives
    neg2 = torch.tensor([[True, True]])
    n2 = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    assert float(reduce(torch.zeros_like(n2), n2, torch.zeros_like(neg2), neg2,
                        "mean_nonzero")) == 0.5
    assert float(reduce(torch.zeros_like(n2), n2, torch.zeros_like(neg2), neg2, "mean")) == 0.25


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown form 'cosine'; choose one of"):
        losses.build("contrastive", form="cosine")
    with pytest.raises(ValueError, match=r"unknown reduction 'max'; choose one of"):
        losses.build("contrastive", reduction="max")
    with pytest.raises(ValueError, match=r"power must be >= 1 .*got 0.5"):
        losses.build("contrastive", power=0.5)
    x, y = random_batch(3, B=6)
    batch = make_batch(x, y)
    supported = r"supported: contrastive\(form='similarity'\) without pos_margin$"
    with pytest.raises(ValueError, match=supported):
        losses.build("contrastive").closed_form_weights(batch)
    with pytest.raises(ValueError, match=r"not from S \(use normalize=True\)"):
        losses.build("contrastive", normalize=False, chunk_size=4)


def test_defaults_are_the_documented_values():
    """margin 1, lam 0.5, the distance form, power 2, 'mean': the docstring's defaults."""
    x, y = random_batch(4)
    assert float(losses.build("contrastive", form="similarity")(x, y)) == pytest.approx(
        naive_contrastive(x, y, form="similarity", lam=0.5), rel=1e-12)
    assert float(losses.build("contrastive")(x, y)) == pytest.approx(
        naive_contrastive(x, y, margin=1.0, power=2.0, reduction="mean"), rel=1e-12)


RAW = [
    {"pos_margin": 0.3, "power": 2.0, "margin": 4.0},
    {"power": 1.0, "margin": 3.0},
    {"power": 3.0, "margin": 3.5, "reduction": "sum"},
    {"pos_margin": 0.5, "power": 1.0, "margin": 3.0, "reduction": "mean_nonzero"},
]


@pytest.mark.parametrize("kw", RAW, ids=range(len(RAW)))
def test_distance_form_on_raw_embeddings_equals_the_naive_loop(kw):
    """normalize=False (Hadsell et al.'s raw outputs): the dense path's positive term for
    every pos_margin / power."""
    x, y = random_batch(5, B=10, D=4)
    loss = losses.build("contrastive", normalize=False, **kw)
    assert float(loss(x, y)) == pytest.approx(
        naive_contrastive(x, y, normalize=False, **kw), rel=1e-10, abs=1e-12)


def test_coincident_raw_positives_have_an_exact_zero_term():
    """d^2 of two equal raw embeddings is exactly 0 (the squared distance itself, not the
    square of the smoothed distance sqrt(d^2 + 1e-12))."""
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 5.0]], dtype=torch.float64,
                     requires_grad=True)
    y = torch.tensor([0, 0, 1])
    value = losses.build("contrastive", normalize=False)(x, y)
    assert float(value) == 0.0
    value.backward()
    assert (x.grad == 0).all()


@pytest.mark.parametrize("form", ["distance", "similarity"])
@pytest.mark.parametrize("normalize", [True, False])
def test_dense_degenerate_batches_give_a_connected_zero(form, normalize):
    """No positive pair (all singletons) or no negative pair (one class): 0 with a zero
    gradient, on the dense path too."""
    loss = losses.build("contrastive", form=form, normalize=normalize)
    assert_degenerate_batches_give_a_connected_zero(loss)


def _one_of_each():
    """Queries vs references with exactly one positive pair and exactly one negative pair
    inside the margin / above lam (the other negative far away)."""
    q = _unit([1.0, 0.0, 0.0])
    ql = torch.tensor([0])
    r = _unit([0.8, 0.6, 0.0], [0.6, 0.8, 0.0], [-1.0, 0.0, 0.0])
    rl = torch.tensor([0, 1, 2])
    return q, ql, r, rl


MEAN_NONZERO = [
    {"reduction": "mean_nonzero"},
    {"reduction": "mean_nonzero", "power": 1.0, "pos_margin": 0.1},
    {"form": "similarity", "lam": 0.5, "reduction": "mean_nonzero"},
    {"form": "similarity", "lam": 0.5, "pos_margin": 0.9, "reduction": "mean_nonzero"},
]


@pytest.mark.parametrize("kw", MEAN_NONZERO, ids=range(len(MEAN_NONZERO)))
@pytest.mark.parametrize("chunk", [None, 2])
def test_mean_nonzero_with_one_term_of_each_kind(kw, chunk):
    """'mean_nonzero' divides by the number of non-zero terms also when that number is 1,
    dense and tiled."""
    q, ql, r, rl = _one_of_each()
    loss = losses.build("contrastive", chunk_size=chunk, **kw)
    expected = naive_contrastive(q, ql, r, rl, **kw)
    assert expected != 0
    assert float(loss(q, ql, r, rl)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("form", ["distance", "similarity"])
def test_tiled_mean_nonzero_skips_inactive_positives(form):
    """With pos_margin set, positives inside it have a zero term and do not count in
    'mean_nonzero' (tiled, in-batch, several tiles)."""
    kw = {"form": form, "pos_margin": 0.5 if form == "similarity" else 0.8, "power": 1.0,
          "lam": 0.1, "reduction": "mean_nonzero"}
    x, y = random_batch(6, B=12, D=3, n_classes=3)
    loss = losses.build("contrastive", chunk_size=3, **kw)
    batch = make_batch(x, y)
    S = batch.S
    if form == "similarity":
        zero_terms = batch.pos & (S >= 0.5)
    else:
        zero_terms = batch.pos & ((2 - 2 * S).clamp_min(0).sqrt() <= 0.8)
    assert bool(zero_terms.any()) and bool((batch.pos & ~zero_terms).any())
    assert float(loss(x, y)) == pytest.approx(naive_contrastive(x, y, **kw), rel=1e-10)


def test_closed_form_weights_at_the_edges():
    """Wang et al. 2019b eq. 6 where its counts are edge cases, against autograd: a negative
    exactly at lam (inactive: s > lam is strict), positives with s = 1 and s = 0 (a non-zero
    term -s only for s != 0), one active negative and one positive of non-zero s."""
    # in-batch: 0 and 1 are the same point (s = 1), 2 is orthogonal to 0 / 1 with 0's label
    # (s = 0), 3 is a negative exactly at lam = 0 to 0 / 1 / 2
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    q, ql, r, rl = _one_of_each()
    cases = [(make_batch(x, y), "lam=0"), (make_batch(q, ql, r, rl), "lam=0.5")]
    for batch, _ in cases:
        for reduction in ("mean", "sum", "mean_nonzero"):
            lam = 0.0 if batch.in_batch else 0.5
            loss = losses.build("contrastive", form="similarity", lam=lam, reduction=reduction)
            S = batch.S.detach().clone().requires_grad_()
            (g,) = torch.autograd.grad(loss.compute(replace(batch, S=S)), S)
            W = torch.where(batch.pos, -g, torch.where(batch.neg, g, torch.zeros_like(g)))
            assert W.abs().max() > 0
            torch.testing.assert_close(loss.closed_form_weights(batch), W, rtol=1e-12,
                                       atol=1e-15)
    # the definition, in-batch, mean_nonzero: positives with s != 0 are (0, 1) and (1, 0): 2;
    # no negative has s > 0, so every negative weight is 0
    loss = losses.build("contrastive", form="similarity", lam=0.0, reduction="mean_nonzero")
    W = loss.closed_form_weights(cases[0][0])
    expected = torch.where(cases[0][0].pos, 0.5, 0.0).to(W.dtype)
    torch.testing.assert_close(W, expected, rtol=0, atol=0)

