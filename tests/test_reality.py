"""dmlkit.reality: class-disjoint folds, search spaces, the seeded Optuna study, the retraining of
the best trial, the paired comparison, the papers' ordering, the saved run and the errors."""

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from dmlkit import losses, paired, reality, results, tasks
from dmlkit.train import train_embedding

TINY = reality.Protocol(steps=3, P=4, K=2, folds=2, trials=3, seeds=(0, 1), embedding_dim=8,
                        width=4)


@pytest.fixture(scope="module")
def task():
    return tasks.image_task("glyphs", num_classes=10, num_test_classes=4, images_per_class=4,
                            size=12)


@pytest.fixture(scope="module")
def check(task):
    return reality.run(task, ["triplet", "proxy_anchor"], TINY)


# ------------------------------------------------------------------------------ folds


@pytest.mark.parametrize("n_classes, folds", [(10, 3), (6, 3), (5, 2), (12, 4)])
def test_folds_are_class_disjoint_and_cover_the_training_classes(n_classes, folds):
    labels = np.repeat(np.arange(n_classes), 3)
    parts = reality.class_folds(labels, folds, seed=1)
    assert len(parts) == folds
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n_classes))      # cover, no class twice
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert min(map(len, parts)) >= 2
    assert [p.tolist() for p in parts] == [p.tolist() for p in reality.class_folds(labels, folds,
                                                                                    seed=1)]


def test_fold_tasks_split_the_training_images_only(task):
    folds = reality.fold_tasks(task, folds=3, seed=0)
    val_classes = reality.class_folds(task.y, 3, seed=0)
    rows = {tuple(x.flatten().tolist()): int(c) for x, c in zip(task.X, task.y)}
    seen_val = []
    for fold, val in zip(folds, val_classes):
        assert len(fold.y) + len(fold.y_test) == len(task.y)
        # every image of the fold is a training image; its original class is where it belongs
        train_cls = {rows[tuple(x.flatten().tolist())] for x in fold.X}
        held_cls = {rows[tuple(x.flatten().tolist())] for x in fold.X_test}
        assert held_cls == set(val.tolist())
        assert train_cls == set(range(task.num_classes)) - held_cls
        assert sorted(torch.unique(fold.y).tolist()) == list(range(len(train_cls)))
        assert sorted(torch.unique(fold.y_test).tolist()) == list(range(len(held_cls)))
        seen_val += sorted(held_cls)
    assert sorted(seen_val) == list(range(task.num_classes))


def test_tuning_never_looks_at_the_test_classes(task):
    """Test images replaced by NaN: every trial's validation scores stay finite."""
    blind = tasks.ImageTask(task.X, task.y, torch.full_like(task.X_test, float("nan")),
                            task.y_test, name="blind")
    trials = reality.trials_frame(reality.tune(blind, "triplet", TINY), "triplet")
    assert not trials["diverged"].any()
    assert all(math.isfinite(v) for f in trials["fold_values"] for v in json.loads(f))


def test_batch_shape_keeps_the_batch_size_for_few_classes():
    assert reality.batch_shape(20, 8, 4) == (8, 4)
    P, K = reality.batch_shape(5, 8, 4)
    assert (P, K) == (5, 7) and P * K >= 32
    assert TINY.train_kwargs(3)["P"] == 3


# ------------------------------------------------------------------------------ spaces


@pytest.mark.parametrize("loss", reality.DEFAULT_LOSSES)
def test_search_spaces_name_real_parameters_and_hold_the_defaults(loss):
    space = reality.search_space(loss)
    assert space and set(space) <= set(losses.parameters(loss))
    defaults = reality.paper_defaults(loss)
    for name, r in space.items():
        assert r.low < r.high and (r.low > 0 or not r.log)
        assert r.low <= defaults[name] <= r.high, (loss, name, defaults[name], r)


def test_suggested_settings_respect_the_bounds():
    optuna = reality.require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for loss in reality.DEFAULT_LOSSES:
        space = reality.search_space(loss)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t, loss=loss: sum(reality.suggest(t, loss).values()), n_trials=60)
        values = pd.DataFrame([t.params for t in study.trials])
        for name, r in space.items():
            assert values[name].between(r.low, r.high).all(), (loss, name)
            # the draws spread over the range (log-uniform: over its decades)
            lo, hi = (np.log(r.low), np.log(r.high)) if r.log else (r.low, r.high)
            v = np.log(values[name]) if r.log else values[name]
            assert v.min() < lo + 0.25 * (hi - lo) and v.max() > hi - 0.25 * (hi - lo)


# ------------------------------------------------------------------------------ the study


