"""dmlkit.similarity at its edges, against plain torch and closed forms: dtypes kept or promoted,
default arguments, a one-element mask, the gradient at s = 1 exactly and the unit diagonal's
gradient (the cases the mutation run, benchmarks/mutation.py, found without a test)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dmlkit.similarity import (
    _SymmetricGram,
    distances_from_similarity,
    mask_any,
    similarity_matrix,
    unit_distances,
)


def test_mask_any_of_one_element():
    assert mask_any(torch.tensor([True])) and not mask_any(torch.tensor([False]))
    assert mask_any(torch.ones(1, 1, dtype=torch.bool))


def _plain_cosine(q, r):
    q = q / q.norm(dim=1, keepdim=True)
    r = r / r.norm(dim=1, keepdim=True)
    return q @ r.t()


@pytest.mark.parametrize("with_reference", [False, True])
def test_float64_stays_float64(with_reference):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(6, 4, dtype=torch.float64, generator=g)
    r = torch.randn(5, 4, dtype=torch.float64, generator=g) if with_reference else None
    S = similarity_matrix(q, r)
    plain = _plain_cosine(q, q if r is None else r)
    if r is None:
        plain.fill_diagonal_(1.0)
    assert S.dtype == torch.float64
    # float32 rounding anywhere would leave errors near 1e-8
    assert torch.allclose(S, plain, rtol=0, atol=1e-14)
    raw = similarity_matrix(q, r, normalize=False)
    assert raw.dtype == torch.float64
    assert torch.allclose(raw, q @ (q if r is None else r).t(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("qdtype, rdtype, out", [
    (torch.float32, torch.float64, torch.float32),
    (torch.float64, torch.float32, torch.float64),
    (torch.float16, torch.float64, torch.float32),
    (torch.float64, torch.bfloat16, torch.float64),
])
def test_mixed_dtypes_take_the_query_dtype(qdtype, rdtype, out):
    g = torch.Generator().manual_seed(4)
    q = torch.randn(3, 8, generator=g).to(qdtype)
    r = torch.randn(7, 8, generator=g).to(rdtype)
    S = similarity_matrix(q, r)
    assert S.dtype == out
    # the reference: both operands exactly as given, in float64
    plain = _plain_cosine(q.double(), r.double())
    assert torch.allclose(S.double(), plain, rtol=0, atol=1e-6 if out == torch.float32 else 1e-7)


def test_unit_distances_closed_form_default_eps():
    S = torch.tensor([1.0, 0.5, -1.0, 0.0], dtype=torch.float64)
    d = unit_distances(S)
    assert torch.allclose(d, torch.tensor([math.sqrt(1e-12), math.sqrt(1.0 + 1e-12),
                                           math.sqrt(4.0 + 1e-12), math.sqrt(2.0 + 1e-12)],
                                          dtype=torch.float64), rtol=1e-15, atol=0)


def test_distances_from_similarity_passes_eps_on():
    S = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    d = distances_from_similarity(S, eps=1e-4)
    assert torch.allclose(d, torch.tensor([1e-2, math.sqrt(1.0 + 1e-4)], dtype=torch.float64),
                          rtol=1e-14, atol=0)
    (g,) = torch.autograd.grad(d.sum(), S)
    # dd/ds = -1 / d: at s = 1 exactly nothing was clamped, the gradient is -1 / sqrt(eps)
    assert torch.allclose(g, torch.tensor([-100.0, -1.0 / math.sqrt(1.0 + 1e-4)],
                                          dtype=torch.float64), rtol=1e-12, atol=0)


def test_gradient_at_s_equal_one_is_not_zeroed():
    # 2 - 2 s = 0 is not clamped: only s > 1 has the zero gradient
    S = torch.tensor([1.0, 1.0 + 1e-6, 0.25], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(distances_from_similarity(S).sum(), S)
    assert g[0] == pytest.approx(-1e6, rel=1e-12)
    assert g[1] == 0.0
    assert g[2] == pytest.approx(-1.0 / math.sqrt(1.5 + 1e-12), rel=1e-12)


def test_symmetric_gram_unit_diagonal_carries_no_gradient():
    # the autograd Function alone, on rows that are not unit vectors (through similarity_matrix
    # the normalisation would project the diagonal's gradient away): the diagonal is the
    # constant 1, so dL/dq gets nothing from G_ii
    g = torch.Generator().manual_seed(5)
    q = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    G = torch.randn(5, 5, dtype=torch.float64, generator=g)
    for unit in (True, False):
        (got,) = torch.autograd.grad((_SymmetricGram.apply(q, unit) * G).sum(), q)
        plain = q @ q.t()
        if unit:
            plain = torch.where(torch.eye(5, dtype=torch.bool), torch.ones_like(plain), plain)
        (want,) = torch.autograd.grad((plain * G).sum(), q)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_normalized_rows_use_dimension_one():
    # a (2, 2) input whose column norms differ from its row norms
    q = torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)
    S = similarity_matrix(q, q.clone())
    assert torch.allclose(S, torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64),
                          atol=1e-15)
    assert torch.allclose(S, F.cosine_similarity(q[:, None], q[None], dim=2), atol=1e-15)


def test_symmetric_gram_backward_under_autocast_runs_in_the_rows_dtype():
    # called under autocast (similarity_matrix itself turns autocast off) the product and so the
    # incoming gradient are bfloat16 while q is float32: the backward casts the gradient to
    # q's dtype, giving (G + G^T) q of the rounded G in float32
    g = torch.Generator().manual_seed(8)
    q = torch.randn(6, 4, generator=g, requires_grad=True)
    W = torch.randn(6, 6, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        S = _SymmetricGram.apply(q, False)
    assert S.dtype == torch.bfloat16
    (got,) = torch.autograd.grad((S * W.bfloat16()).sum(), q)
    assert got.dtype == torch.float32
    Wb = W.bfloat16().double()
    want = (Wb + Wb.t()) @ q.detach().double()
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
