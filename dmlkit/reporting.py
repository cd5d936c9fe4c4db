"""What the notebooks report: results tables, the runs CSV, retrieval galleries, hardness.

The notebooks of the collection stay thin (prose, calls, plots); the logic they share lives
here:

* :func:`append_csv_row` / :func:`read_runs`: the results log ``notebooks/results/runs.csv``
  (one row per training run, appended atomically under a lock, columns united over runs);
  :func:`run_row` flattens a :class:`dmlkit.train.FitResult` into such a row.
* :func:`published_results` (the papers' tables shipped as package data),
  :func:`runs_long`, :func:`results_vs_papers` and :func:`setting_differences`: our runs side
  by side with the published numbers, with what differs (data set, backbone, embedding size,
  image size, iterations) spelled out.
* :func:`compare_metrics`: a metrics table with one column per model (untrained vs trained,
  metric-only vs DAML, ...).
* :func:`retrieval_gallery`, :func:`plot_retrieval_gallery`, :func:`plot_image_grid`: a query,
  its top-K neighbours, correct ones framed green and wrong ones red.
* :func:`multimodal_clusters` and :func:`metric_sweep`: synthetic embeddings whose classes are
  made of several tight modes, the setting in which Recall@1 saturates while MAP@R does not.
* :func:`hardness_summary`: DAML's hardness statistics per epoch from a
  :class:`dmlkit.adversarial.NegativeRecorder`.
* :func:`load_features`: small "cached features" for the adversarial notebooks.

Metric values in :func:`runs_long` / :func:`results_vs_papers` are percentages (the papers'
convention); everywhere else they are fractions in [0, 1], as :mod:`dmlkit.evaluate` returns.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .notebook import atomic_write_csv

__all__ = [
    "DATASET_NAMES",
    "METRIC_NAMES",
    "PAPER_SETTINGS",
    "RetrievalGallery",
    "append_csv_row",
    "compare_metrics",
    "hardness_summary",
    "load_features",
    "metric_sweep",
    "multimodal_clusters",
    "plot_image_grid",
    "plot_retrieval_gallery",
    "published_results",
    "read_runs",
    "results_vs_papers",
    "retrieval_gallery",
    "run_row",
    "runs_long",
    "setting_differences",
]

#: dmlkit data set names -> the names used in the papers' tables (published_results.csv).
DATASET_NAMES: dict[str, str] = {
    "cub200": "CUB-200-2011",
    "cars196": "Cars196",
    "sop": "Stanford Online Products",
    "inshop": "In-shop",
    "glyphs": "glyphs (dmlkit, procedural)",
    "digits": "digits (scikit-learn)",
}

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
    "Wang et al. 2019 (unified view / multi-similarity)": {
        "image size": _COMMON_RECIPE,
        "iterations": "Adam lr 1e-5, P x K batches (K = 5 CUB / Cars, 4 SOP / In-shop)",
        "model selection": "not stated",
    },
    "multi-similarity official code README": {
        "image size": _COMMON_RECIPE,
        "iterations": "official configs",
        "model selection": "not stated",
    },
    "Wang et al. 2019 (OSM+CAA)": {
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


# --------------------------------------------------------------------------- CSV log


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``<path>.lock`` (POSIX; a no-op where fcntl is missing)."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """The runs CSV as a DataFrame; an empty DataFrame when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path)


