"""Where and in which precision a run computes: the device, mixed precision, memory format.

>>> select_device("cpu")
device(type='cpu')
>>> amp_dtype("auto", select_device("cpu")) is None   # mixed precision is used on CUDA only
True
"""

from __future__ import annotations

import torch

__all__ = ["amp_dtype", "select_device"]

#: device messages already printed in this process (each is printed once)
_ANNOUNCED: set[str] = set()


def select_device(device: str | torch.device = "auto", verbose: bool = True) -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU, with a visible message
    (``verbose``), printed once per process: a notebook that selects the device and then
    trains (which selects it again) says it once.

    A device asked for by name that is not there raises ValueError (``"cuda"`` without CUDA).
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            msg = f"Using CUDA: {torch.cuda.get_device_name(dev)}"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            dev, msg = torch.device("mps"), "Using Apple MPS"
        else:
            dev = torch.device("cpu")
            n = torch.get_num_threads()
            msg = (f"CUDA not available, using CPU ({n} thread{'s' if n > 1 else ''}); "
                   "training the ImageNet backbones will be slow")
        if verbose and msg not in _ANNOUNCED:
            _ANNOUNCED.add(msg)
            print(msg, flush=True)
        return dev
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available; "
                         "use device='auto' or 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for but MPS is not available; use 'cpu'")
    return dev


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (``"auto"``: bf16 where supported, else fp16) on CUDA;
    None (full precision) elsewhere or for ``amp=None``."""
    if amp in (None, False, "none") or device.type != "cuda":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
