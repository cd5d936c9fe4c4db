"""dmlkit.evaluate.clustering's argument checks and the options clustering_metrics passes to
k-means, against sklearn's NMI, the pair loop of tests/naive and a naive Lloyd (the cases the
mutation run, benchmarks/mutation.py, found without a test)."""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest
import torch
from embedding_fixtures import clustered, one_thread  # noqa: F401
from sklearn.cluster import KMeans
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


def test_faiss_backend_random_init_is_faiss_kmeans():
    # init="random" with the faiss backend is faiss.Kmeans's own seeding and restarts
    faiss = pytest.importorskip("faiss")
    x, _ = clustered(200, 4, 10, 1.0, seed=74, dtype=np.float32)
    got = {}
    for seed, niter, n_init in ((5, 2, 1), (5, 20, 1), (6, 20, 1), (5, 20, 3)):
        km = faiss.Kmeans(4, 10, niter=niter, nredo=n_init, seed=seed, verbose=False)
        km.train(x)
        want = km.index.search(x, 1)[1][:, 0]
        out = ev.kmeans(x, 10, seed=seed, init="random", niter=niter, n_init=n_init,
                        backend="faiss")
        assert out.dtype == np.int64 and np.array_equal(out, want), (seed, niter, n_init)
        got[(seed, niter, n_init)] = out.tobytes()
    assert len(set(got.values())) == 4  # each option changes the partition here


def test_faiss_backend_starts_from_the_torch_backends_centres():
    # otherwise faiss's Lloyd starts from the torch backend's centres (k-means++ of seed
    # 1000 * seed + run, or the given array): run to convergence, sklearn's Lloyd from the
    # same centres; the restart of least inertia is kept
    pytest.importorskip("faiss")
    x, _ = clustered(200, 4, 8, 0.8, seed=75, dtype=np.float32)
    x64 = x.astype(np.float64)

    def lloyd(cent):
        return KMeans(8, init=cent, n_init=1, max_iter=100, tol=0.0,
                      algorithm="lloyd").fit(x).labels_

    def inertia(c):
        return sum(((x64[c == k] - x64[c == k].mean(0)) ** 2).sum() for k in np.unique(c))

    for seed in (1,):
        runs = [lloyd(x[clustering.kmeans_plusplus(x, 8, seed=1000 * seed + r)])
                for r in range(3)]
        assert all(len(np.unique(c)) == 8 for c in runs)
        assert np.array_equal(ev.kmeans(x, 8, seed=seed, niter=100, backend="faiss"), runs[0])
        best = min(runs, key=inertia)
        got = ev.kmeans(x, 8, seed=seed, niter=100, n_init=3, backend="faiss")
        assert np.array_equal(got, best)
        assert len({c.tobytes() for c in runs}) > 1  # the restarts differ here
    cent = x[::25] + 0.1
    assert np.array_equal(ev.kmeans(x, 8, init=cent, niter=100, backend="faiss"), lloyd(cent))


def test_faiss_backend_passes_niter_trials_and_its_seed():
    faiss = pytest.importorskip("faiss")
    x, _ = clustered(200, 4, 8, 1.0, seed=76, dtype=np.float32)
    x64 = x.astype(np.float64)
    # niter Lloyd updates from the given centres (naive Lloyd, float64)
    cent = x[::25] + 0.1
    for niter in (1, 2):
        want = _lloyd(x64, cent.astype(np.float64), niter)
        assert np.array_equal(ev.kmeans(x, 8, init=cent, niter=niter, backend="faiss"), want)
    assert not np.array_equal(_lloyd(x64, cent.astype(np.float64), 2), _lloyd(x64, cent, 30))
    # n_local_trials reaches the k-means++ seeding of the faiss backend
    for trials in (1, 3):
        start = x[clustering.kmeans_plusplus(x, 8, seed=2000, n_local_trials=trials)]
        want = _lloyd(x64, start.astype(np.float64), 2)
        got = ev.kmeans(x, 8, seed=2, niter=2, n_local_trials=trials, backend="faiss")
        assert np.array_equal(got, want), trials
    # well-separated blobs: every restart ends in the same partition, numbered in the order
    # of its seeding; on equal inertia the first restart is kept (as with the torch backend)
    x, _ = clustered(120, 4, 4, 0.05, seed=77, dtype=np.float32)
    runs = [_lloyd(x.astype(np.float64), x[clustering.kmeans_plusplus(x, 4, seed=3000 + r)], 30)
            for r in range(3)]
    assert len({r.tobytes() for r in runs}) > 1  # the same partition, numbered differently
    assert np.array_equal(ev.kmeans(x, 4, seed=3, n_init=3, backend="faiss"), runs[0])
    # above 256 points per centre faiss subsamples with its seed, 1000 * seed + run here
    x, _ = clustered(700, 3, 2, 2.0, seed=78, dtype=np.float32)
    for seed in (0, 1):
        start = x[clustering.kmeans_plusplus(x, 2, seed=1000 * seed)]
        km = faiss.Kmeans(3, 2, niter=1, nredo=1, seed=1000 * seed, verbose=False)
        km.train(x, init_centroids=start)
        want = km.index.search(x, 1)[1][:, 0]
        assert np.array_equal(ev.kmeans(x, 2, seed=seed, niter=1, backend="faiss"), want)


