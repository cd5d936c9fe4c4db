"""dmlkit.reporting: the runs CSV, the results-vs-papers tables, galleries, sweeps, hardness."""

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from dmlkit import evaluate, reporting

# ----------------------------------------------------------------------------- runs CSV


def test_append_csv_row_creates_appends_and_unites_columns(tmp_path):
    path = tmp_path / "sub" / "runs.csv"
    t1 = reporting.append_csv_row(path, {"dataset": "glyphs", "test_recall@1": 0.5, "seed": 0})
    assert len(t1) == 1 and path.exists()
    t2 = reporting.append_csv_row(path, {"dataset": "cub200", "test_map@r": 0.25, "seed": 1})
    back = pd.read_csv(path)
    assert list(back.columns) == ["dataset", "test_recall@1", "seed", "test_map@r"]
    assert back["dataset"].tolist() == ["glyphs", "cub200"]
    assert back["test_recall@1"].iloc[0] == 0.5 and np.isnan(back["test_recall@1"].iloc[1])
    assert np.isnan(back["test_map@r"].iloc[0]) and back["test_map@r"].iloc[1] == 0.25
    assert back["seed"].tolist() == [0, 1]
    pd.testing.assert_frame_equal(t2, back, check_dtype=False)
    # nothing but the CSV and its lock file is left in the folder
    assert sorted(p.name for p in path.parent.iterdir()) == ["runs.csv", "runs.csv.lock"]


