"""dmlkit.losses.lifted beyond test_lifted.py: the tiled paths (LiftedTiles,
GeneralizedLiftedTiles) against the definitions in value and gradient, in-batch and
query-vs-reference, with inactive hinges, anchors without negatives or positives and
degenerate batches (dense and tiled), the settings without a tile formulation, the option
checks and :func:`masked_logsumexp` on empty rows.

The gradient reference is each definition written on dense tensors (:func:`brute_lifted`,
:func:`brute_generalized_lifted`, autograd), itself checked against the naive loops."""

import dataclasses
import math

import pytest
import torch
from conftest import value_and_grads
import torch.nn.functional as F
from naive import naive_generalized_lifted, naive_lifted
from naive.loss_testing import (
    assert_degenerate_batches_give_a_connected_zero,
    random_batch,
    random_pair_masks,
    random_qref,
)

from dmlkit import losses
from dmlkit.losses.base import make_batch
from dmlkit.losses.lifted import masked_logsumexp


def _setup(q, ql, r, rl, normalize=True):
    in_batch = r is None
    q = F.normalize(q, dim=1) if normalize else q
    r = q if in_batch else (F.normalize(r, dim=1) if normalize else r)
    rl = ql if in_batch else rl
    same = ql[:, None] == rl[None, :]
    pos = same.clone()
    if in_batch:
        pos.fill_diagonal_(False)
    d = (((q[:, None, :] - r[None, :, :]) ** 2).sum(-1) + 1e-12).sqrt()
    return q, r, pos, ~same, d, in_batch


def lifted_from_distances(d, pos, neg, margin, in_batch):
    """Oh Song et al. 2016 on dense tensors: ``J_ij = log(sum_{N_i} e^{m - d_ik} +
    sum_{N_j} e^{m - d_jl}) + d_ij`` (only the first sum against references),
    ``sum_P [J]_+^2 / (2 |P|)``; a pair without any negative contributes 0."""
    e = torch.where(neg, torch.exp(margin - d), torch.zeros((), dtype=d.dtype)).sum(1)
    z = e[:, None] + e[None, :] if in_batch else e[:, None].expand_as(d)
    ok = pos & (z > 0)
    J = torch.log(torch.where(ok, z, torch.ones((), dtype=d.dtype))) + d
    terms = torch.where(ok, torch.relu(J) ** 2, torch.zeros((), dtype=d.dtype))
    return terms.sum() / (2 * max(int(pos.sum()), 1))


def brute_lifted(q, ql, r=None, rl=None, margin=1.0, normalize=True):
    """:func:`lifted_from_distances` of the embeddings."""
    q, r, pos, neg, d, in_batch = _setup(q, ql, r, rl, normalize)
    return lifted_from_distances(d, pos, neg, margin, in_batch)


def brute_generalized_lifted(q, ql, r=None, rl=None, lam=1.0, margin=1.0, form="similarity",
                             normalize=True):
    """Wang et al. 2019b eq. 9 / Hermans et al. 2017 on dense tensors: per anchor with a
    positive and a negative ``[log sum_P e^{y} + log sum_N e^{x} (+ lam)]_+``, mean over all
    anchors."""
    q, r, pos, neg, d, _ = _setup(q, ql, r, rl, normalize)
    if form == "similarity":
        y, x, extra = -(q @ r.T), q @ r.T, lam
    else:
        y, x, extra = d, margin - d, 0.0
    zero, one = torch.zeros((), dtype=d.dtype), torch.ones((), dtype=d.dtype)
    live = pos.any(1) & neg.any(1)
    sp = torch.where(pos, torch.exp(y), zero).sum(1)
    sn = torch.where(neg, torch.exp(x), zero).sum(1)
    h = torch.log(torch.where(live, sp, one)) + torch.log(torch.where(live, sn, one)) + extra
    return torch.where(live, torch.relu(h), zero).sum() / q.shape[0]


def _grads(fn, *args):
    value, grads = value_and_grads(fn, *args)
    return float(value), grads


