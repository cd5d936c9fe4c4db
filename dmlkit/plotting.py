"""One plotting style for every notebook, and the plots the notebooks share.

Pair weights and weight curves, training histories, 2-D projections of embeddings, DAML's
hardness histograms, and image figures: retrieval galleries (a query, its top-K neighbours,
correct ones framed green and wrong ones red) and grids of images per class.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "NEG_COLOR",
    "POS_COLOR",
    "RetrievalGallery",
    "plot_comparison",
    "plot_embedding_2d",
    "plot_hardness",
    "plot_history",
    "plot_image_grid",
    "plot_metric_bars",
    "plot_pair_weights",
    "plot_retrieval_gallery",
    "plot_weight_curves",
    "plain_log_axis",
    "project_2d",
    "retrieval_gallery",
    "set_style",
]

POS_COLOR = "#1b9e77"
NEG_COLOR = "#d95f02"


def set_style() -> None:
    """Seaborn's whitegrid, a colour-blind palette and readable sizes."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette="colorblind", context="notebook")
    mpl.rcParams.update({"figure.figsize": (6.4, 4.0), "figure.dpi": 100,
                         "axes.titleweight": "bold", "savefig.bbox": "tight"})


def _locator(n: int):
    """At most ``n`` ticks at round steps."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(n, steps=[1, 2, 2.5, 5, 10])


def _axes(ax=None, figsize=None) -> Axes:
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_weight_curves(curves: Sequence, ax=None, title: str | None = None,
                       normalize: bool = False) -> Axes:
    """Plot :class:`dmlkit.weights.WeightCurve` objects: weight of a pair vs its similarity."""
    ax = _axes(ax)
    for c in curves:
        w = np.asarray(c.weight, dtype=float)
        if normalize and w.max() > 0:
            w = w / w.max()
        style = "-" if c.pair == "negative" else "--"
        ax.plot(c.similarity, w, style, label=f"{c.loss_name} ({c.pair})")
    ax.set_xlabel("similarity $s_{ij}$ of the pair")
    ax.set_ylabel("weight $w_{ij}$" + (" (scaled to max 1)" if normalize else ""))
    ax.xaxis.set_major_locator(_locator(5))   # a few ticks: "-1.00-0.75" would touch
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plain_log_axis(ax, which: str = "y", values: Sequence[float] | None = None) -> Axes:
    """A log axis labelled with plain numbers (``256``, ``0.01``, ``200``) instead of
    matplotlib's minor labels ("3x10^2"): ticks at ``values`` (e.g. the batch sizes of a
    sweep) or at 1, 2, 5 x 10^k within the axis limits; no minor ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    if values is None:
        lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
        decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        values = [m * 10.0 ** k for k in decades for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
        if len(values) < 2:   # a narrow range: its ends
            values = [lo, hi]
    axis.set_major_locator(FixedLocator(list(values)))
    axis.set_major_formatter(FuncFormatter(
        lambda v, _: f"{v:,.0f}" if v >= 1 and float(v).is_integer() else f"{v:.3g}"))
    axis.set_minor_locator(NullLocator())
    return ax


def plot_pair_weights(S, W, pos, neg, ax=None, title: str | None = None, alpha=0.5,
                      legend: bool = True) -> Axes:
    """Scatter of every pair's weight against its similarity, positives and negatives apart
    (``legend``: in the axes, where matplotlib finds the fewest points)."""
    import torch

    ax = _axes(ax)
    S, W = (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            for t in (S, W))
    pos, neg = (t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
                for t in (pos, neg))
    ax.scatter(S[pos], W[pos], s=10, alpha=alpha, color=POS_COLOR, label="positive pairs")
    ax.scatter(S[neg], W[neg], s=10, alpha=alpha, color=NEG_COLOR, label="negative pairs")
    ax.set_xlabel("similarity $s_{ij}$")
    ax.set_ylabel("weight $w_{ij} = \\mp\\,\\partial L / \\partial s_{ij}$")
    ax.xaxis.set_major_locator(_locator(5))
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize="small")
    return ax


_SPLITS = {"val_": ("validation", "-", "o"), "test_": ("test", "--", "s")}
_METRIC_COLORS = ("C0", "C2", "C4", "C1", "C3", "C5", "C6", "C7")