def test_append_csv_row_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    reporting.append_csv_row(path, {"a": 1})
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(reporting.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        reporting.append_csv_row(path, {"a": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv", "runs.csv.lock"]


def test_append_csv_row_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "runs.csv"

    def worker(w):
        for i in range(5):
            reporting.append_csv_row(path, {"worker": w, "i": i})

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    back = pd.read_csv(path)
    assert len(back) == 30
    assert sorted(zip(back["worker"], back["i"])) == [(w, i) for w in range(6) for i in range(5)]


def test_append_csv_row_rejects_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        reporting.append_csv_row(tmp_path / "r.csv", {})
    with pytest.raises(ValueError, match="scalar"):
        reporting.append_csv_row(tmp_path / "r.csv", {"metrics": {"r@1": 1.0}})
    assert not (tmp_path / "r.csv").exists()


def test_read_runs_missing_file_is_empty(tmp_path):
    assert reporting.read_runs(tmp_path / "nope.csv").empty


# ----------------------------------------------------------------------------- papers


def _one_run(dataset="cub200", r1=0.5, mapr=0.2):
    return pd.DataFrame([{"dataset": dataset, "loss": "multi_similarity", "loss_params": "",
                          "backbone": "resnet50", "embedding_dim": 512, "epochs": 3,
                          "iterations": 300, "image_size": 224, "test_recall@1": r1,
                          "test_map@r": mapr, "test_nmi": np.nan}])


def test_published_results_package_data():
    pub = reporting.published_results()
    assert {"paper", "dataset", "method", "backbone", "embedding_dim", "metric",
            "value"} <= set(pub.columns)
    assert len(pub) > 500
    assert {"CUB-200-2011", "Cars196", "Stanford Online Products", "In-shop"} <= set(pub.dataset)
    assert set(pub["paper"]) <= set(reporting.PAPER_SETTINGS)


def test_runs_long_converts_to_percent_and_paper_names():
    long = reporting.runs_long(_one_run())
    assert set(long["metric"]) == {"R@1", "MAP@R"}  # NaN metrics are dropped
    assert long.set_index("metric")["value"].to_dict() == pytest.approx({"R@1": 50.0,
                                                                         "MAP@R": 20.0})
    assert (long["dataset"] == "CUB-200-2011").all()
    assert reporting.runs_long(pd.DataFrame()).empty


def test_results_vs_papers_side_by_side():
    pub = reporting.published_results()
    table = reporting.results_vs_papers(_one_run(), pub, metrics=("R@1", "NMI", "MAP@R"))
    assert set(table["dataset"]) == {"CUB-200-2011"}
    assert table.iloc[0]["paper"] == "dmlkit (this repository)"  # ours first
    assert table.iloc[0]["R@1"] == pytest.approx(50.0)
    assert table.iloc[0]["MAP@R"] == pytest.approx(20.0)
    # every paper cell equals the published number it came from
    papers = table.iloc[1:]
    assert len(papers) > 10
    for _, row in papers.sample(10, random_state=0).iterrows():
        for metric in ("R@1", "NMI", "MAP@R"):
            if pd.isna(row[metric]):
                continue
            src = pub[(pub.dataset == row.dataset) & (pub.paper == row.paper)
                      & (pub.method == row.method) & (pub.metric == metric)
                      & (pub.backbone.fillna("").astype(str) == row.backbone)
                      & (pub.embedding_dim.fillna("").astype(str) == row.embedding_dim)]
            assert row[metric] == pytest.approx(float(src["value"].iloc[0]))
    # no runs: the papers alone, all data sets
    only = reporting.results_vs_papers(None, pub)
    assert (only["paper"] != "dmlkit (this repository)").all()
    assert {"CUB-200-2011", "Cars196"} <= set(only["dataset"])
    ms = reporting.results_vs_papers(None, pub, datasets=["Cars196"], methods=["MS"])
    assert set(ms["dataset"]) == {"Cars196"} and ms["method"].str.contains("MS").all()


def test_setting_differences_one_row_per_paper():
    pub = reporting.published_results()
    diff = reporting.setting_differences(_one_run(), pub)
    assert set(diff["paper"]) == set(pub[pub.dataset == "CUB-200-2011"]["paper"])
    assert diff["same_dataset"].all()
    assert diff["backbone"].str.startswith("resnet50 vs ").all()
    assert diff["iterations"].str.startswith("300 steps (3 epochs) vs").all()
    toy = reporting.setting_differences(_one_run("glyphs"), pub)
    assert not toy["same_dataset"].any() and len(toy) == len(diff)
    assert reporting.setting_differences(None, pub).empty


def test_compare_metrics_table():
    t = reporting.compare_metrics({"a": {"r@1": 0.12345, "map": 0.5}, "b": {"map": 0.25,
                                                                           "nmi": 0.7}})
    assert list(t.index) == ["r@1", "map", "nmi"] and list(t.columns) == ["a", "b"]
    assert t.loc["r@1", "a"] == 0.123 and np.isnan(t.loc["r@1", "b"])
    assert reporting.compare_metrics({"a": {"x": 0.5}}, percent=True).loc["x", "a"] == 50.0
    with pytest.raises(ValueError):
        reporting.compare_metrics({})


def test_parse_loss_spec():
    assert reporting.parse_loss_spec("triplet") == ("metric", "triplet")
    assert reporting.parse_loss_spec("daml:npair") == ("daml", "npair")
    assert reporting.parse_loss_spec("daml+sp:triplet") == ("daml+sp", "triplet")
    with pytest.raises(ValueError, match="known"):
        reporting.parse_loss_spec("gan:triplet")
    with pytest.raises(ValueError, match="multi_similarity"):
        reporting.parse_loss_spec("not_a_loss")


# ----------------------------------------------------------------------------- gallery


def test_retrieval_gallery_matches_brute_force_and_recall():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    x[7] = x[3]  # an exact tie: index order decides
    y = rng.integers(0, 5, 40)
    g = reporting.retrieval_gallery(x, y, queries=np.arange(40), k=4)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    for q in range(40):
        sims = [(-float(u[q] @ u[j]), j) for j in range(40) if j != q]
        expected = [j for _, j in sorted(sims)[:4]]
        assert g.neighbours[q].tolist() == expected
        assert g.correct[q].tolist() == [bool(y[j] == y[q]) for j in expected]
    assert g.neighbours[3, 0] == 7 and g.neighbours[7, 0] == 3
    # first column = Recall@1 of dmlkit.evaluate (every query has a positive here)
    counts = np.bincount(y)
    has_pos = counts[y] > 1
    r1 = evaluate.recall_at_k(x, y, ks=(1,))["recall@1"]
    assert g.correct[has_pos, 0].mean() == pytest.approx(r1)
    sub = reporting.retrieval_gallery(x, y, queries=3, k=2, seed=1)
    assert sub.query.shape == (3,) and len(set(sub.query)) == 3
    with pytest.raises(ValueError):
        reporting.retrieval_gallery(x, y, k=40)


def test_gallery_and_grid_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = torch.rand(12, 1, 8, 8)
    y = np.repeat(np.arange(4), 3)
    g = reporting.retrieval_gallery(imgs.reshape(12, -1), y, queries=2, k=3)
    fig = reporting.plot_retrieval_gallery(imgs, g)
    assert len(fig.axes) == 2 * 4
    # border colours: green for correct, red for wrong
    from dmlkit.plotting import NEG_COLOR, POS_COLOR

    for r in range(2):
        for j in range(3):
            edge = fig.axes[r * 4 + 1 + j].spines["top"].get_edgecolor()
            want = POS_COLOR if g.correct[r, j] else NEG_COLOR
            assert matplotlib.colors.to_hex(edge) == want
    fig2 = reporting.plot_image_grid(imgs, y, classes=3, per_class=2)
    assert len(fig2.axes) == 6
    plt.close("all")


# ----------------------------------------------------------------------------- sweeps


def test_multimodal_clusters_and_sweep():
    x, y = reporting.multimodal_clusters(5, 6, 8, modes=2, mode_spread=0.0, noise=0.0, seed=3)
    assert x.shape == (30, 8) and x.dtype == np.float32 and np.bincount(y).tolist() == [6] * 5
    # no spread, no noise: every point of a class is its centre
    for c in range(5):
        assert np.allclose(x[y == c], x[y == c][0])
    x2, _ = reporting.multimodal_clusters(5, 6, 8, modes=2, mode_spread=0.0, noise=0.0, seed=3)
    assert np.array_equal(x, x2)
    df = reporting.metric_sweep([0.0, 3.0], lambda s: reporting.multimodal_clusters(
        10, 9, 16, modes=3, mode_spread=s, noise=0.05, seed=0), ks=(1, 2), name="spread")
    assert df["spread"].tolist() == [0.0, 3.0]
    assert (df["recall@1"] <= df["recall@2"]).all()
    # the saturation the notebook shows: R@1 stays ~1 while MAP@R drops
    assert df["recall@1"].min() > 0.95
    assert df["map@r"].iloc[0] > 0.99 and df["map@r"].iloc[1] < 0.6
    x3, y3 = reporting.multimodal_clusters(10, 9, 16, modes=3, mode_spread=3.0, noise=0.05)
    direct = evaluate.evaluate(x3, y3, metrics=["map@r"], ks=(1,))["map@r"]
    assert df["map@r"].iloc[1] == pytest.approx(direct)


# ----------------------------------------------------------------------------- hardness


def test_hardness_summary_against_manual():
    rng = np.random.default_rng(0)
    n = 50
    frame = pd.DataFrame({"epoch": np.repeat([3, 4], 25), "d_ap": rng.uniform(0, 1, n),
                          "d_an": rng.uniform(0, 2, n), "d_asyn": rng.uniform(0, 2, n),
                          "margin": 0.2})
    s = reporting.hardness_summary(frame)
    assert s["epoch"].tolist() == [3, 4]
    for _, row in s.iterrows():
        f = frame[frame.epoch == row.epoch]
        assert row["n"] == 25
        assert row["d_asyn"] == pytest.approx(f.d_asyn.mean())
        assert row["harder"] == pytest.approx(np.mean(f.d_asyn < f.d_an))
        assert row["violating_real"] == pytest.approx(np.mean(f.d_an < f.d_ap + 0.2))
        assert row["violating_synthetic"] == pytest.approx(np.mean(f.d_asyn < f.d_ap + 0.2))
    total = reporting.hardness_summary(frame, by=None)
    assert len(total) == 1 and total["d_an"].iloc[0] == pytest.approx(frame.d_an.mean())
    with pytest.raises(ValueError, match="d_asyn"):
        reporting.hardness_summary(frame.drop(columns="d_asyn"))


def test_load_features_pixels_standardised():
    (xtr, ytr), (xte, yte) = reporting.load_features("digits", "pixels")
    assert xtr.shape[1] == 64 and xte.shape[1] == 64
    assert len(ytr) == xtr.shape[0] and len(yte) == xte.shape[0]
    assert torch.allclose(xtr.norm(dim=1), torch.ones(len(xtr)), atol=1e-5)
    raw = reporting.load_features("digits", "pixels", standardize=False)
    assert raw[0][0].max() <= 1.0 and raw[0][0].min() >= 0.0
    with pytest.raises(ValueError, match="pixels"):
        reporting.load_features("digits", "sift")
