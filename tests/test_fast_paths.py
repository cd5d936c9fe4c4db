"""The CPU fast paths equal the plain formulas: compacted positive slots, masks written by
scatter, fused kernels, the one-buffer distance, the unit diagonal, the MS / contrastive /
triplet fast paths against the generic code."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dmlkit import losses
from dmlkit._checks import check_embeddings
from dmlkit.losses import triplet as triplet_module
from dmlkit.losses.base import make_batch, positive_slots
from dmlkit.losses.contrastive import ContrastiveLoss
from dmlkit.losses.multi_similarity import WeightedPairLoss
from dmlkit.similarity import distances_from_similarity, mask_any, similarity_matrix

LABELS = {
    "mixed": torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 2, 5, 0, 1]),      # 3 and 5 are singletons
    "one_class": torch.zeros(6, dtype=torch.long),
    "singletons": torch.arange(7),
    "pairs": torch.arange(10) // 2,
}


def _batches(seed=0, dtype=torch.float64):
    """In-batch and query-vs-reference batches over several label layouts."""
    g = torch.Generator().manual_seed(seed)
    for key, lab in LABELS.items():
        emb = torch.randn(len(lab), 5, generator=g, dtype=dtype)
        yield key, make_batch(emb, lab)
        ref_lab = torch.cat([lab[:4], torch.tensor([9, 0, 1])])
        ref = torch.randn(len(ref_lab), 5, generator=g, dtype=dtype)
        yield key + "-ref", make_batch(emb, lab, ref, ref_lab)


def _generic(batch):
    """The same batch seen through its masks only (the path of arbitrary pair masks)."""
    return dataclasses.replace(batch, label_masks=False)


@pytest.mark.parametrize("key,batch", list(_batches()), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_slots_masks_and_counts_from_labels_equal_the_masks(key, batch):
    index, valid = batch.pos_slots
    index_m, valid_m = positive_slots(batch.pos)
    assert torch.equal(index, index_m) and torch.equal(valid, valid_m)
    rebuilt = torch.zeros_like(batch.pos)
    rows = torch.arange(len(index))[:, None].expand_as(index)
    rebuilt[rows[valid], index[valid]] = True
    assert torch.equal(rebuilt, batch.pos)
    assert torch.equal(batch.neg_per_row, batch.neg.sum(1))
    for value in (0.0, float("inf"), float("-inf")):
        X = torch.rand(batch.S.shape, dtype=batch.S.dtype)
        expected = X.masked_fill(~batch.neg, value)
        assert torch.equal(batch.fill_non_negatives_(X.clone(), value), expected)
        assert torch.equal(_generic(batch).fill_non_negatives_(X.clone(), value), expected)


def test_positive_slots_of_an_empty_mask():
    index, valid = positive_slots(torch.zeros(3, 4, dtype=torch.bool))
    assert index.shape == valid.shape == (3, 0)


def test_mask_any():
    m = torch.zeros(4, 6, dtype=torch.bool)
    assert not mask_any(m) and not mask_any(m[:, :0])
    m[3, 5] = True
    assert mask_any(m) and mask_any(m.t()) and not mask_any(m[:3])


def _leaf(batch):
    S = batch.S.detach().clone().requires_grad_(True)
    return S, dataclasses.replace(batch, S=S)


def _value_and_grad(fn, batch):
    S, leaf = _leaf(batch)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, S, allow_unused=True)
    return float(value), torch.zeros_like(S) if grad is None else grad


@pytest.mark.parametrize("params", [{}, {"beta": 200.0, "lam": 0.0}, {"epsilon": 0.5},
                                    {"alpha": 5.0, "reduction": "sum"}])
def test_multi_similarity_fast_path_equals_generic(params):
    loss = losses.build("multi_similarity", **params)
    for key, batch in _batches(1):
        for b in (batch, _generic(batch)):
            v_fast, g_fast = _value_and_grad(loss.compute, b)
            v_gen, g_gen = _value_and_grad(lambda x: WeightedPairLoss.compute(loss, x), b)
            assert v_fast == pytest.approx(v_gen, abs=1e-12), key
            assert torch.allclose(g_fast, g_gen, atol=1e-12), key


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
    for key, batch in _batches(2):
        if not (mask_any(batch.pos) and mask_any(batch.neg)):
            continue
        for b in (batch, _generic(batch)):
            v_fast, g_fast = _value_and_grad(loss.compute, b)
            v_ref, g_ref = _value_and_grad(lambda x: ContrastiveLoss._compute_dense(loss, x), b)
            assert v_fast == pytest.approx(v_ref, abs=1e-12), key
            assert torch.allclose(g_fast, g_ref, atol=1e-12), key


@pytest.mark.parametrize("mining", ["all", "semihard", "hard"])
def test_triplet_binary_search_path_equals_comparison_loop(mining, monkeypatch):
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(40, 4, dtype=torch.float64, generator=g)
    lab = torch.arange(40) % 3                       # 13-14 positives per row
    loss = losses.build("triplet", margin=0.3, mining=mining, reduction="sum")
    loop = _value_and_grad(loss.compute, make_batch(emb, lab))
    monkeypatch.setattr(triplet_module, "_LOOP_WIDTH", 0)
    search = _value_and_grad(loss.compute, make_batch(emb, lab))
    assert loop[0] == pytest.approx(search[0], abs=1e-10) and loop[0] > 0
    assert torch.equal(loop[1], search[1])


def test_distance_from_similarity_values_and_gradient():
    S = torch.tensor([[0.3, -0.9, 0.999], [1.0, 1.0 + 1e-12, -1.0]], dtype=torch.float64,
                     requires_grad=True)
    d = distances_from_similarity(S)
    plain = (2.0 - 2.0 * S).clamp_min(0.0).add(1e-12).sqrt()
    assert torch.equal(d, plain)
    w = torch.arange(1.0, 7.0, dtype=torch.float64).view(2, 3)
    (g,) = torch.autograd.grad((d * w).sum(), S)
    (g_plain,) = torch.autograd.grad((plain * w).sum(), S)
    assert g[1, 1] == 0.0                          # s > 1: the clamp's zero gradient
    assert torch.allclose(g[0], g_plain[0], rtol=1e-12)
    inner = torch.tensor([[0.2, -0.7], [0.5, 0.95]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(distances_from_similarity, (inner,))


def test_unit_diagonal_is_exact_and_keeps_the_gradient():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, 5, dtype=torch.float64, generator=g, requires_grad=True)
    S = similarity_matrix(x)
    assert torch.equal(torch.diagonal(S), torch.ones(9, dtype=torch.float64))
    w = torch.randn(9, 9, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((S * w).sum(), x)
    q = F.normalize(x, dim=1)
    (plain,) = torch.autograd.grad((q @ q.t() * w).sum(), x)
    assert torch.allclose(grad, plain, atol=1e-12)
    assert not torch.equal(torch.diagonal(similarity_matrix(x, normalize=False)),
                           torch.ones(9, dtype=torch.float64))


def test_finite_check_survives_an_overflowing_sum():
    big = torch.full((4, 3), 3e38)                  # finite, but the float32 sum overflows
    assert check_embeddings(big) is big
    big[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        check_embeddings(big)


@pytest.mark.parametrize("params", [{}, {"normalize": True, "l2_reg": 0.0}, {"l2_reg": 0.05}])
def test_npair_in_batch_shortcut_equals_the_pair_batch_formula(params):
    """forward() computes N-pair-mc in-batch as a cross-entropy of the anchor x positive block;
    ``compute`` on the full (B, B) batch (what pair_weights differentiates) gives the same."""
    loss = losses.build("npair", **params)
    g = torch.Generator().manual_seed(8)
    for lab in (LABELS["mixed"], LABELS["pairs"], torch.tensor([2, 2, 0, 1, 0, 1, 1, 2])):
        x = torch.randn(len(lab), 5, generator=g, dtype=torch.float64, requires_grad=True)
        (g_fast,) = torch.autograd.grad(fast := loss(x, lab), x)
        batch = make_batch(x, lab, normalize=loss.normalize)
        (g_ref,) = torch.autograd.grad(ref := loss.compute(batch) + loss.regularizer(batch), x)
        assert float(fast) == pytest.approx(float(ref), abs=1e-12)
        assert torch.allclose(g_fast, g_ref, atol=1e-12)
