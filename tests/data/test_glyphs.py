"""Procedural glyphs: deterministic, class-disjoint, cached on disk, fast."""

from __future__ import annotations

import dataset_fixtures as fx
import numpy as np
import pytest
import torch

from dmlkit import data
from dmlkit.data import glyphs as glyphs_module


def test_glyphs_deterministic_and_seed_dependent():
    kw = dict(split="train", num_classes=6, images_per_class=5, size=24)
    a = fx.fresh_glyphs(seed=3, **kw)
    b = fx.fresh_glyphs(seed=3, **kw)
    c = fx.fresh_glyphs(seed=4, **kw)
    assert a.images.shape == (30, 1, 24, 24) and a.images.dtype == torch.float32
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert float(a.images.std()) > 0.05  # not blank
    np.testing.assert_array_equal(a.labels, np.repeat(np.arange(6), 5))


def test_glyphs_class_disjoint_and_stable_per_class():
    kw = dict(num_classes=4, num_test_classes=3, images_per_class=4, size=16, seed=1)
    train = fx.fresh_glyphs(split="train", **kw)
    test = fx.fresh_glyphs(split="test", **kw)
    both = fx.fresh_glyphs(split="all", **kw)
    assert list(train.class_ids) == [0, 1, 2, 3]
    assert list(test.class_ids) == [4, 5, 6]
    assert not set(train.class_ids) & set(test.class_ids)
    assert len(both) == len(train) + len(test)
    # a class's images do not depend on which split (or how many classes) were asked for
    assert torch.equal(both.images[len(train):], test.images)
    more = fx.fresh_glyphs(split="train", num_classes=6, images_per_class=4, size=16, seed=1)
    assert torch.equal(more.images[:16], train.images)
    # different classes look different: mean image distance between classes > within class
    x = both.images.reshape(28, -1)
    y = torch.arange(7).repeat_interleave(4)
    d, same = torch.cdist(x, x), y[:, None] == y[None, :]
    assert d[same & ~torch.eye(28, dtype=torch.bool)].mean() < d[~same].mean()


def test_glyphs_colour_clutter_and_disk_cache(tmp_path):
    kw = dict(split="test", num_classes=2, images_per_class=3, size=16, color=True, clutter=2,
              difficulty=0.9, root=tmp_path)
    a = fx.fresh_glyphs(**kw)
    assert a.images.shape == (6, 3, 16, 16)
    files = list((tmp_path / "glyphs").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "glyphs").glob("*.part"))
    glyphs_module._CACHE.clear()
    b = data.Glyphs(**kw)  # read back from disk
    assert torch.equal(a.images, b.images)


def test_glyphs_bad_arguments():
    with pytest.raises(ValueError, match="difficulty"):
        data.Glyphs(difficulty=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        data.Glyphs(num_classes=0)
    with pytest.raises(ValueError, match="split"):
        data.Glyphs("gallery")


def test_load_dataset_gives_the_glyphs_test_split_at_the_default_size():
    ds = data.load_dataset("glyphs", "test", num_classes=3, images_per_class=2)
    direct = fx.fresh_glyphs(split="test", num_classes=3, images_per_class=2)
    assert list(ds.class_ids) == [3, 4, 5]          # the classes after the 3 training ones
    assert [ds[i][1] for i in range(len(ds))] == [0, 0, 1, 1, 2, 2]
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    assert images.shape == (6, 1, 32, 32) and torch.equal(images, direct.images)
