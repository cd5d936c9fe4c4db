"""dmlkit.adversarial.objectives: J_gen / J+_gen against per-triple loops in float64, and
the loss on synthetic negatives against naive loops and against the in-batch loss.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from feature_blobs import one_thread, pk_labels  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv
from dmlkit import losses


@pytest.mark.parametrize("alpha_sign", [-1, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_generator_objective_matches_per_triple_loop(alpha_sign, reduction):
    g = torch.Generator().manual_seed(1)
    T, D, E = 7, 5, 3
    a, p, n, s = (torch.randn(T, D, generator=g, dtype=torch.float64) for _ in range(4))
    W = torch.randn(D, E, generator=g, dtype=torch.float64)

    def embed(z):
        return F.normalize(z @ W, dim=1)

    lambda1, lambda2, alpha = 0.7, 50.0, 0.3
    out = adv.generator_objective(a, p, n, s, embed, lambda1=lambda1, lambda2=lambda2,
                                  alpha=alpha, alpha_sign=alpha_sign, reduction=reduction)
    hard = reg = advv = 0.0
    for i in range(T):
        hard += sum((s[i, k] - a[i, k]).item() ** 2 for k in range(D))
        reg += sum((s[i, k] - n[i, k]).item() ** 2 for k in range(D))
        ea, ep, es = (embed(v[i:i + 1])[0] for v in (a, p, s))
        d_syn = sum((es[k] - ea[k]).item() ** 2 for k in range(E))
        d_pos = sum((ep[k] - ea[k]).item() ** 2 for k in range(E))
        advv += max(0.0, d_syn - d_pos + alpha_sign * alpha)
    div = T if reduction == "mean" else 1
    assert out["hard"].item() == pytest.approx(hard / div, rel=1e-12)
    assert out["reg"].item() == pytest.approx(reg / div, rel=1e-12)
    assert out["adv"].item() == pytest.approx(advv / div, rel=1e-12, abs=1e-14)
    assert out["total"].item() == pytest.approx((hard + lambda1 * reg + lambda2 * advv) / div,
                                                rel=1e-12)


def test_hinge_sign_changes_which_triples_are_active():
    # anchor at 0, positive at distance^2 1, synthetic at distance^2 1.5; alpha = 1
    a = torch.zeros(1, 2, dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    s = torch.tensor([[0.0, math.sqrt(1.5)]], dtype=torch.float64)
    minus = adv.generator_objective(a, p, s, s, alpha=1.0, alpha_sign=-1)["adv"]
    plus = adv.generator_objective(a, p, s, s, alpha=1.0, alpha_sign=1)["adv"]
    assert minus.item() == 0.0            # Duan et al. 2018: 1.5 - 1 - 1 < 0, already hard enough
    assert plus.item() == pytest.approx(1.5)   # Zou et al. n.d.: 1.5 - 1 + 1
    with pytest.raises(ValueError, match="alpha_sign"):
        adv.generator_objective(a, p, s, s, alpha_sign=0)
    with pytest.raises(ValueError, match="shape mismatch"):
        adv.generator_objective(a, p, s, torch.zeros(2, 2, dtype=torch.float64))


def test_synthetic_positive_objective_matches_formula_and_minimiser():
    g = torch.Generator().manual_seed(2)
    a, p, gp = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    out = adv.synthetic_positive_objective(a, p, gp, lambda1=2.0, reduction="sum")
    expected = sum(((gp[i] - a[i]) ** 2).sum().item() + 2.0 * ((gp[i] - p[i]) ** 2).sum().item()
                   for i in range(6))
    assert out["total"].item() == pytest.approx(expected, rel=1e-12)
    best = (a + 2.0 * p) / 3.0
    v_best = adv.synthetic_positive_objective(a, p, best, lambda1=2.0)["total"]
    for _ in range(5):
        other = best + 0.1 * torch.randn(6, 4, generator=g, dtype=torch.float64)
        assert v_best < adv.synthetic_positive_objective(a, p, other, lambda1=2.0)["total"]


class _NaivePairLoss(losses.PairLoss):
    """sum over positive entries of (1 - s) + sum over negative entries of [s - 0.1]_+."""

    def compute(self, batch):
        return ((1 - batch.S) * batch.pos).sum() + (F.relu(batch.S - 0.1) * batch.neg).sum()


def _synthetic_setup(seed=3, E=4):
    g = torch.Generator().manual_seed(seed)
    y = pk_labels(3, 3)
    emb = torch.randn(len(y), E, generator=g, dtype=torch.float64)
    a, p, n = adv.sample_triplets(y, 2, g)
    syn = torch.randn(len(a), E, generator=g, dtype=torch.float64)
    return emb, y, syn, y[n], a


@pytest.mark.parametrize("keep_real", [False, True])
def test_masked_loss_on_synthetic_negatives_matches_loop(keep_real):
    emb, y, syn, syn_y, owner = _synthetic_setup()
    value = adv.metric_loss_with_synthetic(_NaivePairLoss(), emb, y, syn, syn_y, owner,
                                           keep_real_negatives=keep_real)
    e, s = F.normalize(emb, dim=1), F.normalize(syn, dim=1)
    expected = 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            if j != i and y[j] == y[i]:
                expected += 1 - float(e[i] @ e[j])
            if keep_real and y[j] != y[i]:
                expected += max(0.0, float(e[i] @ e[j]) - 0.1)
        for t in range(len(syn)):
            if owner[t] == i:
                expected += max(0.0, float(e[i] @ s[t]) - 0.1)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_triplet_on_synthetic_negatives_matches_loop():
    emb, y, syn, syn_y, owner = _synthetic_setup(seed=4)
    loss = losses.build("triplet", margin=0.3, form="similarity", reduction="sum")
    value = adv.metric_loss_with_synthetic(loss, emb, y, syn, syn_y, owner)
    e, s = F.normalize(emb, dim=1), F.normalize(syn, dim=1)
    expected = 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            if j == i or y[j] != y[i]:
                continue
            for t in range(len(syn)):
                if owner[t] == i:
                    expected += max(0.0, float(e[i] @ s[t]) - float(e[i] @ e[j]) + 0.3)
    assert value.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("name", ["triplet", "contrastive", "generalized_lifted_structure",
                                  "multi_similarity", "binomial_deviance"])
def test_copies_of_the_real_negatives_give_the_in_batch_loss(name):
    """Replacing each anchor's negatives by exact copies of them must not change the loss."""
    g = torch.Generator().manual_seed(5)
    y = pk_labels(4, 3)
    emb = torch.randn(len(y), 6, generator=g, dtype=torch.float64)
    a, _, n = adv.sample_triplets(y, None, g)
    loss = losses.build(name)
    value = adv.metric_loss_with_synthetic(loss, emb, y, emb[n], y[n], a)
    assert value.item() == pytest.approx(loss(emb, y).item(), rel=1e-9, abs=1e-12)


