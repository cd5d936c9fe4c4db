"""pair_weights against the closed forms of Wang et al. 2019b
(docs/formulas.md#the-weight-view), the closed forms the losses state (closed_form_weights)
and the Theorem 3.1 table."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmlkit import losses, miners, weights


def batch(seed, n=14, d=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, dtype=torch.float64, generator=g)
    lab = torch.randint(0, classes, (n,), generator=g)
    return emb, lab


def assert_proportional(W, expected, what):
    """W = c * expected for one positive constant c (the loss's normalisation)."""
    assert expected.abs().sum() > 0, f"{what}: the closed form is all zero, pick another batch"
    c = (W * expected).sum() / (expected * expected).sum()
    assert c > 0, f"{what}: normalisation constant {float(c)} is not positive"
    assert torch.allclose(W, c * expected, atol=1e-10, rtol=1e-8), f"{what}: not proportional"
    return float(c)


def masks(lab):
    same = lab[:, None] == lab[None, :]
    eye = torch.eye(len(lab), dtype=torch.bool)
    return same & ~eye, ~same


def test_contrastive_similarity_form_eq5():
    emb, lab = batch(0)
    lam = 0.3
    loss = losses.build("contrastive", form="similarity", lam=lam)
    S, W = weights.pair_weights(loss, emb, lab)
    pos, neg = masks(lab)
    expected = pos.double() + (neg & (lam < S)).double()
    assert_proportional(W, expected, "contrastive eq. 5")


def test_generalized_lifted_eq10_11():
    emb, lab = batch(1)
    lam = 1.0
    loss = losses.build("generalized_lifted_structure", lam=lam)
    S, W = weights.pair_weights(loss, emb, lab)
    pos, neg = masks(lab)
    expected = torch.zeros_like(S)
    for i in range(len(lab)):
        P, N = pos[i].nonzero().flatten(), neg[i].nonzero().flatten()
        if len(P) == 0 or len(N) == 0:
            continue
        hinge = math.log(sum(math.exp(-S[i, k]) for k in P)) + \
            math.log(sum(math.exp(S[i, k]) for k in N)) + lam
        if hinge <= 0:
            continue
        zp = sum(math.exp(-S[i, k]) for k in P)
        zn = sum(math.exp(S[i, k]) for k in N)
        for j in P:
            expected[i, j] = math.exp(-S[i, j]) / zp           # eq. 10
        for j in N:
            expected[i, j] = math.exp(S[i, j]) / zn            # eq. 11
    c = assert_proportional(W, expected, "generalised lifted eq. 10-11")
    assert c == pytest.approx(1 / len(lab))                    # the 1/m of eq. 9


@pytest.mark.parametrize("alpha,beta,lam", [(2.0, 50.0, 0.5), (1.0, 10.0, 0.2)])
def test_binomial_eq13_14(alpha, beta, lam):
    emb, lab = batch(2)
    loss = losses.build("binomial_deviance", alpha=alpha, beta=beta, lam=lam)
    S, W = weights.pair_weights(loss, emb, lab)
    pos, neg = masks(lab)
    expected = torch.zeros_like(S)
    for i in range(len(lab)):
        np_, nn_ = int(pos[i].sum()), int(neg[i].sum())
        for j in range(len(lab)):
            if pos[i, j]:
                e = math.exp(alpha * (lam - S[i, j]))
                expected[i, j] = alpha * e / (1 + e) / np_                # eq. 13
            elif neg[i, j]:
                e = math.exp(beta * (S[i, j] - lam))
                expected[i, j] = beta * e / (1 + e) / nn_                 # eq. 14
    assert_proportional(W, expected, "binomial eq. 13-14")


@pytest.mark.parametrize("alpha,beta,lam,epsilon", [(2.0, 50.0, 0.5, 0.1), (2.0, 40.0, 0.3, 0.2)])
def test_raw_on_vthm_pairs_eq15_16(alpha, beta, lam, epsilon):
    emb, lab = batch(3, n=16)
    loss = losses.build("multi_similarity", alpha=alpha, beta=beta, lam=lam, epsilon=epsilon)
    S, W = weights.pair_weights(loss, emb, lab)
    pos, neg = masks(lab)
    keep_pos, keep_neg = miners.vthm(S, pos, neg, epsilon=epsilon)
    # VTHM by its definition (Wang et al. 2019b, Sec. 5.1), independently of the miner
    for i in range(len(lab)):
        P, N = pos[i].nonzero().flatten(), neg[i].nonzero().flatten()
        for j in range(len(lab)):
            want_n = bool(neg[i, j]) and len(P) > 0 and S[i, j] > S[i, P].min() - epsilon
            want_p = bool(pos[i, j]) and len(N) > 0 and S[i, j] < S[i, N].max() + epsilon
            assert bool(keep_neg[i, j]) == want_n and bool(keep_pos[i, j]) == want_p
    expected = torch.zeros_like(S)
    for i in range(len(lab)):
        Pk, Nk = keep_pos[i].nonzero().flatten(), keep_neg[i].nonzero().flatten()
        for j in Pk:
            expected[i, j] = 1 / (sum(math.exp(alpha * (S[i, j] - S[i, k])) for k in Pk)
                                  + math.exp(alpha * (S[i, j] - lam)))          # eq. 15
        for j in Nk:
            expected[i, j] = 1 / (sum(math.exp(-beta * (S[i, j] - S[i, k])) for k in Nk)
                                  + math.exp(-beta * (S[i, j] - lam)))          # eq. 16
    c = assert_proportional(W, expected, "RAW on VTHM pairs eq. 15-16")
    assert c == pytest.approx(1 / len(lab))                                      # eq. 17's 1/m


def test_weight_curve_binomial_negative_is_eq14():
    beta, lam = 50.0, 0.5
    loss = losses.build("binomial_deviance", alpha=2.0, beta=beta, lam=lam, reduction="sum")
    grid = np.linspace(-0.5, 1.0, 31)
    curve = weights.weight_curve(loss, "negative", grid=grid, context_neg=(0.1, 0.2, 0.3))
    n_neg = 4  # three context negatives and the swept one
    closed = beta * np.exp(beta * (grid - lam)) / (1 + np.exp(beta * (grid - lam))) / n_neg
    # rtol 1e-8: torch.softplus is linear above 20 (relative error e^-20 ~ 2e-9)
    np.testing.assert_allclose(curve.weight, closed, rtol=1e-8, atol=1e-12)


def test_weight_curve_contrastive_is_a_step_at_lambda():
    loss = losses.build("contrastive", form="similarity", lam=0.4)
    curve = weights.weight_curve(loss, "negative", grid=np.array([0.1, 0.3, 0.5, 0.9]))
    assert (curve.weight[:2] == 0).all() and (curve.weight[2:] > 0).all()
    assert curve.weight[2] == pytest.approx(curve.weight[3])


def test_pair_weights_query_vs_reference_are_the_ms_closed_forms():
    # MS (Wang et al. 2019b, eq. 15-16 on the VTHM pairs, / B for the mean), one pair at a
    # time: the query's kept positives and negatives are columns of the references
    emb, lab = batch(5)
    ref, rl = batch(6, n=9)
    alpha, beta, lam, eps = 2.0, 50.0, 0.5, 0.1
    S, W = weights.pair_weights(losses.build("multi_similarity"), emb, lab, ref, rl)
    assert S.shape == W.shape == (14, 9)
    s = (F.normalize(emb, dim=1) @ F.normalize(ref, dim=1).T).tolist()
    expected = torch.zeros(14, 9, dtype=torch.float64)
    for i in range(14):
        P = [j for j in range(9) if rl[j] == lab[i]]
        N = [j for j in range(9) if rl[j] != lab[i]]
        if not P or not N:
            continue
        Pk = [j for j in P if s[i][j] - eps < max(s[i][k] for k in N)]
        Nk = [j for j in N if s[i][j] + eps > min(s[i][k] for k in P)]
        if not Pk or not Nk:
            continue
        for j in Pk:
            expected[i, j] = 1 / (math.exp(alpha * (s[i][j] - lam))
                                  + sum(math.exp(alpha * (s[i][j] - s[i][k])) for k in Pk))
        for j in Nk:
            expected[i, j] = 1 / (math.exp(beta * (lam - s[i][j]))
                                  + sum(math.exp(beta * (s[i][k] - s[i][j])) for k in Nk))
    expected /= 14
    assert (expected > 0).sum() > 20
    torch.testing.assert_close(W, expected, rtol=1e-9, atol=1e-14)


def test_pair_weights_rejects_non_pair_loss():
    with pytest.raises(ValueError, match="PairLoss"):
        weights.pair_weights(torch.nn.MSELoss(), torch.randn(4, 3), torch.arange(4))


# --------------------------------------------------------------------------- closed forms
def _batch(n=18, d=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % classes


CLOSED = {
    "contrastive-sim-mean": ("contrastive", {"form": "similarity", "lam": 0.1}),
    "contrastive-sim-sum": ("contrastive", {"form": "similarity", "reduction": "sum"}),
    "contrastive-sim-nonzero": ("contrastive", {"form": "similarity",
                                                "reduction": "mean_nonzero", "lam": 0.0}),
    "triplet-sim": ("triplet", {"form": "similarity", "margin": 0.3}),
    "triplet-sim-mean": ("triplet", {"form": "similarity", "reduction": "mean"}),
    "gen-lifted": ("generalized_lifted_structure", {"lam": 0.5}),
    "binomial": ("binomial", {}),
    "binomial-sum": ("binomial", {"reduction": "sum", "alpha": 3.0, "beta": 20.0}),
    "ms": ("multi_similarity", {}),
    "raw": ("raw", {"beta": 10.0}),
    "vthm": ("vthm", {}),
    "binomial+vthm": ("binomial+vthm", {}),
    "raw+semihard": ("raw+semihard", {"margin": 0.3}),
}


@pytest.mark.parametrize("key", list(CLOSED))
def test_closed_form_weights_equal_autograd(key):
    name, params = CLOSED[key]
    emb, lab = _batch()
    loss = losses.build(name, **params)
    S, W = weights.pair_weights(loss, emb, lab)
    S2, Wc = weights.closed_form_weights(loss, emb, lab)
    assert torch.allclose(S, S2)
    assert float(W.abs().max()) > 0
    assert torch.allclose(W, Wc, atol=1e-12, rtol=1e-9), float((W - Wc).abs().max())


def test_closed_form_triplet_counts_by_loop():
    emb, lab = _batch(n=10, classes=3)
    loss = losses.build("triplet", form="similarity", margin=0.2, reduction="sum")
    S, W = weights.closed_form_weights(loss, emb, lab)
    expected = np.zeros((10, 10))
    for a, p, n in itertools.product(range(10), repeat=3):
        if a != p and lab[a] == lab[p] and lab[n] != lab[a] and S[a, n] - S[a, p] + 0.2 > 0:
            expected[a, p] += 1
            expected[a, n] += 1
    np.testing.assert_allclose(W.numpy(), expected)


def test_closed_form_unsupported_raises():
    emb, lab = _batch()
    with pytest.raises(ValueError, match="no closed form"):
        weights.closed_form_weights(losses.build("ddml"), emb, lab)


def test_theorem_table_values():
    emb, lab = _batch()
    table = weights.theorem_table(["binomial", "multi_similarity", "ddml", "npair"], emb, lab)
    assert list(table["loss"]) == ["binomial", "multi_similarity", "ddml", "npair"]
    assert (table["max_grad_diff"] < 1e-10).all()
    assert (table["max_grad"] > 1e-4).all()
    assert (table["min_weight"] >= 0).all()
    assert table["closed_form_err"].iloc[:2].max() < 1e-12
    assert table["closed_form_err"].iloc[2:].isna().all()
    # binomial weights every pair; npair only anchor-vs-positive columns
    assert table["active_pairs"].iloc[0] == 1.0
    assert table["active_pairs"].iloc[3] < 0.5