def plot_history(history, metrics: Iterable[str] = ("loss",), ax=None, x: str = "epoch",
                 legend: bool = True) -> Axes:
    """Line plot of columns of a training history DataFrame.

    ``loss`` (and ``lr``) are drawn as they are; every other column is a retrieval metric,
    drawn as a percentage. A metric keeps its colour across splits, the split is the line
    style (``val_``: solid with dots, ``test_``: dashed with squares), so validation and test
    never get two similar colours. The y axis is labelled with what is drawn, the x axis has
    whole epochs and spans the whole history (a loss that starts at epoch 1 lines up with
    metrics that start at epoch 0). ``legend``: beside the axes (never over the curves),
    for two curves or more.
    """
    from matplotlib.ticker import MaxNLocator

    from .tables import metric_name

    ax = _axes(ax)
    drawn, colours = [], {}
    for m in metrics:
        if m not in history:
            continue
        data = history[[x, m]].dropna()
        split = next((p for p in _SPLITS if m.startswith(p)), None)
        base = m[len(split):] if split else m
        raw = base in ("loss", "lr")
        colour = colours.setdefault(base, _METRIC_COLORS[len(colours) % len(_METRIC_COLORS)])
        name, ls, marker = _SPLITS.get(split, ("", "-", "o"))
        label = f"{name} {metric_name(base)}".strip()
        ax.plot(data[x], data[m] if raw else 100.0 * data[m], ls=ls, marker=marker, ms=3,
                color=colour, label=label)
        drawn.append(base if raw else metric_name(base))
    if drawn:
        bases = list(dict.fromkeys(drawn))
        ax.set_ylabel(" / ".join(bases) + ("" if set(bases) <= {"loss", "lr"} else " (%)"))
    values = history[x].dropna()
    if len(values):
        lo, hi = float(values.min()), float(values.max())
        pad = 0.05 * max(hi - lo, 1.0)
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x)
    if legend and len(drawn) > 1:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    return ax


def project_2d(X, method: str = "umap", seed: int = 0, **kwargs) -> np.ndarray:
    """2-D projection (N, 2) of (N, D) points with UMAP, t-SNE or PCA (all seeded).

    UMAP and t-SNE start from the PCA projection (``init="pca"``): UMAP's default spectral
    initialisation fails on small point sets with repeated points (the recorded triples of
    notebook 06: an anchor appears in several triples), falling back to a random start with a
    ``UserWarning``; the PCA start is deterministic and always defined.

    The environment variable ``DMLKIT_PROJECTION`` (``umap``, ``tsne`` or ``pca``) overrides
    ``method``: the GPU check (:mod:`dmlkit.gpucheck`) sets ``pca`` to run notebook 09 on a
    machine without umap-learn.
    """
    X = np.asarray(X, dtype=np.float32)
    method = os.environ.get("DMLKIT_PROJECTION") or method
    if method == "umap":
        import umap

        n_neighbors = kwargs.pop("n_neighbors", min(15, max(2, len(X) - 1)))
        kwargs.setdefault("init", "pca")
        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=n_neighbors,
                            n_jobs=1, **kwargs)
        return reducer.fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = kwargs.pop("perplexity", min(30.0, max(2.0, (len(X) - 1) / 3)))
        return TSNE(n_components=2, random_state=seed, perplexity=perplexity,
                    init="pca", **kwargs).fit_transform(X)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(X)
    raise ValueError(f"unknown projection {method!r}; choose 'umap', 'tsne' or 'pca'")


def plot_embedding_2d(points_2d, labels, ax=None, title: str | None = None, markers=None,
                      s: float = 12, legend: bool = False) -> Axes:
    """Scatter of 2-D points coloured by class (``markers``: optional per-point group names)."""
    import matplotlib.pyplot as plt

    ax = _axes(ax, figsize=(5.5, 5))
    labels = np.asarray(labels)
    cmap = plt.get_cmap("tab20")
    classes = np.unique(labels)
    colors = {c: cmap(i % 20) for i, c in enumerate(classes)}
    if markers is None:
        ax.scatter(points_2d[:, 0], points_2d[:, 1], c=[colors[c] for c in labels], s=s,
                   linewidths=0)
    else:
        markers = np.asarray(markers)
        shapes = dict(zip(np.unique(markers), "o^sXDv*P"))
        for group, shape in shapes.items():
            sel = markers == group
            ax.scatter(points_2d[sel, 0], points_2d[sel, 1], c=[colors[c] for c in labels[sel]],
                       marker=shape, s=s * 2, edgecolors="k", linewidths=0.3)
            # legend handle in neutral grey: colour means class, the marker means the group
            ax.scatter([], [], c="0.6", marker=shape, s=s * 2, label=str(group), edgecolors="k",
                       linewidths=0.3)
        legend = True
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    if legend:
        spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
        if spec is None or spec.is_last_col():   # beside the axes: the points fill it
            ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:                                    # another panel to the right
            ax.legend(fontsize="small")
    return ax


def plot_hardness(d_real, d_synthetic, d_pos=None, margin=None, ax=None, bins=40,
                  legend: bool = True) -> Axes:
    """Histograms of anchor-negative distances, real vs generated (DAML's hardness);
    ``legend``: beside the axes (the histograms fill it)."""
    ax = _axes(ax)
    ax.hist(np.asarray(d_real), bins=bins, alpha=0.6, label="D(anchor, real negative)",
            color=NEG_COLOR)
    ax.hist(np.asarray(d_synthetic), bins=bins, alpha=0.6,
            label="D(anchor, synthetic negative)", color="#7570b3")
    if d_pos is not None:
        ax.hist(np.asarray(d_pos), bins=bins, alpha=0.4, label="D(anchor, positive)",
                color=POS_COLOR)
    if margin is not None and d_pos is not None:
        ax.axvline(float(np.mean(d_pos)) + margin, color="k", ls=":",
                   label="mean D(a, p) + margin")
    ax.set_xlabel("distance")
    ax.set_ylabel("count")
    if legend:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax


