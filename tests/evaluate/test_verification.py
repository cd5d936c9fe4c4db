"""dmlkit.evaluate.verification (VRF) against its exact expectation."""

from __future__ import annotations

import math

import naive
import pytest
from embedding_fixtures import clustered, one_thread  # noqa: F401

from dmlkit import evaluate as ev


@pytest.mark.parametrize("neg", [1, 5])
def test_verification_accuracy_matches_its_expectation(neg):
    x, y = clustered(40, 3, 4, 1.5, seed=14)
    trials = 400
    got = ev.verification_accuracy(x, y, neg=neg, seed=0, n_trials=trials)
    expected = naive.expected_vrf(x, y, neg)
    stderr = math.sqrt(expected * (1 - expected) / (40 * trials))
    assert abs(got - expected) < 5 * stderr + 1e-9
    assert got == ev.verification_accuracy(x, y, neg=neg, seed=0, n_trials=trials)
    sep, ys = clustered(60, 8, 6, 0.01, seed=15)
    assert ev.verification_accuracy(sep, ys, neg=40) == 1.0
