"""Labelled datasets and the class-disjoint train / validation split."""

from __future__ import annotations

import dataset_fixtures as fx
import numpy as np
import pytest
import torch

from dmlkit import data


def test_train_val_split_is_class_disjoint():
    ds = fx.fresh_glyphs(split="train", num_classes=10, images_per_class=3, size=16)
    fit, val = data.train_val_split(ds, val_fraction=0.3, seed=5)
    assert val.num_classes == 3 and fit.num_classes == 7
    assert not set(fit.class_ids) & set(val.class_ids)
    assert sorted(set(fit.class_ids) | set(val.class_ids)) == list(range(10))
    assert len(fit) + len(val) == len(ds)
    np.testing.assert_array_equal(np.unique(val.labels), np.arange(3))
    for i in range(len(val)):  # items come from the parent with relabelled targets
        image, label = val[i]
        parent = int(val.indices[i])
        assert torch.equal(image, ds[parent][0])
        assert val.class_ids[label] == ds.class_ids[ds.labels[parent]]
    again = data.train_val_split(ds, val_fraction=0.3, seed=5)[1]
    np.testing.assert_array_equal(again.indices, val.indices)
    via_loader = data.load_dataset("glyphs", "val", num_classes=10, images_per_class=3,
                                   size=16, val_fraction=0.3, val_seed=5)
    np.testing.assert_array_equal(via_loader.class_ids, val.class_ids)
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(ds, val_fraction=1.0)