def test_faiss_backend_restarts_subsample_with_their_own_seeds():
    # n_init = 2 above 256 points per centre: restart r seeds both its k-means++ and faiss's
    # subsample with 1000 * seed + r, and the restart of the lowest objective (float64 sum
    # of faiss's squared distances; the first on a tie) gives the partition
    faiss = pytest.importorskip("faiss")
    x, _ = clustered(700, 3, 2, 2.0, seed=78, dtype=np.float32)
    second_won = 0
    for seed in range(6):
        best, best_obj = None, math.inf
        for r in range(2):
            start = x[clustering.kmeans_plusplus(x, 2, seed=1000 * seed + r)]
            km = faiss.Kmeans(3, 2, niter=1, nredo=1, seed=1000 * seed + r, verbose=False)
            km.train(x, init_centroids=start)
            dist, assign = km.index.search(x, 1)
            obj = float(dist.astype(np.float64).sum())
            if obj < best_obj:
                best_obj, best, won = obj, assign[:, 0], r
        second_won += won
        got = ev.kmeans(x, 2, seed=seed, n_init=2, niter=1, backend="faiss")
        assert np.array_equal(got, best), seed
    assert second_won > 0

def test_kmeans_plusplus_arguments_and_defaults():
    x, _ = clustered(10, 3, 2, 0.5, seed=79)
    with pytest.raises(ValueError, match=r"^embeddings must be a 2-D \(batch, dim\) tensor"):
        clustering.kmeans_plusplus(x[0], 1)
    # K = N distinct points: every point once (a chosen point's D^2 is 0)
    assert sorted(clustering.kmeans_plusplus(x, 10).tolist()) == list(range(10))
    # seed 0 by default
    assert np.array_equal(clustering.kmeans_plusplus(x, 4), clustering.kmeans_plusplus(x, 4, 0))
    assert not np.array_equal(clustering.kmeans_plusplus(x, 4), clustering.kmeans_plusplus(x, 4, 1))
    # scikit-learn's 2 + int(ln K) trials, at least 1 however large N * K (docstring: SOP 3)
    assert clustering.default_trials(5924, 100) == 2 + int(np.log(100))
    assert clustering.default_trials(60502, 11316) == 3
    assert clustering.default_trials(100_000, 100_000) == 1


def test_clustering_metrics_defaults():
    # seed 0, one run, K = the number of classes, embeddings normalised: run 0 of kmeans is
    # Lloyd from kmeans_plusplus(seed=0); here the run of seed 1 has a lower inertia, so a
    # second restart would change the partition
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 3))
    y = np.arange(120) % 10
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    runs = [_lloyd(xn, xn[clustering.kmeans_plusplus(xn, 10, seed=s)], 20) for s in (0, 1)]
    assert len(np.unique(runs[0])) == 10

    def inertia(c):
        return sum(((xn[c == k] - xn[c == k].mean(0)) ** 2).sum() for k in np.unique(c))

    assert inertia(runs[1]) < inertia(runs[0])
    assert ev.clustering_metrics(x, y) == {
        "nmi": pytest.approx(normalized_mutual_info_score(y, runs[0]), abs=1e-12),
        "f1": pytest.approx(naive.pair_f1(y, runs[0]), abs=1e-12)}
    with pytest.raises(ValueError, match=r"^embeddings must be a 2-D"):
        ev.clustering_metrics(x[0], y[:1])
    # n_init, n_local_trials and backend reach kmeans
    def scores(c):
        return {"nmi": pytest.approx(normalized_mutual_info_score(y, c), abs=1e-12),
                "f1": pytest.approx(naive.pair_f1(y, c), abs=1e-12)}

    assert ev.clustering_metrics(x, y, n_init=2) == scores(runs[1])
    one = _lloyd(xn, xn[clustering.kmeans_plusplus(xn, 10, seed=0, n_local_trials=1)], 20)
    assert not np.array_equal(one, runs[0])
    assert ev.clustering_metrics(x, y, n_local_trials=1) == scores(one)
    faiss = pytest.importorskip("faiss")
    km = faiss.Kmeans(3, 10, niter=20, nredo=1, seed=0, verbose=False)
    km.train(xn.astype(np.float32))
    ref = km.index.search(xn.astype(np.float32), 1)[1][:, 0]
    assert not np.array_equal(ref, ev.kmeans(xn, 10, init="random"))
    assert ev.clustering_metrics(x, y, init="random", backend="faiss") == scores(ref)
    # several seeds: the mean of their NMI and F1
    one_seed = _lloyd(xn, xn[clustering.kmeans_plusplus(xn, 10, seed=1000)], 20)
    both = ev.clustering_metrics(x, y, seed=[0, 1])
    for key, f in (("nmi", normalized_mutual_info_score), ("f1", naive.pair_f1)):
        assert both[key] == pytest.approx((f(y, runs[0]) + f(y, one_seed)) / 2, abs=1e-12)


