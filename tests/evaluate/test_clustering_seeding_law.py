"""The k-means++ seeding of dmlkit.evaluate.clustering samples the greedy D^2 law: frequencies
of the ordered centre triples against the exact probabilities of a naive step-by-step
enumeration (and scikit-learn's ``kmeans_plusplus`` against the same enumeration).

Slow (a chi-square test over 21,000 seedings, about a minute on the shared 2-core machine),
hence apart from test_clustering.py, whose fast tests are the ``clustering`` module of
``make mutation``."""

from __future__ import annotations

from itertools import product

import numpy as np
import torch
from embedding_fixtures import one_thread  # noqa: F401
from scipy.stats import chisquare
from sklearn.cluster import kmeans_plusplus

from dmlkit.evaluate import clustering


def _exact_seeding_probabilities(x, k, trials):
    """P(ordered centre sequence) of greedy k-means++ with ``trials`` (1 = plain D^2)."""
    n = len(x)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    probs = {}

    def walk(seq, p, closest):
        if len(seq) == k:
            probs[tuple(seq)] = probs.get(tuple(seq), 0.0) + p
            return
        q = closest / closest.sum()
        for cands in product(range(n), repeat=trials):
            pots = [np.minimum(closest, d2[c]).sum() for c in cands]
            c = cands[int(np.argmin(pots))]
            walk([*seq, c], p * np.prod(q[list(cands)]), np.minimum(closest, d2[c]))

    for first in range(n):
        walk([first], 1.0 / n, d2[first].copy())
    return probs


def _chi2_pvalue(samples, probs):
    keys = sorted(probs)
    counts = np.array([samples.count(s) for s in keys], dtype=float)
    assert len(samples) == counts.sum()  # every sample is a possible sequence
    expected = np.array([probs[s] for s in keys]) * len(samples)
    keep = expected > 0
    return chisquare(counts[keep], expected[keep]).pvalue


def test_seeding_samples_the_d2_distribution():
    # the sampling probabilities themselves: frequencies of the ordered triple of centres
    # against the exact probabilities of a naive step-by-step enumeration, for sklearn's
    # kmeans_plusplus (which checks the enumeration), ours with the default pool and with
    # pools of 1 and 2 proposals (redrawn mid-step), for 1, 2 and 3 trials
    rng = np.random.default_rng(41)
    x = rng.standard_normal((5, 2))
    xt = torch.from_numpy(x)
    sq = (xt * xt).sum(1)
    runs = 3000
    exact = {t: _exact_seeding_probabilities(x, 3, t) for t in (1, 2, 3)}
    ref = [tuple(kmeans_plusplus(x, 3, random_state=s, n_local_trials=2)[1].tolist())
           for s in range(runs)]
    assert _chi2_pvalue(ref, exact[2]) > 1e-4
    for trials, pool in ((1, None), (2, None), (3, None), (2, 1), (3, 2), (1, 2)):
        gen = torch.Generator().manual_seed(trials)
        got = [tuple(clustering._greedy_seeding(xt, sq, 3, gen, trials, 2**20, pool).tolist())
               for _ in range(runs)]
        assert _chi2_pvalue(got, exact[trials]) > 1e-4, (trials, pool)
        if trials > 1:
            assert _chi2_pvalue(got, exact[1]) < 1e-6  # the test tells them apart
