"""dmlkit.evaluate.retrieval against brute force, pytorch-metric-learning and closed forms."""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest
import torch
from embedding_fixtures import assert_dicts_close, clustered, one_thread  # noqa: F401

from dmlkit import evaluate as ev
from dmlkit.evaluate import retrieval


@pytest.mark.parametrize("lone", ["exclude", "miss"])
@pytest.mark.parametrize("average", ["query", "class"])
def test_retrieval_matches_brute_force(lone, average):
    x, y = clustered(180, 6, 25, 1.2, seed=1, singletons=4)
    ks, pks = (1, 2, 4, 8, 16), (1, 3, 10)
    ours = ev.retrieval_metrics(x, y, ks, precision_ks=pks, lone_queries=lone, average=average,
                                max_block=1000)  # several chunks
    assert_dicts_close(ours, naive.brute_force_metrics(x, y, ks=ks, precision_ks=pks, lone=lone,
                                                       average=average))


def test_gallery_retrieval_matches_brute_force():
    x, y = clustered(150, 5, 20, 1.0, seed=2)
    gx, gy = clustered(130, 5, 24, 1.0, seed=2)  # same centres; classes 20-23 gallery-only
    qx, qy = x[:90], y[:90]
    ours = ev.retrieval_metrics(qx, qy, (1, 5, 50, 500), gallery=(gx, gy), precision_ks=(1, 7),
                                max_block=700)
    assert_dicts_close(ours, naive.brute_force_metrics(qx, qy, gx, gy, ks=(1, 5, 50, 500),
                                                       precision_ks=(1, 7)))


def test_exact_ties_broken_by_index_and_self_removed_by_index():
    # items 0, 1, 2 are identical; 1 has another class. Item 0's ranking: 1 (tie, lower index)
    # before 2, so recall@1 fails for 0; item 2's ranking starts with 0 (same class): success.
    x = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    y = np.array([0, 1, 0, 2, 2, 1])
    got = ev.retrieval_metrics(x, y, (1, 2), precision_ks=(2,))
    # counted queries: 0 (miss@1, hit@2), 1 (pos = item 5, sim 0, ranked after 0, 2, 3, 4 by
    # index among the zero-similarity items -> rank 5: miss), 2, 3, 4 (hit), 5 (pos = item 1,
    # ranked second among the all-zero similarities: miss@1, hit@2)
    assert got["recall@1"] == pytest.approx(3 / 6)
    assert got["recall@2"] == pytest.approx(5 / 6)
    assert_dicts_close(got, naive.brute_force_metrics(x, y, ks=(1, 2), precision_ks=(2,)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heavy_ties_straddling_the_top_r_boundary(seed):
    # few distinct one-hot vectors -> similarities are exactly 0 or 1 in float32, huge tie groups
    rng = np.random.default_rng(seed)
    n, dim = 70, 4
    x = np.eye(dim, dtype=np.float32)[rng.integers(0, dim, n)]
    y = rng.integers(0, 6, n)
    ks = (1, 2, 3, 5, 30, 100)
    ours = ev.retrieval_metrics(x, y, ks, precision_ks=(1, 4, 9), max_block=500)
    assert_dicts_close(ours, naive.brute_force_metrics(x, y, ks=ks, precision_ks=(1, 4, 9)))
    g = np.eye(dim, dtype=np.float32)[rng.integers(0, dim, 50)]
    gy = rng.integers(0, 6, 50)
    ours = ev.retrieval_metrics(x, y, ks, gallery=(g, gy), precision_ks=(2,))
    assert_dicts_close(ours, naive.brute_force_metrics(x, y, g, gy, ks=ks, precision_ks=(2,)))


@pytest.mark.parametrize("seed", [0, 1])
def test_first_hit_by_counting_beyond_the_top_list(seed, monkeypatch):
    # with a top list of 1, Recall@K comes from counting the items ranked above the first
    # positive (ties by index included) for almost every query
    monkeypatch.setattr(retrieval, "_FIRST_HIT_DEPTH", 1)
    rng = np.random.default_rng(seed)
    ks = (1, 2, 3, 7, 20, 64)
    x = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 80)]
    y = rng.integers(0, 7, 80)
    assert_dicts_close(ev.recall_at_k(x, y, ks, max_block=400),
                       naive.brute_force_metrics(x, y, metrics=("recall",), ks=ks))
    g = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 60)]
    gy = rng.integers(0, 9, 60)
    assert_dicts_close(ev.recall_at_k(x, y, ks, gallery=(g, gy), lone_queries="miss"),
                       naive.brute_force_metrics(x, y, g, gy, metrics=("recall",), ks=ks,
                                                 lone="miss"))
    x, y = clustered(150, 4, 30, 2.0, seed=seed)
    assert_dicts_close(ev.recall_at_k(x, y, ks),
                       naive.brute_force_metrics(x, y, metrics=("recall",), ks=ks))


