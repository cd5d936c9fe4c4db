"""Miners (dmlkit.miners) against naive per-pair loops, PML's MultiSimilarityMiner and the
closed form of the distance-weighted sampling density; the miner registry."""

import itertools

import pytest
import torch
from naive import naive_dw_probabilities, naive_hard, naive_semihard, naive_vthm
from optional_pml import pml_miners

from dmlkit import miners
from dmlkit.similarity import pair_masks, similarity_matrix


def _batch(seed, B=14, D=6, C=4, M=None, singleton=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=g)
    if singleton:
        y[-1] = C + 3          # a class with a single sample: an anchor without positives
    if M is None:
        S = similarity_matrix(x)
        pos, neg = pair_masks(y)
        return x, y, S, pos, neg
    r = torch.randn(M, D, generator=g, dtype=torch.float64)
    ry = torch.randint(0, C, (M,), generator=g)
    S = similarity_matrix(x, r)
    pos, neg = pair_masks(y, ry)
    return (x, y, r, ry), None, S, pos, neg


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_vthm_matches_naive_loop(seed, eps):
    _, _, S, pos, neg = _batch(seed)
    pk, nk = miners.vthm(S, pos, neg, epsilon=eps)
    npk, nnk = naive_vthm(S, pos, neg, eps)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    assert pk.any() and nk.any() and (nk.sum() < neg.sum())
    # the singleton anchor (no positives) keeps nothing; kept sets are both empty or not
    assert not pk[-1].any() and not nk[-1].any()
    assert torch.equal(pk.any(1), nk.any(1))


def _pml_pairs_to_masks(out, shape):
    a1, p, a2, n = out
    pk = torch.zeros(shape, dtype=torch.bool)
    nk = torch.zeros(shape, dtype=torch.bool)
    pk[a1, p] = True
    nk[a2, n] = True
    return pk, nk, len(a1), len(a2)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.25])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vthm_equals_pml_multisimilarity_miner(seed, eps, dtype):
    x, y, S, pos, neg = _batch(seed)
    x = x.to(dtype)
    S = similarity_matrix(x)
    out = pml_miners.MultiSimilarityMiner(epsilon=eps)(x, y)
    ppk, pnk, n_pos, n_neg = _pml_pairs_to_masks(out, S.shape)
    pk, nk = miners.vthm(S, pos, neg, epsilon=eps)
    assert torch.equal(pk, ppk) and torch.equal(nk, pnk)
    assert int(pk.sum()) == n_pos and int(nk.sum()) == n_neg   # no duplicates in PML either


@pytest.mark.parametrize("seed", range(3))
def test_vthm_equals_pml_query_vs_reference(seed):
    (x, y, r, ry), _, S, pos, neg = _batch(seed, B=10, M=13)
    out = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y, r, ry)
    ppk, pnk, _, _ = _pml_pairs_to_masks(out, S.shape)
    pk, nk = miners.vthm(S, pos, neg, epsilon=0.1)
    assert torch.equal(pk, ppk) and torch.equal(nk, pnk)
    npk, nnk = naive_vthm(S, pos, neg, 0.1)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
def test_semihard_matches_naive_loop(seed, margin):
    _, _, S, pos, neg = _batch(seed, B=16)
    pk, nk = miners.semihard(S, pos, neg, margin=margin)
    npk, nnk = naive_semihard(S, pos, neg, margin)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    if margin >= 0.2:
        assert pk.any() and nk.any()


def test_semihard_ties_and_query_reference():
    # exact ties: s_in == s_ip is not semi-hard (strict), nor s_in == s_ip - margin
    S = torch.tensor([[0.5, 0.5, 0.25, 0.3, 0.9]], dtype=torch.float64)
    pos = torch.tensor([[True, False, False, False, False]])
    neg = ~pos
    pk, nk = miners.semihard(S, pos, neg, margin=0.25)
    assert nk.tolist() == [[False, False, False, True, False]] and pk.tolist()[0][0]
    (_, _, _, _), _, S, pos, neg = _batch(7, B=9, M=15)
    pk, nk = miners.semihard(S, pos, neg, margin=0.3)
    npk, nnk = naive_semihard(S, pos, neg, 0.3)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)


