"""The tie rules of the miners (dmlkit.miners) on similarities with exact ties, two ways: the
naive per-pair loops, and properties that hold only under the documented rule.

Similarities lie on the dyadic grid h = 1/8 (exact in float64, so every tie is a real tie),
with epsilon / margin multiples of h:

* VTHM (Wang et al. 2019b) keeps a negative iff ``s_in + eps > min_P s_ip`` and a positive iff
  ``s_ip - eps < max_N s_in``, both strict: on the grid the masks at ``eps`` and ``eps - h/2``
  are equal (a non-strict test would keep the tied pairs at ``eps`` only).
* Semi-hard (Schroff et al. 2015): ``s_ip - m < s_in < s_ip``, both strict: raising every
  negative by h/2 and lowering the margin by h/2 gives the same masks.
* Batch-hard (Hermans et al. 2017): ties go to the lowest column, i.e. to the strict argmax /
  argmin after subtracting / adding a tiny multiple of the column index.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_hard, naive_semihard, naive_vthm

from dmlkit import miners
from dmlkit.similarity import pair_masks

H = 1 / 8


def _grid_batch(seed, B=9, M=None, levels=5):
    """Similarities on a coarse grid (a few levels: many exact ties) and the pair masks."""
    g = torch.Generator().manual_seed(seed)
    M = M or B
    S = torch.randint(-levels, levels + 1, (B, M), generator=g).double() * H
    y = torch.randint(0, 3, (B,), generator=g)
    if M == B:
        pos, neg = pair_masks(y)
        S.fill_diagonal_(1.0)
    else:
        pos, neg = pair_masks(y, torch.randint(0, 3, (M,), generator=g))
    return S, pos, neg


def _ties(S, pos, neg):
    """Number of (positive, negative) similarity pairs of a row that are exactly equal."""
    return int(((S[:, :, None] == S[:, None, :]) & pos[:, :, None] & neg[:, None, :]).sum())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("M", [None, 11])
def test_miners_with_exact_ties_equal_the_naive_loops(seed, M):
    S, pos, neg = _grid_batch(seed, M=M)
    assert _ties(S, pos, neg) >= 5
    for k in (0, 1, 2):
        eps = k * H
        assert all(torch.equal(a, b) for a, b in zip(miners.vthm(S, pos, neg, eps),
                                                     naive_vthm(S, pos, neg, eps)))
        assert all(torch.equal(a, b) for a, b in zip(miners.semihard(S, pos, neg, eps),
                                                     naive_semihard(S, pos, neg, eps)))
    assert all(torch.equal(a, b) for a, b in zip(miners.hard(S, pos, neg),
                                                 naive_hard(S, pos, neg)))


@st.composite
def grid_batches(draw):
    B = draw(st.integers(2, 6))
    M = draw(st.integers(2, 7))
    S = torch.tensor(draw(st.lists(st.lists(st.integers(-4, 4), min_size=M, max_size=M),
                                   min_size=B, max_size=B)), dtype=torch.float64) * H
    y = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=B, max_size=B)))
    ry = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=M, max_size=M)))
    pos, neg = pair_masks(y, ry)
    return S, pos, neg


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@settings(max_examples=60, deadline=None)
@given(batch=grid_batches(), k=st.integers(1, 4))
def test_vthm_and_semihard_inequalities_are_strict(batch, k):
    S, pos, neg = batch
    eps = k * H
    assert _equal(miners.vthm(S, pos, neg, eps), miners.vthm(S, pos, neg, eps - H / 2))
    raised = torch.where(neg, S + H / 2, S)
    assert _equal(miners.semihard(S, pos, neg, eps),
                  miners.semihard(raised, pos, neg, eps - H / 2))


@settings(max_examples=60, deadline=None)
@given(batch=grid_batches())
def test_batch_hard_ties_go_to_the_lowest_column(batch):
    S, pos, neg = batch
    step = H / 64 * torch.arange(S.shape[1], dtype=S.dtype)     # < H / 8 over the row
    pk, nk = miners.hard(S, pos, neg)
    assert torch.equal(pk, miners.hard(S + step, pos, neg)[0])   # least similar positive
    assert torch.equal(nk, miners.hard(S - step, pos, neg)[1])   # most similar negative