def append_csv_row(path: str | os.PathLike, row: Mapping) -> pd.DataFrame:
    """Append one row to a CSV file atomically; returns the whole table after the append.

    The file is read, the row added (columns are the union of the old columns and the row's
    keys, in first-seen order; missing values stay empty), and the result written to a
    temporary file in the same folder that replaces ``path`` with ``os.replace``: a reader
    never sees a half-written file, and an exclusive lock on ``<path>.lock`` keeps two
    concurrent appends from losing a row. Values must be scalars (str, number, bool, None).
    """
    path = Path(path)
    row = dict(row)
    if not row:
        raise ValueError("row is empty: nothing to append")
    for key, value in row.items():
        if not isinstance(value, (str, int, float, bool, np.generic, type(None))):
            raise ValueError(f"row value for {key!r} must be a scalar, got "
                             f"{type(value).__name__}; flatten it first (see run_row)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        old = read_runs(path)
        new = pd.concat([old, pd.DataFrame([row])], ignore_index=True) if len(old.columns) \
            else pd.DataFrame([row])
        atomic_write_csv(new, path)
    return new


_NATIVE_SIZE = {"glyphs": 32, "digits": 8}


def _image_size(cfg) -> int:
    """The side of the images the network saw: the crop for the benchmarks, the generated
    size for the embedded data sets (``size`` option)."""
    if isinstance(cfg.dataset, str) and cfg.dataset in _NATIVE_SIZE:
        return int((cfg.dataset_kwargs or {}).get("size", _NATIVE_SIZE[cfg.dataset]))
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


def published_results() -> pd.DataFrame:
    """The papers' tables (``dmlkit/resources/published_results.csv``, package data).

    Columns: source, paper, dataset, method, backbone, embedding_dim, metric, value (percent,
    as printed), note.
    """
    from importlib import resources

    with resources.files("dmlkit").joinpath("resources/published_results.csv").open() as fh:
        return pd.read_csv(fh)


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
                "dataset": DATASET_NAMES.get(str(r.get("dataset")), str(r.get("dataset"))),
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
        ds = DATASET_NAMES.get(str(r.get("dataset")), str(r.get("dataset")))
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


# --------------------------------------------------------------------------- retrieval gallery


@dataclass
class RetrievalGallery:
    """Queries and their top-K neighbours: ``query`` (Q,), ``neighbours`` (Q, K) database
    indices, ``similarity`` (Q, K), ``correct`` (Q, K) bool (same class as the query)."""

    query: np.ndarray
    neighbours: np.ndarray
    similarity: np.ndarray
    correct: np.ndarray


def retrieval_gallery(embeddings, labels, queries: int | Sequence[int] = 6, k: int = 5,
                      seed: int = 0, normalize: bool = True) -> RetrievalGallery:
    """Top-``k`` neighbours of some queries, the query itself excluded (leave-one-out).

    embeddings: (N, D); labels: (N,). queries: a number of queries drawn at random (seeded,
    without replacement) or the query indices. Ranking: cosine similarity (``normalize``)
    descending, ties by index ascending, the convention of :mod:`dmlkit.evaluate`, so the
    first column agrees with Recall@1.
    """
    x = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings,
                   dtype=np.float64)
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need embeddings (N, D) and labels (N,), got {x.shape}, {y.shape}")
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, {n - 1}] (N - 1 database items), got {k}")
    if np.isscalar(queries):
        if not 1 <= int(queries) <= n:
            raise ValueError(f"queries must be in [1, {n}], got {queries}")
        q = np.sort(np.random.default_rng(seed).choice(n, size=int(queries), replace=False))
    else:
        q = np.asarray(queries, dtype=np.int64)
        if q.ndim != 1 or q.size == 0 or q.min() < 0 or q.max() >= n:
            raise ValueError(f"query indices must be a non-empty 1-D list in [0, {n})")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x[q] @ x.T
    sim[np.arange(q.size), q] = -np.inf
    # lexsort: last key is primary -> similarity descending, then index ascending
    idx = np.arange(n)
    order = np.stack([np.lexsort((idx, -row))[:k] for row in sim])
    return RetrievalGallery(query=q, neighbours=order,
                            similarity=np.take_along_axis(sim, order, axis=1),
                            correct=y[order] == y[q][:, None])


def _image_hw(img) -> np.ndarray:
    """(C, H, W) or (H, W) tensor / array -> (H, W) or (H, W, 3) float array for imshow."""
    a = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return np.clip(a, 0.0, 1.0)


