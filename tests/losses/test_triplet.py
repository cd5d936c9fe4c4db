"""Triplet loss (dmlkit.losses.triplet): the sorted-count implementation against a naive
per-triplet loop and PML, its counts, its pair weights and its binary-search path."""

import itertools

import pytest
import torch
from naive import naive_triplet
from naive.loss_testing import value_and_grad_S

from dmlkit import losses, weights
from dmlkit.losses import triplet as triplet_module
from dmlkit.losses.base import make_batch
from dmlkit.losses.triplet import triplet_counts


FORMS = ["distance", "squared_distance", "similarity"]
MININGS = ["all", "semihard", "hard", "batch_hard"]
REDUCTIONS = ["mean_nonzero", "mean", "sum"]


COMBOS = list(itertools.product(FORMS, MININGS, REDUCTIONS))


@pytest.mark.parametrize("form,mining,reduction", COMBOS)
def test_triplet_matches_naive_loop(form, mining, reduction):
    g = torch.Generator().manual_seed(hash((form, mining, reduction)) % 2**31)
    for _ in range(2):
        emb = torch.randn(13, 5, dtype=torch.float64, generator=g)
        lab = torch.randint(0, 4, (13,), generator=g)
        loss = losses.build("triplet", margin=0.3, form=form, mining=mining, reduction=reduction)
        expected = naive_triplet(emb, lab, 0.3, form, mining, reduction)
        assert float(loss(emb, lab)) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("mining", MININGS)
def test_triplet_query_vs_reference_matches_naive(mining):
    g = torch.Generator().manual_seed(3)
    q, r = torch.randn(7, 4, dtype=torch.float64, generator=g), torch.randn(11, 4,
                                                                           dtype=torch.float64,
                                                                           generator=g)
    ql, rl = torch.randint(0, 3, (7,), generator=g), torch.randint(0, 3, (11,), generator=g)
    loss = losses.build("triplet", margin=0.4, mining=mining, reduction="sum")
    expected = naive_triplet(q, ql, 0.4, "distance", mining, "sum", ref=r, ref_lab=rl)
    assert float(loss(q, ql, r, rl)) == pytest.approx(expected, abs=1e-10)


def test_triplet_counts_with_ties_agree():
    # many exactly equal similarities: both counts come from the same comparisons
    T = torch.tensor([[0.0, 0.5, 0.5, 0.25, 0.5, 0.375, 0.25]])  # dyadic: exact ties
    lab = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    pos = (lab[None, :] == 0) & (torch.arange(7) != 0)[None, :]
    neg = lab[None, :] != 0
    c_pos, c_neg, n_kept, _ = triplet_counts(T, pos, neg, margin=0.25)
    assert float(c_pos.sum()) == float(c_neg.sum()) == float(n_kept)
    # a_p = 0.5 (two positives), lo = 0.25; negatives 0.25 (not > 0.25), 0.5, 0.375, 0.25
    assert c_pos[0].tolist() == [0, 2, 2, 0, 0, 0, 0]
    assert c_neg[0].tolist() == [0, 0, 0, 0, 2, 2, 0]


@pytest.mark.parametrize("mining", ["all", "semihard", "batch_hard"])
def test_triplet_gradcheck(mining):
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(10, 4, dtype=torch.float64, generator=g, requires_grad=True)
    lab = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    loss = losses.build("triplet", margin=0.5, mining=mining)
    assert torch.autograd.gradcheck(lambda e: loss(e, lab), (emb,), eps=1e-7, atol=1e-6)


def test_triplet_weights_are_violation_counts():
    """Wang et al. 2019b, Sec. 4: w = 1 per violating triplet a pair is in (eq. 8)."""
    g = torch.Generator().manual_seed(11)
    emb = torch.randn(12, 6, dtype=torch.float64, generator=g)
    lab = torch.randint(0, 3, (12,), generator=g)
    lam = 0.2
    loss = losses.build("triplet", margin=lam, form="similarity", reduction="sum")
    S, W = weights.pair_weights(loss, emb, lab)
    expected = torch.zeros_like(S)
    for i in range(12):
        for p in range(12):
            if p == i or lab[p] != lab[i]:
                continue
            for n in range(12):
                if lab[n] != lab[i] and S[i, n] - S[i, p] + lam > 0:
                    expected[i, p] += 1
                    expected[i, n] += 1
    assert torch.equal(W, expected)


