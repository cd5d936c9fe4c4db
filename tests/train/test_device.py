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


@pytest.mark.parametrize("bf16", [True, False])
def test_amp_dtype_on_cuda(monkeypatch, bf16):
    """The CUDA branch, with the GPU's bf16 support stubbed (no CUDA is needed to ask)."""
    from dmlkit.train.device import amp_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    cuda = torch.device("cuda")
    auto = torch.bfloat16 if bf16 else torch.float16     # fp16 on a GPU without bf16 (V100)
    assert [amp_dtype(a, cuda) for a in ("auto", "bf16", "fp16", None, "none")] == [
        auto, torch.bfloat16, torch.float16, None, None]


def test_auto_names_the_gpu_once(capsys, monkeypatch):
    from dmlkit.train import device

    monkeypatch.setattr(device, "_ANNOUNCED", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert train.select_device("auto") == torch.device("cuda")
    assert train.select_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    train.select_device("auto")
    assert capsys.readouterr().out == "Using CUDA: NVIDIA H100 80GB HBM3\n"