def test_k_larger_than_database_and_single_class():
    x, y = clustered(12, 3, 3, 2.0, seed=3)
    got = ev.retrieval_metrics(x, y, (1, 11, 1000), precision_ks=(1000,))
    assert got["recall@1000"] == 1.0 == got["recall@11"]
    expected_prec = np.mean([(np.sum(y == y[i]) - 1) / 11 for i in range(12)
                             if np.sum(y == y[i]) > 1])
    assert got["precision@1000"] == pytest.approx(expected_prec)
    one = ev.retrieval_metrics(x, np.zeros(12, int), (1, 4, 100), precision_ks=(5,))
    assert one == {"recall@1": 1.0, "recall@4": 1.0, "recall@100": 1.0, "precision@5": 1.0,
                   "map@r": 1.0, "r_precision": 1.0}


def test_all_singletons_give_nan_or_zero():
    x, _ = clustered(10, 3, 2, 1.0, seed=4)
    y = np.arange(10)
    got = ev.retrieval_metrics(x, y, (1, 5))
    assert all(math.isnan(v) for v in got.values())
    got = ev.retrieval_metrics(x, y, (1, 5), lone_queries="miss")
    assert got["recall@1"] == 0.0 == got["recall@5"] and math.isnan(got["map@r"])


def test_matches_pytorch_metric_learning():
    pytest.importorskip("pytorch_metric_learning")  # a PML comparison skips on its own
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, y = clustered(400, 8, 40, 1.5, seed=5, singletons=6, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    names = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    for avg in (False, True):
        calc = AccuracyCalculator(include=names, k="max_bin_count", avg_of_avgs=avg,
                                  device=torch.device("cpu"))
        ref = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
        ours = ev.retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y), (1,),
                                    average="class" if avg else "query")
        assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
        assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-9)
        assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)
    # query / reference form (In-shop style)
    calc = AccuracyCalculator(include=names, k="max_bin_count", device=torch.device("cpu"))
    ref = calc.get_accuracy(torch.from_numpy(x[:150]), torch.from_numpy(y[:150]),
                            torch.from_numpy(x[150:]), torch.from_numpy(y[150:]))
    ours = ev.retrieval_metrics(x[:150], y[:150], (1,), gallery=(x[150:], y[150:]))
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)


def test_tensor_and_numpy_inputs_agree():
    x, y = clustered(120, 8, 12, 0.8, seed=6, dtype=np.float32)
    a = ev.retrieval_metrics(x, y, (1, 4))
    b = ev.retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y), (1, 4))
    assert a == b


