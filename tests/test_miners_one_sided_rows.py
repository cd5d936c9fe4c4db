"""Miners (dmlkit.miners) on query-vs-reference similarities (B != M) whose masks give some
anchors positives only, negatives only or neither, against the naive per-pair loops (the
cases the mutation run, benchmarks/mutation.py, found without a test)."""

import math

import pytest
import torch
from naive import naive_hard, naive_semihard, naive_vthm

from dmlkit import miners


def _rectangular(seed, B=7, M=11):
    """S in [-1, 1] (B, M) and hand-made masks: row 0 positives only, row 1 negatives only,
    row 2 neither, the other rows both."""
    g = torch.Generator().manual_seed(seed)
    S = torch.rand(B, M, generator=g, dtype=torch.float64) * 2 - 1
    pos = torch.rand(B, M, generator=g) < 0.3
    pos[3:, 0] = True                                  # every other row has a positive
    neg = ~pos
    neg[0] = False
    pos[1] = False
    neg[1] = True
    pos[2] = neg[2] = False
    return S, pos, neg


@pytest.mark.parametrize("seed", range(3))
def test_hard_on_one_sided_rows(seed):
    S, pos, neg = _rectangular(seed)
    pk, nk = miners.hard(S, pos, neg)
    npk, nnk = naive_hard(S, pos, neg)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    assert not pk[:3].any() and not nk[:3].any()        # no valid triplet: nothing kept
    assert pk[3:].sum(1).tolist() == [1] * 4 == nk[3:].sum(1).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_semihard_and_vthm_on_one_sided_rows(seed):
    S, pos, neg = _rectangular(seed)
    for margin in (0.1, 0.6):
        pk, nk = miners.semihard(S, pos, neg, margin=margin)
        npk, nnk = naive_semihard(S, pos, neg, margin)
        assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    pk, nk = miners.vthm(S, pos, neg, epsilon=0.2)
    npk, nnk = naive_vthm(S, pos, neg, 0.2)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    assert not pk[:3].any() and not nk[:3].any()


def test_hard_with_more_queries_than_references():
    S, pos, neg = _rectangular(0, B=12, M=5)
    pk, nk = miners.hard(S, pos, neg)
    npk, nnk = naive_hard(S, pos, neg)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)


def test_semihard_default_margin_is_a_tenth():
    S, pos, neg = _rectangular(4)
    pk, nk = miners.semihard(S, pos, neg)
    npk, nnk = naive_semihard(S, pos, neg, 0.1)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    assert not torch.equal(nk, naive_semihard(S, pos, neg, 1.1)[1])


def test_semihard_rows_all_positive_or_with_one_negative_above_every_positive():
    # row 0: every reference a positive (nothing to keep); row 1: one negative, more similar
    # than every positive (no positive above it: not semi-hard); row 2: the same negative just
    # below the best positive (semi-hard with it)
    S = torch.tensor([[0.1, 0.5, 0.3, 0.2],
                      [0.1, 0.5, 0.3, 0.6],
                      [0.1, 0.5, 0.3, 0.45]], dtype=torch.float64)
    pos = torch.tensor([[True, True, True, True],
                        [True, True, True, False],
                        [True, True, True, False]])
    neg = ~pos
    for margin in (0.1, 0.3):
        pk, nk = miners.semihard(S, pos, neg, margin=margin)
        npk, nnk = naive_semihard(S, pos, neg, margin)
        assert torch.equal(pk, npk) and torch.equal(nk, nnk)
        assert nk[:, 3].tolist() == [False, False, True]


def test_semihard_an_exact_tie_is_not_semihard_for_the_positive():
    # s_in == s_ip: the triplet is not semi-hard (strict), so the positive at 0.5 is kept only
    # through a negative strictly inside (0.5 - margin, 0.5)
    S = torch.tensor([[0.5, 0.5, 0.1, 0.9]], dtype=torch.float64)
    pos = torch.tensor([[True, False, False, True]])
    neg = ~pos
    pk, nk = miners.semihard(S, pos, neg, margin=0.2)
    npk, nnk = naive_semihard(S, pos, neg, 0.2)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    assert pk.tolist() == [[False, False, False, False]]


def test_semihard_positive_with_one_non_negative_and_at_the_margin():
    # row 0: the positive is the row's only non-negative and every negative lies above it:
    # nothing in (s_ip - margin, s_ip), so it is not kept; row 1: the only negative below the
    # positive sits exactly at s_ip - margin (0.5 - 0.25, exact in binary): not semi-hard
    S = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.25, 0.9]], dtype=torch.float64)
    pos = torch.tensor([[True, False, False], [True, False, False]])
    neg = ~pos
    pk, nk = miners.semihard(S, pos, neg, margin=0.25)
    npk, nnk = naive_semihard(S, pos, neg, 0.25)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    assert not pk.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ordered_keys_are_monotone_and_their_own_inverse(dtype):
    base = torch.tensor([-3.0, -1.0, -0.5, -1e-30, 0.0, 1e-30, 0.5, 2.0], dtype=dtype)
    up = torch.nextafter(base, torch.full_like(base, float("inf")))
    x = torch.cat([base, up]).unique()                   # sorted, adjacent floats included
    keys = miners._ordered_keys(x)
    assert bool((keys[1:] > keys[:-1]).all())
    back = miners._from_keys(keys, dtype)
    assert torch.equal(back.view(keys.dtype), x.view(keys.dtype))


@pytest.mark.parametrize("epsilon", [0.1, 2.5])
def test_vthm_negative_threshold_by_its_definition_for_a_large_epsilon(epsilon):
    # t is the largest float with t + epsilon <= p (as rounded): the next float up fails
    p = torch.tensor([0.0, 0.3, -0.7, 1.0, -1.0], dtype=torch.float64)
    t = miners.vthm_negative_threshold(p, epsilon)
    assert bool(((t + epsilon) <= p).all())
    above = torch.nextafter(t, torch.full_like(t, math.inf))
    assert bool(((above + epsilon) > p).all())


def test_vthm_strict_at_exact_ties_and_its_default_epsilon():
    # positives {0.5, 0.75}, negatives {0.25, 0.5}, epsilon 0.25 (all exact in binary):
    # negative 0.25 + 0.25 == 0.5 (the hardest positive) is not kept, positive 0.75 - 0.25 ==
    # 0.5 (the hardest negative) is not kept
    S = torch.tensor([[0.5, 0.75, 0.25, 0.5]], dtype=torch.float64)
    pos = torch.tensor([[True, True, False, False]])
    neg = ~pos
    pk, nk = miners.vthm(S, pos, neg, epsilon=0.25)
    npk, nnk = naive_vthm(S, pos, neg, 0.25)
    assert torch.equal(pk, npk) and torch.equal(nk, nnk)
    assert pk.tolist() == [[True, False, False, False]]
    assert nk.tolist() == [[False, False, False, True]]
    S, pos, neg = _rectangular(5)
    pk, nk = miners.vthm(S, pos, neg)
    assert torch.equal(torch.stack([pk, nk]), torch.stack(naive_vthm(S, pos, neg, 0.1)))
    assert not torch.equal(torch.stack([pk, nk]), torch.stack(naive_vthm(S, pos, neg, 1.1)))
