"""Contrastive loss (dmlkit.losses.contrastive): naive per-pair loops, gradcheck, half
precision, pytorch-metric-learning (PML) under the mapping of the docstring, Wang et al. 2019b's
pair weights and the fused kernel against the dense formula."""

import pytest
import torch
from naive import naive_contrastive
from naive.loss_testing import (
    autograd_weights,
    label_layout_batches,
    naive_loop_tests,
    pml_tests,
    random_batch,
    through_masks,
    value_and_grad_S,
)
from optional_pml import pml_distances, pml_losses

from dmlkit import losses
from dmlkit.losses.base import make_batch
from dmlkit.losses.contrastive import ContrastiveLoss
from dmlkit.similarity import mask_any


# name, kwargs, naive function, naive kwargs
CASES = [
    ("contrastive", {}, naive_contrastive, {}),
    ("contrastive", {"margin": 0.8, "power": 1, "pos_margin": 0.2, "reduction": "sum"},
     naive_contrastive, {"margin": 0.8, "power": 1, "pos_margin": 0.2, "reduction": "sum"}),
    ("contrastive", {"margin": 1.2, "reduction": "mean_nonzero", "normalize": False},
     naive_contrastive, {"margin": 1.2, "reduction": "mean_nonzero", "normalize": False}),
    ("contrastive", {"form": "similarity", "lam": 0.1}, naive_contrastive,
     {"form": "similarity", "lam": 0.1}),
    ("contrastive", {"form": "similarity", "lam": 0.0, "pos_margin": 0.9, "reduction": "sum"},
     naive_contrastive, {"form": "similarity", "lam": 0.0, "pos_margin": 0.9, "reduction": "sum"}),
]

TestNaiveLoops = naive_loop_tests(CASES)

PML_CASES = [
    ("contrastive-distance", lambda: losses.build("contrastive", margin=0.9, power=1,
                                                  reduction="mean_nonzero"),
     lambda: pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=0.9), 1),
    ("contrastive-distance-posmargin",
     lambda: losses.build("contrastive", margin=1.1, pos_margin=0.3, power=1,
                          reduction="mean_nonzero"),
     lambda: pml_losses.ContrastiveLoss(pos_margin=0.3, neg_margin=1.1), 1),
    ("contrastive-similarity",
     lambda: losses.build("contrastive", form="similarity", lam=0.1, pos_margin=1.0,
                          reduction="mean_nonzero"),
     lambda: pml_losses.ContrastiveLoss(distance=pml_distances.CosineSimilarity(),
                                        pos_margin=1.0, neg_margin=0.1), 1),
]


TestMatchesPML = pml_tests(PML_CASES)


def test_pml_contrastive_squared_hinge_differs():
    """PML never squares the hinge: the paper's power=2 is not PML's default (documented)."""
    x, y = random_batch(0)
    ours = losses.build("contrastive", margin=1.0, reduction="mean_nonzero")(x, y).item()
    pml = pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=1.0)(x, y).item()
    assert abs(ours - pml) > 1e-3


def test_contrastive_similarity_weights_are_wang2019b_eq6():
    x, y = random_batch(1)
    lam = 0.1
    batch = make_batch(x, y)
    batch.S = batch.S.detach().requires_grad_(True)
    loss = losses.build("contrastive", form="similarity", lam=lam, reduction="sum")
    (gS,) = torch.autograd.grad(loss.compute(batch), batch.S)
    above = batch.neg & (batch.S.detach() > lam)
    w_expected = torch.where(batch.pos, 1.0, torch.where(above, 1.0, 0.0))
    w = torch.where(batch.pos, -gS, gS)
    torch.testing.assert_close(w, w_expected.to(w.dtype))
    assert bool(above.any()) and bool((batch.neg & ~above).any())


@pytest.mark.parametrize("reduction", ["mean", "sum", "mean_nonzero"])
def test_closed_form_weights_equal_autograd(reduction):
    x, y = random_batch(2)
    loss = losses.build("contrastive", form="similarity", lam=0.2, reduction=reduction)
    batch, _, W = autograd_weights(loss, x, y)
    assert W.abs().max() > 0
    torch.testing.assert_close(loss.closed_form_weights(batch), W, rtol=1e-12, atol=1e-15)
    for other in ({"form": "distance"}, {"form": "similarity", "pos_margin": 0.5}):
        with pytest.raises(ValueError, match="no closed form for ContrastiveLoss"):
            losses.build("contrastive", **other).closed_form_weights(batch)


CONTRASTIVE = [
    {"form": "distance"},
    {"form": "distance", "power": 1.0, "pos_margin": 0.0, "reduction": "mean_nonzero"},
    {"form": "distance", "power": 3.0, "pos_margin": 0.2, "margin": 1.2, "reduction": "sum"},
    {"form": "similarity", "lam": 0.1},
    {"form": "similarity", "pos_margin": 0.9, "lam": 0.2, "reduction": "mean_nonzero"},
]


@pytest.mark.parametrize("params", CONTRASTIVE)
def test_contrastive_fused_kernel_equals_dense_formula(params):
    loss = losses.build("contrastive", **params)
    for key, batch in label_layout_batches(2):
        if not (mask_any(batch.pos) and mask_any(batch.neg)):
            continue
        for b in (batch, through_masks(batch)):
            v_fast, g_fast = value_and_grad_S(loss.compute, b)
            v_ref, g_ref = value_and_grad_S(lambda x: ContrastiveLoss._compute_dense(loss, x), b)
            assert v_fast == pytest.approx(v_ref, abs=1e-12), key
            assert torch.allclose(g_fast, g_ref, atol=1e-12), key
