"""Retrieval, clustering, verification and re-ID metrics of the DML papers, exact and chunked.

One module per metric family, each with its functions (and its :func:`evaluate` names):

* :mod:`.retrieval`: :func:`retrieval_metrics`, :func:`recall_at_k` (``recall``,
  ``precision``, ``map@r``, ``r_precision``);
* :mod:`.clustering`: :func:`clustering_metrics`, :func:`kmeans`, :func:`nmi`,
  :func:`pair_f1` (``nmi``, ``f1``);
* :mod:`.verification`: :func:`verification_accuracy` (``vrf``);
* :mod:`.reid`: :func:`reid_metrics` (``cmc``, ``map``);
* :mod:`.embedding`: :func:`embed` (a model over a loader -> embeddings and labels).

:func:`evaluate` computes a chosen set of them in one call and returns one flat dict (a
results-table row); metric names are dispatched through one table (:data:`METRICS` lists
them). The conventions (cosine similarity, ties broken by index, the query left out by index,
lone queries, K larger than the database) are those of :mod:`dmlkit.evaluate.retrieval`.
Inputs may be torch tensors or numpy arrays, on CPU or GPU; metrics are fractions in [0, 1]
(the papers print them x 100).

>>> import numpy as np
>>> from dmlkit import evaluate
>>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0]])
>>> row = evaluate.evaluate(x, [0, 0, 1, 1], metrics=("recall", "map@r", "nmi"), ks=(1, 2))
>>> {k: round(v, 6) for k, v in row.items()}
{'recall@1': 1.0, 'recall@2': 1.0, 'map@r': 1.0, 'nmi': 1.0}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .clustering import clustering_metrics, kmeans, nmi, pair_f1
from .embedding import embed
from .inputs import check_choice, check_ks
from .reid import reid_metrics
from .retrieval import recall_at_k, retrieval_metrics
from .verification import verification_accuracy

__all__ = [
    "METRICS",
    "clustering_metrics",
    "embed",
    "evaluate",
    "kmeans",
    "nmi",
    "pair_f1",
    "recall_at_k",
    "reid_metrics",
    "retrieval_metrics",
    "verification_accuracy",
]


@dataclass(frozen=True)
class _Options:
    """The keyword options of :func:`evaluate`, checked, as the metric families read them."""

    ks: tuple[int, ...]
    precision_ks: tuple[int, ...]
    seed: int
    vrf_negs: Iterable[int]
    cmc_ranks: Iterable[int]
    normalize: bool
    lone_queries: str
    average: str
    kmeans_niter: int
    kmeans_n_init: int
    kmeans_init: str


def _retrieval(embeddings, labels, gallery, want: set[str], o: _Options) -> dict[str, float]:
    res = retrieval_metrics(
        embeddings, labels, o.ks if "recall" in want else (), gallery,
        precision_ks=o.precision_ks if "precision" in want else (),
        r_metrics=bool(want & {"map@r", "r_precision"}), normalize=o.normalize,
        lone_queries=o.lone_queries, average=o.average)
    return {k: v for k, v in res.items() if k not in ("map@r", "r_precision") or k in want}


def _clustering(embeddings, labels, gallery, want: set[str], o: _Options) -> dict[str, float]:
    res = clustering_metrics(embeddings, labels, o.seed, init=o.kmeans_init,
                             niter=o.kmeans_niter, n_init=o.kmeans_n_init,
                             normalize=o.normalize)
    return {k: v for k, v in res.items() if k in want}


def _verification(embeddings, labels, gallery, want: set[str], o: _Options) -> dict[str, float]:
    return {f"vrf_neg{n_neg}": verification_accuracy(embeddings, labels, n_neg, o.seed,
                                                     normalize=o.normalize)
            for n_neg in check_ks(o.vrf_negs, "vrf_negs")}


def _reid(embeddings, labels, gallery, want: set[str], o: _Options) -> dict[str, float]:
    res = reid_metrics(embeddings, labels, gallery, o.cmc_ranks, normalize=o.normalize)
    return {k: v for k, v in res.items() if ("map" if k == "map" else "cmc") in want}


@dataclass(frozen=True)
class _Family:
    """Metric names computed together by one function; ``one_set`` explains, when set, why a
    gallery is refused."""

    names: tuple[str, ...]
    compute: Callable[..., dict[str, float]]
    one_set: str | None = None


#: The one dispatch table: metric family -> its names and the function that computes them
#: (in this order in :func:`evaluate`'s output).
_FAMILIES: dict[str, _Family] = {
    "retrieval": _Family(("recall", "precision", "map@r", "r_precision"), _retrieval),
    "clustering": _Family(("nmi", "f1"), _clustering,
                          one_set="nmi / f1 cluster one set: call clustering_metrics on the "
                                  "embeddings to cluster instead of passing a gallery"),
    "verification": _Family(("vrf",), _verification,
                            one_set="vrf samples pairs within one set; pass no gallery"),
    "reid": _Family(("cmc", "map"), _reid),
}

#: Metric names accepted by :func:`evaluate`.
METRICS: tuple[str, ...] = tuple(name for fam in _FAMILIES.values() for name in fam.names)


def _preset_ks(preset: str, gallery) -> tuple[int, ...]:
    """The papers' Recall@K list of the dataset ``preset`` (any name or alias)."""
    from ..data import dataset_info

    try:
        info = dataset_info(preset)
    except ValueError as exc:
        raise ValueError(f"preset {preset!r} is not a dataset name: {exc}") from None
    if info.protocol == "query_gallery" and gallery is None:
        raise ValueError(
            f"preset {preset!r} is a query/gallery protocol: pass gallery=(emb, labels)")
    return info.recall_ks


