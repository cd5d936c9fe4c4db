"""The dataset registry: names, aliases, unknown names, each dataset's facts."""

from __future__ import annotations

import dataclasses
import inspect

import dataset_fixtures as fx
import pytest
from dataset_fixtures import TINY

from dmlkit import data


def test_available_and_unknown_name():
    assert data.available() == ["cars196", "cub200", "digits", "fashion_mnist", "glyphs",
                                "image_folder", "inshop", "sop"]
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


def test_dataset_info_facts():
    info = {name: data.dataset_info(name) for name in data.available()}
    assert {n: i.recall_ks for n, i in info.items()} == {
        "cub200": (1, 2, 4, 8, 16, 32), "cars196": (1, 2, 4, 8, 16, 32),
        "sop": (1, 10, 100, 1000), "inshop": (1, 10, 20, 30, 40, 50),
        "glyphs": (1, 2, 4, 8), "digits": (1, 2, 4, 8), "fashion_mnist": (1, 2, 4, 8),
        "image_folder": (1, 2, 4, 8)}
    # the names of the published results tables (published_results.csv)
    assert {n: i.display_name for n, i in info.items()} == {
        "cub200": "CUB-200-2011", "cars196": "Cars196", "sop": "Stanford Online Products",
        "inshop": "In-shop", "glyphs": "glyphs (dmlkit, procedural)",
        "digits": "digits (scikit-learn)", "fashion_mnist": "Fashion-MNIST",
        "image_folder": "image folder (your images)"}
    assert [n for n, i in info.items() if i.protocol == "query_gallery"] == ["inshop"]
    assert all(i.protocol == "class_disjoint" for n, i in info.items() if n != "inshop")
    assert sorted(n for n, i in info.items() if i.embedded) == ["digits", "glyphs"]
    # in memory: the embedded sets and Fashion-MNIST (read whole from its IDX files)
    assert sorted(n for n, i in info.items() if not i.image_files) == ["digits",
                                                                      "fashion_mnist", "glyphs"]
    assert all(i.split_note for i in info.values())
    assert "classes 0-4" in info["fashion_mnist"].split_note
    assert all(i.name == n for n, i in info.items())
    # the native image size of an embedded set is its class's default ``size``
    for name in ("digits", "glyphs", "fashion_mnist"):
        size = inspect.signature(data.DATASETS.get(name)).parameters["size"].default
        assert info[name].image_size == size
        if name == "fashion_mnist":  # its files are read in test_fashion_mnist.py
            continue
        assert data.load_dataset(name, "test", **({"num_classes": 2, "images_per_class": 2}
                                                  if name == "glyphs" else {}))[0][0].shape[-1] \
            == size
    assert all(info[n].image_size is None for n in ("cub200", "cars196", "sop", "inshop",
                                                    "image_folder"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info["sop"].recall_ks = (1,)


def test_dataset_info_by_alias_and_unknown_name():
    for alias in ("cub", "CUB-200-2011", "cub_200_2011", "Cub200"):
        assert data.dataset_info(alias) is data.dataset_info("cub200")
    for alias in ("cars", "Stanford Cars"):
        assert data.dataset_info(alias).name == "cars196"
    for alias in ("Stanford Online Products", "online_products"):
        assert data.dataset_info(alias).name == "sop"
    for alias in ("In-shop", "In-shop Clothes", "DeepFashion In-shop"):
        assert data.dataset_info(alias).name == "inshop"
    for alias in ("Fashion-MNIST", "FashionMNIST", "fmnist"):
        assert data.dataset_info(alias).name == "fashion_mnist"
    for alias in ("ImageFolder", "image-folder", "folder"):
        assert data.dataset_info(alias).name == "image_folder"
    with pytest.raises(ValueError, match="Did you mean 'sop'") as err:
        data.dataset_info("sopp")
    for name in data.available():
        assert name in str(err.value)


def test_register_dataset_checks_the_protocol():
    with pytest.raises(ValueError, match="protocol"):
        data.register_dataset("toy", display_name="toy", protocol="leave_one_out")
