"""dmlkit.train.checkpoint: atomic checkpoints, and errors naming a missing or damaged file."""

from __future__ import annotations

import pytest
import torch

from dmlkit import train


def test_atomic_save_survives_a_crash_during_saving(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    train.atomic_save({"epoch": 1, "w": torch.arange(3.0)}, path)
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        real_save({"half": "written"}, f)  # some bytes reach the temporary file ...
        raise OSError("disk full")          # ... then the process dies

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        train.atomic_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    ck = train.load_checkpoint(path)
    assert ck["epoch"] == 1
    torch.testing.assert_close(ck["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left


def test_load_checkpoint_names_a_missing_file(tmp_path):
    path = tmp_path / "runs" / "last.pt"
    with pytest.raises(train.CheckpointError, match="does not exist") as exc:
        train.load_checkpoint(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_load_checkpoint_names_a_damaged_file_and_what_to_do(tmp_path, damage):
    path = tmp_path / "last.pt"
    train.atomic_save({"epoch": 3, "w": torch.arange(1000.0)}, path)
    blob = path.read_bytes()
    path.write_bytes({"truncated": blob[: len(blob) // 2], "garbage": b"PK\x03\x04" * 64,
                      "empty": b""}[damage])
    with pytest.raises(train.CheckpointError) as exc:
        train.load_checkpoint(path)
    msg = str(exc.value)
    assert msg.startswith(f"cannot read checkpoint {path} (corrupt or truncated")
    assert "delete it" in msg and "resume=False" in msg
    assert exc.value.__cause__ is not None  # the torch error is chained, not lost


def test_load_checkpoint_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    path = train.atomic_save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(train.CheckpointError, match="holds a list, not a dmlkit checkpoint"):
        train.load_checkpoint(path)
