"""Input validation shared by losses, weights and metrics.

Every public entry point validates its inputs here so that bad input fails with a
``ValueError`` that names the problem instead of producing a silent wrong number.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_embeddings", "check_labels", "check_embeddings_labels", "to_tensor"]


def to_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` as a torch tensor (numpy arrays and lists are converted, no copy on CPU)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    try:
        return torch.as_tensor(x)
    except Exception as exc:  # pragma: no cover - message is the point
        raise ValueError(f"{name} must be a tensor or array, got {type(x).__name__}") from exc


def check_embeddings(embeddings, name: str = "embeddings") -> torch.Tensor:
    """Check a (B, D) floating-point matrix with finite values and return it as a tensor."""
    emb = to_tensor(embeddings, name)
    if emb.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D (batch, dim) tensor, got shape {tuple(emb.shape)}"
            + (" (a single vector? use x[None] for a batch of one)" if emb.dim() == 1 else "")
        )
    if not emb.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {emb.dtype}")
    if emb.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")
    # a finite sum proves every entry finite (NaN and inf propagate); only an overflowing sum
    # needs the element-wise test
    if not bool(torch.isfinite(emb.sum())) and not bool(torch.isfinite(emb).all()):
        n_bad = int((~torch.isfinite(emb)).any(dim=1).sum())
        raise ValueError(f"{name} contain NaN or inf values ({n_bad} of {emb.shape[0]} rows)")
    return emb


def check_labels(labels, n: int, name: str = "labels", device=None) -> torch.Tensor:
    """Check a 1-D integer label vector of length ``n`` and return it as a long tensor."""
    lab = to_tensor(labels, name)
    if lab.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(lab.shape)}")
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise ValueError(f"{name} must be integers, got dtype {lab.dtype}")
    if lab.shape[0] != n:
        raise ValueError(f"{name} has length {lab.shape[0]} but the batch has {n} embeddings")
    lab = lab.long()
    if device is not None:
        lab = lab.to(device)
    return lab


def check_embeddings_labels(embeddings, labels, name: str = "embeddings"):
    """Validate a (B, D) embedding batch and its (B,) labels; returns (embeddings, labels)."""
    emb = check_embeddings(embeddings, name)
    label_name = "labels" if name == "embeddings" else f"{name} labels"
    lab = check_labels(labels, emb.shape[0], name=label_name, device=emb.device)
    return emb, lab
