"""scikit-learn's digits: class-disjoint splits, sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmlkit import data


def test_digits_class_disjoint_split_matches_sklearn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = data.load_dataset("digits", "train"), data.load_dataset("digits", "test")
    full = data.load_dataset("digits", "all")
    assert len(train) == int((bunch.target <= 4).sum())
    assert len(test) == int((bunch.target >= 5).sum())
    assert len(full) == len(bunch.target) == len(train) + len(test)
    assert list(train.class_ids) == [0, 1, 2, 3, 4]
    assert list(test.class_ids) == [5, 6, 7, 8, 9]
    assert train.num_classes == test.num_classes == 5
    np.testing.assert_array_equal(test.original_labels, bunch.target[bunch.target >= 5])
    np.testing.assert_array_equal(test.labels, bunch.target[bunch.target >= 5] - 5)
    image, label = test[3]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    expected = bunch.images[bunch.target >= 5][3] / 16.0
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
    assert label == bunch.target[bunch.target >= 5][3] - 5
    big = data.load_dataset("digits", "train", size=16)
    assert big[0][0].shape == (1, 16, 16)
    assert float(big.images.min()) >= 0.0 and float(big.images.max()) <= 1.0
    with pytest.raises(ValueError, match="train, test, all"):
        data.Digits("query")
