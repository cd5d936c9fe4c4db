"""dmlkit.evaluate.verification (VRF) against its exact expectation."""

from __future__ import annotations

import math

import numpy as np

import naive
import pytest
from embedding_fixtures import clustered, one_thread  # noqa: F401

from dmlkit import evaluate as ev


@pytest.mark.parametrize("neg", [1, 5, 10])
def test_verification_accuracy_matches_its_expectation(neg):
    x, y = clustered(40, 3, 4, 1.5, seed=14)
    trials = 400
    got = ev.verification_accuracy(x, y, neg=neg, seed=0, n_trials=trials)
    expected = naive.expected_vrf(x, y, neg)
    # an upper bound of the standard error (the trials' success probabilities differ by query)
    stderr = math.sqrt(expected * (1 - expected) / (40 * trials))
    assert abs(got - expected) < 4 * stderr + 1e-9
    if neg == 10:
        # power: negatives drawn with replacement would move the mean by > 7 standard errors
        assert naive.expected_vrf(x, y, neg, replace=True) - expected > 7 * stderr
    assert got == ev.verification_accuracy(x, y, neg=neg, seed=0, n_trials=trials)
    sep, ys = clustered(60, 8, 6, 0.01, seed=15)
    assert ev.verification_accuracy(sep, ys, neg=40) == 1.0


def test_verification_accuracy_with_every_negative_is_exact():
    # classes of two and neg = every other-class item: the positive is the other member and
    # the negatives are the whole rest, so VRF has no randomness left and equals its
    # expectation exactly. Duplicated vectors across classes tie a positive with a negative
    # (a tie is a failure); a negative drawn twice, the query drawn as its own positive or a
    # same-class item drawn as a negative would each change the value.
    angle = np.random.default_rng(3).uniform(0, 2 * np.pi, 10)
    angle[2] = angle[1]                     # the same vector in classes 0 and 1
    angle[0] = angle[1] - 0.05              # the closest item to both
    x = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    y = np.repeat(np.arange(5), 2)
    neg = len(y) - 2
    s = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = s @ s.T
    partial = ties = 0
    for a in range(len(y)):
        p = a ^ 1
        negs = s[a, y != y[a]]
        partial += 0 < (negs < s[a, p]).sum() < neg
        ties += (negs == s[a, p]).any() and (negs <= s[a, p]).all()
    assert partial >= 3 and ties >= 1       # the data can tell the rules apart
    expected = naive.expected_vrf(x, y, neg)
    for seed in range(3):
        assert ev.verification_accuracy(x, y, neg=neg, seed=seed, n_trials=3) == expected
