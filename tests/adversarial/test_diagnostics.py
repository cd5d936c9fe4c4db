"""dmlkit.adversarial.diagnostics: each diagnostic on fixed tensors against a direct
computation (loops, scikit-learn), and their per-epoch record in a run's history.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from feature_blobs import blobs, one_thread  # noqa: F401 (autouse fixture)
from sklearn.linear_model import LogisticRegression

from dmlkit import adversarial as adv


def test_collapse_matches_pair_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    same, diff = [], []
    for i in range(10):
        for j in range(10):
            c = float(x[i] @ x[j] / (x[i].norm() * x[j].norm()))
            if i != j and y[i] == y[j]:
                same.append(c)
            elif y[i] != y[j]:
                diff.append(c)
    out = adv.collapse(x, y)
    assert out["same"] == pytest.approx(np.mean(same), rel=1e-9)
    assert out["different"] == pytest.approx(np.mean(diff), rel=1e-9)
    assert math.isnan(adv.collapse(x[:2], torch.tensor([0, 1]))["same"])


def test_separability_matches_sklearn_on_the_same_split():
    g = torch.Generator().manual_seed(1)
    real, syn = torch.randn(60, 3, generator=g), torch.randn(40, 3, generator=g) + 0.7
    X = torch.cat([real, syn]).double().numpy()
    y = np.r_[np.zeros(60), np.ones(40)]
    order = np.random.default_rng(4).permutation(100)
    test, train = order[:30], order[30:]
    mu, sd = X[train].mean(0), X[train].std(0)
    probe = LogisticRegression(max_iter=1000).fit((X[train] - mu) / sd, y[train])
    expected = (probe.predict((X[test] - mu) / sd) == y[test]).mean()
    assert adv.separability(real, syn, test_fraction=0.3, seed=4) == pytest.approx(expected)
    far = adv.separability(real, syn + 20.0, seed=0)
    same = adv.separability(real[:30], real[30:], seed=0)
    assert far == 1.0 and same < 0.75
    with pytest.raises(ValueError, match="dimensions differ"):
        adv.separability(real, syn[:, :2])


def test_output_norm_and_hardness_match_loops():
    g = torch.Generator().manual_seed(2)
    a, p, s = (torch.randn(7, 3, generator=g) for _ in range(3))
    assert adv.output_norm(s) == pytest.approx(np.mean([float(r.norm()) for r in s]))
    for squared in (False, True):
        d = (lambda u, v: float((u - v).pow(2).sum())) if squared else \
            (lambda u, v: float((u - v).norm()))
        out = adv.hardness(a, p, s, margin=0.3, squared=squared)
        d_ap = [d(a[i], p[i]) for i in range(7)]
        d_as = [d(a[i], s[i]) for i in range(7)]
        assert out["d_ap"] == pytest.approx(np.mean(d_ap))
        assert out["d_asyn"] == pytest.approx(np.mean(d_as))
        assert out["violating"] == pytest.approx(np.mean([u < v + 0.3 for u, v in
                                                          zip(d_as, d_ap)]))


def test_diagnostics_recorded_per_epoch_without_changing_the_run():
    x, y = blobs()
    kw = dict(epochs=3, warmup_epochs=1, P=4, K=3, embedding_dim=6, generator_hidden=(16,),
              batches_per_epoch=3, seed=1)
    plain = adv.fit_adversarial(x, y, "triplet", "daml", **kw)
    diag = adv.fit_adversarial(x, y, "triplet", "daml", diagnostics=True, **kw)
    assert torch.equal(plain.embed(x), diag.embed(x))
    for row_p, row_d in zip(plain.history, diag.history):
        assert {k: row_d[k] for k in row_p} == row_p
    assert "probe_accuracy" not in diag.history[0]              # warm-up: no synthetic
    last = diag.history[-1]
    c = adv.collapse(diag.embed(x), y)   # all 72 points are the diagnostic subset here
    assert (last["collapse_same"], last["collapse_different"]) == \
        (pytest.approx(c["same"]), pytest.approx(c["different"]))
    assert 0.0 <= last["probe_accuracy"] <= 1.0 and last["synthetic_norm"] > 0
    assert last["negative_norm"] == pytest.approx(1.0, rel=1e-5)   # unit-norm features