def test_lloyd_in_blocks_of_a_few_points():
    # max_block bounds the (points, centres) block: 3 points per block here; the distances
    # kmeans keeps (for its inertia) are float64 for float64 points
    x, _ = clustered(40, 3, 4, 0.8, seed=80)
    cent = x[[0, 10, 20, 30]]
    assert np.array_equal(ev.kmeans(x, 4, init=cent, niter=30, max_block=12), _lloyd(x, cent, 30))
    xt = torch.from_numpy(x)
    assign, dist = clustering._assign(xt, (xt * xt).sum(1), torch.from_numpy(cent), 3)
    d2 = ((x[:, None] - cent[None]) ** 2).sum(-1)
    assert assign.tolist() == d2.argmin(1).tolist()
    assert dist.dtype == torch.float64
    np.testing.assert_allclose(dist.numpy(), d2.min(1), rtol=1e-12, atol=1e-12)
    # the k-means++ distance rows, in blocks of 3 points
    idx = torch.tensor([3, 7])
    rows = clustering._rows(xt, (xt * xt).sum(1), idx, 2 * 3)
    assert rows.dtype == torch.float64
    np.testing.assert_allclose(rows.numpy(), ((x[[3, 7]][:, None] - x[None]) ** 2).sum(-1),
                               rtol=0, atol=1e-12)


def test_init_centres_are_checked_and_cast_to_the_points():
    x, _ = clustered(30, 3, 3, 0.5, seed=82, dtype=np.float32)
    with pytest.raises(ValueError, match=r"^init centres must be a 2-D \(batch, dim\) tensor"):
        ev.kmeans(x, 3, init=x[0])
    with pytest.raises(ValueError, match=r"^unknown init 'x'; known: 'k-means\+\+', 'random', "
                                         r"or a \(K, D\) array of initial centres$"):
        ev.kmeans(x, 3, init="x")
    cent = x[[0, 10, 20]].astype(np.float64)  # float64 centres for float32 points
    assert np.array_equal(ev.kmeans(x, 3, init=cent, niter=30),
                          _lloyd(x.astype(np.float64), cent, 30))


def _lloyd_reseeding(x, cent, niter):
    """Lloyd in float64 with kmeans's rule for an empty cluster: its centre moves to the point
    farthest from the centre it was assigned to (the farthest for the first empty cluster,
    the next for the second, ...)."""
    cent = np.array(cent, dtype=np.float64)
    d = ((x[:, None] - cent[None]) ** 2).sum(-1)
    assign, dist = d.argmin(1), d.min(1)
    for _ in range(niter):
        cnt = np.bincount(assign, minlength=len(cent))
        for k in np.flatnonzero(cnt):
            cent[k] = x[assign == k].mean(0)
        empty = np.flatnonzero(cnt == 0)
        cent[empty] = x[np.argsort(-dist, kind="stable")[:empty.size]]
        d = ((x[:, None] - cent[None]) ** 2).sum(-1)
        new, dist = d.argmin(1), d.min(1)
        if np.array_equal(new, assign):
            break
        assign = new
    return assign