def test_the_study_is_seeded_and_starts_from_the_papers_defaults(task):
    a = reality.trials_frame(reality.tune(task, "multi_similarity", TINY), "multi_similarity")
    b = reality.trials_frame(reality.tune(task, "multi_similarity", TINY), "multi_similarity")
    pd.testing.assert_frame_equal(a, b)
    assert json.loads(a["params"].iloc[0]) == {"alpha": 2.0, "beta": 50.0, "lam": 0.5,
                                                "epsilon": 0.1}
    assert len(a) == TINY.trials and len(json.loads(a["fold_values"].iloc[0])) == TINY.folds
    # a trial's value is the mean of its folds' validation scores
    for row in a.to_dict(orient="records"):
        assert row["value"] == pytest.approx(np.mean(json.loads(row["fold_values"])))


def test_the_best_trial_is_what_is_retrained(task, check):
    assert list(check.frame["loss"].unique()) == ["triplet", "proxy_anchor"]
    for loss in ("triplet", "proxy_anchor"):
        trials = check.trials[check.trials["loss"] == loss]
        best = trials.loc[trials["value"].idxmax()]
        rows = check.frame[check.frame["loss"] == loss]
        assert list(rows["seed"]) == list(TINY.seeds)
        assert set(rows["params"]) == {best["params"]}
        assert check.best[loss] == json.loads(best["params"])
        assert check.config["best_params"][loss] == json.loads(best["params"])
        assert rows["validation"].eq(best["value"]).all()
        # the retrained rows are train_embedding of that setting on all training classes
        run = train_embedding(task, loss, loss_params=json.loads(best["params"]), seed=1,
                              **TINY.train_kwargs(task.num_classes))
        got = rows[rows["seed"] == 1].iloc[0]
        assert got["map@r"] == pytest.approx(run.scores["map@r"])
        assert got["recall@1"] == pytest.approx(run.scores["recall@1"])
    assert check.config["protocol"]["seeds"] == [0, 1]
    assert check.config["train_classes"] == 10 and check.config["test_classes"] == 4


# ------------------------------------------------------------------------------ comparisons


