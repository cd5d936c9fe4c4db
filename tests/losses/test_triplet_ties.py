"""The tie rule of the triplet counts (dmlkit.losses.triplet.triplet_counts) and of the
triplet loss on exact ties, two ways: a naive per-triplet loop, and properties that hold only
under the strict rule ``lo_p < b_n < hi_p``.

Scores lie on the dyadic grid h = 1/8 (exact, so every tie is a real tie) with margins that
are multiples of h: ``all`` keeps ``b_n > a_p - m`` (the counts at m and m - h/2 are equal),
``hard`` keeps ``b_n > a_p`` (lowering the negatives by h/2 changes nothing), ``semihard``
keeps ``a_p - m < b_n < a_p`` (raising the negatives by h/2 and lowering m by h/2 changes
nothing). A non-strict comparison would count the tied triplets on one side only.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_triplet

from dmlkit import losses
from dmlkit.losses import triplet as triplet_module
from dmlkit.losses.triplet import triplet_counts
from dmlkit.similarity import pair_masks

H = 1 / 8
MININGS = ["all", "hard", "semihard"]


def naive_counts(T, pos, neg, margin, mining):
    """Per triplet (i, p, n): kept or not, by the definition; the per-pair counts."""
    c_pos, c_neg = torch.zeros_like(T), torch.zeros_like(T)
    for i in range(T.shape[0]):
        for p in range(T.shape[1]):
            for n in range(T.shape[1]):
                if not (pos[i, p] and neg[i, n]):
                    continue
                a, b = float(T[i, p]), float(T[i, n])
                lo = a if mining == "hard" else a - margin
                hi = a if mining == "semihard" else float("inf")
                if lo < b < hi:
                    c_pos[i, p] += 1
                    c_neg[i, n] += 1
    return c_pos, c_neg


def _grid(seed, B=8, M=10, levels=4):
    g = torch.Generator().manual_seed(seed)
    T = torch.randint(-levels, levels + 1, (B, M), generator=g).double() * H
    pos, neg = pair_masks(torch.randint(0, 3, (B,), generator=g),
                          torch.randint(0, 3, (M,), generator=g))
    return T, pos, neg


@pytest.mark.parametrize("path", ["comparisons", "binary_search"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mining", MININGS)
def test_triplet_counts_with_exact_ties_equal_the_naive_loop(seed, mining, path, monkeypatch):
    if path == "binary_search":       # the wide-row path, for rows of any width
        monkeypatch.setattr(triplet_module, "_LOOP_WIDTH", 0)
    T, pos, neg = _grid(seed)
    for k in (1, 2, 3):
        c_pos, c_neg, n_kept, n_total = triplet_counts(T, pos, neg, k * H, mining)
        e_pos, e_neg = naive_counts(T, pos, neg, k * H, mining)
        assert torch.equal(c_pos.double(), e_pos) and torch.equal(c_neg.double(), e_neg)
        assert float(n_kept) == float(e_pos.sum())
        assert float(n_total) == float((pos.sum(1) * neg.sum(1)).sum())


@pytest.mark.parametrize("mining", ["all", "semihard", "hard", "batch_hard"])
def test_triplet_loss_on_one_hot_ties_equals_the_naive_loop(mining):
    # one-hot embeddings: every cosine is 0 or 1, squared distances 0 or 2; the similarity
    # margin 1 and the squared-distance margin 2 put triplets exactly on the boundaries
    g = torch.Generator().manual_seed(4)
    x = torch.eye(4, dtype=torch.float64)[torch.randint(0, 4, (14,), generator=g)]
    y = torch.randint(0, 3, (14,), generator=g)
    for form, margin in (("similarity", 1.0), ("squared_distance", 2.0), ("distance", 0.5)):
        for reduction in ("mean", "mean_nonzero", "sum"):
            loss = losses.build("triplet", margin=margin, form=form, mining=mining,
                                reduction=reduction)
            # (the distance form adds 1e-12 under the square root: 1e-6 at distance 0)
            assert float(loss(x, y)) == pytest.approx(
                naive_triplet(x, y, margin, form, mining, reduction),
                rel=1e-6 if form == "distance" else 1e-12, abs=1e-12)


@st.composite
def grid_scores(draw):
    B, M = draw(st.integers(1, 5)), draw(st.integers(2, 7))
    T = torch.tensor(draw(st.lists(st.lists(st.integers(-4, 4), min_size=M, max_size=M),
                                   min_size=B, max_size=B)), dtype=torch.float64) * H
    y = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=B, max_size=B)))
    ry = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=M, max_size=M)))
    return (T, *pair_masks(y, ry))


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@settings(max_examples=60, deadline=None)
@given(batch=grid_scores(), k=st.integers(1, 4))
def test_triplet_counts_exclude_the_tied_triplets(batch, k):
    for width in (32, 0):             # the comparison loop and the binary search
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(triplet_module, "_LOOP_WIDTH", width)
            _check_strict(*batch, k * H)


def _check_strict(T, pos, neg, m):
    assert _same(triplet_counts(T, pos, neg, m, "all"),
                 triplet_counts(T, pos, neg, m - H / 2, "all"))
    lowered, raised = torch.where(neg, T - H / 2, T), torch.where(neg, T + H / 2, T)
    assert _same(triplet_counts(T, pos, neg, m, "hard"),
                 triplet_counts(lowered, pos, neg, m, "hard"))
    assert _same(triplet_counts(T, pos, neg, m, "semihard"),
                 triplet_counts(raised, pos, neg, m - H / 2, "semihard"))
