"""The leaderboard: the losses' measured scores (a saved :mod:`dmlkit.reality` run) beside the
papers' claimed numbers (:func:`dmlkit.results.published_results`).

* :func:`claimed_ordering`: each loss's claimed CUB-200-2011 R@1 (:data:`CLAIMS`) and Musgrave
  et al. 2020's own re-run; :func:`orderings` puts our measured mean and 95 % interval beside
  it; :func:`claim_pairs` / :func:`claim_sentence` hold every ordering of two losses that the
  papers claim against our paired intervals (notebook 13).
* :func:`beside_papers` / :func:`format_beside`: our runs on one data set beside the papers'
  numbers on theirs (CUB-200-2011, Cars196, Stanford Online Products), one row per loss
  (notebook 10). The rows are not comparable across data sets: the table says what this
  collection measures on the data it has, next to what the papers report on theirs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from . import paired as _paired

__all__ = ["CLAIMS", "MUSGRAVE_METHODS", "PAPER_DATASETS", "beside_papers", "claim_pairs",
           "claim_sentence", "claimed_ordering", "format_beside", "orderings"]

#: The papers' data sets :func:`beside_papers` shows, in its column order.
PAPER_DATASETS: tuple[str, ...] = ("CUB-200-2011", "Cars196", "Stanford Online Products")

#: Where each loss's claimed number comes from in ``published_results.csv``: (paper, method,
#: note filter or None), on CUB-200-2011 R@1. One table holds the four oldest losses (Wang et
#: al. 2019a, raw images); N-pair is its own paper's, ProxyNCA and multi-similarity (RAW+VTHM)
#: are Wang et al. 2019b's Table 2. Proxy-Anchor has no number in the file.
CLAIMS: dict[str, tuple[str, str, str | None]] = {
    "contrastive": ("Wang et al. 2019a (OSM+CAA)", "Contrastive", "raw images"),
    "triplet": ("Wang et al. 2019a (OSM+CAA)", "Triplet", "raw images"),
    "lifted_structure": ("Wang et al. 2019a (OSM+CAA)", "LiftedStruct", "raw images"),
    "npair": ("Sohn 2016 (N-pair)", "60-pair-mc", None),
    "binomial_deviance": ("Wang et al. 2019a (OSM+CAA)", "Binomial Deviance", "raw images"),
    "multi_similarity": ("Wang et al. 2019b (unified view / multi-similarity)", "RAW+VTHM",
                         "Table 2"),
    "proxy_nca": ("Wang et al. 2019b (unified view / multi-similarity)", "ProxyNCA",
                  "Table 2"),
}

#: Musgrave et al. 2020's own re-run of a loss (method name in ``published_results.csv``).
MUSGRAVE_METHODS: dict[str, str] = {"contrastive": "Contrastive", "triplet": "Triplet",
                                    "multi_similarity": "MS", "proxy_nca": "ProxyNCA"}
_MUSGRAVE = "Musgrave et al. 2020 (A Metric Learning Reality Check)"


def claimed_ordering(published: pd.DataFrame | None = None,
                     losses: Iterable[str] | None = None) -> pd.DataFrame:
    """The papers' numbers for each loss (default: :data:`dmlkit.reality.DEFAULT_LOSSES`) on
    CUB-200-2011 R@1 (:data:`CLAIMS`) and Musgrave et
    al. 2020's own re-run (MAP@R, 128-d, CUB-200-2011), from ``published`` (default
    :func:`dmlkit.results.published_results`). Index: loss; columns paper, method, backbone,
    claimed R@1, claimed rank (1 = best, among the losses with a number), note, Musgrave et al.
    2020 MAP@R."""
    from . import results as _results
    from .reality import DEFAULT_LOSSES

    losses = DEFAULT_LOSSES if losses is None else losses
    pub = _results.published_results() if published is None else published
    cub = pub[pub["dataset"] == "CUB-200-2011"]
    rows = []
    for loss in losses:
        row = {"loss": loss, "paper": None, "method": None, "backbone": None,
               "claimed R@1": math.nan, "note": "no number in published_results.csv"}
        if loss in CLAIMS:
            paper, method, note = CLAIMS[loss]
            hit = cub[(cub["paper"] == paper) & (cub["method"] == method)
                      & (cub["metric"] == "R@1")]
            if note is not None:
                hit = hit[hit["note"].fillna("").str.contains(note, regex=False)]
            if len(hit):
                r = hit.iloc[0]
                row.update({"paper": paper, "method": method, "backbone": r["backbone"],
                            "claimed R@1": float(r["value"]),
                            "note": "" if pd.isna(r["note"]) else str(r["note"])})
        mus = cub[(cub["paper"] == _MUSGRAVE) & (cub["method"] == MUSGRAVE_METHODS.get(loss))
                  & (cub["metric"] == "MAP@R")
                  & (cub["embedding_dim"].astype(str) == "128")]
        row["Musgrave et al. 2020 MAP@R"] = float(mus["value"].iloc[0]) if len(mus) else math.nan
        rows.append(row)
    out = pd.DataFrame(rows).set_index("loss")
    out.insert(4, "claimed rank",
               out["claimed R@1"].rank(ascending=False, method="min").astype("Int64"))
    return out


def orderings(frame: pd.DataFrame, published: pd.DataFrame | None = None,
              metric: str = "map@r") -> pd.DataFrame:
    """The papers' claimed ordering beside the measured one: :func:`claimed_ordering` of the
    frame's losses joined with the measured mean, 95 % interval and rank (1 = best) of
    ``metric`` (percent). Ranks of means say nothing about the noise: read them with
    :func:`compare`'s verdicts."""
    losses = list(dict.fromkeys(frame["loss"]))
    claims = claimed_ordering(published, losses)[["paper", "claimed R@1", "claimed rank",
                                                  "Musgrave et al. 2020 MAP@R"]]
    s = _summarize(frame, metrics=(metric,))
    name = "MAP@R" if metric == "map@r" else "R@1" if metric == "recall@1" else metric
    ours = pd.DataFrame({f"our {name}": s[metric], "95 % CI low": s[f"{metric}_low"],
                         "95 % CI high": s[f"{metric}_high"],
                         "our rank": s[metric].rank(ascending=False,
                                                    method="min").astype("Int64")})
    return claims.join(ours)


