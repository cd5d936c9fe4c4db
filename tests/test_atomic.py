"""dmlkit.atomic: every write leaves the old file or the new one, never half of one."""

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from dmlkit import atomic


def _only(folder, *names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_atomic_write_text_bytes_and_save_round_trip(tmp_path):
    assert atomic.atomic_write_text(tmp_path / "a" / "t.txt", "héllo\n").read_text() == "héllo\n"
    assert atomic.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic.atomic_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.arange(3))
    df = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    pd.testing.assert_frame_equal(pd.read_csv(atomic.atomic_write_csv(df, tmp_path / "d.csv")),
                                  df)
    _only(tmp_path, "a", "b.bin", "c.pt", "d.csv")


@pytest.mark.parametrize("write", [
    lambda p: atomic.atomic_write_text(p, "new"),
    lambda p: atomic.atomic_write_bytes(p, b"new"),
    lambda p: atomic.atomic_save({"new": 1}, p),
])
def test_failed_replace_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, write):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write(path)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    _only(tmp_path, "f")


def test_permissions_are_those_of_the_replaced_file_or_the_umask(tmp_path):
    import os
    import stat

    umask = os.umask(0o027)
    try:
        new = atomic.atomic_write_text(tmp_path / "new.json", "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640        # 0o666 less the umask
        old = tmp_path / "old.png"
        old.write_bytes(b"old")
        old.chmod(0o604)
        atomic.atomic_write_bytes(old, b"new")
        assert stat.S_IMODE(old.stat().st_mode) == 0o604 and old.read_bytes() == b"new"
    finally:
        os.umask(umask)


def test_exception_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_write(path) as fh:
        fh.write("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old"
    _only(tmp_path, "f.txt")


def test_append_csv_row_creates_appends_and_unites_columns(tmp_path):
    path = tmp_path / "sub" / "runs.csv"
    t1 = atomic.append_csv_row(path, {"dataset": "glyphs", "test_recall@1": 0.5, "seed": 0})
    assert len(t1) == 1 and path.exists()
    t2 = atomic.append_csv_row(path, {"dataset": "cub200", "test_map@r": 0.25, "seed": 1})
    back = pd.read_csv(path)
    assert list(back.columns) == ["dataset", "test_recall@1", "seed", "test_map@r"]
    assert back["dataset"].tolist() == ["glyphs", "cub200"]
    assert back["test_recall@1"].iloc[0] == 0.5 and np.isnan(back["test_recall@1"].iloc[1])
    assert np.isnan(back["test_map@r"].iloc[0]) and back["test_map@r"].iloc[1] == 0.25
    assert back["seed"].tolist() == [0, 1]
    pd.testing.assert_frame_equal(t2, back, check_dtype=False)
    # nothing but the CSV and its lock file is left in the folder
    _only(path.parent, "runs.csv", "runs.csv.lock")


def test_append_csv_row_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    atomic.append_csv_row(path, {"a": 1})
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic.append_csv_row(path, {"a": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact
    _only(tmp_path, "runs.csv", "runs.csv.lock")


def test_append_csv_row_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "runs.csv"

    def worker(w):
        for i in range(5):
            atomic.append_csv_row(path, {"worker": w, "i": i})

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    back = pd.read_csv(path)
    assert len(back) == 30
    assert sorted(zip(back["worker"], back["i"])) == [(w, i) for w in range(6) for i in range(5)]


def test_append_csv_row_rejects_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        atomic.append_csv_row(tmp_path / "r.csv", {})
    with pytest.raises(ValueError, match="scalar"):
        atomic.append_csv_row(tmp_path / "r.csv", {"metrics": {"r@1": 1.0}})
    assert not (tmp_path / "r.csv").exists()
