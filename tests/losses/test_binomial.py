"""Binomial deviance loss (dmlkit.losses.binomial): the eq. 13-14 pair weights of
Wang et al. 2019b, by autograd and as the loss states them. (Values against the naive loop:
test_multi_similarity, with the other weightings of Table 1.)"""

import pytest
import torch
from naive import naive_binomial, naive_cos, naive_sets, reduce
from naive.loss_testing import autograd_weights, rand_batch

from dmlkit import losses
from dmlkit.losses.binomial import binomial_pair_weights


@pytest.mark.parametrize("seed", range(2))
def test_binomial_pair_weights_are_eq13_14(seed):
    x, y = rand_batch(seed, B=16)
    a, b, lam, m = 2.0, 50.0, 0.5, 16
    # binomial deviance, eq. 13-14 (reduction "sum": exactly; "mean": / m)
    for reduction, const in (("sum", 1.0), ("mean", 1.0 / m)):
        batch, S, W = autograd_weights(losses.build("binomial", reduction=reduction), x, y)
        npos = batch.pos.sum(1, keepdim=True).clamp_min(1)
        nneg = batch.neg.sum(1, keepdim=True).clamp_min(1)
        wp = a * torch.exp(a * (lam - S)) / (1 + torch.exp(a * (lam - S))) / npos
        wn = b * torch.exp(b * (S - lam)) / (1 + torch.exp(b * (S - lam))) / nneg
        closed = torch.where(batch.pos, wp, torch.where(batch.neg, wn, torch.zeros_like(S)))
        valid = (batch.pos.any(1) & batch.neg.any(1))[:, None]   # the singleton anchor: 0
        assert not valid.all()
        torch.testing.assert_close(W, const * closed * valid, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("alpha,beta,lam", [(2.0, 50.0, 0.5), (1.0, 10.0, 0.2)])
def test_closed_form_weights_equal_autograd(reduction, alpha, beta, lam):
    x, y = rand_batch(4, B=15)
    loss = losses.build("binomial", alpha=alpha, beta=beta, lam=lam, reduction=reduction)
    batch, S, W = autograd_weights(loss, x, y)
    assert W.abs().max() > 0
    # rtol 1e-8: torch.softplus is linear above 20 (relative error e^-20 ~ 2e-9)
    torch.testing.assert_close(loss.closed_form_weights(batch), W, rtol=1e-8, atol=1e-14)
    unscaled = binomial_pair_weights(S, batch.pos, batch.neg, alpha, beta, lam)
    torch.testing.assert_close(unscaled / (15 if reduction == "mean" else 1), W, rtol=1e-8,
                               atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_value_equals_naive_loop(reduction):
    x, y = rand_batch(5, B=13)
    S, (P, N) = naive_cos(x, x), naive_sets(y)
    got = losses.build("binomial_deviance", reduction=reduction)(x, y)
    assert abs(float(got) - reduce(naive_binomial(S, P, N, 2.0, 50.0, 0.5), reduction)) < 1e-10


def test_unknown_reduction_is_named():
    with pytest.raises(ValueError, match="known reductions: mean, sum"):
        losses.build("binomial", reduction="max")
