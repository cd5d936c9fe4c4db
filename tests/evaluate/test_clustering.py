"""dmlkit.evaluate.clustering (k-means, NMI, pair F1) against sklearn, pair loops and Lloyd.

The k-means++ sampling law (a chi-square test over 21,000 seedings, about a minute on the
shared 2-core machine) is in test_clustering_seeding_law.py, apart from these fast tests,
which are the ``clustering`` module of ``make mutation`` (benchmarks/mutation.py)."""

from __future__ import annotations

import naive
import numpy as np
import pytest
import torch
from embedding_fixtures import clustered, one_thread  # noqa: F401
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from dmlkit import evaluate as ev
from dmlkit.evaluate import clustering


def test_nmi_matches_sklearn():
    rng = np.random.default_rng(9)
    for n, a, b in [(500, 30, 40), (300, 5, 2), (50, 50, 3)]:
        y = rng.integers(0, a, n) * 7 - 11  # non-contiguous, negative labels
        c = rng.integers(0, b, n)
        assert ev.nmi(y, c) == pytest.approx(normalized_mutual_info_score(y, c), abs=1e-12)
    assert ev.nmi(np.zeros(10, int), np.zeros(10, int)) == 1.0
    y = rng.integers(0, 4, 40)
    assert ev.nmi(torch.from_numpy(y), y) == pytest.approx(1.0)
    assert ev.nmi(y, np.zeros(40, int)) == pytest.approx(normalized_mutual_info_score(
        y, np.zeros(40, int)))


def test_pair_f1_matches_direct_pair_loop():
    rng = np.random.default_rng(10)
    for n, a, b in [(120, 10, 12), (80, 3, 20), (60, 15, 4)]:
        y, c = rng.integers(0, a, n), rng.integers(0, b, n)
        assert ev.pair_f1(y, c) == pytest.approx(naive.pair_f1(y, c), abs=1e-12)
    y = rng.integers(0, 5, 30)
    assert ev.pair_f1(y, y + 100) == 1.0
    assert ev.pair_f1(np.zeros(9, int), np.zeros(9, int)) == 1.0  # single class, single cluster
    assert ev.pair_f1(np.arange(9), np.arange(9)) == 1.0  # no pairs on either side
    assert ev.pair_f1(np.arange(9), np.zeros(9, int)) == 0.0


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_kmeans_restarts_keep_the_best_run(backend):
    # two far-apart blobs: a run fails only if both initial points fall in one blob, and the
    # best of 8 restarts (lowest sum of squares) is the perfect partition
    x, y = clustered(80, 16, 2, 0.02, seed=11, dtype=np.float32)
    got = ev.clustering_metrics(x, y, seed=0, n_init=8, backend=backend)
    assert got == {"nmi": pytest.approx(1.0), "f1": pytest.approx(1.0)}
    x, y = clustered(300, 8, 12, 0.5, seed=11, dtype=np.float32)
    c1 = ev.kmeans(x, 12, seed=3, backend=backend)
    assert np.array_equal(c1, ev.kmeans(x, 12, seed=3, backend=backend))  # seeded

    def sse(c):
        return sum(((x[c == k] - x[c == k].mean(0)) ** 2).sum() for k in np.unique(c))

    if backend == "torch":  # run 0 of n_init = 4 is the single run with the same seed
        assert sse(ev.kmeans(x, 12, seed=3, n_init=4)) <= sse(c1) + 1e-6


def test_clustering_metrics_score_the_kmeans_partition():
    x, y = clustered(400, 8, 30, 1.0, seed=12, dtype=np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = ev.kmeans(xn, 30, seed=5, niter=20)
    got = ev.clustering_metrics(x, y, seed=5)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(y, c), abs=1e-12)
    assert got["f1"] == pytest.approx(naive.pair_f1(y, c), abs=1e-12)
    avg = ev.clustering_metrics(x, y, seed=[5, 6])
    other = ev.clustering_metrics(x, y, seed=6)
    assert avg["nmi"] == pytest.approx((got["nmi"] + other["nmi"]) / 2)
    one = ev.clustering_metrics(x, np.zeros(400, int))  # a single class -> one cluster
    assert one == {"nmi": 1.0, "f1": 1.0}


