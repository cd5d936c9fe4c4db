"""The four benchmark loaders on official-format fixtures: splits, layouts, archives, errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dataset_fixtures as fx
import numpy as np
import pytest
import torch
from dataset_fixtures import TINY

from dmlkit import data


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
