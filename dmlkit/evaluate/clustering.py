"""Clustering metrics: NMI and pair-counting F1 of a k-means partition (Oh Song et al. 2016).

k-means (:func:`kmeans`) is Lloyd's algorithm in torch, in blocks on the embeddings' device,
with an early stop at convergence (faiss is an option). Its initial centres decide the score
more than the embedding does when K is large (K = number of classes: 100 for CUB, 11,316 for
SOP), so the initialisation is a named choice:

* ``init="k-means++"`` (default): greedy k-means++ (:func:`kmeans_plusplus`; scikit-learn's
  ``KMeans`` default) -- D^2 sampling with ``2 + ln K`` local trials per centre, the trial that
  lowers the potential most is kept; the trials are capped so that the seeding costs at most
  about 3 Lloyd passes at SOP's scale (60,502 x 11,316: 3 trials instead of 11).
* ``init="random"``: K distinct random points (faiss, hence pytorch-metric-learning's
  ``AccuracyCalculator``; the VGG ``vgg_kmeans`` of Oh Song et al.'s evaluation code);
  bit for bit the k-means of dmlkit before k-means++ became the default.

Which convention gives which published numbers: Oh Song et al. (2016, lifted structure; the
NMI / F1 protocol the later papers copy) cluster with ``vgg_kmeans``, random initial points,
run to convergence (``maxiters`` 1000); PML's ``AccuracyCalculator`` (and the papers that
report its numbers, e.g. Musgrave et al. 2020) uses ``faiss.Kmeans(niter=20)``, random
points, one run; the TensorFlow code of the DAML authors' group (HDML, Zheng et al. 2019)
calls scikit-learn's ``KMeans(n_clusters, random_state=1)``, i.e. greedy k-means++ with
``n_init = 10`` restarts (scikit-learn < 1.4) and up to 300 iterations. Random
initialisation scores lower on the same embedding (20 well-separated clusters: NMI 0.89 vs
1.00), so compare numbers only within one convention.

NMI and F1 come from the sparse contingency table, without N x N matrices.

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

__all__ = ["INITS", "clustering_metrics", "default_trials", "kmeans", "kmeans_plusplus", "nmi",
           "pair_f1"]

#: Named k-means initialisations (an explicit (K, D) array of centres is also accepted).
INITS: tuple[str, ...] = ("k-means++", "random")

#: Default k-means++ trials are capped so that N * K * trials <= GREEDY_BUDGET (each unit
#: is one D-dimensional squared distance).
GREEDY_BUDGET = 2**31


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
    init="k-means++",
    niter: int = 20,
    n_init: int = 1,
    n_local_trials: int | None = None,
    backend: str = "torch",
    max_block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """k-means (Lloyd, exact assignments); returns (N,) cluster ids as int64 numpy.

    Args:
        embeddings: (N, D) points (tensor or array, CPU or GPU).
        n_clusters: K, 1 <= K <= N.
        seed: run r of ``n_init`` uses seed ``1000 * seed + r`` (for either init).
        init: ``"k-means++"`` (default; :func:`kmeans_plusplus`), ``"random"`` (K distinct
            points drawn at random, as faiss and PML do) or a (K, D) array of initial centres
            (then ``n_init`` must be 1). See the module docstring for which papers used which.
        niter: at most this many Lloyd iterations (PML and faiss defaults: 20 / 25).
        n_init: restarts; the run with the lowest sum of squared distances (inertia) is kept.
        n_local_trials: k-means++ trials per centre (see :func:`kmeans_plusplus`).
        backend: ``"torch"`` (default; on the embeddings' device, so CUDA works without
            faiss-gpu; stops early once no assignment changes, which on DML test sets with ~5
            images per class happens after a few iterations) or ``"faiss"`` (``faiss.Kmeans``;
            with ``init="random"`` its own seeding with ``nredo = n_init``, otherwise started
            from the same initial centres as the torch backend; recent faiss also stops once
            the objective stops changing; GPU when faiss has GPU support and the input is on
            CUDA).
        max_block: floats in one (points, centres) distance block; memory stays bounded by it
            (no N x K matrix).

    Lloyd (torch): assign to the nearest centre, move each centre to its points' mean, until
    no assignment changes or ``niter`` updates; an empty cluster is re-seeded with the point
    farthest from its centroid (scikit-learn also removes that point from its old cluster's
    mean; with no empty cluster both give the same assignments from the same centres).
    Assignments use the final centroids.
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
    given = _given_centres(init, n_clusters, x)
    if given is not None and int(n_init) != 1:
        raise ValueError(f"n_init must be 1 when init is an array of centres, got {n_init}")
    trials = _check_trials(n_local_trials)
    if backend == "faiss":
        return _kmeans_faiss(x, n_clusters, int(seed), int(niter), int(n_init), init, given,
                             trials, max_block)
    sq = (x * x).sum(dim=1)
    step = block_rows(n, n_clusters, max_block)
    best_assign, best_obj = None, math.inf
    for run in range(int(n_init)):
        gen = torch.Generator().manual_seed(int(seed) * 1000 + run)
        cent = _initial_centres(x, sq, n_clusters, init, given, gen, trials, max_block)
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