@pytest.mark.parametrize("seed", range(4))
def test_hard_matches_naive_loop(seed):
    _, _, S, pos, neg = _batch(seed)
    pk, nk = miners.hard(S, pos, neg)
    npk, nnk = naive_hard(S, pos, neg)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    n_valid = int((pos.any(1) & neg.any(1)).sum())
    assert int(pk.sum()) == n_valid == int(nk.sum())


@pytest.mark.parametrize("dim", [3, 8, 32])
def test_distance_weighted_probabilities_closed_form(dim):
    _, _, S, pos, neg = _batch(1, B=16, D=dim)
    prob = miners.distance_weighted_probabilities(S, pos, neg, dim=dim)
    ref = naive_dw_probabilities(S, neg, dim, 0.5, 1.4)
    torch.testing.assert_close(prob, ref, rtol=1e-9, atol=1e-12)
    assert not (prob * pos).any()
    # a row whose negatives are all beyond the nonzero-loss cutoff falls back to uniform
    S2 = torch.tensor([[1.0, -0.9, -0.95, 0.95]], dtype=torch.float64)
    pos2 = torch.tensor([[False, False, False, True]])
    neg2 = torch.tensor([[False, True, True, False]])
    p2 = miners.distance_weighted_probabilities(S2, pos2, neg2, dim=dim)
    assert p2.tolist() == [[0.0, 0.5, 0.5, 0.0]]


def test_distance_weighted_ordering_in_high_dim():
    # in high dim q(d) peaks near sqrt(2): 1/q favours negatives far from sqrt(2), i.e. close
    # ones (d >= cutoff); a negative at d < cutoff has the same weight as one at the cutoff.
    d = torch.tensor([0.3, 0.5, 0.8, 1.1, 1.3, 1.5], dtype=torch.float64)
    S = (1 - d ** 2 / 2)[None]
    neg = torch.ones_like(S, dtype=torch.bool)
    p = miners.distance_weighted_probabilities(S, torch.zeros_like(neg), neg, dim=64)[0]
    assert p[5] == 0                                        # beyond nonzero_loss_cutoff
    assert torch.isclose(p[0], p[1])                        # clipped at cutoff
    assert p[1] > p[2] > p[3] > p[4] > 0


def test_distance_weighted_sampling_reproducible_and_only_negatives():
    _, _, S, pos, neg = _batch(2, B=16, D=16)
    out1 = miners.distance_weighted(S, pos, neg, dim=16, generator=torch.Generator().manual_seed(5))
    out2 = miners.distance_weighted(S, pos, neg, dim=16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out1[0], out2[0]) and torch.equal(out1[1], out2[1])
    assert torch.equal(out1[0], pos)                               # every positive kept
    prob = miners.distance_weighted_probabilities(S, pos, neg, dim=16)
    assert not (out1[1] & (prob == 0)).any() and not (out1[1] & ~neg).any()
    assert torch.equal(out1[1].sum(1), (prob > 0).sum(1).clamp_max(1))
    many = [miners.distance_weighted(S, pos, neg, dim=16, num_negatives=3,
                                     generator=torch.Generator().manual_seed(s))[1]
            for s in range(6)]
    assert torch.equal(many[0].sum(1), (prob > 0).sum(1).clamp_max(3))
    assert any(not torch.equal(many[0], m) for m in many[1:])


