"""Distance-weighted sampling (dmlkit.miners.distance_weighted) with its options: a
nonzero-loss cutoff other than the default, no generator, the num_negatives check; the
rules asserted on the draws (the cases the mutation run, benchmarks/mutation.py, found
without a test)."""

import pytest
import torch
from naive import naive_dw_probabilities

from dmlkit import miners


def _rows(n=400):
    """n identical anchors, negatives at d = 0.6, 0.9, 1.2 and 1.35 (all below the default
    nonzero-loss cutoff 1.4), one positive."""
    d = torch.tensor([0.6, 0.9, 1.2, 1.35, 0.4], dtype=torch.float64)
    S = (1 - d ** 2 / 2)[None].expand(n, 5).contiguous()
    neg = torch.tensor([[True, True, True, True, False]]).expand(n, 5).contiguous()
    return S, ~neg, neg


def test_nonzero_loss_cutoff_reaches_the_sampling():
    S, pos, neg = _rows()
    prob = miners.distance_weighted_probabilities(S[:1], pos[:1], neg[:1], dim=8,
                                                  nonzero_loss_cutoff=1.0)
    ref = naive_dw_probabilities(S[:1], neg[:1], 8, 0.5, 1.0)
    torch.testing.assert_close(prob, ref, rtol=1e-9, atol=1e-12)
    assert prob[0, 2] == 0 and prob[0, 3] == 0             # d >= 1.0: no loss, never drawn
    for k in (2, 3):
        kept = miners.distance_weighted(S, pos, neg, dim=8, nonzero_loss_cutoff=1.0,
                                        num_negatives=k,
                                        generator=torch.Generator().manual_seed(1))[1]
        # only the two negatives below the cutoff, each anchor both of them (k = 3 asks for
        # more than there are: a draw of probability 0 is not kept)
        assert kept[:, :2].all() and not kept[:, 2:].any()
    # the default cutoff (1.4) draws the far ones too
    kept = miners.distance_weighted(S, pos, neg, dim=8, num_negatives=2,
                                    generator=torch.Generator().manual_seed(1))[1]
    assert kept[:, 2:4].any()


def test_without_a_generator():
    S, pos, neg = _rows(50)
    pk, nk = miners.distance_weighted(S, pos, neg, dim=8, num_negatives=3)
    assert torch.equal(pk, pos)
    assert nk.sum(1).tolist() == [3] * 50 and not (nk & ~neg).any()


def test_num_negatives_below_one_is_refused():
    S, pos, neg = _rows(2)
    with pytest.raises(ValueError, match="num_negatives must be >= 1, got 0"):
        miners.distance_weighted(S, pos, neg, dim=8, num_negatives=0)


def test_probabilities_per_row_fallback_empty_rows_exact_cutoff_and_dim_two():
    # row 0: every negative beyond the cutoff (uniform fallback over them); row 1: one
    # negative exactly at d = nonzero_loss_cutoff = 1 (s = 0.5, exact: not eligible) and one
    # below; row 2: no negative at all (all zero)
    S = torch.tensor([[0.9, -0.9, -0.95, 0.0],
                      [0.9, 0.5, 0.8, 0.0],
                      [0.9, 0.1, 0.2, 0.3]], dtype=torch.float64)
    pos = torch.tensor([[True, False, False, False],
                        [True, False, False, False],
                        [True, True, True, True]])
    neg = ~pos
    neg[1, 3] = False
    for dim in (2, 3, 16):
        prob = miners.distance_weighted_probabilities(S, pos, neg, dim=dim,
                                                      nonzero_loss_cutoff=1.0)
        ref = naive_dw_probabilities(S, neg, dim, 0.5, 1.0)
        torch.testing.assert_close(prob, ref, rtol=1e-9, atol=1e-12)
        assert prob[0].tolist() == [0.0, 1 / 3, 1 / 3, 1 / 3]
        assert prob[1, 1] == 0.0 and prob[1, 2] == 1.0
        assert prob[2].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match=r"dim .* must be >= 2, got 1"):
        miners.distance_weighted_probabilities(S, pos, neg, dim=1)
