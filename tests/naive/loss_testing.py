"""The seeded batches the loss tests share, the autograd views of a loss on a batch, and the
shared testers: a table of loss settings against their naive loops (:func:`naive_loop_tests`)
and a loss against pytorch-metric-learning (:func:`assert_matches_pml`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dmlkit import losses, precision
from dmlkit.losses.base import make_batch

__all__ = [
    "LABEL_LAYOUTS", "SEEDS", "assert_matches_pml", "autograd_weights", "label_layout_batches",
    "naive_loop_tests", "pml_tests", "rand_batch", "random_batch", "random_qref", "through_masks",
    "value_and_grad", "value_and_grad_S",
]

SEEDS = [0, 1, 2, 3]


# =========================================================================== batches
def random_batch(seed: int, B: int = 12, D: int = 5, n_classes: int | None = None,
                 min_per_class: int = 1):
    """(B, D) float64 embeddings and (B,) labels of 3 or 4 classes (or ``n_classes``)."""
    g = torch.Generator().manual_seed(seed)
    n_classes = n_classes or (3 + seed % 2)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    if min_per_class > 1:
        base = torch.arange(n_classes).repeat_interleave(min_per_class)
        rest = torch.randint(0, n_classes, (B - len(base),), generator=g)
        y = torch.cat([base, rest])[torch.randperm(B, generator=g)]
    else:
        y = torch.randint(0, n_classes, (B,), generator=g)
    return x, y


def random_qref(seed: int, B: int = 7, M: int = 10, D: int = 5):
    """A query batch (B, D) / (B,) and a reference batch (M, D) / (M,), float64."""
    g = torch.Generator().manual_seed(100 + seed)
    q = torch.randn(B, D, generator=g, dtype=torch.float64)
    r = torch.randn(M, D, generator=g, dtype=torch.float64)
    ql = torch.randint(0, 4, (B,), generator=g)
    rl = torch.randint(0, 4, (M,), generator=g)
    return q, ql, r, rl


def rand_batch(seed, B=14, D=6, C=4, dtype=torch.float64):
    """(B, D) embeddings and labels of C classes plus one singleton class (the last sample):
    an anchor without positives."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    y = torch.randint(0, C, (B,), generator=g)
    y[-1] = C          # one singleton class: an anchor without positives
    return x, y


LABEL_LAYOUTS = {
    "mixed": torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 2, 5, 0, 1]),      # 3 and 5 are singletons
    "one_class": torch.zeros(6, dtype=torch.long),
    "singletons": torch.arange(7),
    "pairs": torch.arange(10) // 2,
}


def label_layout_batches(seed=0, dtype=torch.float64):
    """``(key, PairBatch)``: in-batch and query-vs-reference batches over every layout of
    :data:`LABEL_LAYOUTS`."""
    g = torch.Generator().manual_seed(seed)
    for key, lab in LABEL_LAYOUTS.items():
        emb = torch.randn(len(lab), 5, generator=g, dtype=dtype)
        yield key, make_batch(emb, lab)
        ref_lab = torch.cat([lab[:4], torch.tensor([9, 0, 1])])
        ref = torch.randn(len(ref_lab), 5, generator=g, dtype=dtype)
        yield key + "-ref", make_batch(emb, lab, ref, ref_lab)


def through_masks(batch):
    """The same batch seen through its masks only (the path of arbitrary pair masks)."""
    return dataclasses.replace(batch, label_masks=False)


# =========================================================================== autograd views
def value_and_grad(fn, x):
    """``fn(x)`` and its gradient with respect to a fresh leaf copy of x."""
    x = x.detach().clone().requires_grad_(True)
    v = fn(x)
    (g,) = torch.autograd.grad(v, x)
    return v.detach(), g


def value_and_grad_S(fn, batch):
    """``float(fn(batch))`` and its gradient with respect to a leaf copy of ``batch.S``."""
    S = batch.S.detach().clone().requires_grad_(True)
    value = fn(dataclasses.replace(batch, S=S))
    (grad,) = torch.autograd.grad(value, S, allow_unused=True)
    return float(value.detach()), torch.zeros_like(S) if grad is None else grad


def random_pair_masks(B: int, seed: int = 6):
    """Disjoint (B, B) positive / negative masks of no label structure, diagonal False."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(B, B, generator=g) < 0.4
    neg = ~pos & (torch.rand(B, B, generator=g) < 0.7)
    pos.fill_diagonal_(False)
    neg.fill_diagonal_(False)
    return pos, neg


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar ``f`` (e.g. a naive loop) at x, entry by entry."""
    g = torch.zeros_like(x)
    for idx in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[idx] = h
        e = e.view_as(x)
        g.view(-1)[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def assert_gradients_match_the_loop(loss, naive, x, y, q, ql, r, rl, rtol=1e-5, atol=1e-7):
    """The loss's gradients against central differences of the naive loop ``naive(x, y)`` /
    ``naive(q, ql, r, rl)``: in-batch, then query-vs-reference (both inputs)."""
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xx, y), xx)
    torch.testing.assert_close(g, numeric_grad(lambda e: naive(e, y), x), rtol=rtol, atol=atol)
    qq, rr = q.clone().requires_grad_(True), r.clone().requires_grad_(True)
    gq, gr = torch.autograd.grad(loss(qq, ql, rr, rl), (qq, rr))
    torch.testing.assert_close(gq, numeric_grad(lambda e: naive(e, ql, r, rl), q), rtol=rtol,
                               atol=atol)
    torch.testing.assert_close(gr, numeric_grad(lambda e: naive(q, ql, e, rl), r), rtol=rtol,
                               atol=atol)


