"""dmlkit.results: the runs CSV, published results, results-vs-papers and metric tables.

Appending to the runs CSV (dmlkit.atomic.append_csv_row) is tested in test_atomic.py."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dmlkit import results

# ----------------------------------------------------------------------------- runs CSV


def test_read_runs_missing_file_is_empty(tmp_path):
    assert results.read_runs(tmp_path / "nope.csv").empty


# ----------------------------------------------------------------------------- papers


def _one_run(dataset="cub200", r1=0.5, mapr=0.2):
    return pd.DataFrame([{"dataset": dataset, "loss": "multi_similarity", "loss_params": "",
                          "backbone": "resnet50", "embedding_dim": 512, "epochs": 3,
                          "iterations": 300, "image_size": 224, "test_recall@1": r1,
                          "test_map@r": mapr, "test_nmi": np.nan}])


def test_published_results_package_data():
    pub = results.published_results()
    assert {"paper", "dataset", "method", "backbone", "embedding_dim", "metric",
            "value"} <= set(pub.columns)
    assert len(pub) > 500
    assert {"CUB-200-2011", "Cars196", "Stanford Online Products", "In-shop"} <= set(pub.dataset)
    assert set(pub["paper"]) <= set(results.PAPER_SETTINGS)


def test_runs_long_converts_to_percent_and_paper_names():
    long = results.runs_long(_one_run())
    assert set(long["metric"]) == {"R@1", "MAP@R"}  # NaN metrics are dropped
    assert long.set_index("metric")["value"].to_dict() == pytest.approx({"R@1": 50.0,
                                                                         "MAP@R": 20.0})
    assert (long["dataset"] == "CUB-200-2011").all()
    assert results.runs_long(pd.DataFrame()).empty


def test_results_vs_papers_side_by_side():
    pub = results.published_results()
    table = results.results_vs_papers(_one_run(), pub, metrics=("R@1", "NMI", "MAP@R"))
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
    only = results.results_vs_papers(None, pub)
    assert (only["paper"] != "dmlkit (this repository)").all()
    assert {"CUB-200-2011", "Cars196"} <= set(only["dataset"])
    ms = results.results_vs_papers(None, pub, datasets=["Cars196"], methods=["MS"])
    assert set(ms["dataset"]) == {"Cars196"} and ms["method"].str.contains("MS").all()


def test_setting_differences_one_row_per_paper():
    pub = results.published_results()
    diff = results.setting_differences(_one_run(), pub)
    assert set(diff["paper"]) == set(pub[pub.dataset == "CUB-200-2011"]["paper"])
    assert diff["same_dataset"].all()
    assert diff["backbone"].str.startswith("resnet50 vs ").all()
    assert diff["iterations"].str.startswith("300 steps (3 epochs) vs").all()
    toy = results.setting_differences(_one_run("glyphs"), pub)
    assert not toy["same_dataset"].any() and len(toy) == len(diff)
    assert results.setting_differences(None, pub).empty


def test_compare_metrics_table():
    t = results.compare_metrics({"a": {"r@1": 0.12345, "map": 0.5}, "b": {"map": 0.25,
                                                                           "nmi": 0.7}})
    assert list(t.index) == ["r@1", "map", "nmi"] and list(t.columns) == ["a", "b"]
    assert t.loc["r@1", "a"] == 0.123 and np.isnan(t.loc["r@1", "b"])
    assert results.compare_metrics({"a": {"x": 0.5}}, percent=True).loc["x", "a"] == 50.0
    with pytest.raises(ValueError):
        results.compare_metrics({})


def test_published_results_resource():
    df = results.published_results()
    t1 = df[df.note.fillna("").str.contains("Table 1") & (df.dataset == "CUB-200-2011")]
    assert len(t1) == 7
    assert float(t1[t1.method == "RAW+VTHM"].value.iloc[0]) == pytest.approx(66.85)
    df.loc[:, "value"] = 0.0  # a copy: the next caller still gets the published numbers
    assert results.published_results()["value"].max() > 0


def _fit_result(dataset, dataset_kwargs=None, image_size=224):
    config = SimpleNamespace(
        dataset=dataset, loss="multi_similarity", loss_params={"beta": 50.0, "alpha": 2.0},
        backbone="small_cnn", pretrained=False, embedding_dim=32, epochs=2,
        iterations_per_epoch=5, P=4, K=2, lr=1e-3, backbone_lr_mult=0.1, image_size=image_size,
        seed=3, device="auto", amp=False, dataset_kwargs=dataset_kwargs)
    return SimpleNamespace(config=config, device="cpu", best_epoch=2,
                           test_metrics={"recall@1": np.float32(0.5), "map@r": 0.25})


def test_run_row_flattens_a_fit_result():
    row = results.run_row(_fit_result("glyphs", {"size": 16}), notebook="09", seconds=12.345,
                          iterations=10, note="x")
    assert row["loss_params"] == "alpha=2.0;beta=50.0"
    assert row["image_size"] == 16  # the generated size, not the crop
    assert row["seconds"] == 12.3 and row["iterations"] == 10 and row["note"] == "x"
    assert row["test_recall@1"] == 0.5 and isinstance(row["test_recall@1"], float)
    assert row["device"] == "cpu" and row["best_epoch"] == 2 and row["notebook"] == "09"
    assert results.run_row(_fit_result("digits"))["image_size"] == 8  # native size
    assert results.run_row(_fit_result("cub200", image_size=227))["image_size"] == 227
    assert results.run_row(_fit_result("glyphs"))["image_size"] == 32


def test_display_name_from_the_dataset_registry():
    assert results.display_name("cub200") == "CUB-200-2011"
    assert results.display_name("sop") == "Stanford Online Products"
    assert results.display_name("not_a_dataset") == "not_a_dataset"
