"""dmlkit.evaluate.clustering's greedy k-means++ seeding, draw for draw, against a naive loop of
the algorithm its docstring states (float64 numpy, one proposal at a time) fed by the same
torch.Generator: the exact centres, with the default pool and pools of 1 and 2 proposals
(redrawn mid-step), 1 to 3 trials, and fewer distinct points than clusters. Fast, so that the
``clustering`` module of ``make mutation`` checks the seeding; its sampling law is checked by
test_clustering_seeding_law.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from embedding_fixtures import one_thread  # noqa: F401

from dmlkit.evaluate import clustering
from dmlkit.evaluate.inputs import DEFAULT_BLOCK


def _naive_seeding(x, k, gen, trials, cap):
    """Greedy k-means++ by rejection from a pool of proposals, one proposal at a time.

    First centre: a uniform index. A pool of m = min(cap, trials * (centres left) + 8)
    proposals is drawn from the current D^2 (m uniforms times sum D^2, located in the
    cumulative sum: the first index whose cumulative sum reaches the draw), then m acceptance
    uniforms; proposal p is accepted when u * D^2(p) at the draw < D^2(p) now. The first
    ``trials`` accepted proposals are the candidates; the one of least potential (the first
    on ties) becomes a centre. With every D^2 at 0 the remaining centres are a random
    permutation of the unchosen points."""
    n = len(x)
    d = ((x[:, None, :] - x[None]) ** 2).sum(-1)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    d2 = d[chosen[0]].copy()
    d2[chosen[0]] = 0.0
    prop, uni, stale, pos = [], [], [], 0
    while len(chosen) < k:
        cands = []
        while len(cands) < trials:
            if pos >= len(prop):
                if d2.sum() <= 0:
                    rest = [i for i in range(n) if i not in chosen]
                    perm = torch.randperm(len(rest), generator=gen)[:k - len(chosen)]
                    return chosen + [rest[int(j)] for j in perm]
                m = min(cap, trials * (k - len(chosen)) + 8)
                cum = np.cumsum(d2)
                draw = torch.rand(m, generator=gen, dtype=torch.float64).numpy() * cum[-1]
                uni = torch.rand(m, generator=gen, dtype=torch.float64).numpy()
                prop = [min(int(np.argmax(cum >= v)) if (cum >= v).any() else n, n - 1)
                        for v in draw]
                stale, pos = d2[prop].copy(), 0
            if uni[pos] * stale[pos] < d2[prop[pos]]:
                cands.append(prop[pos])
            pos += 1
        pots = [np.minimum(d2, d[c]).sum() for c in cands]
        best = cands[int(np.argmin(pots))]
        d2 = np.minimum(d2, d[best])
        d2[best] = 0.0
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("trials, pool", [(1, None), (2, None), (3, None), (2, 1), (3, 2),
                                          (1, 2)])
def test_greedy_seeding_equals_the_naive_loop(trials, pool):
    rng = np.random.default_rng(50 + trials)
    x = rng.standard_normal((24, 3)) * rng.uniform(0.2, 3.0, (24, 1))
    xt = torch.from_numpy(x)
    for seed, scale in ((0, 1.0), (1, 1.0), (2, 0.01)):  # 0.01: sum D^2 below 1
        xs, xst = x * scale, xt * scale
        got = clustering._greedy_seeding(xst, (xst * xst).sum(1), 7,
                                         torch.Generator().manual_seed(seed), trials, 2**20, pool)
        want = _naive_seeding(xs, 7, torch.Generator().manual_seed(seed), trials,
                              pool if pool is not None else 2**20 // 24)
        assert got.dtype == torch.int64
        assert got.tolist() == want, (seed, trials, pool)


def test_kmeans_plusplus_is_the_seeded_naive_loop():
    # seed s seeds one CPU generator; default trials 2 + int(ln K); pool max_block // N
    rng = np.random.default_rng(60)
    x = rng.standard_normal((40, 4))
    for seed in (0, 7):
        want = _naive_seeding(x, 9, torch.Generator().manual_seed(seed), 2 + int(math.log(9)),
                              DEFAULT_BLOCK // 40)
        assert clustering.kmeans_plusplus(x, 9, seed=seed).tolist() == want
        want = _naive_seeding(x, 9, torch.Generator().manual_seed(seed), 1, 5)
        got = clustering.kmeans_plusplus(x, 9, seed=seed, n_local_trials=1, max_block=5 * 40)
        assert got.tolist() == want
    assert clustering.kmeans_plusplus(x, 1, seed=3).tolist() == \
        _naive_seeding(x, 1, torch.Generator().manual_seed(3), 4, 1)


@pytest.mark.parametrize("trials", [1, 2])
def test_seeding_fills_with_random_points_once_every_distance_is_zero(trials):
    # 3 distinct one-hot points (exact distances 0 and 2), each 4 times, K = 6
    x = np.repeat(np.eye(3), 4, axis=0)[np.random.default_rng(61).permutation(12)]
    xt = torch.from_numpy(x)
    for seed in range(3):
        got = clustering._greedy_seeding(xt, (xt * xt).sum(1), 6,
                                         torch.Generator().manual_seed(seed), trials, 2**20)
        assert got.tolist() == _naive_seeding(x, 6, torch.Generator().manual_seed(seed), trials,
                                              2**20 // 12)


def test_kmeans_plusplus_computes_in_float64_or_float32():
    # points on a grid of quarters: exact squared distances where kmeans_plusplus computes
    # them (float64, float32 for half points), so the float64 loop is the reference
    rng = np.random.default_rng(62)
    # float64 points far from the origin (in float32 the rounding of |x|^2 ~ 3e8, 32, would
    # swamp their distances of ~1)
    x = np.round(rng.standard_normal((30, 3)) * 4) / 4 + 1e4
    # half points are seeded in float32 (in half, |x|^2 ~ 3e4 has a rounding step of 16)
    h = (np.round(rng.standard_normal((30, 3)) * 4) / 4 + 100).astype(np.float16)
    for pts in (x, h, torch.from_numpy(h)):
        for seed in range(3):
            want = _naive_seeding(np.asarray(pts, dtype=np.float64), 6,
                                  torch.Generator().manual_seed(seed), 3, DEFAULT_BLOCK // 30)
            got = clustering.kmeans_plusplus(pts, 6, seed=seed, n_local_trials=3)
            assert got.tolist() == want, (type(pts), seed)


def test_draws_sum_the_squared_distances_in_float64():
    # float32 points at 0 and at 2^63: squared distances 2^126, exact in float32, whose sum
    # over the four points of the other group, 2^128, is past float32's largest value: a
    # float32 cumulative sum would end at inf and always draw the group's last point (3 or
    # 7); float64 draws each with 1/4
    x = np.array([0.0] * 4 + [2.0 ** 63] * 4, np.float32)[:, None]
    seconds = set()
    for seed in range(16):
        got = clustering.kmeans_plusplus(x, 2, seed=seed, n_local_trials=1).tolist()
        want = _naive_seeding(x.astype(np.float64), 2, torch.Generator().manual_seed(seed), 1,
                              DEFAULT_BLOCK // 8)
        assert got == want, seed
        seconds.add(got[1])
    assert seconds - {3, 7}

def test_potentials_are_summed_in_float64():
    # float32 points on a line with integer coordinates (exact float32 distances), mirror
    # symmetric about 0 and mostly at 0: from a first centre at 0 the mirror images +a and
    # -a have the same potential, the first drawn wins; float32 sums of their two distance
    # rows can differ by rounding (sums ~1e9), float64 sums of the float32 rows cannot
    v = np.concatenate([np.repeat([1503.0, 1777.0], 100), np.repeat([-1503.0, -1777.0], 100),
                        np.zeros(1000)])
    x = v[np.random.default_rng(0).permutation(v.size)][:, None].astype(np.float32)
    xt = torch.from_numpy(x)
    for seed in range(24):
        got = clustering._greedy_seeding(xt, (xt * xt).sum(1), 2,
                                         torch.Generator().manual_seed(seed), 2, 2**20)
        want = _naive_seeding(x.astype(np.float64), 2, torch.Generator().manual_seed(seed), 2,
                              2**20 // x.shape[0])
        assert got.tolist() == want, seed


@pytest.mark.parametrize("trials", [1, 3])
def test_a_centre_is_never_chosen_twice(trials):
    # 10 distinct points, each twice, K = 16: after the 10 locations only the copies are
    # left, whose D^2, |x|^2 + |c|^2 - 2 x.c, can round to a tiny positive number instead of
    # 0; a chosen point's own D^2 is set to exactly 0, so it is never drawn again
    x = np.repeat(np.random.default_rng(63).standard_normal((10, 8)), 2, axis=0)
    for seed in range(3):
        idx = clustering.kmeans_plusplus(x, 16, seed=seed, n_local_trials=trials).tolist()
        assert len(set(idx)) == 16, seed
        assert len({i // 2 for i in idx}) == 10, seed  # every location first
