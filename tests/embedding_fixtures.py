"""Toy embeddings for the metric tests: Gaussian class clusters, and dict comparison."""

from __future__ import annotations

import numpy as np
import pytest

from dmlkit.tasks import single_thread

__all__ = ["assert_dicts_close", "clustered", "one_thread"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine
    (:func:`dmlkit.tasks.single_thread`). Import it into a test module to apply it there."""
    with single_thread():
        yield


def clustered(n, dim, n_classes, spread, seed, singletons=0, dtype=np.float64):
    """``n`` points around ``n_classes`` random centres (+ ``singletons`` one-item classes)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    labels[:singletons] = n_classes + np.arange(singletons)
    centres = rng.standard_normal((n_classes + singletons, dim))
    x = centres[labels] + spread * rng.standard_normal((n, dim))
    return x.astype(dtype), labels


def assert_dicts_close(ours, ref, atol=1e-12):
    """Every key of ``ref`` is in ``ours`` with the same value (within ``atol``)."""
    assert set(ref) <= set(ours)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=atol), k
