"""The PairLoss contract, for every registered loss (dmlkit.losses.base): input validation,
degenerate batches, half precision, Theorem 3.1, non-negative weights, bad options; and the
PairBatch's compacted positive slots and scatter-written masks against the plain masks."""

import pytest
import torch
from conftest import build_loss
from naive.loss_testing import label_layout_batches, through_masks

from dmlkit import losses, miners, weights
from dmlkit.losses.base import make_batch, positive_slots
from dmlkit.losses.multi_similarity import WEIGHTINGS

ALL = losses.available()
#: losses whose mining samples at random: compare them with a fixed seed
STOCHASTIC = {"raw+distance_weighted"}


@pytest.mark.parametrize("name", ALL)
class TestEveryLoss:
    def batch(self, n=16, d=6, classes=4, seed=0, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        emb = torch.randn(n, d, generator=g).to(dtype)
        lab = torch.arange(n) % classes
        return emb, lab

    def test_nan_inf_rejected(self, name):
        loss = build_loss(name)
        emb, lab = self.batch()
        for bad in (float("nan"), float("inf")):
            e = emb.clone()
            e[3, 1] = bad
            with pytest.raises(ValueError, match="NaN or inf"):
                loss(e, lab)

    def test_label_problems_rejected(self, name):
        loss = build_loss(name)
        emb, lab = self.batch()
        with pytest.raises(ValueError, match="length"):
            loss(emb, lab[:-1])
        with pytest.raises(ValueError, match="integer"):
            loss(emb, lab.float())
        with pytest.raises(ValueError, match="2-D"):
            loss(emb[0], lab[:1])

    def test_degenerate_batches_give_finite_zero(self, name):
        loss = build_loss(name)
        for lab in (torch.zeros(8, dtype=torch.long), torch.arange(8)):  # one class; singletons
            emb = torch.randn(8, 6, requires_grad=True)
            value = loss(emb, lab)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(emb.grad).all()
            if name not in ("osm_caa", "npair", "npair_ovo", "tuplet", "proxy_anchor",
                            "proxy_nca"):
                # (N-pair's norm penalty and OSM's classifier term are not pair terms; a
                # proxy loss pairs every sample with every proxy, so no batch is degenerate)
                got = float(value.detach())
                assert got == 0.0, f"{name} on a degenerate batch gave {got}"

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision_stays_finite(self, name, dtype):
        kwargs = {"beta": 50} if "beta" in _params(name) else {}
        loss = build_loss(name, **kwargs)
        emb, lab = self.batch(dtype=dtype)
        emb = (emb * 3).requires_grad_(True)
        value = loss(emb, lab)
        value.backward()
        assert torch.isfinite(value), f"{name} in {dtype}: {value}"
        assert torch.isfinite(emb.grad.float()).all()

    def test_theorem_3_1_surrogate_has_the_same_gradient(self, name):
        # a loss that samples its negatives: two losses seeded alike draw the same negatives,
        # one for the loss's gradient, one for the surrogate's weights
        emb, lab = self.batch(dtype=torch.float64, seed=3)
        g_loss, g_sur = theorem_3_1_gradients(lambda: _seeded(name), emb, lab)
        assert g_loss.abs().max() > 0, "no gradient at all: pick a batch with active pairs"
        assert float((g_loss - g_sur).abs().max()) < 1e-10
        # theorem_3_1_check replays a sampling loss's draws (its own or torch's generator)
        assert weights.theorem_3_1_check(_seeded(name), emb, lab)[2] < 1e-10
        if name in STOCHASTIC:
            assert weights.theorem_3_1_check(build_loss(name), emb, lab)[2] < 1e-10
            table = weights.theorem_table([name], emb, lab)
            assert float(table.max_grad_diff.iloc[0]) < 1e-10

    def test_weights_are_non_negative_and_zero_off_pairs(self, name):
        loss = _seeded(name)
        emb, lab = self.batch(dtype=torch.float64, seed=4)
        S, W = weights.pair_weights(loss, emb, lab)
        owns_references = hasattr(loss, "references")   # proxy losses: S is samples x proxies
        assert W.shape == S.shape == (16, loss.num_classes if owns_references else 16)
        assert (W >= -1e-12).all(), f"{name} has negative pair weights: {W.min()}"
        assert owns_references or (W.diagonal() == 0).all()


def _seeded(name):
    torch.manual_seed(0)      # a proxy loss draws its proxies
    return build_loss(name, seed=0) if name in STOCHASTIC else build_loss(name)


def theorem_3_1_gradients(make_loss, emb, lab, ref=None, ref_lab=None):
    """Gradients of the loss and of its Theorem 3.1 surrogate (Wang et al. 2019b), each from a
    fresh ``make_loss()``: a seeded sampling miner draws the same pairs for both."""
    x1 = emb.clone().requires_grad_(True)
    (g_loss,) = torch.autograd.grad(make_loss()(x1, lab, ref, ref_lab), x1)
    x2 = emb.clone().requires_grad_(True)
    (g_sur,) = torch.autograd.grad(weights.surrogate(make_loss(), x2, lab, ref, ref_lab), x2)
    return g_loss, g_sur


@pytest.mark.parametrize("mining", miners.available())
@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
def test_theorem_3_1_for_every_weighting_and_mining(weighting, mining):
    # Theorem 3.1 (Wang et al. 2019b) for every weighting x mining of weighted_pair, in the
    # in-batch and the query-vs-reference form; distance-weighted sampling with two negatives
    # per anchor, drawn alike for the loss and the surrogate by two equally seeded generators
    extra = ({"num_negatives": 2} if mining == "distance_weighted" else {})

    def make():
        if mining == "distance_weighted":
            extra["generator"] = torch.Generator().manual_seed(1)
        return losses.build("weighted_pair", weighting=weighting, mining=mining, **extra)

    g = torch.Generator().manual_seed(5)
    emb = torch.randn(14, 5, generator=g, dtype=torch.float64)
    lab = torch.arange(14) % 4
    ref = torch.randn(9, 5, generator=g, dtype=torch.float64)
    for args in ((), (ref, torch.arange(9) % 3)):
        g_loss, g_sur = theorem_3_1_gradients(make, emb, lab, *args)
        assert g_loss.abs().max() > 1e-3
        torch.testing.assert_close(g_sur, g_loss, rtol=0, atol=1e-12)


def _params(name):
    import inspect

    return inspect.signature(losses.get(name)).parameters


# --------------------------------------------------------------------------- degenerate batches
DEFAULT_NAMES = ["contrastive", "lifted_structure", "generalized_lifted_structure", "npair",
                 "npair_ovo", "tuplet", "angular", "ddml"]
DEGENERATE = {
    "one_class": torch.zeros(6, dtype=torch.long),
    "singletons": torch.arange(6),
}


@pytest.mark.parametrize("name", DEFAULT_NAMES)
@pytest.mark.parametrize("kind", list(DEGENERATE))
def test_degenerate_batches_give_finite_zero(name, kind):
    y = DEGENERATE[kind]
    x = torch.randn(6, 4, requires_grad=True)
    loss = losses.build(name)
    value = loss(x, y)
    value.backward()
    assert torch.isfinite(x.grad).all()
    assert value.item() == 0.0
    assert torch.all(x.grad == 0)


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_no_shared_labels_with_references_is_zero(name):
    q = torch.randn(4, 3, requires_grad=True)
    r = torch.randn(5, 3, requires_grad=True)
    ql, rl = torch.zeros(4, dtype=torch.long), torch.ones(5, dtype=torch.long)
    value = losses.build(name)(q, ql, r, rl)
    value.backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(r.grad).all()
    assert value.item() == 0.0


def test_bad_options_raise():
    for name, kw in [("contrastive", {"form": "cosine"}), ("contrastive", {"reduction": "avg"}),
                     ("generalized_lifted_structure", {"form": "x"}), ("tuplet", {"form": "y"}),
                     ("angular", {"alpha": 95}), ("ddml", {"beta": 0}),
                     ("npair", {"l2_reg": -1})]:
        with pytest.raises(ValueError):
            losses.build(name, **kw)

def test_a_loss_without_a_closed_form_says_so():
    batch = make_batch(torch.randn(6, 3, dtype=torch.float64), torch.arange(6) % 2)
    for name in ("ddml", "npair", "angular", "osm_caa"):
        with pytest.raises(ValueError, match=r"no closed form for .*autograd only"):
            build_loss(name).closed_form_weights(batch)


@pytest.mark.parametrize("key,batch", list(label_layout_batches()),
                         ids=lambda v: v if isinstance(v, str) else "")
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
        assert torch.equal(through_masks(batch).fill_non_negatives_(X.clone(), value), expected)


def test_positive_slots_of_an_empty_mask():
    index, valid = positive_slots(torch.zeros(3, 4, dtype=torch.bool))
    assert index.shape == valid.shape == (3, 0)