@pytest.mark.parametrize("margin", [0.05, 0.2])
def test_triplet_equals_pml_all_triplets(margin):
    pytest.importorskip("pytorch_metric_learning")  # a PML comparison skips on its own
    from pytorch_metric_learning.losses import TripletMarginLoss

    g = torch.Generator().manual_seed(7)
    emb = torch.randn(32, 8, generator=g)
    lab = torch.randint(0, 5, (32,), generator=g)
    ours_e = emb.clone().requires_grad_(True)
    pml_e = emb.clone().requires_grad_(True)
    ours = losses.build("triplet", margin=margin)(ours_e, lab)
    ref = TripletMarginLoss(margin=margin)(pml_e, lab)
    ours.backward()
    ref.backward()
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)
    assert torch.allclose(ours_e.grad, pml_e.grad, atol=1e-6)


def test_triplet_similarity_form_equals_pml_cosine():
    pytest.importorskip("pytorch_metric_learning")  # a PML comparison skips on its own
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.losses import TripletMarginLoss

    g = torch.Generator().manual_seed(8)
    emb = torch.randn(24, 8, generator=g)
    lab = torch.randint(0, 4, (24,), generator=g)
    ours = losses.build("triplet", margin=0.1, form="similarity")(emb, lab)
    ref = TripletMarginLoss(margin=0.1, distance=CosineSimilarity())(emb, lab)
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)


def test_triplet_semihard_equals_pml_miner():
    pytest.importorskip("pytorch_metric_learning")  # a PML comparison skips on its own
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import TripletMarginMiner

    g = torch.Generator().manual_seed(9)
    emb = torch.randn(40, 8, generator=g)
    lab = torch.randint(0, 5, (40,), generator=g)
    ours = losses.build("triplet", margin=0.2, mining="semihard")(emb, lab)
    miner = TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    ref = TripletMarginLoss(margin=0.2)(emb, lab, miner(emb, lab))
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)


def test_triplet_bad_options():
    with pytest.raises(ValueError, match="mining"):
        losses.build("triplet", mining="hardest")
    with pytest.raises(ValueError, match="form"):
        losses.build("triplet", form="cosine")
    with pytest.raises(ValueError, match="margin"):
        losses.build("triplet", margin=-1)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triplet_closed_form_weights_equal_autograd(reduction):
    g = torch.Generator().manual_seed(12)
    emb = torch.randn(12, 6, dtype=torch.float64, generator=g)
    lab = torch.randint(0, 3, (12,), generator=g)
    loss = losses.build("triplet", margin=0.2, form="similarity", reduction=reduction)
    S, W = weights.pair_weights(loss, emb, lab)
    batch = make_batch(emb, lab)
    assert W.abs().max() > 0
    torch.testing.assert_close(loss.closed_form_weights(batch), W, rtol=1e-12, atol=1e-15)
    for other in ({"form": "distance"}, {"form": "similarity", "mining": "semihard"}):
        with pytest.raises(ValueError, match="no closed form for TripletLoss"):
            losses.build("triplet", **other).closed_form_weights(batch)


@pytest.mark.parametrize("mining", ["all", "semihard", "hard"])
def test_triplet_binary_search_path_equals_comparison_loop(mining, monkeypatch):
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(40, 4, dtype=torch.float64, generator=g)
    lab = torch.arange(40) % 3                       # 13-14 positives per row
    loss = losses.build("triplet", margin=0.3, mining=mining, reduction="sum")
    loop = value_and_grad_S(loss.compute, make_batch(emb, lab))
    monkeypatch.setattr(triplet_module, "_LOOP_WIDTH", 0)
    search = value_and_grad_S(loss.compute, make_batch(emb, lab))
    assert loop[0] == pytest.approx(search[0], abs=1e-10) and loop[0] > 0
    assert torch.equal(loop[1], search[1])