def test_the_paired_table_is_paired_differences(check):
    table = reality.compare(check.frame, baseline="triplet")
    by_hand = paired.paired_differences(check.frame, baseline="triplet",
                                        metrics=["map@r", "recall@1"], run="loss", scale=100)
    pd.testing.assert_frame_equal(table, by_hand)
    f = check.frame.set_index(["loss", "seed"])
    d = 100 * (f.loc["proxy_anchor", "map@r"] - f.loc["triplet", "map@r"]).to_numpy()
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    row = table[(table["run"] == "proxy_anchor") & (table["metric"] == "map@r")].iloc[0]
    assert row["diff"] == pytest.approx(d.mean())
    assert (row["low"], row["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert row["n"] == 2


def test_summary_is_the_mean_with_its_t_interval():
    frame = pd.DataFrame({"loss": ["a"] * 5 + ["b"] * 5, "seed": list(range(5)) * 2,
                          "map@r": [0.1, 0.2, 0.3, 0.2, 0.2, 0.5, 0.5, 0.5, 0.5, 0.5],
                          "recall@1": [0.4] * 10})
    s = reality.summarize(frame)
    v = np.array([10.0, 20, 30, 20, 20])
    half = stats.t.ppf(0.975, 4) * v.std(ddof=1) / math.sqrt(5)
    assert s.loc["a", "map@r"] == pytest.approx(20.0)
    assert (s.loc["a", "map@r_low"], s.loc["a", "map@r_high"]) == pytest.approx(
        (20 - half, 20 + half))
    assert (s.loc["b", "map@r_low"], s.loc["b", "map@r_high"]) == pytest.approx((50.0, 50.0))
    assert list(s.index) == ["a", "b"] and s["n"].tolist() == [5, 5]


def test_the_papers_ordering_is_read_from_published_results():
    claims = reality.claimed_ordering()
    pub = results.published_results()
    ms = pub[(pub.paper.str.startswith("Wang et al. 2019b")) & (pub.method == "RAW+VTHM")
             & (pub.dataset == "CUB-200-2011") & (pub.metric == "R@1")]["value"].iloc[0]
    assert claims.loc["multi_similarity", "claimed R@1"] == ms
    assert claims.loc["contrastive", "claimed R@1"] == 26.4
    assert claims.loc["npair", "claimed R@1"] == 50.96
    assert math.isnan(claims.loc["proxy_anchor", "claimed R@1"])
    assert claims.loc["multi_similarity", "claimed rank"] == 1
    assert claims.loc["contrastive", "claimed rank"] == 7
    assert claims.loc["triplet", "Musgrave et al. 2020 MAP@R"] == 18.75
    frame = pd.DataFrame({"loss": ["contrastive"] * 2 + ["triplet"] * 2, "seed": [0, 1] * 2,
                          "map@r": [0.3, 0.32, 0.2, 0.22], "recall@1": [0.5] * 4})
    both = reality.orderings(frame)
    assert both.loc["contrastive", "our rank"] == 1 and both.loc["triplet", "our rank"] == 2
    assert both.loc["contrastive", "our MAP@R"] == pytest.approx(31.0)


def test_claim_pairs_hold_each_claimed_ordering_against_the_paired_interval():
    rng = np.random.default_rng(0)
    base = rng.normal(0.3, 0.02, 5)
    values = {"contrastive": base + 0.10,            # claimed last (26.4): reversed vs triplet
              "triplet": base,                       # claimed 36.1
              "multi_similarity": base + rng.normal(0, 0.05, 5),   # claimed first (66.85)
              "proxy_anchor": base}                  # no claimed number: left out
    frame = pd.DataFrame([{"loss": k, "seed": i, "map@r": v[i], "recall@1": 0.5}
                          for k, v in values.items() for i in range(5)])
    pairs = reality.claim_pairs(frame).set_index(["winner", "loser"])
    assert set(pairs.index) == {("triplet", "contrastive"), ("multi_similarity", "contrastive"),
                                ("multi_similarity", "triplet")}
    row = pairs.loc[("triplet", "contrastive")]
    assert row["claimed difference"] == pytest.approx(36.1 - 26.4)
    assert row["our difference"] == pytest.approx(-10.0)
    assert row["verdict"] == "worse" and row["agreement"] == "reversed"
    for (win, lose), r in pairs.iterrows():
        by_hand = paired.paired_differences(frame, baseline=lose, runs=[win], metrics=["map@r"],
                                            run="loss", scale=100).iloc[0]
        assert (r["low"], r["high"], r["verdict"]) == (by_hand["low"], by_hand["high"],
                                                       by_hand["verdict"])
        assert r["agreement"] == {"better": "as claimed", "worse": "reversed"}.get(
            r["verdict"], "within the noise")
    sentence = reality.claim_sentence(pairs.reset_index())
    assert sentence.startswith("Of the 3 orderings of two losses")
    counts = pairs["agreement"].value_counts()
    assert (f"n = 5 seeds) shows {counts.get('as claimed', 0)} as claimed, "
            f"{counts['reversed']} reversed and {counts.get('within the noise', 0)} within the "
            "noise") in sentence


def test_save_and_load_round_trip(check, tmp_path):
    csv, js = reality.save(check, tmp_path / "rc.csv", command="test")
    frame, config = reality.load_saved(csv)
    assert js.name == "rc.json" and config["command"] == "test"
    assert config["best_params"] == check.config["best_params"]
    assert frame[["loss", "seed", "params"]].equals(check.frame[["loss", "seed", "params"]])
    assert frame["map@r"].to_numpy() == pytest.approx(check.frame["map@r"].to_numpy(), rel=1e-5)


@pytest.mark.parametrize("dataset", sorted(reality.SAVED_RUNS))
def test_the_saved_run_is_a_fair_comparison(dataset):
    """The package's saved runs (glyphs, Fashion-MNIST): every default loss, >= 5 seeds each
    (the same seeds), the retrained setting of each loss is its best validation setting, within
    its search space; the data set and the Optuna version that made it are recorded."""
    frame, config = reality.load_saved(dataset=dataset)
    assert config["dataset"]["name"] == dataset and config["versions"]["optuna"]
    assert list(dict.fromkeys(frame["loss"])) == list(reality.DEFAULT_LOSSES)
    seeds = frame.groupby("loss")["seed"].apply(sorted)
    assert all(s == seeds.iloc[0] for s in seeds) and len(seeds.iloc[0]) >= 5
    assert config["protocol"]["seeds"] == seeds.iloc[0]
    for loss, part in frame.groupby("loss"):
        (params,) = set(part["params"])
        assert json.loads(params) == config["best_params"][loss]
        for name, (low, high, _) in config["search_spaces"][loss].items():
            assert low <= json.loads(params)[name] <= high
    assert frame[["map@r", "recall@1"]].notna().all().all()


# ------------------------------------------------------------------------------ errors


def test_errors_are_clear(task, monkeypatch):
    with pytest.raises(ValueError, match=r"no saved run on 'digits'; saved: \['fashion_mnist'"):
        reality.load_saved(dataset="digits")
    with pytest.raises(ValueError, match=r"unknown loss 'tripple'.*contrastive"):
        reality.run(task, ["tripple"], TINY)
    with pytest.raises(ValueError, match="no search space for loss 'angular'"):
        reality.search_space("angular")
    with pytest.raises(ValueError, match=r"6 training classes .* the task has 5: use folds <= 2"):
        reality.class_folds(np.repeat(np.arange(5), 2), folds=3)
    small = tasks.image_task("glyphs", num_classes=5, num_test_classes=2, images_per_class=3,
                             size=12)
    with pytest.raises(ValueError, match="need at least 6 training classes"):
        reality.run(small, ["triplet"], reality.Protocol(folds=3))
    with pytest.raises(ValueError, match="folds must be >= 2"):
        reality.Protocol(folds=1)
    with pytest.raises(ValueError, match="baseline 'npair' is not among"):
        reality.compare(pd.DataFrame({"loss": ["a"], "seed": [0], "map@r": [0.1],
                                      "recall@1": [0.2]}), baseline="npair")
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"pip install optuna"):
        reality.run(task, ["triplet"], TINY)
