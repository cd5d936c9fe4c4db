"""dmlkit.paired against hand computations: t intervals (n = 2, n = 5), ties, NaN seeds,
the bootstrap, and the errors of an unbalanced pairing."""

import math

import numpy as np
import pandas as pd
import pytest

from dmlkit import paired


def _frame(values: dict) -> pd.DataFrame:
    rows = [{"run": r, "seed": s, "m": v} for r, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_t_interval_n2_by_hand():
    # differences 1 and 3: mean 2, sd sqrt(2), se 1, t_{0.975, 1} = 12.7062047
    table = paired.paired_differences(_frame({"a": [0.0, 0.0], "b": [1.0, 3.0]}),
                                      baseline="a", metrics=["m"])
    row = table.to_dict(orient="records")[0]
    assert row["n"] == 2 and row["diff"] == pytest.approx(2.0)
    assert row["sd"] == pytest.approx(math.sqrt(2.0))
    assert row["low"] == pytest.approx(2.0 - 12.7062047, abs=1e-6)
    assert row["high"] == pytest.approx(2.0 + 12.7062047, abs=1e-6)
    assert row["verdict"] == "cannot tell with n = 2"


def test_t_interval_n5_by_hand_and_verdicts():
    base = [0.50, 0.40, 0.45, 0.55, 0.60]
    d = np.array([0.02, 0.03, 0.01, 0.04, 0.05])
    frame = _frame({"base": base, "up": list(np.add(base, d)), "down": list(np.subtract(base, d))})
    table = paired.paired_differences(frame, baseline="base", metrics=["m"], scale=100)
    rows = {r["run"]: r for r in table.to_dict(orient="records")}
    se = 100 * d.std(ddof=1) / math.sqrt(5)
    half = 2.7764451 * se                       # t_{0.975, 4}
    assert rows["up"]["diff"] == pytest.approx(100 * d.mean())
    assert rows["up"]["low"] == pytest.approx(100 * d.mean() - half, rel=1e-6)
    assert rows["up"]["high"] == pytest.approx(100 * d.mean() + half, rel=1e-6)
    assert rows["up"]["verdict"] == "better" and rows["down"]["verdict"] == "worse"
    assert rows["up"]["mean"] == pytest.approx(100 * np.mean(np.add(base, d)))
    flipped = paired.paired_differences(frame, baseline="base", metrics=["m"],
                                        lower_is_better=["m"])
    assert dict(zip(flipped["run"], flipped["verdict"])) == {"up": "worse", "down": "better"}


def test_every_seed_higher_is_not_enough_with_three_seeds():
    # ahead on each of the three seeds, yet the interval contains zero
    table = paired.paired_differences(_frame({"a": [0.0, 0.0, 0.0], "b": [0.1, 0.1, 3.0]}),
                                      baseline="a", metrics=["m"])
    assert table["low"].iloc[0] < 0 < table["high"].iloc[0]
    assert table["verdict"].iloc[0] == "cannot tell with n = 3"


def test_ties_are_identical_not_better():
    table = paired.paired_differences(_frame({"a": [0.3, 0.4, 0.5], "b": [0.3, 0.4, 0.5]}),
                                      baseline="a", metrics=["m"])
    row = table.to_dict(orient="records")[0]
    assert row["diff"] == 0.0 and row["sd"] == 0.0 and row["verdict"] == "identical"


def test_nan_seed_is_reported_not_dropped_silently():
    table = paired.paired_differences(_frame({"a": [0.1, 0.2, 0.3, 0.4],
                                              "b": [0.5, float("nan"), 0.7, 0.8]}),
                                      baseline="a", metrics=["m"])
    row = table.to_dict(orient="records")[0]
    assert row["n"] == 3 and row["nan_seeds"] == (1,)
    assert row["diff"] == pytest.approx(0.4)
    assert row["verdict"].endswith("(NaN on seed 1)")
    assert "NaN on seed 1" in paired.verdict_sentence(row)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    d = [0.5, 1.5, 1.0, 2.0, 0.0, 1.2]
    lo, hi = paired.interval(d, method="bootstrap", n_boot=4000, seed=3)
    assert (lo, hi) == paired.interval(d, method="bootstrap", n_boot=4000, seed=3)
    means = np.random.default_rng(3).choice(d, size=(4000, len(d))).mean(1)
    assert lo < np.mean(d) < hi
    assert lo == pytest.approx(np.quantile(means, 0.025), abs=0.05)


def test_mapping_input_and_per_run_baselines():
    values = {"c1": {"m": [1, 2, 3]}, "r1": {"m": [2, 3, 4]},
              "c2": {"m": [1, 1, 1]}, "r2": {"m": [1, 1, 1]}}
    table = paired.paired_differences(values, baseline={"r1": "c1", "r2": "c2"}, metrics=["m"])
    assert list(zip(table["run"], table["baseline"], table["verdict"])) == [
        ("r1", "c1", "better"), ("r2", "c2", "identical")]
    lines = paired.verdict_lines(table, labels={"r1": "run one"})
    assert lines[0].startswith("run one vs c1: m +1.0 (95 % CI +1.0 to +1.0, n = 3 seeds)")


@pytest.mark.parametrize("bad, message", [
    (dict(baseline="zzz"), "baseline 'zzz' is not among the runs"),
    (dict(baseline="a", metrics=["q"]), "unknown metric column"),
])
def test_bad_input_is_named(bad, message):
    kwargs = {"metrics": ["m"], **bad}
    with pytest.raises(ValueError, match=message):
        paired.paired_differences(_frame({"a": [1, 2], "b": [1, 2]}), **kwargs)


def test_unbalanced_seeds_refused():
    frame = _frame({"a": [1, 2, 3], "b": [1, 2]})
    with pytest.raises(ValueError, match="different seeds"):
        paired.paired_differences(frame, baseline="a", metrics=["m"])


def test_summary_sentence_and_report_group_the_runs_by_verdict():
    frame = _frame({"base": [0.5, 0.5, 0.5], "up": [0.6, 0.61, 0.62],
                    "down": [0.4, 0.41, 0.39], "noise": [0.6, 0.4, 0.5]})
    table = paired.paired_differences(frame, baseline="base", metrics=["m"], scale=100)
    assert paired.summary_sentence(table, "m", labels={"up": "UP"}) == (
        "m against base (paired 95 % intervals, n = 3 seeds): better: UP; worse: down; "
        "cannot tell: noise.")
    printed = []
    shown = paired.report(frame, baseline="base", metrics=["m"], scale=100,
                          printer=printed.append)
    assert printed == [paired.summary_sentence(table, "m")]
    assert shown.loc[("up", "m"), "difference (%)"] == "+11.0"   # scale 100: percentages
    assert shown.loc[("noise", "m"), "verdict"] == "cannot tell with n = 3"
    assert shown.loc[("up", "m"), "95 % CI"].count("to") == 1
    with pytest.raises(ValueError, match="no rows for metric"):
        paired.summary_sentence(table, "q")