def _given_centres(init, k: int, x: torch.Tensor) -> torch.Tensor | None:
    """The (K, D) centres of an array ``init`` on x's device and dtype; None for a name."""
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; known: {', '.join(map(repr, INITS))}, "
                             "or a (K, D) array of initial centres")
        return None
    cent = check_embeddings(init, "init centres").to(device=x.device, dtype=x.dtype)
    if tuple(cent.shape) != (k, x.shape[1]):
        raise ValueError(f"init centres must have shape ({k}, {x.shape[1]}) (n_clusters, dim), "
                         f"got {tuple(cent.shape)}")
    return cent.clone()


def _check_trials(n_local_trials) -> int | None:
    if n_local_trials is None:
        return None
    if isinstance(n_local_trials, bool) or int(n_local_trials) != n_local_trials \
            or int(n_local_trials) < 1:
        raise ValueError(f"n_local_trials must be None or an integer >= 1, got {n_local_trials!r}")
    return int(n_local_trials)


def _initial_centres(x, sq, k, init, given, gen, trials, max_block) -> torch.Tensor:
    if given is not None:
        return given.clone()
    if init == "random":
        idx = torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)
    else:
        idx = _seed_indices(x, sq, k, gen, trials, max_block).to(x.device)
    return x[idx].clone()


