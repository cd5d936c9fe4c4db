"""One plotting style for every notebook, and the plots the notebooks share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "NEG_COLOR",
    "POS_COLOR",
    "plot_embedding_2d",
    "plot_hardness",
    "plot_history",
    "plot_pair_weights",
    "plot_weight_curves",
    "project_2d",
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


def _axes(ax=None, figsize=None):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_weight_curves(curves: Sequence, ax=None, title: str | None = None, normalize=False):
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
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_pair_weights(S, W, pos, neg, ax=None, title: str | None = None, alpha=0.5):
    """Scatter of every pair's weight against its similarity, positives and negatives apart."""
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
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_history(history, metrics: Iterable[str] = ("loss",), ax=None, x: str = "epoch"):
    """Line plot of columns of a training history DataFrame."""
    ax = _axes(ax)
    for m in metrics:
        if m in history:
            data = history[[x, m]].dropna()
            ax.plot(data[x], data[m], marker="o", ms=3, label=m)
    ax.set_xlabel(x)
    ax.legend(fontsize="small")
    return ax


def project_2d(X, method: str = "umap", seed: int = 0, **kwargs) -> np.ndarray:
    """2-D projection of (N, D) points with UMAP, t-SNE or PCA (all seeded)."""
    X = np.asarray(X, dtype=np.float32)
    if method == "umap":
        import umap

        n_neighbors = kwargs.pop("n_neighbors", min(15, max(2, len(X) - 1)))
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


def plot_embedding_2d(points_2d, labels, ax=None, title=None, markers=None, s=12, legend=False):
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
        ax.legend(fontsize="small")
    return ax


def plot_hardness(d_real, d_synthetic, d_pos=None, margin=None, ax=None, bins=40):
    """Histograms of anchor-negative distances, real vs generated (DAML's hardness)."""
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
    ax.legend(fontsize="small")
    return ax
