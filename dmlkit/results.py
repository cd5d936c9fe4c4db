"""Results: the runs CSV, the papers' published numbers, and tables that set them side by side.

* :func:`read_runs` / :func:`run_row`: the results log ``runs.csv`` (one row per training
  run; rows are appended with :func:`dmlkit.atomic.append_csv_row`, atomically and under a
  lock); :func:`run_row` flattens a :class:`dmlkit.train.FitResult` into such a row.
* :func:`published_results`: the papers' tables shipped as package data, loaded here and
  nowhere else.
* :func:`runs_long`, :func:`results_vs_papers`, :func:`setting_differences`: our runs side by
  side with the published numbers, with what differs (data set, backbone, embedding size,
  image size, iterations) spelled out.
* :func:`compare_metrics`: a metrics table with one column per model (untrained vs trained,
  metric-only vs DAML, ...), also printed by the CLI.

Metric values in :func:`runs_long` / :func:`results_vs_papers` are percentages (the papers'
convention); everywhere else they are fractions in [0, 1], as :mod:`dmlkit.evaluate` returns.

>>> compare_metrics({"untrained": {"recall@1": 0.5}, "trained": {"recall@1": 0.75}},
...                 percent=True)
          untrained  trained
recall@1       50.0     75.0
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from . import data as _data

__all__ = [
    "METRIC_NAMES",
    "PAPER_SETTINGS",
    "compare_metrics",
    "display_name",
    "published_results",
    "read_runs",
    "results_vs_papers",
    "run_row",
    "runs_long",
    "setting_differences",
]

#: :mod:`dmlkit.evaluate` metric keys -> the papers' column names.
METRIC_NAMES: dict[str, str] = {
    **{f"recall@{k}": f"R@{k}" for k in (1, 2, 4, 8, 10, 16, 20, 30, 32, 40, 50, 100, 1000)},
    "precision@1": "P@1",
    "map@r": "MAP@R",
    "r_precision": "R-Precision",
    "nmi": "NMI",
    "f1": "F1",
    "vrf_neg1": "VRF (neg=1)",
    "vrf_neg71": "VRF (neg=71)",
    "map": "mAP",
    **{f"cmc@{k}": f"CMC-{k}" for k in (1, 5, 10, 20)},
}

_COMMON_RECIPE = "resize 256, random crop 227 (test: centre crop)"
#: Training settings of each source of published_results.csv that the table itself does not
#: hold (backbone and embedding size are columns of the CSV). "not restated" means: see the
#: paper; dmlkit does not repeat a number it cannot check.
PAPER_SETTINGS: dict[str, dict[str, str]] = {
    "Duan et al. 2018 (DAML)": {
        "image size": _COMMON_RECIPE,
        "iterations": "official code: 20 epochs metric loss alone, then joint training "
                      "(trunk lr/1000, generator lr/10)",
        "model selection": "not stated (best test score reported, as was common)",
    },
    "Sohn 2016 (N-pair)": {
        "image size": "224 crop",
        "iterations": "not restated",
        "model selection": "not stated",
    },
    "Wang et al. 2019b (unified view / multi-similarity)": {
        "image size": _COMMON_RECIPE,
        "iterations": "Adam lr 1e-5, P x K batches (K = 5 CUB / Cars, 4 SOP / In-shop)",
        "model selection": "not stated",
    },
    "multi-similarity official code README": {
        "image size": _COMMON_RECIPE,
        "iterations": "official configs",
        "model selection": "not stated",
    },
    "Wang et al. 2019a (OSM+CAA)": {
        "image size": "not restated",
        "iterations": "not restated",
        "model selection": "not stated",
    },
    "Musgrave et al. 2020 (A Metric Learning Reality Check)": {
        "image size": _COMMON_RECIPE,
        "iterations": "trained to convergence on each fold, best validation checkpoint",
        "model selection": "4-fold class-disjoint validation on the training classes",
    },
}

_OURS = "dmlkit (this repository)"


_OURS = "dmlkit (this repository)"


def display_name(dataset: str) -> str:
    """The papers' name of a dmlkit data set (:func:`dmlkit.data.dataset_info`'s
    ``display_name``); a name dmlkit does not know is returned as it is.

    >>> display_name("cub200"), display_name("my_own_set")
    ('CUB-200-2011', 'my_own_set')
    """
    try:
        return _data.dataset_info(str(dataset)).display_name
    except ValueError:
        return str(dataset)


# --------------------------------------------------------------------------- runs CSV


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """The runs CSV as a DataFrame; an empty DataFrame when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path)


def _image_size(cfg) -> int:
    """The side of the images the network saw: the crop for the image-file data sets, the
    generated size for the embedded ones (``size`` option, default their native size)."""
    if isinstance(cfg.dataset, str):
        native = _data.dataset_info(cfg.dataset).image_size
        if native is not None:
            return int((cfg.dataset_kwargs or {}).get("size", native))
    return int(cfg.image_size)