def claim_pairs(frame: pd.DataFrame, metric: str = "map@r", published: pd.DataFrame | None = None,
                confidence: float = 0.95) -> pd.DataFrame:
    """Every pair of the frame's losses that the papers order (both have a claimed number in
    :func:`claimed_ordering`), held against our runs: one row per pair ``winner`` (the higher
    claimed R@1) over ``loser``, the claimed difference (R@1 points), our paired difference of
    ``metric`` (x100, winner - loser, by seed) with its interval and
    :func:`dmlkit.paired.paired_differences`' verdict, and ``agreement``: "as claimed" (better),
    "reversed" (worse) or "within the noise" (cannot tell). No correction for the number of
    pairs: about 1 in 20 intervals excludes 0 by chance when nothing differs."""
    losses = list(dict.fromkeys(frame["loss"]))
    claims = claimed_ordering(published, losses)["claimed R@1"].dropna()
    rows = []
    for i, a in enumerate(claims.index):
        for b in claims.index[i + 1:]:
            if claims[a] == claims[b]:
                continue
            win, lose = (a, b) if claims[a] > claims[b] else (b, a)
            r = _paired.paired_differences(frame, baseline=lose, metrics=[metric], runs=[win],
                                           run="loss", scale=100.0,
                                           confidence=confidence).iloc[0]
            agreement = ("as claimed" if r["verdict"].startswith("better") else
                         "reversed" if r["verdict"].startswith("worse") else "within the noise")
            rows.append({"winner": win, "loser": lose,
                         "claimed difference": float(claims[win] - claims[lose]),
                         "our difference": r["diff"], "low": r["low"], "high": r["high"],
                         "n": int(r["n"]), "verdict": r["verdict"], "agreement": agreement})
    return pd.DataFrame(rows)


def claim_sentence(pairs: pd.DataFrame, metric: str = "map@r") -> str:
    """One sentence counting :func:`claim_pairs`' agreements, with n and the caveat."""
    counts = pairs["agreement"].value_counts()
    ns = sorted(set(pairs["n"]))
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"
    return (f"Of the {len(pairs)} orderings of two losses that the papers' numbers claim, our "
            f"{metric} (paired 95 % intervals, {n} seeds) shows {counts.get('as claimed', 0)} "
            f"as claimed, {counts.get('reversed', 0)} reversed and "
            f"{counts.get('within the noise', 0)} within the noise (no correction for the "
            f"{len(pairs)} comparisons).")


def _summarize(frame: pd.DataFrame, **kwargs) -> pd.DataFrame:
    from .reality import summarize

    return summarize(frame, **kwargs)


def _published_value(pub: pd.DataFrame, paper: str, method: str | None, dataset: str,
                     metric: str, note: str | None = None, embedding_dim: str | None = None
                     ) -> float:
    hit = pub[(pub["paper"] == paper) & (pub["method"] == method) & (pub["dataset"] == dataset)
              & (pub["metric"] == metric)]
    if note is not None:
        hit = hit[hit["note"].fillna("").str.contains(note, regex=False)]
    if embedding_dim is not None:
        hit = hit[hit["embedding_dim"].astype(str) == embedding_dim]
    return float(hit["value"].iloc[0]) if len(hit) else math.nan