def _close(got, want):
    v, g = got
    v_ref, g_ref = want
    assert v == pytest.approx(v_ref, rel=1e-10, abs=1e-12)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


LIFTED = [{}, {"margin": 0.3}, {"margin": 0.05}]
GENERALIZED = [{}, {"lam": 0.2}, {"lam": -0.6}, {"form": "distance", "margin": 0.7},
               {"form": "distance", "margin": -0.6}, {"lam": 0.1, "normalize": False}]


CASES = [("lifted_structure", kw, brute_lifted, naive_lifted) for kw in LIFTED] + \
    [("generalized_lifted_structure", kw, brute_generalized_lifted, naive_generalized_lifted)
     for kw in GENERALIZED]
IDS = [f"{name}-{i}" for i, (name, *_rest) in enumerate(CASES)]


def _batches():
    x, y = random_batch(1, B=9, D=3)
    q, ql, r, rl = random_qref(2, B=5, M=7, D=3)
    return (x, y), (q, ql, r, rl)


@pytest.mark.parametrize("name,kw,brute,naive", CASES, ids=IDS)
def test_brute_force_references_are_the_naive_loops(name, kw, brute, naive):
    for args in _batches():
        assert float(brute(*args, **kw)) == pytest.approx(naive(*args, **kw), rel=1e-10,
                                                          abs=1e-12)


@pytest.mark.parametrize("name,kw,brute,naive", CASES, ids=IDS)
def test_tiled_equals_the_definition(name, kw, brute, naive):
    (x, y), (q, ql, r, rl) = _batches()
    want = _grads(lambda e: brute(e, y, **kw), x)
    assert want[0] > 0
    for chunk in (2, 4):
        loss = losses.build(name, chunk_size=chunk, **kw)
        _close(_grads(lambda e, loss=loss: loss(e, y), x), want)
    loss = losses.build(name, chunk_size=3, **kw)
    _close(_grads(lambda a, b: loss(a, ql, b, rl), q, r),
           _grads(lambda a, b: brute(a, ql, b, rl, **kw), q, r))