def evaluate(
    embeddings,
    labels,
    metrics: Iterable[str] | None = None,
    preset: str | None = None,
    gallery=None,
    seed: int = 0,
    *,
    ks: Iterable[int] | None = None,
    precision_ks: Iterable[int] | None = None,
    vrf_negs: Iterable[int] = (1, 71),
    cmc_ranks: Iterable[int] = (1, 5, 10, 20),
    normalize: bool = True,
    lone_queries: str = "exclude",
    average: str = "query",
    kmeans_niter: int = 20,
    kmeans_n_init: int = 1,
    kmeans_init: str = "k-means++",
) -> dict[str, float]:
    """Compute a chosen set of metrics and return one flat dict (a results-table row).

    Args:
        embeddings: (N, D) embeddings (the queries when ``gallery`` is given); labels: (N,).
        metrics: names from :data:`METRICS`; default ``recall, map@r, r_precision, nmi, f1``
            (without NMI / F1 when a gallery is given).
        preset: a dataset name (``"cub"``, ``"cars"``, ``"sop"``, ``"inshop"``, ...): its
            papers' K list (``dmlkit.data.dataset_info(preset).recall_ks``); a query/gallery
            dataset (``"inshop"``) needs ``gallery``. ``ks`` overrides it; default K list
            (1, 2, 4, 8).
        gallery: ``(gallery_embeddings (M, D), gallery_labels (M,))`` for query/gallery
            retrieval.
        seed: k-means and VRF sampling seed.
        precision_ks: K list for ``"precision"`` (default: the recall K list).
        vrf_negs: the ``neg`` values for ``"vrf"`` (keys ``vrf_neg1``, ``vrf_neg71``).
        cmc_ranks: ranks for ``"cmc"`` (keys ``cmc@k``); ``"map"`` is the re-ID mAP.
        kmeans_niter, kmeans_n_init, kmeans_init: k-means for ``"nmi"`` / ``"f1"`` (see
            :func:`clustering_metrics`; ``kmeans_init="random"`` is the faiss / PML
            convention, the default ``"k-means++"`` scikit-learn's).
    Keys: ``recall@K``, ``precision@K``, ``map@r``, ``r_precision``, ``nmi``, ``f1``,
    ``vrf_neg{n}``, ``cmc@k``, ``map``.
    """
    preset_ks = _preset_ks(preset, gallery) if preset is not None else (1, 2, 4, 8)
    if metrics is None:
        metrics = ("recall", "map@r", "r_precision") + (("nmi", "f1") if gallery is None else ())
    elif isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    for m in metrics:
        check_choice(m, "metric", METRICS)
    ks = check_ks(preset_ks if ks is None else ks)
    options = _Options(
        ks=ks, precision_ks=ks if precision_ks is None else check_ks(precision_ks, "precision_ks"),
        seed=seed, vrf_negs=vrf_negs, cmc_ranks=cmc_ranks, normalize=normalize,
        lone_queries=lone_queries, average=average, kmeans_niter=kmeans_niter,
        kmeans_n_init=kmeans_n_init, kmeans_init=kmeans_init)
    want = set(metrics)
    families = [fam for fam in _FAMILIES.values() if want & set(fam.names)]
    for fam in families:
        if fam.one_set is not None and gallery is not None:
            raise ValueError(fam.one_set)
    out: dict[str, float] = {}
    for fam in families:
        out.update(fam.compute(embeddings, labels, gallery, want, options))
    return out
