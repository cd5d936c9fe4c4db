"""dmlkit.train.device: the device message and devices that are not there."""

from __future__ import annotations

import pytest
import torch

from dmlkit import train


def test_select_device_message(capsys, monkeypatch):
    from dmlkit.train import device

    monkeypatch.setattr(device, "_ANNOUNCED", set())
    dev = train.select_device("auto")
    out = capsys.readouterr().out
    if torch.cuda.is_available():
        assert dev.type == "cuda" and out.startswith("Using CUDA")
    else:
        assert "using CPU" in out or "MPS" in out
    assert train.select_device("auto") == dev
    assert capsys.readouterr().out == ""   # said once per process (notebook 00 selects, then fits)
    assert train.select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train.select_device("cuda")


def test_amp_dtype_is_full_precision_off_cuda():
    from dmlkit.train.device import amp_dtype

    cpu = torch.device("cpu")
    assert [amp_dtype(a, cpu) for a in ("auto", "bf16", "fp16", None)] == [None] * 4
