"""dmlkit.evaluate against brute-force numpy, pytorch-metric-learning, sklearn and closed forms."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from dmlkit import evaluate as ev


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- references


def brute_retrieval(q, ql, g=None, gl=None, ks=(1, 2, 4, 8), pks=(), lone="exclude",
                    average="query"):
    """Per-query loop in float64: rank by (similarity desc, index asc), query removed by index."""
    self_mode = g is None
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if self_mode:
        g, gl = q, ql
    else:
        g = np.asarray(g, np.float64)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    rows = {f"recall@{k}": [] for k in ks} | {f"precision@{k}": [] for k in pks}
    rows |= {"map@r": [], "r_precision": []}
    qlab, rlab = [], []
    for i in range(len(q)):
        idx = np.arange(len(g))
        if self_mode:
            idx = idx[idx != i]
        s = g[idx] @ q[i]
        order = np.lexsort((idx, -s))
        rel = gl[idx[order]] == ql[i]
        n_rel = int(rel.sum())
        if n_rel > 0 or lone == "miss":
            qlab.append(ql[i])
            for k in ks:
                rows[f"recall@{k}"].append(float(rel[:k].any()))
            for k in pks:
                rows[f"precision@{k}"].append(rel[:k].sum() / min(k, len(rel)))
        if n_rel > 0:
            rlab.append(ql[i])
            top = rel[:n_rel]
            rows["r_precision"].append(top.sum() / n_rel)
            prec = np.cumsum(top) / np.arange(1, n_rel + 1)
            rows["map@r"].append(float((prec * top).sum() / n_rel))

    def avg(vals, labs):
        vals, labs = np.asarray(vals, float), np.asarray(labs)
        if average == "query":
            return vals.mean()
        return np.mean([vals[labs == c].mean() for c in np.unique(labs)])

    return {k: avg(v, rlab if k in ("map@r", "r_precision") else qlab) for k, v in rows.items()}


def clustered(n, dim, n_classes, spread, seed, singletons=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    labels[:singletons] = n_classes + np.arange(singletons)
    centres = rng.standard_normal((n_classes + singletons, dim))
    x = centres[labels] + spread * rng.standard_normal((n, dim))
    return x.astype(dtype), labels


def recall_only(ref):
    return {k: v for k, v in ref.items() if k.startswith("recall@")}


def assert_dicts_close(ours, ref, atol=1e-12):
    assert set(ref) <= set(ours)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=atol), k


# ----------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("lone", ["exclude", "miss"])
@pytest.mark.parametrize("average", ["query", "class"])
def test_retrieval_matches_brute_force(lone, average):
    x, y = clustered(180, 6, 25, 1.2, seed=1, singletons=4)
    ks, pks = (1, 2, 4, 8, 16), (1, 3, 10)
    ours = ev.retrieval_metrics(x, y, ks, precision_ks=pks, lone_queries=lone, average=average,
                                max_block=1000)  # several chunks
    assert_dicts_close(ours, brute_retrieval(x, y, ks=ks, pks=pks, lone=lone, average=average))


def test_gallery_retrieval_matches_brute_force():
    x, y = clustered(150, 5, 20, 1.0, seed=2)
    gx, gy = clustered(130, 5, 24, 1.0, seed=2)  # same centres; classes 20-23 gallery-only
    qx, qy = x[:90], y[:90]
    ours = ev.retrieval_metrics(qx, qy, (1, 5, 50, 500), gallery=(gx, gy), precision_ks=(1, 7),
                                max_block=700)
    assert_dicts_close(ours, brute_retrieval(qx, qy, gx, gy, ks=(1, 5, 50, 500), pks=(1, 7)))


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
    assert_dicts_close(got, brute_retrieval(x, y, ks=(1, 2), pks=(2,)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heavy_ties_straddling_the_top_r_boundary(seed):
    # few distinct one-hot vectors -> similarities are exactly 0 or 1 in float32, huge tie groups
    rng = np.random.default_rng(seed)
    n, dim = 70, 4
    x = np.eye(dim, dtype=np.float32)[rng.integers(0, dim, n)]
    y = rng.integers(0, 6, n)
    ks = (1, 2, 3, 5, 30, 100)
    ours = ev.retrieval_metrics(x, y, ks, precision_ks=(1, 4, 9), max_block=500)
    assert_dicts_close(ours, brute_retrieval(x, y, ks=ks, pks=(1, 4, 9)))
    g = np.eye(dim, dtype=np.float32)[rng.integers(0, dim, 50)]
    gy = rng.integers(0, 6, 50)
    ours = ev.retrieval_metrics(x, y, ks, gallery=(g, gy), precision_ks=(2,))
    assert_dicts_close(ours, brute_retrieval(x, y, g, gy, ks=ks, pks=(2,)))


@pytest.mark.parametrize("seed", [0, 1])
def test_first_hit_by_counting_beyond_the_top_list(seed, monkeypatch):
    # with a top list of 1, Recall@K comes from counting the items ranked above the first
    # positive (ties by index included) for almost every query
    monkeypatch.setattr(ev, "_FIRST_HIT_DEPTH", 1)
    rng = np.random.default_rng(seed)
    ks = (1, 2, 3, 7, 20, 64)
    x = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 80)]
    y = rng.integers(0, 7, 80)
    assert_dicts_close(ev.recall_at_k(x, y, ks, max_block=400),
                       recall_only(brute_retrieval(x, y, ks=ks)))
    g = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 60)]
    gy = rng.integers(0, 9, 60)
    assert_dicts_close(ev.recall_at_k(x, y, ks, gallery=(g, gy), lone_queries="miss"),
                       recall_only(brute_retrieval(x, y, g, gy, ks=ks, lone="miss")))
    x, y = clustered(150, 4, 30, 2.0, seed=seed)
    assert_dicts_close(ev.recall_at_k(x, y, ks), recall_only(brute_retrieval(x, y, ks=ks)))


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


def test_tensor_numpy_and_half_inputs_agree():
    x, y = clustered(120, 8, 12, 0.8, seed=6, dtype=np.float32)
    a = ev.retrieval_metrics(x, y, (1, 4))
    b = ev.retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y), (1, 4))
    assert a == b
    c = ev.retrieval_metrics(torch.from_numpy(x).half(), y, (1, 4))
    assert c["recall@4"] == pytest.approx(a["recall@4"], abs=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():  # pragma: no cover - GPU machines only
    x, y = clustered(300, 16, 30, 1.0, seed=7, dtype=np.float32)
    cpu = ev.evaluate(x, y, metrics=("recall", "map@r", "r_precision", "precision"))
    gpu = ev.evaluate(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(),
                      metrics=("recall", "map@r", "r_precision", "precision"))
    assert_dicts_close(gpu, cpu, atol=1e-6)
    assert ev.clustering_metrics(torch.from_numpy(x).cuda(), y)["nmi"] > 0.5


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error():
    x, y = clustered(20, 4, 3, 1.0, seed=8)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ev.retrieval_metrics(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        ev.clustering_metrics(bad, y)
    with pytest.raises(ValueError, match="length"):
        ev.retrieval_metrics(x, y[:-1])
    with pytest.raises(ValueError, match="length"):
        ev.pair_f1(y, y[:-1])
    with pytest.raises(ValueError, match="length"):
        ev.retrieval_metrics(x, y, gallery=(x, y[:-2]))
    with pytest.raises(ValueError, match="dimension"):
        ev.retrieval_metrics(x, y, gallery=(x[:, :2], y))
    with pytest.raises(ValueError, match="'sop'"):
        ev.evaluate(x, y, preset="SOP!")
    with pytest.raises(ValueError, match="'nmi'"):
        ev.evaluate(x, y, metrics=("recall", "accuracy"))
    with pytest.raises(ValueError, match="positive"):
        ev.retrieval_metrics(x, y, ks=(0, 1))
    with pytest.raises(ValueError, match="gallery"):
        ev.evaluate(x, y, preset="inshop")
    with pytest.raises(ValueError, match="integers"):
        ev.retrieval_metrics(x, y.astype(float))


# ----------------------------------------------------------------------------- clustering


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


def direct_pair_f1(y, c):
    tp = fp = fn = 0
    for i, j in combinations(range(len(y)), 2):
        same_c, same_k = y[i] == y[j], c[i] == c[j]
        tp += same_c and same_k
        fp += same_k and not same_c
        fn += same_c and not same_k
    p, r = tp / (tp + fp), tp / (tp + fn)
    return 2 * p * r / (p + r)


def test_pair_f1_matches_direct_pair_loop():
    rng = np.random.default_rng(10)
    for n, a, b in [(120, 10, 12), (80, 3, 20), (60, 15, 4)]:
        y, c = rng.integers(0, a, n), rng.integers(0, b, n)
        assert ev.pair_f1(y, c) == pytest.approx(direct_pair_f1(y, c), abs=1e-12)
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
    assert got["f1"] == pytest.approx(direct_pair_f1(y, c), abs=1e-12)
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


# ----------------------------------------------------------------------------- VRF, re-ID


def exact_expected_vrf(x, y, neg):
    """E[VRF]: per anchor, mean over positives of C(#neg below s_ap, neg) / C(#neg, neg)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    per_anchor = []
    for a in range(len(y)):
        pos = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        negs = np.nonzero(y != y[a])[0]
        if not pos or len(negs) < neg:
            continue
        per_anchor.append(np.mean([math.comb(int((s[a, negs] < s[a, p]).sum()), neg)
                                   / math.comb(len(negs), neg) for p in pos]))
    return float(np.mean(per_anchor))


@pytest.mark.parametrize("neg", [1, 5])
def test_verification_accuracy_matches_its_expectation(neg):
    x, y = clustered(40, 3, 4, 1.5, seed=14)
    trials = 400
    got = ev.verification_accuracy(x, y, neg=neg, seed=0, n_trials=trials)
    expected = exact_expected_vrf(x, y, neg)
    stderr = math.sqrt(expected * (1 - expected) / (40 * trials))
    assert abs(got - expected) < 5 * stderr + 1e-9
    assert got == ev.verification_accuracy(x, y, neg=neg, seed=0, n_trials=trials)
    sep, ys = clustered(60, 8, 6, 0.01, seed=15)
    assert ev.verification_accuracy(sep, ys, neg=40) == 1.0


def brute_reid(q, ql, g, gl, qc, gc, ranks):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    cmc, aps = {k: [] for k in ranks}, []
    for i in range(len(q)):
        keep = ~((gl == ql[i]) & (gc == qc[i]))
        idx = np.nonzero(keep)[0]
        s = g[idx] @ q[i]
        rel = gl[idx[np.lexsort((idx, -s))]] == ql[i]
        if not rel.any():
            continue
        first = np.argmax(rel)
        for k in ranks:
            cmc[k].append(first < k)
        hits = np.nonzero(rel)[0]
        aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
    return {f"cmc@{k}": np.mean(v) for k, v in cmc.items()} | {"map": np.mean(aps)}


def test_reid_metrics_match_brute_force():
    x, y = clustered(160, 6, 15, 1.2, seed=16)
    cams = np.random.default_rng(99).integers(0, 3, 160)  # independent of the labels
    q, ql, qc, g, gl, gc = x[:50], y[:50], cams[:50], x[50:], y[50:], cams[50:]
    got = ev.reid_metrics(q, ql, (g, gl), (1, 5, 20), query_cams=qc, gallery_cams=gc,
                          max_block=300)
    assert_dicts_close(got, brute_reid(q, ql, g, gl, qc, gc, (1, 5, 20)))
    # without cameras, CMC@k is Recall@k of the same query / gallery split
    plain = ev.reid_metrics(q, ql, (g, gl), (1, 5, 20))
    rec = ev.retrieval_metrics(q, ql, (1, 5, 20), gallery=(g, gl))
    for k in (1, 5, 20):
        assert plain[f"cmc@{k}"] == pytest.approx(rec[f"recall@{k}"])
    no_cam = np.arange(160)  # distinct cameras: no junk removed
    assert_dicts_close(plain, brute_reid(q, ql, g, gl, no_cam[:50], no_cam[50:], (1, 5, 20)))


# ----------------------------------------------------------------------------- evaluate()


def test_evaluate_presets_and_flat_row():
    assert ev.PRESETS["sop"] == (1, 10, 100, 1000)
    assert ev.PRESETS["cub"] == ev.PRESETS["cars"] == (1, 2, 4, 8, 16, 32)
    assert ev.PRESETS["inshop"] == (1, 10, 20, 30, 40, 50)
    x, y = clustered(150, 8, 20, 1.0, seed=17, dtype=np.float32)
    row = ev.evaluate(x, y, preset="cub", seed=3)
    assert list(row) == [f"recall@{k}" for k in ev.PRESETS["cub"]] + [
        "map@r", "r_precision", "nmi", "f1"]
    assert_dicts_close(row, ev.retrieval_metrics(x, y, ev.PRESETS["cub"]))
    assert_dicts_close(row, ev.clustering_metrics(x, y, seed=3))
    full = ev.evaluate(x, y, metrics=ev.METRICS, ks=(1, 2), vrf_negs=(1, 3), cmc_ranks=(1,))
    assert {"precision@1", "precision@2", "vrf_neg1", "vrf_neg3", "cmc@1", "map"} <= set(full)
    assert full["vrf_neg3"] == ev.verification_accuracy(x, y, 3, seed=0)
    inshop = ev.evaluate(x[:60], y[:60], preset="inshop", gallery=(x[60:], y[60:]))
    assert set(inshop) == {f"recall@{k}" for k in ev.PRESETS["inshop"]} | {"map@r", "r_precision"}
    assert ev.evaluate(x, y, metrics="nmi", seed=1) == {
        "nmi": ev.clustering_metrics(x, y, seed=1)["nmi"]}


def test_embed_runs_the_model_in_eval_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Dropout(0.5))
    model.train()
    data = torch.randn(23, 5)
    labels = torch.arange(23) % 4
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, labels),
                                         batch_size=8)
    emb, lab = ev.embed(model, loader, "cpu")
    assert model.training
    assert emb.dtype == np.float32 and lab.dtype == np.int64 and emb.shape == (23, 4)
    with torch.no_grad():
        expected = model[0](data).numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-6)
    np.testing.assert_array_equal(lab, labels.numpy())
