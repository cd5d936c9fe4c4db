"""Lifted structure and generalised lifted structure losses (dmlkit.losses.lifted): naive
loops, gradcheck, half precision, PML, and the eq. 10-11 pair weights of Wang et al. 2019b."""

import math

import pytest
import torch
from naive import naive_generalized_lifted, naive_lifted
from naive.loss_testing import autograd_weights, naive_loop_tests, pml_tests, random_batch
from optional_pml import pml_distances, pml_losses

from dmlkit import losses
from dmlkit.losses.base import make_batch


# name, kwargs, naive function, naive kwargs
CASES = [
    ("lifted_structure", {}, naive_lifted, {}),
    ("lifted_structure", {"margin": 0.5, "normalize": False}, naive_lifted,
     {"margin": 0.5, "normalize": False}),
    ("generalized_lifted_structure", {}, naive_generalized_lifted, {}),
    ("generalized_lifted_structure", {"lam": 0.2}, naive_generalized_lifted, {"lam": 0.2}),
    ("generalized_lifted_structure", {"form": "distance", "margin": 0.7},
     naive_generalized_lifted, {"form": "distance", "margin": 0.7}),
]

TestNaiveLoops = naive_loop_tests(CASES)

PML_CASES = [
    ("lifted", lambda: losses.build("lifted_structure", margin=1.0),
     lambda: pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0), 1),
    ("lifted-m0.5", lambda: losses.build("lifted_structure", margin=0.5),
     lambda: pml_losses.LiftedStructureLoss(neg_margin=0.5, pos_margin=0), 1),
    ("generalized-lifted-distance",
     lambda: losses.build("generalized_lifted_structure", form="distance", margin=1.0),
     lambda: pml_losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0), 2),
    ("generalized-lifted-similarity",
     lambda: losses.build("generalized_lifted_structure", lam=0.4),
     lambda: pml_losses.GeneralizedLiftedStructureLoss(
         distance=pml_distances.CosineSimilarity(), pos_margin=0.4, neg_margin=0), 2),
]


TestMatchesPML = pml_tests(PML_CASES)


def test_generalized_lifted_weights_are_wang2019b_eq10_11():
    x, y = random_batch(2)
    batch = make_batch(x, y)
    batch.S = batch.S.detach().requires_grad_(True)
    lam = 1.0
    loss = losses.build("generalized_lifted_structure", lam=lam)
    (gS,) = torch.autograd.grad(loss.compute(batch), batch.S)
    S = batch.S.detach()
    m = S.shape[0]
    for i in range(m):
        P = batch.pos[i].nonzero().flatten().tolist()
        N = batch.neg[i].nonzero().flatten().tolist()
        if not P or not N:
            assert torch.all(gS[i] == 0)
            continue
        zp = sum(math.exp(-S[i, k].item()) for k in P)
        zn = sum(math.exp(S[i, k].item()) for k in N)
        active = math.log(zp) + math.log(zn) + lam > 0
        for j in P:
            want = math.exp(-S[i, j].item()) / zp / m if active else 0.0
            assert -gS[i, j].item() == pytest.approx(want, abs=1e-12)
        for j in N:
            want = math.exp(S[i, j].item()) / zn / m if active else 0.0
            assert gS[i, j].item() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("lam", [0.2, 1.0])
def test_generalized_lifted_closed_form_weights_equal_autograd(lam):
    x, y = random_batch(3)
    loss = losses.build("generalized_lifted_structure", lam=lam)
    batch, _, W = autograd_weights(loss, x, y)
    assert W.abs().max() > 0
    torch.testing.assert_close(loss.closed_form_weights(batch), W, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="no closed form"):
        losses.build("generalized_lifted_structure", form="distance").closed_form_weights(batch)
    with pytest.raises(ValueError, match="no closed form"):
        losses.build("lifted_structure").closed_form_weights(batch)
