"""The fused kernels (dmlkit.losses._fused): values, counts and derivatives equal the formulas
written with ordinary autograd ops."""

import pytest
import torch

from dmlkit.losses._fused import (
    fused_loss,
    hinge_of_distance,
    kept_lse1p,
    relu_of_shift,
    slot_terms,
)


def _S(seed=0, shape=(6, 9)):
    g = torch.Generator().manual_seed(seed)
    S = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    keep = torch.rand(shape, generator=g) < 0.5
    keep[0] = False                                   # a row that keeps nothing
    return S, keep


@pytest.mark.parametrize("scale,shift", [(2.0, 0.5), (-2.0, 0.5), (50.0, 0.0)])
def test_kept_lse1p_equals_the_formula(scale, shift):
    S, keep = _S(1)
    S1, S2 = S.clone().requires_grad_(True), S.clone().requires_grad_(True)
    got = kept_lse1p(S1, keep.to(S.dtype), scale, shift)
    z = (scale * (S2 - shift)).masked_fill(~keep, float("-inf"))
    ref = torch.logsumexp(torch.cat([z, torch.zeros(6, 1, dtype=S.dtype)], 1), 1) / abs(scale)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    w = torch.arange(1.0, 7.0, dtype=S.dtype)
    (g1,) = torch.autograd.grad((got * w).sum(), S1)
    (g2,) = torch.autograd.grad((ref * w).sum(), S2)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    assert got[0] == 0 and (g1[0] == 0).all()


@pytest.mark.parametrize("margin,power", [(1.0, 1.0), (1.2, 2.0), (0.8, 3.0)])
def test_hinge_of_distance_equals_the_formula(margin, power):
    S, keep = _S(2)
    total, count, deriv = hinge_of_distance(S.clone(), margin, power,
                                            lambda X: X.masked_fill_(~keep, 0.0))
    leaf = S.clone().requires_grad_(True)
    d = (2.0 - 2.0 * leaf).clamp_min(0.0).add(1e-12).sqrt()
    terms = torch.where(keep, torch.relu(margin - d) ** power, 0.0)
    (grad,) = torch.autograd.grad(terms.sum(), leaf)
    terms = terms.detach()
    assert float(total) == pytest.approx(float(terms.sum()), rel=1e-12)
    assert int(count) == int((terms > 0).sum())
    torch.testing.assert_close(deriv, grad, rtol=1e-10, atol=1e-12)


def test_relu_of_shift_equals_the_formula():
    S, keep = _S(3)
    total, count, deriv = relu_of_shift(S.clone(), 0.2, lambda X: X.masked_fill_(~keep, 0.0))
    terms = torch.where(keep, torch.relu(S - 0.2), 0.0)
    assert float(total) == pytest.approx(float(terms.sum()), rel=1e-12)
    assert int(count) == int((terms > 0).sum())
    assert torch.equal(deriv, (terms > 0).to(S.dtype))


def test_slot_terms_and_fused_loss_backward():
    S, _ = _S(4)
    index = torch.tensor([[0, 3], [2, 0], [1, 1], [5, 8], [0, 0], [7, 6]])
    valid = torch.tensor([[True, True], [True, False], [True, False], [True, True],
                          [False, False], [True, True]])
    terms, deriv = slot_terms(S, index, valid, lambda s: s * s)
    s = S.gather(1, index)
    assert torch.equal(terms, torch.where(valid, s * s, 0.0))
    assert torch.equal(deriv, torch.where(valid, 2 * s, 0.0))

    def kernel(X):
        return (X * X).sum(), 2 * X
    leaf = S.clone().requires_grad_(True)
    value = fused_loss(leaf, kernel)
    (grad,) = torch.autograd.grad(3 * value, leaf)
    assert float(value.detach()) == pytest.approx(float((S * S).sum()))
    torch.testing.assert_close(grad, 6 * S)