def assert_degenerate_batches_give_a_connected_zero(loss, generator=None):
    """One class (no negative pair) and all singletons (no positive pair): the value is 0 with a
    zero gradient, still connected to the embeddings."""
    for y in (torch.zeros(5, dtype=torch.long), torch.arange(5)):
        x = torch.randn(5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
        value = loss(x, y)
        value.backward()
        assert value.item() == 0.0 and (x.grad == 0).all()


def autograd_weights(loss, x, y):
    """``(batch, S, W)``: the pair weights of ``loss.compute`` by autograd on a leaf S."""
    batch = make_batch(x, y)
    S = batch.S.detach().clone().requires_grad_()
    value = loss.compute(dataclasses.replace(batch, S=S))
    (g,) = torch.autograd.grad(value, S)
    W = torch.where(batch.pos, -g, torch.where(batch.neg, g, torch.zeros_like(g)))
    return batch, S.detach(), W


# =========================================================================== shared testers
def naive_loop_tests(cases):
    """The test class that checks every case ``(name, kwargs, naive, naive_kwargs)`` of a loss
    module against its naive loop: in-batch and query-vs-reference values (float64, 1e-10),
    gradcheck in both forms, and half precision (float32 out, the gradient in the input's
    dtype, the value within the measured tolerance of dmlkit.precision on the rounded input).

    A test module assigns it to a ``Test...`` name: ``TestNaiveLoops = naive_loop_tests(CASES)``.
    """
    ids = [f"{n}-{i}" for i, (n, *_rest) in enumerate(cases)]
    each_case = pytest.mark.parametrize("name,kw,naive,nkw", cases, ids=ids)

    class NaiveLoops:
        @each_case
        def test_equals_naive_loop_in_batch(self, name, kw, naive, nkw):
            loss = losses.build(name, **kw)
            for seed in SEEDS:
                x, y = random_batch(seed)
                got = loss(x, y)
                assert got.dtype == torch.float64
                assert got.item() == pytest.approx(naive(x, y, **nkw), abs=1e-10, rel=1e-10)

        @each_case
        def test_equals_naive_loop_query_vs_reference(self, name, kw, naive, nkw):
            loss = losses.build(name, **kw)
            for seed in SEEDS:
                q, ql, r, rl = random_qref(seed)
                got = loss(q, ql, r, rl).item()
                assert got == pytest.approx(naive(q, ql, r, rl, **nkw), abs=1e-10, rel=1e-10)

        @each_case
        def test_gradcheck(self, name, kw, naive, nkw):
            loss = losses.build(name, **kw)
            x, y = random_batch(7, B=8, D=4, n_classes=3)
            x.requires_grad_(True)
            assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-6)
            q, ql, r, rl = random_qref(7, B=5, M=6, D=4)
            q.requires_grad_(True)
            r.requires_grad_(True)
            assert torch.autograd.gradcheck(lambda a, b: loss(a, ql, b, rl), (q, r), eps=1e-6,
                                            atol=1e-6)

        @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
        @each_case
        def test_half_precision_equals_naive_loop_on_rounded_input(self, name, kw, naive, nkw,
                                                                   dtype):
            """Computed in float32 from the rounded input (docs/precision.md): within the
            largest measured float32-vs-float64 value error of any loss (the table's
            tolerance), not a blanket band."""
            x, y = random_batch(3, B=16, D=8)
            xh = (5 * x).to(dtype).requires_grad_(True)
            value = losses.build(name, **kw)(xh, y)
            value.backward()
            assert value.dtype == torch.float32 and xh.grad.dtype == dtype
            assert torch.isfinite(xh.grad.float()).all()
            ref = naive(xh.detach().double(), y, **nkw)
            tol = precision.family_tolerance("loss", dtype, "value", "fp64")
            assert abs(value.item() - ref) <= tol * max(abs(ref), 1e-6), (value.item(), ref)

    return NaiveLoops


def _prep(e, unit):
    return F.normalize(e, dim=1) if unit else e


def assert_matches_pml(ours, theirs, min_per_class, unit=False):
    """Our loss and PML's agree in value (1e-6) and gradient on three seeded batches with at
    least ``min_per_class`` samples per class; ``unit``: both see L2-normalised inputs and the
    gradients are taken through the normalisation."""
    for seed in SEEDS[:3]:
        z, y = random_batch(seed, B=12, D=5, min_per_class=min_per_class)
        va, ga = value_and_grad(lambda e, y=y: ours(_prep(e, unit), y), z)
        vb, gb = value_and_grad(lambda e, y=y: theirs(_prep(e, unit), y), z)
        assert va.item() > 0
        assert va.item() == pytest.approx(vb.item(), abs=1e-6)
        torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-5)


def pml_tests(cases, unit=False):
    """The test class that checks every case ``(id, our loss factory, PML's loss factory,
    min_per_class)`` with :func:`assert_matches_pml`: ``TestMatchesPML = pml_tests(PML_CASES)``.
    """
    class MatchesPML:
        @pytest.mark.parametrize("case,ours,theirs,min_per_class", cases,
                                 ids=[c[0] for c in cases])
        def test_matches_pml(self, case, ours, theirs, min_per_class):
            assert_matches_pml(ours(), theirs(), min_per_class, unit=unit)

    return MatchesPML