def test_kmeans_is_a_lloyd_fixed_point():
    x, _ = clustered(200, 4, 6, 0.7, seed=13, dtype=np.float64)
    c = ev.kmeans(x, 6, seed=1, niter=100)
    cent = np.stack([x[c == k].mean(0) for k in range(6)])
    nearest = ((x[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(nearest, c)


# ---- initialisation: k-means++ (default) and the random convention ----------------------



@pytest.mark.parametrize("trials", [None, 1])
def test_kmeans_plusplus_recovers_well_separated_clusters(trials):
    # 20 far-apart clusters: greedy (None: 2 + ln 20 trials) and plain (1 trial) k-means++
    # find every one for every seed, where random init does not
    f1_random = []
    for seed in range(5):
        x, y = clustered(1000, 32, 20, 0.05, seed=seed, dtype=np.float32)
        got = ev.clustering_metrics(x, y, seed=seed, n_local_trials=trials)
        assert got["nmi"] >= 0.99 and got["f1"] >= 0.99, (seed, got)
        f1_random.append(ev.clustering_metrics(x, y, seed=seed, init="random")["f1"])
    assert min(f1_random) < 0.99  # the bias the default removes


def _naive_lloyd(x, cent, niter):
    """Lloyd in float64 numpy: full distance matrix, empty cluster -> farthest point.

    Returns the assignment, its inertia and the number of empty clusters met."""
    assign = ((x[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)
    n_empty = 0
    for _ in range(niter):
        dist = ((x - cent[assign]) ** 2).sum(1)
        new_cent = cent.copy()
        for k in range(len(cent)):
            new_cent[k] = x[assign == k].mean(0) if (assign == k).any() else 0.0
        empty = [k for k in range(len(cent)) if not (assign == k).any()]
        if empty:
            n_empty += len(empty)
            new_cent[empty] = x[np.argsort(-dist, kind="stable")[:len(empty)]]
        cent = new_cent
        new = ((x[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)
        if np.array_equal(new, assign):
            break
        assign = new
    return assign, ((x - cent[assign]) ** 2).sum(), n_empty


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_init_random_is_the_previous_convention(seed):
    # init="random" = the k-means dmlkit had before k-means++ (and faiss's convention): K
    # points of torch.randperm(N) under seed 1000 * seed + run, Lloyd until no assignment
    # changes, best inertia of n_init runs; every point twice, so that two initial centres
    # often coincide and one of them starts empty
    x, y = clustered(120, 6, 30, 0.8, seed=20 + seed, dtype=np.float64)
    x, y = np.concatenate([x, x]), np.concatenate([y, y])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    best, best_obj, n_empty = None, np.inf, 0
    for run in range(3):
        gen = torch.Generator().manual_seed(seed * 1000 + run)
        idx = torch.randperm(len(x), generator=gen)[:40].numpy()
        assign, obj, empty = _naive_lloyd(xn, xn[idx].copy(), 20)
        n_empty += empty
        if obj < best_obj:
            best, best_obj = assign, obj
    assert n_empty > 0
    got = ev.kmeans(xn, 40, seed=seed, init="random", n_init=3)
    assert np.array_equal(got, best)
    metrics = ev.clustering_metrics(x, y, seed=seed, n_clusters=40, init="random", n_init=3)
    assert metrics == {"nmi": pytest.approx(normalized_mutual_info_score(y, best), abs=1e-12),
                       "f1": pytest.approx(naive.pair_f1(y, best), abs=1e-12)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lloyd_equals_sklearn_from_the_same_centres(seed):
    # same initial centres, both run to convergence (sklearn: tol=0 stops only when no label
    # changes, as dmlkit does): the same assignment
    x, _ = clustered(500, 8, 15, 0.6, seed=30 + seed, dtype=np.float64)
    cent = x[clustering.kmeans_plusplus(x, 15, seed=seed)]
    ours = ev.kmeans(x, 15, init=cent, niter=1000)
    ref = KMeans(15, init=cent, n_init=1, max_iter=1000, tol=0.0, algorithm="lloyd").fit(x)
    assert len(np.unique(ref.labels_)) == 15  # no empty cluster (the rules differ there)
    assert np.array_equal(ours, ref.labels_)
    # and from the random convention's centres
    idx = torch.randperm(500, generator=torch.Generator().manual_seed(seed))[:15].numpy()
    ref = KMeans(15, init=x[idx], n_init=1, max_iter=1000, tol=0.0, algorithm="lloyd").fit(x)
    assert len(np.unique(ref.labels_)) == 15
    assert np.array_equal(ev.kmeans(x, 15, init=x[idx], niter=1000), ref.labels_)


def test_seeding_with_fewer_distinct_points_than_clusters():
    x = np.repeat(np.eye(3), 4, axis=0)  # 12 points, 3 distinct
    for trials in (None, 1):
        idx = clustering.kmeans_plusplus(x, 5, seed=0, n_local_trials=trials)
        assert len(set(idx.tolist())) == 5
        assert len(set((idx // 4).tolist())) == 3  # the three distinct points come first
    assert len(np.unique(ev.kmeans(x, 5, seed=0))) == 3


def test_restarts_keep_the_lowest_inertia():
    x, _ = clustered(300, 8, 12, 0.9, seed=42, dtype=np.float64)

    def inertia(c):
        return sum(((x[c == k] - x[c == k].mean(0)) ** 2).sum() for k in np.unique(c))

    # run r of n_init restarts with seed 3 is seeded 1000 * 3 + r
    runs = [ev.kmeans(x, 12, init=x[clustering.kmeans_plusplus(x, 12, seed=3000 + r)])
            for r in range(4)]
    got = ev.kmeans(x, 12, seed=3, n_init=4)
    assert inertia(got) == pytest.approx(min(inertia(c) for c in runs), abs=1e-9)
    assert np.array_equal(got, runs[int(np.argmin([inertia(c) for c in runs]))])


def test_init_options_are_checked_and_passed_through():
    x, y = clustered(120, 6, 5, 0.5, seed=43, dtype=np.float32)
    with pytest.raises(ValueError, match=r"unknown init 'kmeans'.*'k-means\+\+', 'random'"):
        ev.kmeans(x, 5, init="kmeans")
    with pytest.raises(ValueError, match=r"shape \(5, 6\)"):
        ev.kmeans(x, 5, init=x[:4])
    with pytest.raises(ValueError, match="n_init must be 1"):
        ev.kmeans(x, 5, init=x[:5], n_init=2)
    with pytest.raises(ValueError, match="n_local_trials"):
        ev.kmeans(x, 5, n_local_trials=0)
    assert ev.evaluate(x, y, metrics=("nmi", "f1"), seed=2, kmeans_init="random") == \
        ev.clustering_metrics(x, y, seed=2, init="random")
    assert ev.evaluate(x, y, metrics=("nmi", "f1"), seed=2) == \
        ev.clustering_metrics(x, y, seed=2)


def test_default_trials_are_sklearns_within_the_budget(monkeypatch):
    x, _ = clustered(200, 8, 10, 0.5, seed=44, dtype=np.float32)
    assert clustering.default_trials(200, 10) == 2 + int(np.log(10))
    assert np.array_equal(clustering.kmeans_plusplus(x, 10, seed=1),
                          clustering.kmeans_plusplus(x, 10, seed=1, n_local_trials=4))
    monkeypatch.setattr(clustering, "GREEDY_BUDGET", 200 * 10 * 2)
    assert clustering.default_trials(200, 10) == 2
    assert np.array_equal(clustering.kmeans_plusplus(x, 10, seed=1),
                          clustering.kmeans_plusplus(x, 10, seed=1, n_local_trials=2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kmeans_plusplus_on_cuda_matches_cpu():
    x, y = clustered(1000, 32, 20, 0.05, seed=45, dtype=np.float64)
    for trials in (None, 1):
        cpu = clustering.kmeans_plusplus(x, 20, seed=0, n_local_trials=trials)
        gpu = clustering.kmeans_plusplus(torch.from_numpy(x).cuda(), 20, seed=0,
                                         n_local_trials=trials)
        assert np.array_equal(cpu, gpu)
    got = ev.clustering_metrics(torch.from_numpy(x).float().cuda(), y)
    assert got["nmi"] >= 0.99 and got["f1"] >= 0.99