def test_npair_per_anchor_matches_formula():
    """DAML + N-pair: anchor i's logits are f_i.f_i^+ and f_i.G(x_i, x_i^+, x_j^+), j != i."""
    g = torch.Generator().manual_seed(6)
    y = pk_labels(4, 2)
    emb = torch.randn(len(y), 5, generator=g, dtype=torch.float64)
    a, p, n = adv.sample_triplets(y, scheme="npair")
    syn = torch.randn(len(a), 5, generator=g, dtype=torch.float64)
    loss = losses.build("npair", l2_reg=0.0)
    value = adv.metric_loss_with_synthetic(loss, emb, y, syn, y[n], a)
    per_anchor = []
    for i in a.unique().tolist():
        pi = p[a == i][0]
        s_pos = float(emb[i] @ emb[pi])
        terms = [math.exp(float(emb[i] @ syn[t]) - s_pos) for t in range(len(a)) if a[t] == i]
        per_anchor.append(math.log1p(sum(terms)))
    assert value.item() == pytest.approx(sum(per_anchor) / len(per_anchor), rel=1e-10)


def test_metric_loss_with_synthetic_rejects_bad_input():
    emb, y, syn, syn_y, owner = _synthetic_setup()
    loss = losses.build("triplet")
    with pytest.raises(ValueError, match="dimension"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn[:, :3], syn_y, owner)
    with pytest.raises(ValueError, match="label of its own anchor"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn, y[owner], owner)
    with pytest.raises(ValueError, match="owner"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn, syn_y, owner + 100)
    with pytest.raises(ValueError, match="pair-based"):
        adv.metric_loss_with_synthetic(torch.nn.MSELoss(), emb, y, syn, syn_y, owner)
    with pytest.raises(ValueError, match="mode"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn, syn_y, owner, mode="dense")


@pytest.mark.parametrize("K", [2, 3])
def test_npair_keep_real_negatives_counts_the_real_negatives(K):
    """The bug: per anchor the real negatives came after the synthetic ones with the same
    labels and N-pair's pairing (first reference of each class) dropped them. Now anchor i's
    logits are its synthetic negatives and the first real sample of every other class."""
    g = torch.Generator().manual_seed(7)
    y = pk_labels(4, K)
    emb = torch.randn(len(y), 5, generator=g, dtype=torch.float64)
    a, p, n = adv.sample_triplets(y, scheme="npair")
    syn = torch.randn(len(a), 5, generator=g, dtype=torch.float64)
    loss = losses.build("npair", l2_reg=0.0)
    without = adv.metric_loss_with_synthetic(loss, emb, y, syn, y[n], a)
    value = adv.metric_loss_with_synthetic(loss, emb, y, syn, y[n], a, keep_real_negatives=True)
    per_anchor = []
    for i in a.unique().tolist():
        first_positive = next(j for j in range(len(y)) if y[j] == y[i] and j != i)
        s_pos = float(emb[i] @ emb[first_positive])
        logits = [float(emb[i] @ syn[t]) for t in range(len(a)) if a[t] == i]
        firsts = {}
        for j in range(len(y)):
            if y[j] != y[i]:
                firsts.setdefault(int(y[j]), j)
        logits += [float(emb[i] @ emb[j]) for j in firsts.values()]
        per_anchor.append(math.log1p(sum(math.exp(s - s_pos) for s in logits)))
    assert value.item() == pytest.approx(sum(per_anchor) / len(per_anchor), rel=1e-10)
    assert value.item() > without.item()


def test_sampled_positives_restrict_the_loss_to_the_triples():
    """positive=...: triplet on exactly the (anchor, positive, negative) triples given."""
    g = torch.Generator().manual_seed(8)
    y = pk_labels(4, 3)
    emb = torch.randn(len(y), 5, generator=g, dtype=torch.float64)
    a, p, n = adv.sample_triplets(y, 1, torch.Generator().manual_seed(0))
    loss = losses.build("triplet", margin=0.5, form="squared_distance", reduction="mean",
                        normalize=False)
    value = adv.metric_loss_with_synthetic(loss, emb, y, emb[n], y[n], a, positive=p)
    ref = [max(0.0, float((emb[i] - emb[j]).pow(2).sum() - (emb[i] - emb[k]).pow(2).sum()) + 0.5)
           for i, j, k in zip(a.tolist(), p.tolist(), n.tolist())]
    assert value.item() == pytest.approx(sum(ref) / len(ref), rel=1e-10)
    with pytest.raises(ValueError, match="positive"):
        adv.metric_loss_with_synthetic(loss, emb, y, emb[n], y[n], a, positive=n)