def run_row(result, *, notebook: str = "", seconds: float | None = None,
            iterations: int | None = None, **extra) -> dict:
    """Flatten a :class:`dmlkit.train.FitResult` into one row of the runs CSV.

    Columns: ``timestamp`` (UTC, ISO), ``notebook``, the run's settings (dataset, loss,
    loss_params as a compact string, backbone, pretrained, embedding_dim, epochs,
    iterations_per_epoch, P, K, lr, backbone_lr_mult, image_size, seed, device, amp),
    ``iterations`` (optimiser steps, when given), ``seconds``, ``best_epoch``, and
    ``test_<metric>`` for every final test metric (fractions). ``extra`` adds columns.
    """
    cfg = result.config
    loss_params = ";".join(f"{k}={v}" for k, v in sorted((cfg.loss_params or {}).items()))
    row = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "notebook": notebook,
        "dataset": cfg.dataset if isinstance(cfg.dataset, str) else type(cfg.dataset).__name__,
        "loss": cfg.loss if isinstance(cfg.loss, str) else type(cfg.loss).__name__,
        "loss_params": loss_params,
        "backbone": cfg.backbone,
        "pretrained": bool(cfg.pretrained),
        "embedding_dim": int(cfg.embedding_dim),
        "epochs": int(cfg.epochs),
        "iterations_per_epoch": cfg.iterations_per_epoch,
        "P": int(cfg.P),
        "K": int(cfg.K),
        "lr": float(cfg.lr),
        "backbone_lr_mult": float(cfg.backbone_lr_mult),
        "image_size": _image_size(cfg),
        "seed": int(cfg.seed),
        "device": str(result.device) if result.device is not None else str(cfg.device),
        "amp": str(cfg.amp),
        "iterations": iterations,
        "seconds": None if seconds is None else round(float(seconds), 1),
        "best_epoch": int(result.best_epoch),
    }
    row.update({f"test_{k}": float(v) for k, v in result.test_metrics.items()})
    row.update(extra)
    return row


# --------------------------------------------------------------------------- papers


@functools.lru_cache(maxsize=1)
def _published() -> pd.DataFrame:
    with resources.files("dmlkit").joinpath("resources/published_results.csv").open() as fh:
        return pd.read_csv(fh)


def published_results() -> pd.DataFrame:
    """The papers' tables (``dmlkit/resources/published_results.csv``, package data).

    Columns: source, paper, dataset, method, backbone, embedding_dim, metric, value (percent,
    as printed), note. ``source`` is the key of the work the number was read from in
    ``docs/references.md`` / ``docs/references.bib`` (empty where it is not a paper); ``paper``
    is the work that reports it, by its author-year label. A fresh copy on every call (the file
    is read once).
    """
    return _published().copy()


def runs_long(runs: pd.DataFrame) -> pd.DataFrame:
    """Our runs (the runs CSV) in the long format of :func:`published_results`.

    One row per (run, metric) with ``paper = "dmlkit (this repository)"``, the data set's
    paper name, ``method`` = the loss (``+ loss_params``), ``value`` in percent, plus
    ``image_size``, ``iterations`` and ``run`` (the CSV row index).
    """
    cols = ["paper", "dataset", "method", "backbone", "embedding_dim", "metric", "value",
            "image_size", "iterations", "run"]
    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=cols)
    rows = []
    for i, r in runs.reset_index(drop=True).iterrows():
        method = str(r.get("loss", ""))
        params = r.get("loss_params")
        if isinstance(params, str) and params:
            method += f" ({params})"
        for col, val in r.items():
            if not str(col).startswith("test_") or pd.isna(val):
                continue
            key = str(col)[len("test_"):]
            rows.append({
                "paper": _OURS,
                "dataset": display_name(r.get("dataset")),
                "method": method,
                "backbone": str(r.get("backbone", "")),
                "embedding_dim": str(r.get("embedding_dim", "")),
                "metric": METRIC_NAMES.get(key, key),
                "value": 100.0 * float(val),
                "image_size": r.get("image_size"),
                "iterations": r.get("iterations"),
                "run": i,
            })
    return pd.DataFrame(rows, columns=cols)


