"""N-pair-mc, N-pair-ovo and the (N+1)-tuplet loss (dmlkit.losses.npair): naive loops over the
documented pairing, gradcheck, half precision, PML, and the in-batch shortcut of forward()."""

import math

import numpy as np
import pytest
import torch
from naive import naive_npair, naive_tuplet
from naive.loss_testing import LABEL_LAYOUTS, naive_loop_tests, pml_tests
from optional_pml import pml_distances, pml_losses

from dmlkit import losses
from dmlkit.losses.base import make_batch


# name, kwargs, naive function, naive kwargs
CASES = [
    ("npair", {}, naive_npair, {}),
    ("npair", {"normalize": True, "l2_reg": 0.0}, naive_npair, {"normalize": True, "l2_reg": 0.0}),
    ("npair_ovo", {"l2_reg": 0.01}, naive_npair, {"l2_reg": 0.01, "ovo": True}),
    ("tuplet", {}, naive_tuplet, {}),
    ("tuplet", {"form": "hinge", "margin": 0.3, "normalize": True}, naive_tuplet,
     {"form": "hinge", "margin": 0.3, "normalize": True}),
]

TestNaiveLoops = naive_loop_tests(CASES)

PML_CASES = [
    ("npair-normalized", lambda: losses.build("npair", normalize=True, l2_reg=0.0),
     lambda: pml_losses.NPairsLoss(), 1),
    ("npair-raw", lambda: losses.build("npair", normalize=False, l2_reg=0.0),
     lambda: pml_losses.NPairsLoss(
         distance=pml_distances.DotProductSimilarity(normalize_embeddings=False)), 1),
]


TestMatchesPML = pml_tests(PML_CASES)


def test_npair_pairing_uses_first_two_of_each_class():
    # class 5: samples 1, 3, 6 -> pair (1, 3); class 2: (0, 4); class 9 is a singleton
    y = torch.tensor([2, 5, 9, 5, 2, 7, 5, 7])
    x = torch.randn(8, 4, dtype=torch.float64)
    got = losses.build("npair", l2_reg=0.0)(x, y).item()
    anchors, cols = [(0, 4), (1, 3), (5, 7)], [4, 3, 7]
    ref = np.mean([math.log(sum(math.exp(float(x[i] @ x[j])) for j in cols))
                   - float(x[i] @ x[p]) for i, p in anchors])
    assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("params", [{}, {"normalize": True, "l2_reg": 0.0}, {"l2_reg": 0.05}])
def test_npair_in_batch_shortcut_equals_the_pair_batch_formula(params):
    """forward() computes N-pair-mc in-batch as a cross-entropy of the anchor x positive block;
    ``compute`` on the full (B, B) batch (what pair_weights differentiates) gives the same."""
    loss = losses.build("npair", **params)
    g = torch.Generator().manual_seed(8)
    for lab in (LABEL_LAYOUTS["mixed"], LABEL_LAYOUTS["pairs"],
                torch.tensor([2, 2, 0, 1, 0, 1, 1, 2])):
        x = torch.randn(len(lab), 5, generator=g, dtype=torch.float64, requires_grad=True)
        (g_fast,) = torch.autograd.grad(fast := loss(x, lab), x)
        batch = make_batch(x, lab, normalize=loss.normalize)
        (g_ref,) = torch.autograd.grad(ref := loss.compute(batch) + loss.regularizer(batch), x)
        assert fast.item() == pytest.approx(ref.item(), abs=1e-12)
        assert torch.allclose(g_fast, g_ref, atol=1e-12)
