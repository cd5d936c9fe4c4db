"""Fashion-MNIST from its IDX files: a tiny fixture written here (raw and gzipped), the folders
searched in order, the two protocols, subsets, damaged files, and the real files if installed."""

from __future__ import annotations

import gzip
import struct
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from dmlkit import data
from dmlkit.data import fashion_mnist as fm

TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 3


def idx_bytes(values: np.ndarray) -> bytes:
    """The official IDX encoding of a uint8 array (magic 0x000008DD, big-endian dims)."""
    values = np.ascontiguousarray(values, dtype=np.uint8)
    return (struct.pack(">BBBB", 0, 0, 0x08, values.ndim)
            + struct.pack(f">{values.ndim}I", *values.shape) + values.tobytes())


def write_fixture(folder: Path, gz: bool = False, seed: int = 0) -> dict:
    """The four files in ``folder``: per part, classes 9..0 interleaved, random pixels."""
    rng = np.random.default_rng(seed)
    truth = {}
    folder.mkdir(parents=True, exist_ok=True)
    for part, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        labels = np.tile(np.arange(9, -1, -1, dtype=np.uint8), per_class)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        truth[part] = (images, labels)
        for stem, values in zip(fm.FILES[part], (images, labels)):
            raw = idx_bytes(values)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
    return truth


@pytest.fixture(autouse=True)
def no_debian_files(tmp_path, monkeypatch):
    """Tests see only their fixtures: the Debian folder points to an empty place."""
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", tmp_path / "debian-none")
    monkeypatch.delenv("DMLKIT_DATA", raising=False)