def results_vs_papers(runs: pd.DataFrame | None, published: pd.DataFrame | None = None, *,
                      datasets: Iterable[str] | None = None,
                      metrics: Sequence[str] = ("R@1", "R@2", "R@4", "R@8", "NMI", "F1",
                                                "MAP@R"),
                      methods: Iterable[str] | None = None) -> pd.DataFrame:
    """One wide table: rows (dataset, paper, method, backbone, embedding_dim), metric columns.

    ``runs``: the runs CSV (or None / empty: papers only). ``published``: default
    :func:`published_results`. ``datasets``: paper data set names to keep (default: every
    data set that has a run, plus all data sets when there is none). ``methods``: substrings;
    a paper row is kept when its method contains one (case-insensitive); our runs are always
    kept. Values are percentages; a missing cell is NaN. Our runs come first in each data set.
    """
    pub = published_results() if published is None else published
    ours = runs_long(runs if runs is not None else pd.DataFrame())
    pub = pub[pub["metric"].isin(metrics)].copy()
    if methods is not None:
        pats = [m.lower() for m in methods]
        pub = pub[pub["method"].str.lower().apply(lambda s: any(p in s for p in pats))]
    if datasets is None and len(ours):
        datasets = set(ours["dataset"])
    long = pd.concat([ours[ours["metric"].isin(metrics)], pub], ignore_index=True)
    if datasets is not None:
        long = long[long["dataset"].isin(set(datasets))]
    if long.empty:
        return pd.DataFrame(columns=["dataset", "paper", "method", "backbone", "embedding_dim",
                                     *metrics])
    long = long.assign(embedding_dim=long["embedding_dim"].fillna("").astype(str),
                       backbone=long["backbone"].fillna("").astype(str),
                       run=long.get("run", pd.Series(index=long.index)).fillna(-1))
    keys = ["dataset", "paper", "method", "backbone", "embedding_dim", "run"]
    wide = long.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=[m for m in metrics if m in wide.columns]).reset_index()
    wide["_ours"] = (wide["paper"] != _OURS).astype(int)
    wide = wide.sort_values(["dataset", "_ours", "paper", "run"], kind="stable")
    wide = wide.drop(columns=["_ours", "run"]).reset_index(drop=True)
    wide.columns.name = None
    return wide


def setting_differences(runs: pd.DataFrame | None,
                        published: pd.DataFrame | None = None) -> pd.DataFrame:
    """What differs between each of our runs and each paper reporting on its data set.

    One row per (run, paper): dataset, paper, then ``backbone``, ``embedding_dim``,
    ``image size``, ``iterations`` and ``model selection`` as "ours vs theirs" strings, and
    ``same_dataset`` (False for the toy data sets, which no paper uses: then the paper's
    setting of CUB-200-2011 is shown for orientation). Empty when there are no runs.
    """
    pub = published_results() if published is None else published
    cols = ["run", "dataset", "paper", "same_dataset", "backbone", "embedding_dim",
            "image size", "iterations", "model selection"]
    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=cols)
    rows = []
    for i, r in runs.reset_index(drop=True).iterrows():
        ds = display_name(r.get("dataset"))
        same = ds in set(pub["dataset"])
        ref_ds = ds if same else "CUB-200-2011"
        iters = r.get("iterations")
        ours_iter = (f"{int(iters)} steps ({int(r.get('epochs', 0))} epochs)"
                     if iters is not None and not pd.isna(iters) else f"{r.get('epochs')} epochs")
        for paper, grp in pub[pub["dataset"] == ref_ds].groupby("paper", sort=True):
            settings = PAPER_SETTINGS.get(paper, {})
            theirs_bb = "/".join(sorted(grp["backbone"].dropna().astype(str).unique()))
            theirs_dim = "/".join(sorted(grp["embedding_dim"].dropna().astype(str).unique()))
            rows.append({
                "run": i, "dataset": ds, "paper": paper, "same_dataset": same,
                "backbone": f"{r.get('backbone')} vs {theirs_bb or 'n/a'}",
                "embedding_dim": f"{r.get('embedding_dim')} vs {theirs_dim or 'n/a'}",
                "image size": f"{r.get('image_size')} px vs "
                              f"{settings.get('image size', 'not restated')}",
                "iterations": f"{ours_iter} vs {settings.get('iterations', 'not restated')}",
                "model selection": "best on held-out training classes vs "
                                   f"{settings.get('model selection', 'not stated')}",
            })
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- metric tables


def compare_metrics(columns: Mapping[str, Mapping[str, float]], digits: int = 3,
                    percent: bool = False) -> pd.DataFrame:
    """A table with one row per metric and one column per model, e.g.
    ``compare_metrics({"untrained": m0, "trained": m1})``; metrics missing from a model are NaN.
    Row order follows the first model's keys. ``percent``: x 100 (the papers' convention)."""
    if not columns:
        raise ValueError("columns is empty: give at least one {name: metrics} entry")
    order: list[str] = []
    for m in columns.values():
        order += [k for k in m if k not in order]
    table = pd.DataFrame({name: pd.Series({k: float(v) for k, v in m.items()})
                          for name, m in columns.items()}).reindex(order)
    if percent:
        table = table * 100.0
    return table.round(digits)
