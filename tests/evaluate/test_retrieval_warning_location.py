"""The near-tie warning of dmlkit.evaluate.retrieval_metrics points at the caller's line, not
at dmlkit (the function is wrapped by precision.without_autocast, one more frame).

Apart from the ``retrieval`` module of ``make mutation``: mutmut's trampoline adds frames, so
under it the warning would point at the trampoline."""

from __future__ import annotations

import warnings

import numpy as np

from dmlkit import evaluate as ev


def test_near_tie_warning_points_at_the_caller():
    eps = float(np.finfo(np.float32).eps)
    q = np.array([[1.0, 0.0]], np.float32)
    g = np.array([[0.5, 0.0], [0.5 - eps, 0.0]], np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev.retrieval_metrics(q, [0], (1,), gallery=(g, [0, 1]), normalize=False,
                             near_ties="warn")
    assert [w.category for w in caught] == [RuntimeWarning]
    assert caught[0].filename == __file__