def _inclusion_probabilities(prob, k):
    """P(j among k draws without replacement, each ∝ prob among the rest): a naive
    enumeration of the ordered draws (Plackett-Luce)."""
    out = torch.zeros_like(prob)
    for seq in itertools.permutations(range(len(prob)), k):
        p, rest = 1.0, 1.0
        for j in seq:
            p, rest = p * prob[j] / rest, rest - prob[j]
        out[list(seq)] += p
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_distance_weighted_sampling_frequencies(k):
    d = torch.tensor([0.6, 0.9, 1.2, 1.35], dtype=torch.float64)
    S = (1 - d ** 2 / 2)[None]
    neg = torch.ones_like(S, dtype=torch.bool)
    pos = torch.zeros_like(neg)
    prob = miners.distance_weighted_probabilities(S, pos, neg, dim=4)[0]
    n = 16000    # n independent anchors with the same row: k draws each
    rows = S.expand(n, 4)
    gen = torch.Generator().manual_seed(0)
    kept = miners.distance_weighted(rows, pos.expand(n, 4), neg.expand(n, 4), dim=4,
                                    num_negatives=k, generator=gen)[1]
    assert (kept.sum(1) == k).all()                        # k distinct negatives per anchor
    expected = _inclusion_probabilities(prob, k)
    freq = kept.double().mean(0)
    sd = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() <= 4 * sd).all(), (freq, expected)
    # power: sampling ∝ prob ** 1.1 (a 10 % error in the log-probabilities) or uniformly
    # moves some frequency by > 6 standard errors
    for wrong in (prob ** 1.1 / (prob ** 1.1).sum(), torch.full_like(prob, 0.25)):
        assert ((_inclusion_probabilities(wrong, k) - expected).abs() / sd).max() > 6


def test_registry_and_errors():
    assert miners.available() == ["distance_weighted", "hard", "none", "semihard", "vthm"]
    assert miners.get("Distance-Weighted") is miners.distance_weighted
    with pytest.raises(ValueError, match="Known miners: distance_weighted, hard, none"):
        miners.get("semi_hard_x")
    with pytest.raises(ValueError, match="no parameter"):
        miners.build("vthm", margin=0.1)
    _, _, S, pos, neg = _batch(0)
    mine = miners.build("vthm", epsilon=0.2)
    assert torch.equal(mine(S, pos, neg)[1], miners.vthm(S, pos, neg, 0.2)[1])
    pk, nk = miners.build("none")(S, pos, neg)
    assert torch.equal(pk, pos) and torch.equal(nk, neg)
    with pytest.raises(ValueError, match="2-D"):
        miners.vthm(S[0], pos[0], neg[0])
    with pytest.raises(ValueError, match="bool tensor"):
        miners.hard(S, pos.float(), neg)
    with pytest.raises(ValueError, match="dim"):
        miners.distance_weighted(S, pos, neg, dim=1)


def test_registry_spellings_and_parameters():
    assert miners.MINERS.kind == "miner"
    assert miners.get("semi-hard") is miners.semihard is miners.get("SemiHard")
    assert miners.parameters("distance_weighted") == ["dim", "cutoff", "nonzero_loss_cutoff",
                                                      "num_negatives", "generator"]
    assert miners.parameters("hard") == []
    with pytest.raises(ValueError, match="Did you mean 'vthm'"):
        miners.build("vthn")
    with pytest.raises(ValueError, match=r"its parameters are \['margin'\]"):
        miners.build("semihard", epsilon=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3, 1e-9])
def test_vthm_negative_threshold_is_the_vthm_test_bit_for_bit(dtype, epsilon):
    """x > vthm_negative_threshold(p, eps) iff x + eps > p (as rounded), at the threshold's float
    neighbours and on random values around p - eps; p = +inf keeps nothing."""
    g = torch.Generator().manual_seed(16)
    p = torch.cat([torch.rand(400, generator=g, dtype=torch.float64) * 2 - 1,
                   torch.tensor([0.0, 1.0, -1.0, 1e-30, float("inf")], dtype=torch.float64)])
    p = p.to(dtype)
    t = miners.vthm_negative_threshold(p, epsilon)
    inf = torch.full_like(t, float("inf"))
    below, above = torch.nextafter(t, -inf), torch.nextafter(t, inf)
    noise = (torch.rand(p.shape[0], 50, generator=g, dtype=torch.float64) - 0.5) * 1e-6
    near = (p.to(torch.float64)[:, None] - epsilon + noise).to(dtype)
    x = torch.cat([below[:, None], t[:, None], above[:, None], near,
                   torch.full_like(t, float("-inf"))[:, None]], dim=1)
    assert torch.equal(x > t[:, None], (x + epsilon) > p[:, None])
    finite = torch.isfinite(p)
    assert ((t[finite] + epsilon) <= p[finite]).all()
    assert ((above[finite] + epsilon) > p[finite]).all()       # t is the largest such value
    assert t[~finite].eq(float("inf")).all()
