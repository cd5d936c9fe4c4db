"""Half-precision values of the losses without a naive-loop tester (triplet, binomial, the
multi-similarity family, OSM/CAA, the proxy losses) against their naive float64 loops on the
same rounded batch, each held to its measured tolerance (dmlkit.precision, docs/precision.md);
the contrastive, lifted, N-pair, angular and DDML losses get the same check from
:func:`naive.loss_testing.naive_loop_tests`."""

import numpy as np
import pytest
import torch
from naive import naive_binomial, naive_cos, naive_osm_caa, naive_raw, naive_sets, naive_triplet
from naive import naive_vthm_sets, reduce

from dmlkit import precision
from dmlkit import precision_errors as pe


def _pair_loop(fn, mining=None):
    def naive(loss, x, y):
        S, (P, N) = naive_cos(x, x), naive_sets(y)
        if mining == "vthm":
            P, N = naive_vthm_sets(S, P, N, loss.epsilon)
        return reduce(fn(S, P, N, loss.alpha, loss.beta, loss.lam), loss.reduction)
    return naive


def _proxy_anchor(loss, x, y):
    """Kim et al. 2020, eq. 4, per proxy (column of the sample-proxy cosines), in numpy."""
    S, y = np.array(naive_cos(x, loss.proxies.detach().double())), y.numpy()
    own = y[:, None] == np.arange(S.shape[1])[None, :]
    a, d = loss.alpha, loss.delta
    pos = np.log1p(np.where(own, np.exp(-a * (S - d)), 0.0).sum(0))
    neg = np.log1p(np.where(own, 0.0, np.exp(a * (S + d))).sum(0))
    return pos[own.any(0)].mean() + neg.mean()


def _proxy_nca(loss, x, y):
    """Movshovitz-Attias et al. 2017: squared distances of unit vectors 2 - 2 cos, the
    sample's own proxy left out of the denominator (``denominator="negatives"``)."""
    assert loss.denominator == "negatives"
    d = loss.scale * (2.0 - 2.0 * np.array(naive_cos(x, loss.proxies.detach().double())))
    own = y.numpy()[:, None] == np.arange(d.shape[1])[None, :]
    rest = np.log(np.where(own, 0.0, np.exp(-d)).sum(1))
    return float((d[own] + rest).mean())


#: loss name -> its naive loop on float64 input, given the built loss (for its settings)
NAIVE = {
    "triplet": lambda loss, x, y: naive_triplet(x, y, loss.margin, loss.form, loss.mining,
                                                loss.reduction),
    "binomial": _pair_loop(naive_binomial),
    "raw": _pair_loop(naive_raw),
    "raw+vthm": _pair_loop(naive_raw, "vthm"),
    "multi_similarity": _pair_loop(naive_raw, "vthm"),
    "osm_caa": lambda loss, x, y: naive_osm_caa(
        x, y, loss.centres.detach().double(), loss.sigma, loss.alpha, loss.lam, loss.attention,
        loss.scale, classifier_weight=loss.classifier_weight),
    "proxy_anchor": _proxy_anchor,
    "proxy_nca": _proxy_nca,
}


@pytest.mark.parametrize("dtype", pe.DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(NAIVE))
def test_half_precision_value_equals_the_naive_loop_on_the_rounded_batch(name, dtype):
    loss = pe.build(name)
    tol = precision.tolerance("loss", name, "dense", dtype, "value", "fp64")
    for seed in pe.SEEDS:
        x, y = pe.loss_batch(seed)
        xh = x.to(dtype)
        got = loss(xh, y)
        assert got.dtype == torch.float32
        want = NAIVE[name](loss, xh.double(), y)
        assert want > 0, f"{name}: pick a batch with a nonzero loss"
        assert abs(got.item() - want) <= tol * max(abs(want), 1e-6), (seed, got.item(), want)
