"""Seeding and random-number state: one place for every run's reproducibility.

>>> import torch
>>> seed_everything(3); a = torch.rand(2)
>>> seed_everything(3); bool(torch.equal(a, torch.rand(2)))
True
>>> derived_seed(0, 1) == derived_seed(0, 1) != derived_seed(0, 2)
True
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["derived_seed", "get_rng_state", "seed_everything", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def derived_seed(seed: int, *keys: int) -> int:
    """A well-mixed 32-bit seed from ``seed`` and integer ``keys`` (an epoch, a worker)."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys), 1234])
               .generate_state(1)[0])


def get_rng_state() -> dict:
    """The state of every generator :func:`seed_everything` seeds (for checkpoints)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
