"""dmlkit.evaluate.clustering's argument checks and the options clustering_metrics passes to
k-means, against sklearn's NMI, the pair loop of tests/naive and a naive Lloyd (the cases the
mutation run, benchmarks/mutation.py, found without a test)."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from embedding_fixtures import clustered, one_thread  # noqa: F401
from sklearn.metrics import normalized_mutual_info_score

from dmlkit import evaluate as ev
from dmlkit.evaluate import clustering


def test_label_inputs_are_checked():
    with pytest.raises(ValueError, match=r"^labels has length 3 but clusters has length 2$"):
        ev.nmi([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"^labels is empty$"):
        ev.pair_f1([], [])
    with pytest.raises(ValueError, match=r"^labels must be integers, got dtype float64$"):
        ev.nmi([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"^clusters must be integers, got dtype float64$"):
        ev.pair_f1([0, 1], [0.0, 1.0])


def test_kmeans_arguments_are_checked():
    x, _ = clustered(10, 3, 2, 0.5, seed=70)
    for k in (0, 11):
        with pytest.raises(ValueError, match=rf"^n_clusters must be in \[1, 10\] \(the number "
                                             rf"of points\), got {k}$"):
            ev.kmeans(x, k)
        with pytest.raises(ValueError, match=rf"^n_clusters must be in \[1, 10\] \(the number "
                                             rf"of points\), got {k}$"):
            clustering.kmeans_plusplus(x, k)
    with pytest.raises(ValueError, match=r"^niter and n_init must be >= 1, got 0, 1$"):
        ev.kmeans(x, 2, niter=0)
    with pytest.raises(ValueError, match=r"^niter and n_init must be >= 1, got 20, 0$"):
        ev.kmeans(x, 2, n_init=0)
    with pytest.raises(ValueError, match="backend"):
        ev.kmeans(x, 2, backend="sklearn")
    for bad in (True, 2.5, 0, -1):
        with pytest.raises(ValueError, match=rf"^n_local_trials must be None or an integer >= 1,"
                                             rf" got {bad!r}$"):
            ev.kmeans(x, 2, n_local_trials=bad)
    assert ev.kmeans(x, 2, n_local_trials=2.0).shape == (10,)  # an integral float is fine
    with pytest.raises(ValueError, match=r"^seed must be an int or a non-empty sequence of ints$"):
        ev.clustering_metrics(x, np.arange(10) % 2, seed=[])


def _lloyd(x, cent, niter):
    """Plain Lloyd in float64 (no empty cluster occurs in these tests)."""
    assign = ((x[:, None] - cent[None]) ** 2).sum(-1).argmin(1)
    for _ in range(niter):
        cent = np.stack([x[assign == k].mean(0) for k in range(len(cent))])
        new = ((x[:, None] - cent[None]) ** 2).sum(-1).argmin(1)
        if np.array_equal(new, assign):
            break
        assign = new
    return assign


@pytest.mark.parametrize("normalize", [True, False])
def test_clustering_metrics_passes_its_options_to_kmeans(normalize):
    x, y = clustered(90, 4, 6, 1.2, seed=71)
    x = x * np.linspace(0.5, 3.0, 90)[:, None]  # norms matter unless normalised
    xs = x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x
    cent = xs[[0, 1, 2, 3]]
    for niter in (1, 2, 50):
        want = _lloyd(xs, cent, niter)
        assert len(np.unique(want)) == 4
        got = ev.clustering_metrics(x, y, n_clusters=4, init=cent, niter=niter,
                                    normalize=normalize)
        assert got == {"nmi": pytest.approx(normalized_mutual_info_score(y, want), abs=1e-12),
                       "f1": pytest.approx(naive.pair_f1(y, want), abs=1e-12)}
    assert not np.array_equal(_lloyd(xs, cent, 1), _lloyd(xs, cent, 50))  # niter matters


def test_kmeans_with_one_cluster_or_one_per_point():
    x, _ = clustered(12, 3, 4, 0.5, seed=72)
    assert ev.kmeans(x, 1).tolist() == [0] * 12
    for init in ("k-means++", "random"):
        got = ev.kmeans(x, 12, init=init)
        assert sorted(got.tolist()) == list(range(12))  # K = N distinct points: singletons