def _half_cases(seed):
    """Embeddings whose rounding to half precision leaves: well separated classes; nearly
    collinear vectors (an offset of norm ~30 plus class residuals of ~0.1: cosines within
    float32 resolution of each other, ranked by the float64 near-tie rule); exact ties (five
    distinct vectors shared by items of all classes: ties broken by database index, though a
    BLAS product may give two copies of one vector cosines an ulp apart, in float64 too)."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.arange(120) % 12
    centres, base = torch.randn(12, 16, generator=g), torch.randn(16, generator=g)
    noise = torch.randn(120, 16, generator=g)
    return {"clustered": (centres[lab] + 0.8 * noise, lab),
            "near ties": (8 * base + 0.02 * centres[lab] + 0.01 * noise, lab),
            "exact ties": (centres[torch.arange(120) % 5], lab)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", ["clustered", "near ties", "exact ties"])
def test_half_input_equals_float64_on_the_rounded_embeddings(case, dtype):
    """Half input is ranked in float32 with float64 near ties (docs/precision.md): Recall@K,
    MAP@R and R-precision equal the float64 ranking of the same rounded embeddings, within
    the measured tolerance, with and without a gallery: the brute-force loop's, or with exact
    ties (whose float64 cosines BLAS may split by an ulp) dmlkit's own float64 ranking."""
    from dmlkit import precision

    for seed in (0, 1):
        x, y = _half_cases(seed)[case]
        xh = x.to(dtype)
        xd = xh.double()
        got = ev.retrieval_metrics(xh, y, (1, 2, 4, 8))
        gal = ev.retrieval_metrics(xh[:40], y[:40], (1, 2, 4, 8), gallery=(xh[40:], y[40:]))
        if case == "exact ties":
            want = ev.retrieval_metrics(xd, y, (1, 2, 4, 8))
            gwant = ev.retrieval_metrics(xd[:40], y[:40], (1, 2, 4, 8), gallery=(xd[40:], y[40:]))
        else:
            want = naive.brute_force_metrics(xd.numpy(), y.numpy())
            gwant = naive.brute_force_metrics(xd[:40].numpy(), y[:40].numpy(), xd[40:].numpy(),
                                              y[40:].numpy())
        for path, ours, ref in (("self", got, want), ("gallery", gal, gwant)):
            assert set(ref) == set(ours) == {"recall@1", "recall@2", "recall@4", "recall@8",
                                             "map@r", "r_precision"}
            for k, v in ref.items():
                tol = precision.tolerance("metric", k, path, dtype, "metric", "fp64")
                assert abs(ours[k] - v) <= tol, (case, seed, path, k, ours[k], v)


def _collinear(seed=0, n=240, d=32, classes=12):
    """A shared offset of norm 6 plus a class residual of norm ~1e-5: float32 cosine
    similarities are then all within a few ulps of 1, float64 ones still separate the classes."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    centres = torch.randn(classes, d, generator=g, dtype=torch.float64)
    lab = torch.arange(n) % classes
    x = 6.0 * base + 2e-6 * centres[lab] + 1e-6 * torch.randn(n, d, generator=g,
                                                               dtype=torch.float64)
    return x.float(), lab


def test_near_ties_in_float32_are_ranked_in_float64():
    x32, lab = _collinear()
    exact = retrieval.retrieval_metrics(x32.double(), lab, ks=(1, 4), precision_ks=(2,))
    rounded = retrieval.retrieval_metrics(x32, lab, ks=(1, 4), precision_ks=(2,),
                                          near_ties="ignore")
    fixed = retrieval.retrieval_metrics(x32, lab, ks=(1, 4), precision_ks=(2,))
    assert exact["recall@1"] > 0.9 and rounded["recall@1"] < 0.5      # rounding decides
    assert fixed == pytest.approx(exact, abs=1e-12)
    # the same with a gallery: every query re-ranked against the float64 gallery
    g_exact = retrieval.retrieval_metrics(x32[:40].double(), lab[:40], ks=(1,),
                                gallery=(x32[40:].double(), lab[40:]))
    g_fixed = retrieval.retrieval_metrics(x32[:40], lab[:40], ks=(1,), gallery=(x32[40:], lab[40:]))
    assert g_fixed == pytest.approx(g_exact, abs=1e-12)


def test_near_ties_warn_names_the_share_and_the_fix():
    x32, lab = _collinear(seed=1)
    with pytest.warns(RuntimeWarning, match=r"100\.0% of the queries .* near_ties='float64'"):
        retrieval.retrieval_metrics(x32, lab, ks=(1,), near_ties="warn")
    with pytest.raises(ValueError, match="near_ties"):
        retrieval.retrieval_metrics(x32, lab, near_ties="sometimes")


def test_only_the_near_tied_queries_are_recomputed():
    # half the set well separated, half nearly collinear: the separated half keeps its float32
    # numbers, which equal float64's anyway
    x32, lab = _collinear(seed=2, n=120, classes=6)
    g = torch.Generator().manual_seed(5)
    far = torch.nn.functional.normalize(torch.randn(6, 32, generator=g), dim=1)
    sep = far[torch.arange(120) % 6] + 0.05 * torch.randn(120, 32, generator=g)
    x = torch.cat([x32, sep])
    y = torch.cat([lab, 100 + torch.arange(120) % 6])
    assert retrieval.retrieval_metrics(x, y, ks=(1, 2)) == pytest.approx(
        retrieval.retrieval_metrics(x.double(), y, ks=(1, 2)), abs=1e-12)
