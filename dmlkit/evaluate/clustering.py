"""Clustering metrics: NMI and pair-counting F1 of a k-means partition (Oh Song et al. 2016).

k-means (:func:`kmeans`) is Lloyd's algorithm in torch with an early stop at convergence
(faiss is an option); NMI and F1 come from the sparse contingency table, without N x N
matrices.

>>> from dmlkit.evaluate import nmi, pair_f1
>>> round(nmi([0, 0, 1, 1], [5, 5, 7, 7]), 12), pair_f1([0, 0, 1, 1], [5, 5, 7, 7])
(1.0, 1.0)
>>> round(nmi([0, 0, 1, 1], [0, 1, 0, 1]), 12), pair_f1([0, 0, 0, 1], [0, 0, 1, 1])
(0.0, 0.4)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from .._checks import check_embeddings
from .inputs import DEFAULT_BLOCK, block_rows, check_choice, prepare

__all__ = ["clustering_metrics", "kmeans", "nmi", "pair_f1"]


def _contingency(labels, clusters):
    """Sparse contingency table: cluster sizes, class sizes, and the non-zero overlaps."""
    labels = _to_numpy_labels(labels).ravel()
    clusters = _to_numpy_labels(clusters).ravel()
    if labels.shape != clusters.shape:
        raise ValueError(
            f"labels has length {labels.shape[0]} but clusters has length {clusters.shape[0]}")
    if labels.size == 0:
        raise ValueError("labels is empty")
    for arr, name in ((labels, "labels"), (clusters, "clusters")):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    _, li = np.unique(labels, return_inverse=True)
    _, ki = np.unique(clusters, return_inverse=True)
    n_k = np.bincount(ki).astype(np.int64)
    n_c = np.bincount(li).astype(np.int64)
    width = np.int64(n_c.size)
    key, n_kc = np.unique(ki.astype(np.int64) * width + li, return_counts=True)
    return n_k, n_c, n_kc.astype(np.int64), key // width, key % width, labels.size


def _to_numpy_labels(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def nmi(labels, clusters) -> float:
    """NMI(Omega, C) = 2 I(Omega; C) / (H(Omega) + H(C)) from the sparse contingency table.

    Args: labels (N,) classes, clusters (N,) cluster ids (integers, tensors or arrays).
    Equals ``sklearn.metrics.normalized_mutual_info_score`` (arithmetic normalisation,
    natural log); 1.0 when both partitions are a single block.
    """
    n_k, n_c, n_kc, k_of, c_of, n = _contingency(labels, clusters)
    if n_k.size == 1 and n_c.size == 1:
        return 1.0

    def entropy(counts):
        p = counts / n
        return float(-(p * np.log(p)).sum())

    h_k, h_c = entropy(n_k), entropy(n_c)
    n_kc = n_kc.astype(np.float64)
    mi = float((n_kc / n * (np.log(n * n_kc) - np.log(n_k[k_of] * n_c[c_of].astype(np.float64))))
               .sum())
    denom = 0.5 * (h_k + h_c)
    return float(max(mi, 0.0) / denom) if denom > 0 else 0.0


def pair_f1(labels, clusters) -> float:
    """Pair-counting F1 of a clustering (Oh Song et al. 2016), without N x N matrices.

    TP+FP = sum_k C(n_k, 2), TP = sum_kc C(n_kc, 2), TP+FN = sum_c C(n_c, 2);
    P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R). When neither partition has a pair (all
    singletons) the two agree and F1 = 1.0; otherwise an empty ratio counts as 0.
    """
    n_k, n_c, n_kc, _, _, _ = _contingency(labels, clusters)

    def pairs(c):
        return int((c * (c - 1) // 2).sum())

    tp, tp_fp, tp_fn = pairs(n_kc), pairs(n_k), pairs(n_c)
    if tp_fp == 0 and tp_fn == 0:
        return 1.0
    if tp == 0:
        return 0.0
    p, r = tp / tp_fp, tp / tp_fn
    return 2 * p * r / (p + r)


def kmeans(
    embeddings,
    n_clusters: int,
    seed: int = 0,
    *,
    niter: int = 20,
    n_init: int = 1,
    backend: str = "torch",
    max_block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """k-means (Lloyd, exact assignments); returns (N,) cluster ids as int64 numpy.

    Args:
        embeddings: (N, D) points (tensor or array, CPU or GPU).
        n_clusters: K, 1 <= K <= N.
        seed: run r of ``n_init`` uses seed ``1000 * seed + r``.
        niter: at most this many Lloyd iterations (PML and faiss defaults: 20 / 25).
        n_init: restarts; the run with the lowest sum of squared distances is kept.
        backend: ``"torch"`` (default; on the embeddings' device, so CUDA works without
            faiss-gpu; stops early once no assignment changes, which on DML test sets with ~5
            images per class happens after a few iterations) or ``"faiss"`` (``faiss.Kmeans``
            with ``nredo = n_init``; recent faiss also stops once the objective stops changing;
            GPU when faiss has GPU support and the input is on CUDA).

    Init (torch): K distinct points drawn at random, as faiss does; an empty cluster is re-seeded
    with the point farthest from its centroid. Assignments use the final centroids.
    """
    check_choice(backend, "backend", ("torch", "faiss"))
    x = check_embeddings(embeddings, "embeddings")
    x = x.float() if x.dtype != torch.float64 else x
    n = x.shape[0]
    n_clusters = int(n_clusters)
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in [1, {n}] (the number of points), got {n_clusters}")
    if int(niter) < 1 or int(n_init) < 1:
        raise ValueError(f"niter and n_init must be >= 1, got {niter}, {n_init}")
    if backend == "faiss":
        return _kmeans_faiss(x, n_clusters, int(seed), int(niter), int(n_init))
    sq = (x * x).sum(dim=1)
    step = block_rows(n, n_clusters, max_block)
    best_assign, best_obj = None, math.inf
    for run in range(int(n_init)):
        gen = torch.Generator().manual_seed(int(seed) * 1000 + run)
        init = torch.randperm(n, generator=gen)[:n_clusters].to(x.device)
        cent = x[init].clone()
        assign, dist = _assign(x, sq, cent, step)
        for _ in range(int(niter)):
            sums = torch.zeros_like(cent).index_add_(0, assign, x)
            cnt = torch.bincount(assign, minlength=n_clusters)
            cent = sums / cnt.clamp(min=1)[:, None].to(x.dtype)
            empty = torch.nonzero(cnt == 0).flatten()
            if empty.numel():
                cent[empty] = x[torch.topk(dist, empty.numel()).indices]
            new, dist = _assign(x, sq, cent, step)
            changed = bool((new != assign).any())
            assign = new
            if not changed:
                break
        obj = float(dist.double().sum())
        if obj < best_obj:
            best_obj, best_assign = obj, assign
    return best_assign.cpu().numpy()


def _kmeans_faiss(x: torch.Tensor, k: int, seed: int, niter: int, n_init: int) -> np.ndarray:
    import faiss

    gpu = x.is_cuda and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    data = np.ascontiguousarray(x.detach().float().cpu().numpy())
    km = faiss.Kmeans(data.shape[1], k, niter=niter, nredo=n_init, seed=seed, gpu=gpu,
                      verbose=False)
    km.train(data)
    _, assign = km.index.search(data, 1)
    return assign[:, 0].astype(np.int64)


def _assign(x, sq, cent, step):
    c_sq = (cent * cent).sum(dim=1)
    assign = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for a in range(0, x.shape[0], step):
        b = min(a + step, x.shape[0])
        score = torch.addmm(c_sq[None, :], x[a:b], cent.T, alpha=-2)  # |c|^2 - 2 x.c
        d, i = score.min(dim=1)
        assign[a:b] = i
        dist[a:b] = (d + sq[a:b]).clamp(min=0)
    return assign, dist


def clustering_metrics(
    embeddings,
    labels,
    seed: int | Iterable[int] = 0,
    *,
    n_clusters: int | None = None,
    niter: int = 20,
    n_init: int = 1,
    backend: str = "torch",
    normalize: bool = True,
) -> dict[str, float]:
    """NMI and pair-counting F1 of k-means with K = number of classes (Oh Song et al. 2016).

    Args:
        embeddings: (N, D); labels: (N,) classes.
        seed: k-means seed, or several seeds whose NMI / F1 are averaged (the N-pair paper
            averages 10 seeds).
        n_clusters: K, default the number of distinct labels.
        niter, n_init, backend: see :func:`kmeans` (defaults: 20 iterations with early stop at
            convergence, one run, torch).
    Returns ``{"nmi": ..., "f1": ...}``.
    """
    emb, lab = prepare(embeddings, labels, "embeddings", normalize)
    k = int(torch.unique(lab).numel()) if n_clusters is None else int(n_clusters)
    seeds = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if not seeds:
        raise ValueError("seed must be an int or a non-empty sequence of ints")
    lab_np = lab.cpu().numpy()
    scores = {"nmi": 0.0, "f1": 0.0}
    for s in seeds:
        clusters = kmeans(emb, k, s, niter=niter, n_init=n_init, backend=backend)
        scores["nmi"] += nmi(lab_np, clusters) / len(seeds)
        scores["f1"] += pair_f1(lab_np, clusters) / len(seeds)
    return scores
