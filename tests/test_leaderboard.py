"""dmlkit.leaderboard: our saved runs beside the papers' numbers (notebook 10's own table)."""

import math
import re

import numpy as np
import pytest
from scipy import stats

from dmlkit import leaderboard, reality, results


def test_beside_papers_holds_our_intervals_and_the_papers_numbers():
    frame, _ = reality.load_saved()
    table = leaderboard.beside_papers(frame)
    assert list(table.index) == list(reality.DEFAULT_LOSSES)
    for loss, part in frame.groupby("loss"):
        for metric, name in (("map@r", "MAP@R"), ("recall@1", "R@1")):
            v = 100 * part[metric].to_numpy()
            half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
            row = table.loc[loss]
            assert row[name] == pytest.approx(v.mean())
            assert (row[f"{name} low"], row[f"{name} high"]) == pytest.approx(
                (v.mean() - half, v.mean() + half))
        assert table.loc[loss, "n"] == len(part)
    pub = results.published_results()
    cars = pub[(pub["dataset"] == "Cars196") & (pub["method"] == "RAW+VTHM")
               & (pub["metric"] == "R@1") & pub["note"].fillna("").str.contains("Table 2")]
    assert table.loc["multi_similarity", "R@1 Cars196"] == float(cars["value"].iloc[0])
    assert table.loc["npair", "R@1 Stanford Online Products"] == 65.25
    assert table.loc["contrastive", "Musgrave MAP@R CUB-200-2011"] == 21.18   # 128-d
    assert np.isnan(table.loc["proxy_anchor", "R@1 CUB-200-2011"])
    assert table.loc["proxy_anchor", "paper"] == "no number in published_results.csv"


def test_format_beside_writes_percent_with_one_decimal_and_n_a():
    frame, _ = reality.load_saved()
    shown = leaderboard.format_beside(leaderboard.beside_papers(frame), ours="ours",
                                      labels=reality.LABELS)
    assert list(shown.index) == [reality.LABELS[k] for k in reality.DEFAULT_LOSSES]
    assert list(shown.columns[:2]) == ["ours MAP@R", "ours R@1"]
    assert all(re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", v) for v in shown["ours MAP@R"])
    assert shown.loc["Proxy-Anchor", "papers' R@1, CUB-200-2011"] == "n/a"
    assert shown.loc["triplet", "papers' R@1, CUB-200-2011"] == "36.1"
    assert shown.loc["triplet", "Musgrave et al. 2020 MAP@R, Cars196"] == "15.8"