def test_kmeans_reseeds_an_empty_cluster_with_the_farthest_point():
    # every point starts in cluster 0 (1 and 2 empty: they move to the two points farthest
    # from centre 0, -11 and 11.5), then every point changes cluster at once (the iteration
    # goes on), then cluster 0 is empty and takes 9, the point farthest from its centre,
    # alone (a centroid of one point is that point)
    x = np.array([[-11.0], [-10.0], [-9.0], [9.0], [10.0], [11.5]])
    cent = np.array([[0.5], [100.0], [200.0]])
    want = {1: [1, 1, 1, 2, 2, 2], 2: [1, 1, 1, 0, 2, 2], 3: [1, 1, 1, 0, 2, 2],
            20: [1, 1, 1, 0, 2, 2]}
    for niter, assign in want.items():
        assert _lloyd_reseeding(x, cent, niter).tolist() == assign
        assert ev.kmeans(x, 3, init=cent, niter=niter).tolist() == assign, niter


def test_kmeans_defaults():
    # seed 0 (k-means++ seeded 1000 * 0 + 0), 20 Lloyd iterations; the data below needs 26
    rng = np.random.default_rng(83)
    x = rng.uniform(size=(150, 2))
    start = x[rng.choice(150, 10, replace=False)]
    want = _lloyd(x, start, 20)
    assert not np.array_equal(want, _lloyd(x, start, 21))
    assert np.array_equal(ev.kmeans(x, 10, init=start), want)
    y = np.arange(150) % 10
    assert ev.clustering_metrics(x, y, n_clusters=10, init=start, normalize=False) == {
        "nmi": pytest.approx(normalized_mutual_info_score(y, want), abs=1e-12),
        "f1": pytest.approx(naive.pair_f1(y, want), abs=1e-12)}
    x, _ = clustered(60, 3, 5, 1.0, seed=84)
    runs = [_lloyd(x, x[clustering.kmeans_plusplus(x, 5, seed=s)], 20) for s in (0, 1000)]
    assert not np.array_equal(runs[0], runs[1])
    assert np.array_equal(ev.kmeans(x, 5), runs[0])


def test_kmeans_input_messages():
    x, _ = clustered(10, 3, 2, 0.5, seed=85)
    with pytest.raises(ValueError, match=r"^embeddings must be a 2-D \(batch, dim\) tensor"):
        ev.kmeans(x[0], 1)
    with pytest.raises(ValueError, match=r"^unknown backend 'sklearn'; known: 'torch', "
                                         r"'faiss'$"):
        ev.kmeans(x, 2, backend="sklearn")


def test_kmeans_computes_in_float64_or_float32():
    # points on a grid of quarters, so that |x|^2 + |c|^2 - 2 x.c is exact where kmeans
    # computes it (float64, float32 for half points) and the float64 loop is the reference
    rng = np.random.default_rng(86)
    # float64 points far from the origin: in float32 the rounding of |x|^2 ~ 3e8 (32) would
    # swamp their distances of ~1
    x = np.round(rng.standard_normal((40, 3)) * 4) / 4 + 1e4
    cent = x[[0, 10, 20, 30]]
    want = _lloyd(x, cent, 30)
    assert len(np.unique(want)) == 4
    assert np.array_equal(ev.kmeans(x, 4, init=cent, niter=30), want)
    # half points are clustered in float32 (in half, |x|^2 ~ 3e4 has a rounding step of 16)
    h = (np.round(rng.standard_normal((40, 3)) * 4) / 4 + 100).astype(np.float16)
    cent = h[[0, 10, 20, 30]]
    want = _lloyd(h.astype(np.float64), cent.astype(np.float64), 30)
    assert len(np.unique(want)) == 4
    assert np.array_equal(ev.kmeans(h, 4, init=cent, niter=30), want)
    assert np.array_equal(ev.kmeans(torch.from_numpy(h), 4, init=cent, niter=30), want)


def test_restarts_of_equal_inertia_keep_the_first():
    # four squares of four points (exact centroids and distances): every restart ends in the
    # same partition, numbered in the order of its seeding, with the same inertia
    corners = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    centres = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0], [40.0, 40.0]])
    x = (centres[:, None] + corners[None]).reshape(-1, 2)
    x = x[np.random.default_rng(87).permutation(16)]
    runs = [_lloyd(x, x[clustering.kmeans_plusplus(x, 4, seed=2000 + r)], 20) for r in range(3)]
    assert all(len(np.unique(r)) == 4 for r in runs)
    assert all(normalized_mutual_info_score(runs[0], r) == pytest.approx(1.0) for r in runs)
    assert not np.array_equal(runs[0], runs[2])  # the last restart numbers it otherwise
    assert np.array_equal(ev.kmeans(x, 4, seed=2, n_init=3), runs[0])
