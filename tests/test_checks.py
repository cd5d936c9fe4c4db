"""Input validation (dmlkit._checks): bad embeddings and labels fail with a ValueError that
names the problem."""

import pytest
import torch

from dmlkit._checks import check_embeddings, check_embeddings_labels, check_labels


def test_finite_check_survives_an_overflowing_sum():
    big = torch.full((4, 3), 3e38)                  # finite, but the float32 sum overflows
    assert check_embeddings(big) is big
    big[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        check_embeddings(big)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="single vector"):
        check_embeddings(torch.zeros(3))
    with pytest.raises(ValueError, match="floating point"):
        check_embeddings(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        check_embeddings(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="ref_labels has length 2 but the batch has 3"):
        check_labels(torch.tensor([0, 1]), 3, "ref_labels")
    emb, lab = check_embeddings_labels([[1.0, 0.0], [0.0, 1.0]], [1, 0])
    assert emb.dtype == torch.float32 and lab.dtype == torch.int64
