"""dmlkit.seeding: one seeding function and the RNG state that checkpoints carry."""

import random

import numpy as np
import torch

from dmlkit import seeding


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_seeds_python_numpy_and_torch():
    seeding.seed_everything(7)
    a = _draws()
    seeding.seed_everything(7)
    assert _draws() == a
    seeding.seed_everything(8)
    assert _draws() != a


def test_rng_state_round_trip():
    seeding.seed_everything(1)
    state = seeding.get_rng_state()
    a = _draws()
    _draws()
    seeding.set_rng_state(state)
    assert _draws() == a


def test_derived_seed_matches_the_seed_sequence_and_separates_keys():
    # the per-epoch seed of every training run: SeedSequence([seed, epoch, 1234])
    expected = int(np.random.SeedSequence([3, 5, 1234]).generate_state(1)[0])
    assert seeding.derived_seed(3, 5) == expected
    seeds = {seeding.derived_seed(0, e) for e in range(100)}
    assert len(seeds) == 100 and all(0 <= s < 2**32 for s in seeds)