def kmeans_plusplus(
    embeddings,
    n_clusters: int,
    seed: int = 0,
    *,
    n_local_trials: int | None = None,
    max_block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): (K,) int64 indices of the initial centres.

    Args:
        embeddings: (N, D) points (tensor or array, CPU or GPU); n_clusters: K, 1 <= K <= N.
        seed: seeds a CPU ``torch.Generator`` (so CPU and CUDA draw the same numbers).
        n_local_trials: L candidates per centre; ``None`` (default): :func:`default_trials`
            (scikit-learn's ``2 + int(ln K)``, bounded so that N * K * L <= 2^31: 3 on SOP).

    The first centre is a uniformly random point; each further step draws L points with
    probability D(x)^2 / sum D^2 (D = distance to the nearest chosen centre), computes for
    each the potential sum_x min(D(x)^2, |x - c|^2) and keeps the lowest (first on ties): the
    algorithm of ``sklearn.cluster.kmeans_plusplus`` (L = 1 is plain k-means++). The draws
    are exact but come from rejection sampling over a pool of proposals whose distance rows
    are computed in one blocked matrix product (see ``_greedy_seeding``), so the numbers
    differ from scikit-learn's for the same seed, not their distribution; the cost is about
    L Lloyd assignment passes (N * K * L * D), compute-bound, memory (M, N) with M * N <=
    ``max_block``. A chosen point's D^2 is set to exactly 0 (never chosen twice); when every
    D^2 is 0 (fewer distinct points than K) the remaining centres are distinct random points.

    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> sorted((kmeans_plusplus(x, 2, seed=0) // 2).tolist())  # one centre in each far pair
    [0, 1]
    """
    x = check_embeddings(embeddings, "embeddings")
    x = x.float() if x.dtype != torch.float64 else x
    k = int(n_clusters)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"n_clusters must be in [1, {x.shape[0]}] (the number of points), "
                         f"got {n_clusters}")
    gen = torch.Generator().manual_seed(int(seed))
    sq = (x * x).sum(dim=1)
    return _seed_indices(x, sq, k, gen, _check_trials(n_local_trials), max_block).numpy()


def _seed_indices(x, sq, k, gen, trials, max_block) -> torch.Tensor:
    """k-means++ indices (K,) int64 on the CPU; ``trials=None`` picks the default."""
    n = x.shape[0]
    if trials is None:
        trials = default_trials(n, k)
    return _greedy_seeding(x, sq, k, gen, trials, max_block)


def default_trials(n: int, k: int) -> int:
    """scikit-learn's ``2 + int(ln K)`` k-means++ trials, fewer (>= 1) while
    ``N * K * trials > GREEDY_BUDGET``: SOP's 60,502 x 11,316 gets 3.

    >>> default_trials(5924, 100), default_trials(20000, 4000), default_trials(60502, 11316)
    (6, 10, 3)
    """
    return max(1, min(2 + int(math.log(k)), GREEDY_BUDGET // max(n * k, 1)))


def _sq_dist(a, a_sq, b, b_sq) -> torch.Tensor:
    """(len(a), len(b)) squared distances, |a|^2 + |b|^2 - 2 a.b, clamped at 0."""
    return torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, alpha=-2).clamp_(min=0)


def _rows(x, sq, idx, max_block) -> torch.Tensor:
    """(len(idx), N) squared distances of the points ``idx`` to every point, built in blocks."""
    out = torch.empty(idx.numel(), x.shape[0], dtype=x.dtype, device=x.device)
    step = block_rows(x.shape[0], idx.numel(), max_block)
    for a in range(0, x.shape[0], step):
        b = min(a + step, x.shape[0])
        out[:, a:b] = _sq_dist(x[idx], sq[idx], x[a:b], sq[a:b])
    return out


def _fill_uniform(chosen: list[int], n: int, k: int, gen) -> list[int]:
    """Complete ``chosen`` with distinct random unchosen points (all D^2 are 0)."""
    rest = np.setdiff1d(np.arange(n), np.asarray(chosen, dtype=np.int64))
    pick = torch.randperm(rest.size, generator=gen)[: k - len(chosen)].numpy()
    return chosen + rest[pick].tolist()


def _greedy_seeding(x, sq, k, gen, trials, max_block, pool: int | None = None) -> torch.Tensor:
    """Greedy k-means++ with D^2 draws by rejection from a pool of precomputed distance rows.

    ``d2`` (N,) is the exact current D^2. A pool holds M proposals drawn i.i.d. with
    probability u / sum u, u = d2 when the pool was drawn (an upper bound of every later
    d2), and their (M, N) distance rows, computed in one blocked matrix product. A step scans
    the pool in order and accepts proposal p with probability d2(p) / u(p) (its own uniform)
    until it has ``trials`` candidates: accepted proposals are i.i.d. D^2 draws given the
    past, i.e. exactly the candidates of scikit-learn's loop, and their rows are at hand.
    Unscanned proposals stay for the next step; an exhausted pool is redrawn from the
    current d2. M is at most ``max_block / N`` (default 554 at N = 60,502) and about what the
    remaining steps need.
    """
    n = x.shape[0]
    dev = x.device
    cap = max(1, int(pool) if pool is not None else max_block // n)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    d2 = _rows(x, sq, torch.tensor(chosen, device=dev), max_block)[0]
    d2[chosen[0]] = 0
    prop = rows = stale = uniform = None
    pos = 0
    while len(chosen) < k:
        cand_rows, cand_idx, found = [], [], 0
        while found < trials:
            if prop is None or pos >= prop.numel():
                cum = torch.cumsum(d2, 0, dtype=torch.float64)
                total = float(cum[-1])
                if total <= 0:
                    return torch.tensor(_fill_uniform(chosen, n, k, gen))
                m = min(cap, trials * (k - len(chosen)) + 8)
                draw = torch.rand(m, generator=gen, dtype=torch.float64).to(dev) * total
                uniform = torch.rand(m, generator=gen, dtype=torch.float64).to(dev)
                prop = torch.searchsorted(cum, draw).clamp_(max=n - 1)
                rows = _rows(x, sq, prop, max_block)
                stale, pos = d2[prop].double(), 0
            ok = torch.nonzero(uniform[pos:] * stale[pos:] < d2[prop[pos:]].double()).flatten()
            sel = ok[: trials - found] + pos
            cand_rows.append(rows[sel])
            cand_idx.append(prop[sel])
            found += sel.numel()
            pos = int(sel[-1]) + 1 if found == trials else prop.numel()
        pot_rows = torch.minimum(torch.cat(cand_rows), d2)
        best = int(torch.argmin(pot_rows.sum(dim=1, dtype=torch.float64)))
        d2 = pot_rows[best]
        chosen.append(int(torch.cat(cand_idx)[best]))
        d2[chosen[-1]] = 0
    return torch.tensor(chosen)


def _kmeans_faiss(x: torch.Tensor, k: int, seed: int, niter: int, n_init: int, init, given,
                  trials, max_block) -> np.ndarray:
    import faiss

    gpu = x.is_cuda and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    data = np.ascontiguousarray(x.detach().float().cpu().numpy())
    if isinstance(init, str) and init == "random":
        km = faiss.Kmeans(data.shape[1], k, niter=niter, nredo=n_init, seed=seed, gpu=gpu,
                          verbose=False)
        km.train(data)
        _, assign = km.index.search(data, 1)
        return assign[:, 0].astype(np.int64)
    sq = (x * x).sum(dim=1)
    best, best_obj = None, math.inf
    for run in range(n_init):
        gen = torch.Generator().manual_seed(seed * 1000 + run)
        cent = _initial_centres(x, sq, k, init, given, gen, trials, max_block)
        km = faiss.Kmeans(data.shape[1], k, niter=niter, nredo=1, seed=seed * 1000 + run,
                          gpu=gpu, verbose=False)
        km.train(data, init_centroids=np.ascontiguousarray(cent.float().cpu().numpy()))
        dist, assign = km.index.search(data, 1)
        obj = float(dist.astype(np.float64).sum())
        if obj < best_obj:
            best_obj, best = obj, assign[:, 0].astype(np.int64)
    return best


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
    init="k-means++",
    niter: int = 20,
    n_init: int = 1,
    n_local_trials: int | None = None,
    backend: str = "torch",
    normalize: bool = True,
) -> dict[str, float]:
    """NMI and pair-counting F1 of k-means with K = number of classes (Oh Song et al. 2016).

    Args:
        embeddings: (N, D); labels: (N,) classes.
        seed: k-means seed, or several seeds whose NMI / F1 are averaged (the N-pair paper
            averages 10 seeds).
        n_clusters: K, default the number of distinct labels.
        init: ``"k-means++"`` (default), ``"random"`` (faiss's and PML's convention, dmlkit's
            default before k-means++) or a (K, D) array; see :func:`kmeans` and the module
            docstring for which papers' numbers each convention gives.
        niter, n_init, n_local_trials, backend: see :func:`kmeans` (defaults: 20 iterations
            with early stop at convergence, one run, scikit-learn's trials, torch).
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
        clusters = kmeans(emb, k, s, init=init, niter=niter, n_init=n_init,
                          n_local_trials=n_local_trials, backend=backend)
        scores["nmi"] += nmi(lab_np, clusters) / len(seeds)
        scores["f1"] += pair_f1(lab_np, clusters) / len(seeds)
    return scores