NAMES = ["lifted_structure", "generalized_lifted_structure"]


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("kw", [{}, {"form": "distance"}], ids=["default", "distance"])
@pytest.mark.parametrize("name", NAMES)
def test_degenerate_batches_give_a_connected_zero(name, kw, chunk):
    kw = kw if name == "generalized_lifted_structure" else {}
    loss = losses.build(name, chunk_size=chunk, **kw)
    g = torch.Generator().manual_seed(0)
    assert_degenerate_batches_give_a_connected_zero(loss, g)
    # query-vs-reference: every reference has the label of query 0, which keeps positives
    # and no negative; query 1 the reverse: no term at all
    q = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    r = torch.randn(3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    value = loss(q, torch.tensor([0, 1]), r, torch.zeros(3, dtype=torch.long))
    value.backward()
    assert value.item() == 0.0 and (q.grad == 0).all() and (r.grad == 0).all()


def _unit(*degrees):
    t = torch.tensor(degrees, dtype=torch.float64) * torch.pi / 180
    return torch.stack([t.cos(), t.sin()], 1)


ONE_PAIR = [  # (name, brute, naive, settings: the one term active, then inactive)
    ("lifted_structure", brute_lifted, naive_lifted, [{}, {"margin": 0.05}]),
    ("generalized_lifted_structure", brute_generalized_lifted, naive_generalized_lifted,
     [{}, {"lam": -0.3}]),
    ("generalized_lifted_structure", brute_generalized_lifted, naive_generalized_lifted,
     [{"form": "distance"}, {"form": "distance", "margin": 0.05}]),
]


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("name,brute,naive,settings", ONE_PAIR,
                         ids=["lifted", "generalized", "generalized-distance"])
def test_one_positive_pair_equals_the_definition(name, brute, naive, settings, chunk):
    # query 0 (label 0): one positive 10 degrees away, one negative 60 degrees away; query 1
    # (label 5) has no positive: one positive pair in all; then query 0 alone: one negative
    r, rl = _unit(10, 60), torch.tensor([0, 1])
    for q, ql in ((_unit(0, 90), torch.tensor([0, 5])), (_unit(0), torch.tensor([0]))):
        for kw, active in zip(settings, (True, False)):
            loss = losses.build(name, chunk_size=chunk, **kw)
            want = _grads(lambda a, b, kw=kw, ql=ql: brute(a, ql, b, rl, **kw), q, r)
            assert want[0] == pytest.approx(naive(q, ql, r, rl, **kw), rel=1e-10, abs=1e-12)
            assert (want[0] > 0) == active
            _close(_grads(lambda a, b, loss=loss, ql=ql: loss(a, ql, b, rl), q, r), want)


def test_lifted_arbitrary_pair_masks_equal_the_definition():
    # in-batch masks of any shape: pairs (i, j) where only one of rows i and j has negatives
    x, y = random_batch(5, B=7, D=3)
    batch = make_batch(x, y)
    pos, neg = random_pair_masks(7, seed=6)
    pos[0], neg[0] = True, False                     # row 0: positives, no negative
    pos[0, 0] = False
    batch = dataclasses.replace(batch, pos=pos, neg=neg, label_masks=False)
    S = batch.S.detach().clone().requires_grad_(True)
    got = losses.build("lifted_structure", margin=0.5).compute(
        dataclasses.replace(batch, S=S))
    d = (2 - 2 * S.detach()).clamp_min(0).add(1e-12).sqrt()
    want = lifted_from_distances(d, pos, neg, 0.5, in_batch=True)
    assert float(got) == pytest.approx(float(want), rel=1e-12) and float(want) > 0


def naive_eq10_11(batch, lam):
    """Wang et al. 2019b eq. 10-11 by loops: on an anchor whose hinge is active (h > 0), the
    softmax of -s over its positives and of s over its negatives, times 1/m."""
    S, pos, neg = batch.S.double(), batch.pos, batch.neg
    W = torch.zeros_like(S)
    m = S.shape[0]
    for i in range(m):
        P = pos[i].nonzero().flatten().tolist()
        N = neg[i].nonzero().flatten().tolist()
        if not P or not N:
            continue
        zp = sum(math.exp(-float(S[i, k])) for k in P)
        zn = sum(math.exp(float(S[i, k])) for k in N)
        if math.log(zp) + math.log(zn) + lam <= 0:
            continue
        for k in P:
            W[i, k] = math.exp(-float(S[i, k])) / zp / m
        for k in N:
            W[i, k] = math.exp(float(S[i, k])) / zn / m
    return W


def _weight_batches():
    """Query-vs-reference batches with one positive a query: one-hot vectors with one
    negative each (h = -1 + 0 + 1, exactly 0: inactive), queries on the unit circle with h
    between 0 and 1, a random one; an in-batch batch of one class (no negative)."""
    eye = torch.eye(2, dtype=torch.float64)
    two = torch.tensor([0, 1])
    yield make_batch(eye, two, eye, two)
    yield make_batch(_unit(0, 90), two, _unit(20, 110, 200), torch.tensor([0, 1, 2]))
    yield make_batch(*random_qref(3, B=5, M=8, D=3))
    yield make_batch(torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.long))


def test_generalized_lifted_closed_form_weights_equal_eq10_11_by_loops():
    loss = losses.build("generalized_lifted_structure")          # lam = 1
    hinge = []
    for batch in _weight_batches():
        W = naive_eq10_11(batch, 1.0)
        torch.testing.assert_close(loss.closed_form_weights(batch), W, rtol=1e-12, atol=1e-15)
        hinge.append(bool(W.any()))
    assert hinge == [False, True, True, False]