def _pixels(ds) -> np.ndarray:
    return np.round(ds.images[:, 0].numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_class_disjoint_splits_read_back_the_written_files(tmp_path, gz):
    truth = write_fixture(tmp_path, gz=gz)
    train = data.load_dataset("Fashion-MNIST", "train", root=tmp_path)
    test = data.load_dataset("fmnist", "test", root=tmp_path)
    images, labels = truth["train"]
    keep = labels <= 4
    assert isinstance(train, data.FashionMNIST) and train.protocol == "class_disjoint"
    assert len(train) == 5 * TRAIN_PER_CLASS and len(test) == 5 * TEST_PER_CLASS
    np.testing.assert_array_equal(train.original_labels, labels[keep])
    np.testing.assert_array_equal(_pixels(train), images[keep])
    np.testing.assert_array_equal(train.indices, np.flatnonzero(keep))
    t_images, t_labels = truth["t10k"]
    np.testing.assert_array_equal(test.original_labels, t_labels[t_labels >= 5])
    np.testing.assert_array_equal(_pixels(test), t_images[t_labels >= 5])
    assert list(train.class_ids) == [0, 1, 2, 3, 4] and list(test.class_ids) == [5, 6, 7, 8, 9]
    assert test.class_names == {5: "Sandal", 6: "Shirt", 7: "Sneaker", 8: "Bag",
                                9: "Ankle boot"}
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.dtype.is_floating_point
    assert label == int(t_labels[t_labels >= 5][0]) - 5
    assert data.load_dataset("fashion_mnist", "test", root=tmp_path, size=14)[0][0].shape == (
        1, 14, 14)


def test_folders_are_searched_in_order(tmp_path, monkeypatch):
    root, debian = tmp_path / "root", tmp_path / "debian"
    want = {name: write_fixture(folder, gz=name != "own", seed=i)["t10k"][0]
            for i, (name, folder) in enumerate([("debian", debian),
                                                ("torchvision", root / "FashionMNIST" / "raw"),
                                                ("own", root / "fashion_mnist"),
                                                ("root", root)])}
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", debian)

    def read(**kw):
        return _pixels(data.FashionMNIST("test", root=root, **kw))

    def first_test_images(name):
        return want[name][np.tile(np.arange(9, -1, -1), TEST_PER_CLASS) >= 5]

    for name, remove in [("root", None), ("own", root), ("torchvision", root / "fashion_mnist"),
                         ("debian", root / "FashionMNIST" / "raw")]:
        if remove is not None:
            for path in remove.glob("*-ubyte*"):
                path.unlink()
        np.testing.assert_array_equal(read(), first_test_images(name))
    monkeypatch.setenv("DMLKIT_DATA", str(root / "fashion_mnist"))
    write_fixture(root / "fashion_mnist", seed=9)       # $DMLKIT_DATA is the default root
    assert fm.find_fashion_mnist()["t10k-images-idx3-ubyte"].parent == root / "fashion_mnist"


def test_query_gallery_protocol_and_subsets(tmp_path):
    truth = write_fixture(tmp_path)
    kw = dict(root=tmp_path, protocol="query_gallery")
    parts = {s: data.load_dataset("fashion_mnist", s, **kw)
             for s in ("train", "query", "gallery", "test")}
    assert len(parts["train"]) == 10 * TRAIN_PER_CLASS
    q, g, t = parts["query"], parts["gallery"], parts["test"]
    assert len(q) == 10 and len(g) == 20 and len(t) == 30   # per class 1 query, 2 gallery
    assert not set(q.indices) & set(g.indices)
    np.testing.assert_array_equal(np.sort(np.concatenate([q.indices, g.indices])), t.indices)
    assert list(q.class_ids) == list(g.class_ids) == list(range(10))  # one label mapping
    np.testing.assert_array_equal(q.labels, truth["t10k"][1][q.indices])
    np.testing.assert_array_equal(_pixels(g), truth["t10k"][0][g.indices])
    again = data.FashionMNIST("query", **kw)
    np.testing.assert_array_equal(again.indices, q.indices)        # the cut is seeded
    small = data.FashionMNIST("train", root=tmp_path, images_per_class=2, seed=3)
    assert np.bincount(small.original_labels).tolist() == [2, 2, 2, 2, 2]
    np.testing.assert_array_equal(_pixels(small), truth["train"][0][small.indices])
    np.testing.assert_array_equal(
        small.indices, data.FashionMNIST("train", root=tmp_path, images_per_class=2,
                                         seed=3).indices)
    seeds = {tuple(data.FashionMNIST("train", root=tmp_path, images_per_class=2,
                                     seed=s).indices) for s in range(4)}
    assert len(seeds) > 1
    for bad, match in [(dict(split="query"), "query_gallery"), (dict(protocol="seen"), "protocol"),
                       (dict(images_per_class=0), "images_per_class"),
                       (dict(protocol="query_gallery", images_per_class=1), ">= 2")]:
        with pytest.raises(ValueError, match=match):
            data.FashionMNIST(**{"split": "train", "root": tmp_path, **bad})


def test_missing_files_name_all_three_ways(tmp_path):
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"x")
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_dataset("fashion_mnist", "train", root=tmp_path)
    text = str(err.value)
    for part in (str(tmp_path), "--data-root", "download=True", "--download",
                 "apt-get install dataset-fashion-mnist", str(fm.DEBIAN_FOLDER),
                 "train-images-idx3-ubyte", "holds only t10k-labels-idx1-ubyte"):
        assert part in text