def beside_papers(frame: pd.DataFrame, published: pd.DataFrame | None = None,
                  datasets: Sequence[str] = PAPER_DATASETS) -> pd.DataFrame:
    """Our runs (``frame``: one row per loss and seed, e.g. :func:`dmlkit.reality.load_saved`)
    beside the papers' numbers, one row per loss in the frame's order.

    Columns: ``n`` (seeds); ``MAP@R``, ``R@1`` (our test means x 100) each with ``low`` /
    ``high`` (95 % t interval, :func:`dmlkit.paired.interval`); ``R@1 <data set>`` the R@1 the
    loss's paper claims (:data:`CLAIMS`: the same paper and method) on each of ``datasets``;
    ``Musgrave MAP@R <data set>`` Musgrave et al. 2020's re-run (128-d); ``paper`` where the
    claimed numbers come from. NaN where a source has no number.

    >>> frame = pd.DataFrame({"loss": ["triplet"] * 2 + ["proxy_anchor"] * 2, "seed": [0, 1] * 2,
    ...                       "map@r": [0.2, 0.3, 0.4, 0.4], "recall@1": [0.5, 0.7, 0.8, 0.8]})
    >>> t = beside_papers(frame)
    >>> t.loc["triplet", ["n", "MAP@R", "R@1", "R@1 CUB-200-2011", "Musgrave MAP@R Cars196"]]
    n                          2.00
    MAP@R                     25.00
    R@1                       60.00
    R@1 CUB-200-2011          36.10
    Musgrave MAP@R Cars196    15.82
    Name: triplet, dtype: float64
    >>> math.isnan(t.loc["proxy_anchor", "R@1 CUB-200-2011"])   # no number in the file
    True
    """
    from . import results as _results

    pub = _results.published_results() if published is None else published
    ours = _summarize(frame, metrics=("map@r", "recall@1"))
    rows = []
    for loss, r in ours.iterrows():
        row = {"loss": loss, "n": int(r["n"])}
        for key, name in (("map@r", "MAP@R"), ("recall@1", "R@1")):
            row.update({name: r[key], f"{name} low": r[f"{key}_low"],
                        f"{name} high": r[f"{key}_high"]})
        paper, method, note = CLAIMS.get(loss, (None, None, None))
        for d in datasets:
            row[f"R@1 {d}"] = (_published_value(pub, paper, method, d, "R@1", note)
                               if paper else math.nan)
        for d in datasets:
            row[f"Musgrave MAP@R {d}"] = _published_value(
                pub, _MUSGRAVE, MUSGRAVE_METHODS.get(loss), d, "MAP@R", embedding_dim="128")
        row["paper"] = paper if paper else "no number in published_results.csv"
        rows.append(row)
    return pd.DataFrame(rows).set_index("loss")


def format_beside(table: pd.DataFrame, ours: str = "ours", labels: dict | None = None,
                  digits: int = 1) -> pd.DataFrame:
    """:func:`beside_papers` as text for a reader: ``mean [low, high]`` and plain numbers with
    ``digits`` decimals (percent), ``n/a`` where there is no number; columns ``<ours> MAP@R``,
    ``<ours> R@1``, ``papers' R@1, <data set>`` and ``Musgrave et al. 2020 MAP@R, <data set>``
    (only the data sets with a number), ``paper``; rows renamed by ``labels``.

    >>> t = pd.DataFrame({"n": [5], "MAP@R": [27.66], "MAP@R low": [26.61],
    ...                   "MAP@R high": [28.74], "R@1": [60.0], "R@1 low": [float("nan")],
    ...                   "R@1 high": [float("nan")], "R@1 Cars196": [float("nan")],
    ...                   "paper": ["Sohn 2016"]}, index=["npair"])
    >>> format_beside(t, "Fashion-MNIST").iloc[0].tolist()
    ['27.7 [26.6, 28.7]', '60.0 [n/a]', 'Sohn 2016']
    """
    def number(v) -> str:
        return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"

    out = pd.DataFrame(index=table.index)
    for name in ("MAP@R", "R@1"):
        out[f"{ours} {name}"] = [
            f"{number(m)} [{number(lo)}, {number(hi)}]"
            if np.isfinite(lo) and np.isfinite(hi) else f"{number(m)} [n/a]"
            for m, lo, hi in zip(table[name], table[f"{name} low"], table[f"{name} high"])]
    papers = [c for c in table.columns if c.startswith(("R@1 ", "Musgrave MAP@R "))
              and not c.endswith((" low", " high")) and table[c].notna().any()]
    for c in papers:
        metric, _, dataset = c.partition(" ") if c.startswith("R@1") else (
            "MAP@R", None, c[len("Musgrave MAP@R "):])
        name = ("papers' R@1" if metric == "R@1" else "Musgrave et al. 2020 MAP@R")
        out[f"{name}, {dataset}"] = [number(v) for v in table[c]]
    out["paper"] = table["paper"]
    return out.rename(index=labels or {})
