"""Datasets: embedded sets, benchmark loaders on official-format fixtures, splits, errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import _data_fixtures as fx
import numpy as np
import pytest
import torch
from torchvision import transforms as T

from dmlkit import data
from dmlkit.data import glyphs as glyphs_module

TINY = T.Compose([T.Resize(4), T.ToTensor()])


# --------------------------------------------------------------------------- registry
def test_available_and_unknown_name():
    assert data.available() == ["cars196", "cub200", "digits", "glyphs", "inshop", "sop"]
    with pytest.raises(ValueError) as err:
        data.load_dataset("imagenet")
    for name in data.available():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="cub200"):
        data.load_dataset("cub-2000")


def test_aliases_resolve(tmp_path):
    fx.make_cub(tmp_path / "cub200")
    ds = data.load_dataset("CUB_200_2011", "test", root=tmp_path, transform=TINY)
    assert isinstance(ds, data.CUB200)


# ----------------------------------------------------------------------------- digits
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


# ----------------------------------------------------------------------------- glyphs
def _fresh_glyphs(**kw):
    glyphs_module._CACHE.clear()
    return data.Glyphs(**kw)


def test_glyphs_deterministic_and_seed_dependent():
    kw = dict(split="train", num_classes=6, images_per_class=5, size=24)
    a = _fresh_glyphs(seed=3, **kw)
    b = _fresh_glyphs(seed=3, **kw)
    c = _fresh_glyphs(seed=4, **kw)
    assert a.images.shape == (30, 1, 24, 24) and a.images.dtype == torch.float32
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert float(a.images.std()) > 0.05  # not blank
    np.testing.assert_array_equal(a.labels, np.repeat(np.arange(6), 5))


def test_glyphs_class_disjoint_and_stable_per_class():
    kw = dict(num_classes=4, num_test_classes=3, images_per_class=4, size=16, seed=1)
    train = _fresh_glyphs(split="train", **kw)
    test = _fresh_glyphs(split="test", **kw)
    both = _fresh_glyphs(split="all", **kw)
    assert list(train.class_ids) == [0, 1, 2, 3]
    assert list(test.class_ids) == [4, 5, 6]
    assert not set(train.class_ids) & set(test.class_ids)
    assert len(both) == len(train) + len(test)
    # a class's images do not depend on which split (or how many classes) were asked for
    assert torch.equal(both.images[len(train):], test.images)
    more = _fresh_glyphs(split="train", num_classes=6, images_per_class=4, size=16, seed=1)
    assert torch.equal(more.images[:16], train.images)
    # different classes look different: mean image distance between classes > within class
    x = both.images.reshape(7, 4, -1)
    within = torch.cdist(x, x).mean()
    centres = x.mean(1)
    between = torch.cdist(centres, centres)[~torch.eye(7, dtype=torch.bool)].mean()
    assert between > 0.0 and within > 0.0


def test_glyphs_colour_clutter_and_disk_cache(tmp_path):
    kw = dict(split="test", num_classes=2, images_per_class=3, size=16, color=True, clutter=2,
              difficulty=0.9, root=tmp_path)
    a = _fresh_glyphs(**kw)
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


def test_glyphs_generation_default_size_is_fast_enough_to_build():
    ds = data.load_dataset("glyphs", "test", num_classes=3, images_per_class=2)
    image, label = ds[5]
    assert image.shape == (1, 32, 32) and label == 2


# -------------------------------------------------------------------- train_val_split
def test_train_val_split_is_class_disjoint():
    ds = _fresh_glyphs(split="train", num_classes=10, images_per_class=3, size=16)
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


# ------------------------------------------------------------------------ benchmarks
def _check_against_truth(ds, truth: dict, root: Path, expected_classes: set[int]):
    got = {str(p.relative_to(ds.base)): int(c) for p, c in zip(ds.paths, ds.original_labels)}
    want = {k: v for k, v in truth.items() if v in expected_classes}
    assert got == want
    assert set(ds.class_ids) == expected_classes
    np.testing.assert_array_equal(np.unique(ds.labels), np.arange(len(expected_classes)))


def test_cub_fixture_splits(tmp_path):
    truth = fx.make_cub(tmp_path / "cub200")
    train = data.load_dataset("cub200", "train", root=tmp_path, transform=TINY)
    test = data.load_dataset("cub200", "test", root=tmp_path, transform=TINY)
    _check_against_truth(train, truth, tmp_path, {1, 2, 100})
    _check_against_truth(test, truth, tmp_path, {101, 150, 200})
    assert len(train) == len(test) == 3 * fx.CUB_IMAGES_PER_CLASS
    assert train.class_names[101] == "101.White_Pelican"
    image, label = test[4]
    assert image.shape == (3, 4, 4) and label == 1


def test_cars_fixture_splits_from_mat_file(tmp_path):
    truth = fx.make_cars(tmp_path / "cars196")
    train = data.Cars196("train", root=tmp_path, transform=TINY)
    test = data.Cars196("test", root=tmp_path, transform=TINY)
    _check_against_truth(train, truth, tmp_path, {1, 50, 98})
    _check_against_truth(test, truth, tmp_path, {99, 150, 196})
    assert train.class_names[196] == "Make Model 196 2012"


def test_sop_fixture_splits(tmp_path):
    truth = fx.make_sop(tmp_path / "sop")
    train = data.SOP("train", root=tmp_path, transform=TINY)
    test = data.SOP("test", root=tmp_path, transform=TINY)
    _check_against_truth(train, truth, tmp_path, {1, 2, 3})
    _check_against_truth(test, truth, tmp_path, {11319, 11320, 22634})
    np.testing.assert_array_equal(test.super_class_ids, [1, 1, 5, 5, 12, 12])


def test_inshop_query_gallery_share_labels(tmp_path):
    truth = fx.make_inshop(tmp_path / "inshop")
    parts = {s: data.InShop(s, root=tmp_path, transform=TINY)
             for s in ("train", "query", "gallery", "test")}
    for split, ds in parts.items():
        wanted = ("query", "gallery") if split == "test" else (split,)
        rel = [str(p.relative_to(ds.base)) for p in ds.paths]
        assert sorted(rel) == sorted(k for k, (_, s) in truth.items() if s in wanted)
        for r, c in zip(rel, ds.original_labels):
            assert truth[r][0] == c
    q, g = parts["query"], parts["gallery"]
    np.testing.assert_array_equal(q.class_ids, g.class_ids)  # one mapping, same item = label
    assert set(q.class_ids) == {7, 12, 33}
    assert not set(parts["train"].class_ids) & set(q.class_ids)
    assert list(q.original_labels) == [7, 12, 12, 33]
    assert list(q.labels) == [0, 1, 1, 2]
    assert len(parts["test"]) == len(q) + len(g)


def test_dataset_directly_in_root_and_env_var(tmp_path, monkeypatch):
    fx.make_sop(tmp_path)  # no "sop" sub-folder
    assert len(data.SOP("train", root=tmp_path, transform=TINY)) == 6
    monkeypatch.setenv("DMLKIT_DATA", str(tmp_path))
    assert len(data.load_dataset("sop", "test", transform=TINY)) == 6


def test_default_benchmark_transforms(tmp_path):
    fx.make_cub(tmp_path / "cub200")
    train = data.CUB200("train", root=tmp_path)
    test = data.CUB200("test", root=tmp_path)
    assert train[0][0].shape == test[0][0].shape == (3, 224, 224)
    torch.testing.assert_close(test[0][0], test[0][0])  # centre crop is deterministic
    val = data.load_dataset("cub200", "val", root=tmp_path, val_fraction=0.5)
    assert val.num_classes == 2 and set(val.class_ids) <= {1, 2, 100}


def test_missing_root_lists_missing_files_and_how_to_get_them(tmp_path):
    for name, expect in (("cub200", ["images.txt", "CUB_200_2011.tgz",
                                     "97eceeb196236b17998738112f37df78"]),
                         ("cars196", ["cars_annos.mat", "car_ims.tgz"]),
                         ("sop", ["Ebay_train.txt", "Stanford_Online_Products.zip"]),
                         ("inshop", ["list_eval_partition.txt", "img.zip", "Google Drive"])):
        with pytest.raises(data.DatasetNotFoundError) as err:
            data.load_dataset(name, "train", root=tmp_path / "nothing")
        assert isinstance(err.value, ValueError)
        for word in expect:
            assert word in str(err.value), (name, word)
        assert str(tmp_path / "nothing" / name) in str(err.value)


def test_incomplete_root_names_missing_images(tmp_path):
    truth = fx.make_cub(tmp_path / "cub200")
    victim = sorted(k for k, c in truth.items() if c == 150)[1]
    os.remove(tmp_path / "cub200" / victim)
    data.CUB200("train", root=tmp_path, transform=TINY)  # train images are all there
    with pytest.raises(data.DatasetNotFoundError, match="1 of 9 images") as err:
        data.CUB200("test", root=tmp_path, transform=TINY)
    assert victim in str(err.value)
    # an annotation file missing is reported by name
    os.remove(tmp_path / "cub200" / "CUB_200_2011" / "classes.txt")
    with pytest.raises(data.DatasetNotFoundError, match=r"classes\.txt"):
        data.CUB200("train", root=tmp_path)


def test_unknown_split_lists_known_splits(tmp_path):
    fx.make_sop(tmp_path / "sop")
    with pytest.raises(ValueError, match="train, test"):
        data.SOP("query", root=tmp_path)


def test_user_placed_archives_are_extracted(tmp_path):
    # SOP zip in the official layout, placed by hand (unknown md5 -> patch the constant)
    src = tmp_path / "src"
    truth = fx.make_sop(src)
    (tmp_path / "sop").mkdir()
    fx.zip_folder(src / "Stanford_Online_Products", tmp_path / "sop" /
                  "Stanford_Online_Products.zip", "Stanford_Online_Products")
    archive = data.Archive("Stanford_Online_Products.zip", None,
                           data.md5sum(tmp_path / "sop" / "Stanford_Online_Products.zip"))
    orig = data.SOP.archives
    try:
        data.SOP.archives = (archive,)
        ds = data.SOP("train", root=tmp_path, transform=TINY)
    finally:
        data.SOP.archives = orig
    assert len(ds) == 6 and set(ds.original_labels) == {1, 2, 3}
    assert (tmp_path / "sop" / "Stanford_Online_Products" / "Ebay_test.txt").is_file()
    assert sum(v in (1, 2, 3) for v in truth.values()) == 6
    # wrong checksum for a hand-placed archive: refused, nothing extracted
    shutil.rmtree(tmp_path / "sop" / "Stanford_Online_Products")
    with pytest.raises(ValueError, match="MD5"):
        data.SOP("train", root=tmp_path)
    assert not (tmp_path / "sop" / "Stanford_Online_Products").exists()


def test_inshop_from_img_zip_and_loose_partition_file(tmp_path):
    src = tmp_path / "src"
    fx.make_inshop(src)
    base = tmp_path / "inshop"
    (base / "Img").mkdir(parents=True)
    fx.zip_folder(src / "img", base / "Img" / "img.zip", "img")
    shutil.copy(src / "Eval" / "list_eval_partition.txt", base / "list_eval_partition.txt")
    ds = data.InShop("gallery", root=tmp_path, transform=TINY)
    assert len(ds) == 4 and (base / "img").is_dir()


def test_cars_images_extracted_from_tgz(tmp_path):
    import tarfile

    src = tmp_path / "src"
    fx.make_cars(src)
    base = tmp_path / "cars196"
    base.mkdir()
    shutil.copy(src / "cars_annos.mat", base / "cars_annos.mat")
    with tarfile.open(base / "car_ims.tgz", "w:gz") as tf:
        tf.add(src / "car_ims", arcname="car_ims")
    orig = data.Cars196.archives
    try:
        data.Cars196.archives = (data.Archive("car_ims.tgz", None, None), orig[1])
        ds = data.Cars196("test", root=tmp_path, transform=TINY)
    finally:
        data.Cars196.archives = orig
    assert len(ds) == 6 and (base / "car_ims" / "000001.jpg").is_file()


# ------------------------------------------------------------------------ transforms
def test_get_transforms_shapes_and_determinism():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))
    train = data.get_transforms(True, image_size=227, resize=256)
    test = data.get_transforms(False)
    assert train(img).shape == (3, 227, 227)
    a, b = test(img), test(img)
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    # centre crop of the 256-resized image, normalised with the ImageNet statistics
    resized = T.Resize(256)(img)
    ref = T.ToTensor()(T.CenterCrop(224)(resized))
    mean = torch.tensor(data.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(data.IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(a, (ref - mean) / std)
    with pytest.raises(ValueError, match="image_size"):
        data.get_transforms(True, image_size=300, resize=256)
