"""dmlkit.evaluate.evaluate: dispatch of metric names and dataset presets, input validation."""

from __future__ import annotations

import naive
import numpy as np
import pytest
import torch
from embedding_fixtures import assert_dicts_close, clustered, one_thread  # noqa: F401
from sklearn.metrics import normalized_mutual_info_score

from dmlkit import data
from dmlkit import evaluate as ev


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


def test_evaluate_presets_and_flat_row():
    def preset(name):
        return data.dataset_info(name).recall_ks

    assert preset("sop") == (1, 10, 100, 1000)
    assert preset("cub") == preset("cars") == (1, 2, 4, 8, 16, 32)
    assert preset("inshop") == (1, 10, 20, 30, 40, 50)
    x, y = clustered(150, 8, 20, 1.0, seed=17, dtype=np.float32)
    row = ev.evaluate(x, y, preset="cub", seed=3)
    assert list(row) == [f"recall@{k}" for k in preset("cub")] + [
        "map@r", "r_precision", "nmi", "f1"]
    assert_dicts_close(row, ev.retrieval_metrics(x, y, preset("cub")))
    assert_dicts_close(row, ev.clustering_metrics(x, y, seed=3))
    full = ev.evaluate(x, y, metrics=ev.METRICS, ks=(1, 2), vrf_negs=(1, 3), cmc_ranks=(1,))
    assert {"precision@1", "precision@2", "vrf_neg1", "vrf_neg3", "cmc@1", "map"} <= set(full)
    assert full["vrf_neg3"] == ev.verification_accuracy(x, y, 3, seed=0)
    inshop = ev.evaluate(x[:60], y[:60], preset="inshop", gallery=(x[60:], y[60:]))
    assert set(inshop) == {f"recall@{k}" for k in preset("inshop")} | {"map@r", "r_precision"}
    assert ev.evaluate(x, y, metrics="nmi", seed=1) == {
        "nmi": ev.clustering_metrics(x, y, seed=1)["nmi"]}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():  # pragma: no cover - GPU machines only
    x, y = clustered(300, 16, 30, 1.0, seed=7, dtype=np.float32)
    cpu = ev.evaluate(x, y, metrics=("recall", "map@r", "r_precision", "precision"))
    gpu = ev.evaluate(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(),
                      metrics=("recall", "map@r", "r_precision", "precision"))
    assert_dicts_close(gpu, cpu, atol=1e-6)
    # NMI and F1 of the GPU k-means are sklearn's NMI and the naive pair F1 of its assignment
    xc = torch.from_numpy(x).cuda()
    got = ev.clustering_metrics(xc, y)
    clusters = ev.kmeans(torch.nn.functional.normalize(xc, dim=1), 30, 0)
    clusters = np.asarray(clusters.cpu() if torch.is_tensor(clusters) else clusters)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(y, clusters), abs=1e-12)
    assert got["f1"] == pytest.approx(naive.pair_f1(y, clusters), abs=1e-12)
    assert got["nmi"] > 0.5         # and the clusters found the classes


def test_metric_names_dispatch_and_presets_by_dataset_name():
    assert ev.METRICS == ("recall", "precision", "map@r", "r_precision", "nmi", "f1", "vrf",
                          "cmc", "map")
    x, y = clustered(90, 6, 12, 1.0, seed=18, dtype=np.float32)
    # every name alone gives its own keys only, whatever the order asked
    assert list(ev.evaluate(x, y, metrics="precision", ks=(1, 3))) == ["precision@1",
                                                                       "precision@3"]
    assert list(ev.evaluate(x, y, metrics=("map", "r_precision", "f1"))) == [
        "r_precision", "f1", "map"]
    assert list(ev.evaluate(x, y, metrics=("cmc",), cmc_ranks=(1, 2))) == ["cmc@1", "cmc@2"]
    # a preset is any spelling of a dataset name
    assert ev.evaluate(x, y, preset="CUB-200-2011") == ev.evaluate(x, y, preset="cub")
    assert list(ev.evaluate(x, y, preset="glyphs", metrics="recall")) == [
        f"recall@{k}" for k in (1, 2, 4, 8)]
    with pytest.raises(ValueError, match="preset 'in shop clothes' is a query/gallery"):
        ev.evaluate(x, y, preset="in shop clothes")
    # families that work within one set refuse a gallery before computing anything
    with pytest.raises(ValueError, match="nmi / f1 cluster one set"):
        ev.evaluate(x, y, metrics=("recall", "f1"), gallery=(x, y))
    with pytest.raises(ValueError, match="vrf samples pairs within one set"):
        ev.evaluate(x, y, metrics=("vrf",), gallery=(x, y))