def plot_retrieval_gallery(images, gallery: RetrievalGallery, labels=None, border: int = 3,
                           size: float = 1.3):
    """One row per query: the query (black frame), then its neighbours framed green (same
    class) or red (other class). ``images``: indexable by database index, items (C, H, W) in
    [0, 1]. Returns the figure."""
    import matplotlib.pyplot as plt

    from .plotting import NEG_COLOR, POS_COLOR

    n_q, k = gallery.neighbours.shape
    fig, axes = plt.subplots(n_q, k + 1, figsize=(size * (k + 1), size * n_q), squeeze=False)
    for r in range(n_q):
        cells = [(gallery.query[r], "black", "query")]
        cells += [(gallery.neighbours[r, j],
                   POS_COLOR if gallery.correct[r, j] else NEG_COLOR, f"#{j + 1}")
                  for j in range(k)]
        for c, (i, colour, title) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(_image_hw(images[int(i)]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(border)
                spine.set_visible(True)
            if labels is not None:
                title = f"{title} (y={int(np.asarray(labels)[int(i)])})"
            if r == 0 or labels is not None:
                ax.set_title(title, fontsize=7, fontweight="normal")
    fig.tight_layout()
    return fig


def plot_image_grid(images, labels, classes: int | Sequence[int] = 8, per_class: int = 6,
                    size: float = 0.9):
    """A grid of images: one row per class (the first ``classes`` classes, or the ones
    given), ``per_class`` examples each. Returns the figure."""
    import matplotlib.pyplot as plt

    y = np.asarray(labels)
    chosen = (np.unique(y)[:int(classes)] if np.isscalar(classes) else np.asarray(classes))
    fig, axes = plt.subplots(len(chosen), per_class, figsize=(size * per_class,
                                                              size * len(chosen)),
                             squeeze=False)
    for r, c in enumerate(chosen):
        members = np.flatnonzero(y == c)[:per_class]
        for j in range(per_class):
            ax = axes[r, j]
            ax.axis("off")
            if j < len(members):
                ax.imshow(_image_hw(images[int(members[j])]), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].text(-0.1, 0.5, f"class {int(c)}", transform=axes[r, 0].transAxes,
                        ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


# --------------------------------------------------------------------------- synthetic sweeps


def multimodal_clusters(n_classes: int = 20, per_class: int = 12, dim: int = 32,
                        modes: int = 3, mode_spread: float = 1.0, noise: float = 0.05,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic embeddings whose classes are unions of ``modes`` tight clusters.

    Class ``c`` has a centre ``mu_c ~ N(0, I_dim / dim)``; each of its modes sits at
    ``mu_c + mode_spread * nu`` with ``nu ~ N(0, I_dim / dim)``; points are their mode plus
    ``noise * N(0, I_dim / dim)`` (``per_class`` points, assigned to modes in turn). With
    ``mode_spread`` large and ``noise`` small, every point's nearest neighbour is in its own
    mode (Recall@1 = 1) while most of its class lies far away (MAP@R low): the case where
    Recall@1 saturates and MAP@R still measures the class's compactness.
    Returns ``(X (n_classes * per_class, dim) float32, y (N,) int64)``.
    """
    if n_classes < 2 or per_class < 2 or modes < 1 or dim < 1:
        raise ValueError("need n_classes >= 2, per_class >= 2, modes >= 1, dim >= 1")
    rng = np.random.default_rng(seed)
    scale = 1.0 / math.sqrt(dim)
    centres = rng.normal(0, scale, (n_classes, dim))
    mode_off = rng.normal(0, scale, (n_classes, modes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    mode_of = np.tile(np.arange(per_class) % modes, n_classes)
    x = (centres[y] + mode_spread * mode_off[y, mode_of]
         + noise * rng.normal(0, scale, (y.size, dim)))
    return x.astype(np.float32), y.astype(np.int64)


def metric_sweep(values: Iterable[float], make: Callable[[float], tuple], *,
                 metrics: Sequence[str] = ("recall", "map@r", "r_precision", "nmi"),
                 ks: Sequence[int] = (1, 4), seed: int = 0, name: str = "value") -> pd.DataFrame:
    """Evaluate :func:`dmlkit.evaluate.evaluate` on ``make(v) -> (embeddings, labels)`` for each
    value ``v``; one row per value (column ``name``) with every metric as a column."""
    from . import evaluate

    rows = []
    for v in values:
        emb, lab = make(v)
        row = {name: float(v)}
        row.update(evaluate.evaluate(emb, lab, metrics=list(metrics), ks=tuple(ks), seed=seed))
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- DAML hardness


def hardness_summary(frame: pd.DataFrame, by: str | None = "epoch") -> pd.DataFrame:
    """Hardness statistics of recorded triples (:meth:`NegativeRecorder.hardness_frame`).

    Per group (``by``; None: one row for all): ``n`` triples, mean ``d_ap``, ``d_an`` (real
    negative) and ``d_asyn`` (synthetic negative) in the metric's embedding space,
    ``harder`` = share of triples whose synthetic negative is closer to the anchor than the
    real one, ``violating_real`` / ``violating_synthetic`` = share with
    ``d_an < d_ap + margin`` / ``d_asyn < d_ap + margin`` (triples the triplet loss still
    penalises; ``margin`` 0 when the recorder had none).
    """
    need = {"d_ap", "d_an", "d_asyn"}
    if not need <= set(frame.columns):
        raise ValueError(f"frame needs columns {sorted(need)}, got {list(frame.columns)}")
    margin = frame["margin"].fillna(0.0) if "margin" in frame else 0.0
    f = frame.assign(harder=frame["d_asyn"] < frame["d_an"],
                     violating_real=frame["d_an"] < frame["d_ap"] + margin,
                     violating_synthetic=frame["d_asyn"] < frame["d_ap"] + margin)
    agg = {"n": ("d_ap", "size"), "d_ap": ("d_ap", "mean"), "d_an": ("d_an", "mean"),
           "d_asyn": ("d_asyn", "mean"), "harder": ("harder", "mean"),
           "violating_real": ("violating_real", "mean"),
           "violating_synthetic": ("violating_synthetic", "mean")}
    if by is None:
        return f.assign(_all="all").groupby("_all").agg(**agg).reset_index(drop=True)
    return f.groupby(by).agg(**agg).reset_index()


# --------------------------------------------------------------------------- small features


def load_features(dataset: str = "digits", features: str = "pixels", *,
                  cache_dir: str | os.PathLike | None = None, standardize: bool = True,
                  dataset_kwargs: dict | None = None):
    """Train / test features for the adversarial notebooks: ``((x_tr, y_tr), (x_te, y_te))``.

    ``features="pixels"``: raw pixels of an embedded data set (digits: 64-d, instant);
    ``"random_cnn"``: global-pooled features of dmlkit's SmallCNN with random weights
    (torch seed 0; :func:`dmlkit.train.extract_features`, cached in ``cache_dir``).
    With ``standardize`` the features are centred / scaled with the *training* statistics and
    L2-normalised (the scale of the official DAML generator's unit-norm inputs).
    Tensors: x (N, F) float32, y (N,) int64.
    """
    import torch

    from . import data, train

    dataset_kwargs = dict(dataset_kwargs or {})
    if features == "pixels":
        out = []
        for split in ("train", "test"):
            ds = data.load_dataset(dataset, split, **dataset_kwargs)
            x = torch.stack([ds[i][0].reshape(-1) for i in range(len(ds))]).float()
            out.append((x, torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)))
    elif features == "random_cnn":
        out = []
        for split in ("train", "test"):
            torch.manual_seed(0)  # the same random backbone for both splits
            out.append(train.extract_features(
                "small_cnn", dataset, split=split, pretrained=False, cache_dir=cache_dir,
                dataset_kwargs=dataset_kwargs, image_size=32, progress=False))
    else:
        raise ValueError(f"unknown features {features!r}; known: 'pixels', 'random_cnn'")
    if standardize:
        mu = out[0][0].mean(0, keepdim=True)
        sd = out[0][0].std(0, keepdim=True).clamp(min=1e-6)
        out = [(torch.nn.functional.normalize((x - mu) / sd, dim=1), y) for x, y in out]
    return tuple(out)


# --------------------------------------------------------------------------- notebook 09 runs


def parse_loss_spec(spec: str) -> tuple[str, str]:
    """``"triplet"`` -> ``("metric", "triplet")``; ``"daml:triplet"`` -> ``("daml", "triplet")``;
    ``"daml+sp:npair"`` -> ``("daml+sp", "npair")``. Unknown methods or losses raise ValueError
    listing the known ones."""
    from . import adversarial, losses

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"loss must be a non-empty string, got {spec!r}")
    method, _, loss = spec.strip().rpartition(":")
    method = method.lower() or "metric"
    if method not in adversarial.METHODS:
        raise ValueError(f"unknown method {method!r} in {spec!r}; known: "
                         f"{', '.join(adversarial.METHODS)} (write '<method>:<loss>')")
    if loss not in losses.available():
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(losses.available())}")
    return method, loss


@dataclass
class AdversarialRun:
    """A DAML / DAML+SP run of notebook 09, with the attributes of
    :class:`dmlkit.train.FitResult` the notebook and :func:`run_row` read: ``history``
    (DataFrame: epoch, phase, loss (= J_m), objective terms, ``test_<metric>`` logged at every
    epoch, never used for selection), ``test_metrics`` (last epoch), ``initial_test_metrics``
    (the frozen backbone features themselves), ``best_epoch`` (= epochs: no selection),
    ``config`` (a :class:`dmlkit.train.TrainConfig`), ``device``, ``result``
    (:class:`dmlkit.adversarial.AdversarialResult`), ``test_embeddings`` / ``test_labels``."""

    history: pd.DataFrame
    test_metrics: dict
    initial_test_metrics: dict
    best_epoch: int
    config: object
    device: object
    result: object
    test_embeddings: np.ndarray
    test_labels: np.ndarray
    iterations: int


def fit_adversarial_run(method: str = "daml", *, dataset: str = "glyphs",
                        backbone: str = "small_cnn", pretrained: bool = True,
                        loss: str = "triplet", loss_params: dict | None = None,
                        embedding_dim: int = 64, epochs: int = 10,
                        iterations_per_epoch: int | None = None, P: int = 16, K: int = 4,
                        lr: float = 1e-3, image_size: int = 224, device: str = "auto",
                        dataset_kwargs: dict | None = None, data_root: str | None = None,
                        seed: int = 0, warmup_epochs: int | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        **train_settings) -> AdversarialRun:
    """DAML (``method="daml"``) or DAML+SP on frozen ``backbone`` features of ``dataset``.

    The backbone's features of the train and test splits are extracted once
    (:func:`dmlkit.train.extract_features`; In-shop: queries searched in the gallery), then
    :func:`dmlkit.adversarial.fit_adversarial` trains a 2-layer metric head to
    ``embedding_dim`` and the generator(s) for ``epochs`` epochs of ``iterations_per_epoch``
    P x K batches (default one pass), the first ``warmup_epochs`` (default a third) with the
    metric loss alone; the other knobs are fit_adversarial's defaults. ``train_settings``: the
    remaining :class:`dmlkit.train.TrainConfig` fields (recorded in ``config``, e.g. amp).
    """
    import torch

    from . import adversarial, evaluate, train

    if method not in ("daml", "daml+sp"):
        raise ValueError(f"method must be 'daml' or 'daml+sp', got {method!r}")
    kw = dict(dataset_kwargs or {})
    if data_root is not None and dataset not in ("digits",):
        kw.setdefault("root", data_root)
    dev = train.select_device(device)
    inshop = dataset == "inshop"
    splits = ("train", "query", "gallery") if inshop else ("train", "test")
    feats = {}
    for split in splits:
        torch.manual_seed(seed)  # the same backbone (random or pretrained head-less) each split
        feats[split] = train.extract_features(backbone, dataset, device=str(dev), split=split,
                                              pretrained=pretrained, cache_dir=cache_dir,
                                              dataset_kwargs=kw, image_size=image_size,
                                              progress=False)
    (x_tr, y_tr) = feats["train"]
    (x_te, y_te) = feats["query" if inshop else "test"]
    gallery = feats.get("gallery")
    eval_kw = {"ks": evaluate.PRESETS.get({"cub200": "cub", "cars196": "cars", "sop": "sop",
                                           "inshop": "inshop"}.get(dataset, ""), (1, 2, 4, 8))}
    if gallery is not None:
        eval_kw["gallery"] = gallery
        eval_kw["metrics"] = ["recall", "map@r", "r_precision"]
    batches = iterations_per_epoch or max(1, math.ceil(len(y_tr) / (P * K)))
    warm = max(1, epochs // 3) if warmup_epochs is None else int(warmup_epochs)
    res = adversarial.fit_adversarial(
        x_tr, y_tr, loss, method, loss_kwargs=loss_params or None, embedding_dim=embedding_dim,
        epochs=epochs, warmup_epochs=min(warm, epochs), generator_epochs=1, lr=lr, P=P, K=K,
        batches_per_epoch=batches, seed=seed, eval_features=x_te, eval_labels=y_te,
        eval_every=1, eval_kwargs=eval_kw, device=dev)
    if gallery is not None:  # the metric head embeds the gallery as well
        g_emb = res.embed(gallery[0])
        eval_kw["gallery"] = (g_emb, gallery[1])
    history = pd.DataFrame(res.history)
    metric_cols = [c for c in history.columns if c not in ("epoch", "phase")
                   and not c.startswith("J")]
    history = history.rename(columns={c: f"test_{c}" for c in metric_cols})
    history["loss"] = history.get("J_m")
    history["epoch"] = history["epoch"] + 1
    emb = res.embed(x_te)
    final = evaluate.evaluate(emb, y_te, seed=seed, **eval_kw)
    base_kw = dict(eval_kw)
    if gallery is not None:
        base_kw["gallery"] = gallery
    initial = evaluate.evaluate(x_te, y_te, seed=seed, **base_kw)
    fields = {f for f in train.TrainConfig.__dataclass_fields__}
    cfg = train.TrainConfig(**{k: v for k, v in dict(
        train_settings, dataset=dataset, backbone=backbone, pretrained=pretrained,
        loss=f"{method}:{loss}", loss_params=dict(loss_params or {}),
        embedding_dim=embedding_dim, epochs=epochs, iterations_per_epoch=batches, P=P, K=K,
        lr=lr, image_size=image_size, device=str(dev), data_root=data_root,
        dataset_kwargs=kw, seed=seed, val_fraction=0.0).items() if k in fields})
    return AdversarialRun(history=history, test_metrics={k: float(v) for k, v in final.items()},
                          initial_test_metrics={k: float(v) for k, v in initial.items()},
                          best_epoch=int(epochs), config=cfg, device=dev, result=res,
                          test_embeddings=emb.numpy(), test_labels=y_te.numpy(),
                          iterations=int(batches * (epochs + 1)))


def total_iterations(result) -> int | None:
    """Optimiser steps of a run: ``epochs x iterations_per_epoch`` (None when an epoch was
    one pass of the sampler and its length is unknown here)."""
    if isinstance(result, AdversarialRun):
        return result.iterations
    cfg = result.config
    if cfg.iterations_per_epoch is None:
        return None
    return int(cfg.epochs) * int(cfg.iterations_per_epoch)


def test_embeddings(result, max_points: int | None = 2000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Test-class embeddings of a run (a random sample of at most ``max_points``).

    :class:`dmlkit.train.FitResult`: the best model embeds the test split (In-shop: the
    queries) with evaluation transforms; :class:`AdversarialRun`: its stored embeddings.
    Returns ``(embeddings (n, D) float32, labels (n,) int64)``.
    """
    import torch

    from . import data

    rng = np.random.default_rng(seed)
    if isinstance(result, AdversarialRun):
        emb, lab = result.test_embeddings, result.test_labels
        keep = np.arange(len(lab))
        if max_points is not None and len(lab) > max_points:
            keep = np.sort(rng.choice(len(lab), max_points, replace=False))
        return emb[keep], lab[keep]
    cfg = result.config
    if not isinstance(cfg.dataset, str):
        raise ValueError("test_embeddings needs a run on a named data set")
    kw = dict(cfg.dataset_kwargs)
    if cfg.dataset in ("cub200", "cars196", "sop", "inshop"):
        kw.setdefault("transform", data.get_transforms(False, image_size=cfg.image_size,
                                                       resize=cfg.resize))
    ds = data.load_dataset(cfg.dataset, "query" if cfg.dataset == "inshop" else "test",
                           root=cfg.data_root, **kw)
    idx = np.arange(len(ds))
    if max_points is not None and len(ds) > max_points:
        idx = np.sort(rng.choice(len(ds), max_points, replace=False))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()),
                                         batch_size=cfg.batch_size_eval, shuffle=False)
    model = result.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    embs, labs = [], []
    with torch.no_grad():
        for x, y in loader:
            embs.append(model(x.to(device)).float().cpu())
            labs.append(torch.as_tensor(y, dtype=torch.int64))
    model.train(was_training)
    return torch.cat(embs).numpy(), torch.cat(labs).numpy()