def plot_comparison(frame, metric: str = "recall@1", ax=None, scale: float = 100.0) -> Axes:
    """Each run of a comparison (:func:`dmlkit.adversarial.comparison.run_comparison`: one row
    per run and seed) as a bar of its mean ``metric`` with the seeds as dots; a control and the
    runs compared with it share a colour group, controls hatched."""
    import matplotlib.pyplot as plt

    ax = _axes(ax, figsize=(max(5.0, 0.9 * frame["run"].nunique() + 1.5), 3.6))
    runs = list(dict.fromkeys(frame["run"]))
    group = {}
    for r in runs:
        ctrl = frame.loc[frame["run"] == r, "control"].iloc[0]
        group[r] = ctrl if isinstance(ctrl, str) else r
    colours = dict(zip(dict.fromkeys(group.values()), plt.rcParams["axes.prop_cycle"]
                       .by_key()["color"] * 4))
    for i, r in enumerate(runs):
        v = scale * frame.loc[frame["run"] == r, metric].to_numpy(float)
        is_control = group[r] == r and any(g == r and k != r for k, g in group.items())
        ax.bar(i, v.mean(), color=colours[group[r]], alpha=0.55 if is_control else 0.9,
               hatch="//" if is_control else None, edgecolor="k", linewidth=0.5)
        ax.plot(np.full(len(v), i), v, "k.", ms=5)
    ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right")
    from .tables import metric_label, metric_name

    ax.set_ylabel(metric_label(metric) if scale == 100 else
                  f"{metric_name(metric)} x {scale:g}" if scale != 1 else metric_name(metric))
    ax.set_xlabel("run")
    return ax


def plot_metric_bars(summary, metrics: Sequence[str] = ("recall@1", "map@r"), ax=None,
                     untrained: float | None = None, xlabel: str = "loss",
                     ylabel: str = "on unseen classes (%)", rotation: float = 0) -> Axes:
    """A :func:`dmlkit.tasks.summarize` table as grouped bars: per row (run) one bar per
    metric, its mean over the seeds as a percentage with the standard deviation as an error
    bar; ``untrained``: the untrained network's MAP@R (a fraction) as a dotted line. The
    legend goes beside the axes, never over a bar or an error bar."""
    from .tables import metric_name, percent

    ax = _axes(ax, figsize=(8, 3.8))
    x = np.arange(len(summary))
    width = 0.8 / len(metrics)
    for i, m in enumerate(metrics):
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, 100 * summary[f"{m}_mean"], width,
               yerr=100 * summary[f"{m}_std"], capsize=3, label=metric_name(m))
    if untrained is not None:
        ax.axhline(100 * untrained, color="k", ls=":",
                   label=f"untrained MAP@R ({percent(untrained)})")
    ax.set_xticks(x, list(summary.index), rotation=rotation,
                  ha="right" if rotation else "center")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax


def plot_paired_intervals(table, metrics: Sequence[str] | None = None, axes=None,
                          labels: dict | None = None, unit: str = "%"):
    """A :func:`dmlkit.paired.paired_differences` table as one panel per metric: every run's
    mean paired difference to its baseline (dot) with its confidence interval (bar), runs top
    to bottom in the table's order, a line at 0; intervals that exclude 0 drawn solid, the
    others hollow; the interval's level and n belong in the figure's title. Returns the
    axes."""
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"])) if metrics is None else list(metrics)
    labels = dict(labels or {})
    runs = list(dict.fromkeys(table["run"]))
    if axes is None:
        width = max(9.0, 3.6 * len(metrics) + 2.5)
        _, axes = plt.subplots(1, len(metrics), figsize=(width, 0.32 * len(runs) + 1.4),
                               sharey=True, squeeze=False)
        axes = axes[0]
    y = {r: i for i, r in enumerate(runs)}
    for ax, m in zip(axes, metrics):
        part = table[table["metric"] == m]
        for r in part.to_dict(orient="records"):
            sure = np.isfinite(r["low"]) and (r["low"] > 0 or r["high"] < 0)
            lo, hi = (r["low"], r["high"]) if np.isfinite(r["low"]) else (r["diff"], r["diff"])
            ax.errorbar(r["diff"], y[r["run"]], xerr=[[r["diff"] - lo], [hi - r["diff"]]],
                        fmt="o", color="C0" if sure else "0.45", capsize=3, ms=5,
                        mfc="C0" if sure else "white")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"{m} difference ({unit})")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(runs)), [labels.get(r, r) for r in runs])
    axes[0].set_ylabel("run (each against its own control)")
    axes[0].invert_yaxis()
    return axes


# --------------------------------------------------------------------------- images


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
                           size: float = 1.3) -> Figure:
    """One row per query: the query (black frame), then its neighbours framed green (same
    class) or red (other class). ``images``: indexable by database index, items (C, H, W) in
    [0, 1]. Returns the figure."""
    import matplotlib.pyplot as plt

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
                    size: float = 0.9) -> Figure:
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
