"""Your own images (root/<class>/<image>): class-disjoint splits, formats, bad files reported
at construction, clear errors, and training through the command line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmlkit import data
from dmlkit.__main__ import main


def _pixels(img) -> np.ndarray:
    return np.asarray(img)


def write_folder(root: Path, classes: dict[str, int], side: int = 6, seed: int = 0) -> dict:
    """PNG (RGB and grey), BMP and lossless WebP files; returns {path: (class, RGB pixels)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for name, n in classes.items():
        for i in range(n):
            rgb = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            ext, mode = [(".png", "RGB"), (".bmp", "RGB"), (".png", "L"), (".webp", "RGB")][i % 4]
            path = root / name / (f"sub/img{i}{ext}" if i == 1 else f"img{i}{ext}")
            path.parent.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(rgb)
            if mode == "L":
                img = img.convert("L")
                rgb = np.repeat(np.asarray(img)[:, :, None], 3, axis=2)
            img.save(path, lossless=True) if ext == ".webp" else img.save(path)
            truth[path] = (name, rgb)
    return truth


CLASSES = {"ant": 3, "bee": 4, "cat": 3, "dog": 4, "eel": 3, "fox": 3}


def test_class_disjoint_split_reads_back_every_image(tmp_path):
    truth = write_folder(tmp_path, CLASSES)
    (tmp_path / "ant" / ".DS_Store").write_bytes(b"\0")             # hidden: skipped silently
    kw = dict(root=tmp_path, transform=_pixels, test_fraction=0.5, seed=0)
    train = data.load_dataset("image_folder", "train", **kw)
    test = data.load_dataset("ImageFolder", "test", **kw)
    every = data.ImageFolder("all", **kw)
    names = sorted(CLASSES)
    assert every.class_names == dict(enumerate(names))
    assert len(test.test_classes) == 3 and set(test.test_classes) < set(names)
    train_names = {every.class_names[c] for c in train.class_ids}
    assert train_names == set(names) - set(test.test_classes)
    assert not set(train.class_ids) & set(test.class_ids)
    assert len(train) + len(test) == len(every) == sum(CLASSES.values()) == len(truth)
    for ds in (train, test, every):
        for i, path in enumerate(ds.paths):
            name, rgb = truth[path]
            image, label = ds[i]
            assert every.class_names[int(ds.class_ids[label])] == name
            np.testing.assert_array_equal(image, rgb)
        assert np.bincount(ds.labels).tolist() == [CLASSES[every.class_names[int(c)]]
                                                   for c in ds.class_ids]
    again = data.ImageFolder("test", **kw)
    assert again.test_classes == test.test_classes                 # seeded
    draws = {tuple(data.ImageFolder("test", root=tmp_path, seed=s).test_classes)
             for s in range(5)}
    assert len(draws) > 1
    two = data.ImageFolder("test", root=tmp_path, test_fraction=0.3)
    assert len(two.test_classes) == 2


def test_explicit_test_classes_and_subsets(tmp_path):
    write_folder(tmp_path, CLASSES)
    for given in (["dog", "ant"], "ant,dog", ("dog", "ant", "dog")):
        test = data.ImageFolder("test", root=tmp_path, test_classes=given)
        assert test.test_classes == ["ant", "dog"] and len(test) == 7
        assert list(test.class_ids) == [0, 3]
    train = data.ImageFolder("train", root=tmp_path, test_classes="ant,dog")
    assert [train.class_names[int(c)] for c in train.class_ids] == ["bee", "cat", "eel", "fox"]
    small = data.ImageFolder("train", root=tmp_path, test_classes="ant,dog",
                             images_per_class=2)
    assert np.bincount(small.labels).tolist() == [2, 2, 2, 2]
    assert set(small.paths) < set(train.paths)


def test_bad_files_are_reported_at_construction(tmp_path):
    write_folder(tmp_path, CLASSES)
    good = tmp_path / "bee" / "img0.png"
    (tmp_path / "bee" / "empty.png").write_bytes(b"")
    (tmp_path / "cat" / "half.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "dog" / "text.jpg").write_text("not a photo")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    bad = {tmp_path / "bee" / "empty.png", tmp_path / "cat" / "half.png",
           tmp_path / "dog" / "text.jpg"}
    with pytest.warns(UserWarning, match="notes.txt"), pytest.raises(data.BadImageError) as err:
        data.ImageFolder("all", root=tmp_path)
    for path in bad:
        assert str(path) in str(err.value)
    assert "3 of the 23 images" in str(err.value) and "skip_bad=True" in str(err.value)
    with pytest.warns(UserWarning) as record:
        kept = data.ImageFolder("all", root=tmp_path, skip_bad=True, transform=_pixels)
    assert sum("left out 3 unreadable" in str(w.message) for w in record) == 1
    assert {p for p, _ in kept.skipped} == bad and len(kept) == 20
    assert kept.ignored == [tmp_path / "dog" / "notes.txt"]
    assert not bad & set(kept.paths)
    assert [kept[i][0].shape for i in range(len(kept))] == [(6, 6, 3)] * 20  # a full epoch
    for path in (tmp_path / "eel").rglob("img*"):
        path.write_bytes(b"broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(data.BadImageError, match=r"no readable image .*\['eel'\]"):
            data.ImageFolder("all", root=tmp_path, skip_bad=True)
    (tmp_path / "dog" / "notes.txt").unlink()
    lazy = data.ImageFolder("train", root=tmp_path, test_classes="eel,bee,cat,dog",
                            check_images=False)
    (tmp_path / "ant" / "img0.png").unlink()
    with pytest.raises(data.BadImageError, match=str(tmp_path / "ant" / "img0.png")):
        lazy[0]


def test_clear_errors(tmp_path):
    write_folder(tmp_path / "one", {"solo": 2})
    write_folder(tmp_path / "two", {"a": 2, "b": 2})
    (tmp_path / "two" / "c").mkdir()
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "x.png")
    (tmp_path / "file.png").write_bytes(b"")
    cases = [(dict(root=None), "--data-root DIR"),
             (dict(root=tmp_path / "nope"), "does not exist"),
             (dict(root=tmp_path / "file.png"), "is a file"),
             (dict(root=tmp_path / "flat"), "no class folders; its 1 images lie directly"),
             (dict(root=tmp_path / "one"), "at least 2 class folders.*found 1"),
             (dict(root=tmp_path / "two"), "hold no image files: .*two/c"),
             (dict(root=tmp_path / "one", split="all", images_per_class=0), "images_per_class"),
             (dict(split="val", root=tmp_path / "one"), "unknown split")]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            data.ImageFolder(**{"split": "train", **kw})
    (tmp_path / "two" / "c").rmdir()
    for kw, match in [(dict(test_classes=["z"]), r"\['z'\] are not class folders"),
                      (dict(test_classes="a,b"), "leave at least one"),
                      (dict(test_fraction=1.0), "test_fraction")]:
        with pytest.raises(ValueError, match=match):
            data.ImageFolder("test", root=tmp_path / "two", **kw)
    assert len(data.ImageFolder("all", root=tmp_path / "one")) == 2


def test_train_on_a_folder_through_the_command_line(tmp_path, capsys):
    folder = tmp_path / "photos"
    write_folder(folder, {f"class{c}": 6 for c in range(8)}, side=20)
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "image_folder", "--data-root", str(folder),
               "--dataset-param", "test_fraction=0.5", "--epochs", "2", "--P", "2", "--K", "2",
               "--image-size", "16", "--resize", "18", "--embedding-dim", "8",
               "--device", "cpu", "--num-workers", "0", "--no-progress", "--out-dir", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "image_folder" and cfg["data_root"] == str(folder)
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert 0.0 <= metrics["recall@1"] <= 1.0 and "map@r" in metrics
    assert "map@r" in captured.out
    rc = main(["train", "--dataset", "image_folder", "--data-root", str(tmp_path / "none"),
               "--epochs", "1", "--device", "cpu", "--out-dir", str(out)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