def test_closed_form_errors_name_the_supported_settings():
    batch = make_batch(*random_batch(0, B=6))
    with pytest.raises(ValueError, match=r"no closed form for GeneralizedLiftedStructureLoss "
                                         r"with these settings; supported: "
                                         r"generalized_lifted_structure\(form='similarity'\)$"):
        losses.build("generalized_lifted_structure", form="distance").closed_form_weights(batch)


def test_unknown_form_names_the_choices():
    with pytest.raises(ValueError, match=r"^unknown form 'cosine'; choose one of "
                                         r"\('similarity', 'distance'\)$"):
        losses.build("generalized_lifted_structure", form="cosine")


def test_default_margins_are_the_papers_and_pmls():
    x, y = random_batch(2)
    # lifted structure: m = 1 (Oh Song et al. 2016); generalised: lam = 1, margin = 1 (PML)
    assert float(losses.build("lifted_structure")(x, y)) == pytest.approx(
        naive_lifted(x, y, margin=1.0), rel=1e-10)
    assert float(losses.build("generalized_lifted_structure")(x, y)) == pytest.approx(
        naive_generalized_lifted(x, y, lam=1.0), rel=1e-10)
    assert float(losses.build("generalized_lifted_structure", form="distance")(x, y)) == \
        pytest.approx(naive_generalized_lifted(x, y, form="distance", margin=1.0), rel=1e-10)


def test_raw_embedding_distances_have_no_tiles():
    with pytest.raises(ValueError, match=r"cannot be computed in tiles \(chunk_size=4\): on raw "
                                         r"embeddings the distances come from the embeddings, "
                                         r"not from S \(use normalize=True\)$"):
        losses.build("lifted_structure", normalize=False, chunk_size=4)
    with pytest.raises(ValueError, match=r"cannot be computed in tiles \(chunk_size=4\): the "
                                         r"distance form on raw embeddings reads the distances "
                                         r"from the embeddings, not from S "
                                         r"\(use normalize=True\)$"):
        losses.build("generalized_lifted_structure", form="distance", normalize=False,
                     chunk_size=4)
    assert losses.build("lifted_structure").tiling_unsupported() is None
    assert losses.build("generalized_lifted_structure", form="distance").tiling_unsupported() \
        is None
    assert losses.build("generalized_lifted_structure",
                        normalize=False).tiling_unsupported() is None


def test_masked_logsumexp_of_empty_rows_is_zero_with_zero_gradient():
    x = torch.tensor([[0.5, -1.0, 2.0], [1.0, 3.0, -2.0], [0.0, 0.0, 0.0]],
                     dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    lse, nonempty = masked_logsumexp(x, mask)
    assert nonempty.tolist() == [True, False, True]
    want = [math.log(math.exp(0.5) + math.exp(2.0)), 0.0, math.log(3.0)]
    assert lse.tolist() == pytest.approx(want, rel=1e-15)
    assert lse.dtype == torch.float64
    (g,) = torch.autograd.grad(lse.sum(), x)
    assert torch.isfinite(g).all() and (g[1] == 0).all() and (g[0, 1] == 0)
    # along dim 0: the same on the transpose
    lse0, nonempty0 = masked_logsumexp(x.detach().T, mask.T, dim=0)
    assert lse0.tolist() == pytest.approx(want, rel=1e-15)
    assert nonempty0.tolist() == [True, False, True]


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_generalized_hinge_exactly_at_zero_has_zero_gradient(chunk):
    # one-hot queries with one positive (cosine 1) and one negative (cosine 0): with lam = 1
    # every hinge is log e^-1 + log e^0 + 1 = 0 exactly, where the loss and its derivative
    # are 0
    eye, two = torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])
    loss = losses.build("generalized_lifted_structure", chunk_size=chunk)
    want = _grads(lambda a, b: brute_generalized_lifted(a, two, b, two), eye, eye)
    assert want[0] == naive_generalized_lifted(eye, two, eye, two) == 0.0
    assert all((g == 0).all() for g in want[1])
    _close(_grads(lambda a, b: loss(a, two, b, two), eye, eye), want)