def _corrupt(folder: Path, stem: str, raw: bytes, gz: bool = False) -> Path:
    for old in folder.glob(stem + "*"):
        old.unlink()
    path = folder / (stem + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def test_damaged_files_are_reported_with_path_and_remedy(tmp_path, monkeypatch):
    write_fixture(tmp_path)
    labels = np.zeros(40, np.uint8)
    images = np.zeros((40, 28, 28), np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    cases = [("train-images-idx3-ubyte", idx_bytes(images)[:-5], False, "truncated"),
             ("train-images-idx3-ubyte", gzip.compress(idx_bytes(noise))[:300], False,
              "gzip stream is damaged"),
             ("train-images-idx3-ubyte", b"\x00\x00\x07\x03" + idx_bytes(images)[4:], False,
              "magic number"),
             ("train-images-idx3-ubyte", idx_bytes(np.zeros((40, 28, 27), np.uint8)), True,
              "28 x 27 pixels"),
             ("train-labels-idx1-ubyte", idx_bytes(labels[:39]), True, "39 labels"),
             ("train-labels-idx1-ubyte", idx_bytes(labels + 10), False, "label 10"),
             ("train-labels-idx1-ubyte", idx_bytes(images), False, "3-d uint8")]
    for stem, raw, gz, problem in cases:
        write_fixture(tmp_path)
        for old in tmp_path.glob("*.gz"):
            old.unlink()
        path = _corrupt(tmp_path, stem, raw, gz)
        with pytest.raises(data.IDXError) as err:
            data.FashionMNIST("train", root=tmp_path)
        assert str(path) in str(err.value) and problem in str(err.value), str(err.value)
        assert "github.com/zalandoresearch/fashion-mnist" in str(err.value)
    debian = tmp_path / "debian"
    write_fixture(debian, gz=True)
    _corrupt(debian, "t10k-labels-idx1-ubyte", b"\x1f\x8b not gzip", gz=False)
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", debian)
    with pytest.raises(data.IDXError, match="apt-get install --reinstall dataset-fashion-mnist"):
        data.FashionMNIST("test", root=tmp_path / "empty")


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeTorchvision:
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            write_fixture(Path(root) / "FashionMNIST" / "raw", gz=True)

    monkeypatch.setitem(sys.modules, "torchvision.datasets",
                        types.SimpleNamespace(FashionMNIST=FakeTorchvision))
    with pytest.raises(data.DatasetNotFoundError):   # opt-in: nothing downloaded by default
        data.FashionMNIST("test", root=tmp_path)
    assert calls == []
    test = data.FashionMNIST("test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), True)] and len(test) == 5 * TEST_PER_CLASS
    data.FashionMNIST("train", root=tmp_path, download=True)
    assert len(calls) == 1                         # found on disk now

    class Offline:
        def __init__(self, root, train=True, download=False):
            raise urllib.error.URLError("no network")

    monkeypatch.setitem(sys.modules, "torchvision.datasets",
                        types.SimpleNamespace(FashionMNIST=Offline))
    with pytest.raises(data.DownloadError, match="apt-get install dataset-fashion-mnist"):
        data.FashionMNIST("test", root=tmp_path / "elsewhere", download=True)


def test_the_real_files_of_debians_package(monkeypatch):
    monkeypatch.undo()   # the real Debian folder
    if fm.find_fashion_mnist(Path("/nonexistent-dmlkit-root")) is None:
        pytest.skip(f"Fashion-MNIST's files are not installed: apt-get install "
                    f"{fm.DEBIAN_PACKAGE} (they go to {fm.DEBIAN_FOLDER})")
    parts = fm.read_fashion_mnist(Path("/nonexistent-dmlkit-root"))
    (x, y), (xt, yt) = parts["train"], parts["t10k"]
    assert x.shape == (60_000, 28, 28) and xt.shape == (10_000, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]     # the official order
    assert yt[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert x.dtype == np.uint8 and int(x.max()) == 255 and int(x.min()) == 0
    test = data.FashionMNIST("test", root="/nonexistent-dmlkit-root")
    assert len(test) == 5000 and list(test.class_ids) == [5, 6, 7, 8, 9]
    np.testing.assert_array_equal(_pixels(test)[0], xt[yt >= 5][0])


def test_training_splits_follow_the_chosen_protocol(tmp_path):
    from dmlkit.train.config import resolve_config
    from dmlkit.train.datasets import splits

    write_fixture(tmp_path)
    for protocol, test_split, gallery_split in [("class_disjoint", "test", None),
                                                ("query_gallery", "query", "gallery")]:
        cfg = resolve_config(None, {"dataset": "fmnist", "data_root": str(tmp_path),
                                    "dataset_kwargs": {"protocol": protocol}})
        fit, val, test, gallery = splits(cfg)
        assert test.split == test_split and getattr(gallery, "split", None) == gallery_split
        assert len(fit) + len(val) == (5 if protocol == "class_disjoint" else 10) * 4
        assert not set(fit.original_labels) & set(val.original_labels)   # held-out classes


def test_image_task_holds_fashion_mnist_in_memory(tmp_path):
    from dmlkit import tasks

    truth = write_fixture(tmp_path)
    task = tasks.image_task("fashion_mnist", root=tmp_path, images_per_class=2)
    assert task.X.shape == (10, 1, 28, 28) and task.X_test.shape == (10, 1, 28, 28)
    assert sorted(task.y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    train = data.FashionMNIST("train", root=tmp_path, images_per_class=2)
    np.testing.assert_array_equal(np.round(task.X[:, 0].numpy() * 255).astype(np.uint8),
                                  truth["train"][0][train.indices])
