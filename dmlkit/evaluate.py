"""Retrieval, clustering and verification metrics of the DML papers, exact and chunked.

Every number here is the papers' metric, to the definition (FORMULAS.md section 4), computed
exactly (no approximate search) with memory bounded by chunking, fast enough for Stanford Online
Products (60,502 test images) every few epochs. Inputs may be torch tensors or numpy arrays, on
CPU or GPU; metrics are returned as fractions in [0, 1] (the papers print them x 100).

Conventions (the same in every function)
-----------------------------------------
* **Similarity.** Cosine similarity (embeddings L2-normalised, ``normalize=True``, the papers'
  setting; on unit vectors this ranks exactly as Euclidean distance). ``normalize=False`` ranks
  by the raw inner product. Computation is float32 (float64 inputs stay float64).
* **Ranking and ties.** The database is ranked by similarity, descending, and exact ties are
  broken by database index, ascending. This order is enforced exactly, including ties that
  straddle the k-th position, so results do not depend on the search library.
* **The query itself.** Without a gallery the test set is both queries and database and each
  query's own row is removed *by index* (not "the first hit"), so exact duplicates of the query
  stay in its ranking as ordinary items. With ``gallery=(emb, labels)`` (In-shop) nothing is
  removed.
* **Lone queries.** A query whose class has no other item in the database (a singleton class, or
  an In-shop query whose class is missing from the gallery) has nothing to find. By default
  (``lone_queries="exclude"``) such queries are left out of every average, as
  pytorch-metric-learning's ``AccuracyCalculator`` does; ``lone_queries="miss"`` keeps them in
  Recall@K and precision@K as failures. MAP@R and R-precision always exclude them (R = 0).
  CUB, Cars196, SOP and In-shop have no lone queries, so the papers' numbers do not depend on it.
* **K larger than the database.** The ranked list is the whole database (N - 1 items without a
  gallery), so Recall@K for such K is the fraction of queries with any positive (1.0 once lone
  queries are excluded) and precision@K divides by min(K, database size). Keys keep the K asked.
* **R** for MAP@R / R-precision is the number of *other* same-class items in the database; it
  never exceeds the database size, so no cap is needed.
* **Averaging.** ``average="query"`` (default, the papers): mean over queries. ``"class"``: mean
  over classes of the per-class means (PML's ``avg_of_avgs``).

How it is computed
------------------
k-NN metrics are computed per chunk of queries from the chunk's similarity block (one BLAS
matrix product, torch on the embeddings' device). One exactly ordered top list per query (length
max(R, 16), plus the precision@K depth when asked; R <= 11 on SOP) gives MAP@R, R-precision and
the rank of the first positive for most queries; for the others that rank comes from counting
the items ranked above the best positive, so Recall@K for *every* K (1,000 included) needs no
top-1000 search. Memory is O(chunk x database), about ``max_block`` floats (128 MiB by default).
This replaces a faiss top-k search: it is exact under the tie convention above, needs no
``k + extra`` retrieval to drop the query, and runs on CUDA without faiss-gpu. k-means
(:func:`kmeans`) is Lloyd's algorithm in torch with an early stop at convergence (faiss is an
option).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import check_embeddings, check_labels

__all__ = [
    "METRICS",
    "PRESETS",
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

#: The papers' Recall@K lists (FORMULAS.md section 4).
PRESETS: dict[str, tuple[int, ...]] = {
    "cub": (1, 2, 4, 8, 16, 32),
    "cars": (1, 2, 4, 8, 16, 32),
    "sop": (1, 10, 100, 1000),
    "inshop": (1, 10, 20, 30, 40, 50),
}

#: Metric names accepted by :func:`evaluate`.
METRICS: tuple[str, ...] = (
    "recall", "precision", "map@r", "r_precision", "nmi", "f1", "vrf", "cmc", "map",
)

_DEFAULT_BLOCK = 2**25  # floats in one similarity block (128 MiB in float32)
_FIRST_HIT_DEPTH = 16  # top-list length that settles most queries' first positive


# --------------------------------------------------------------------------- input handling


def _prepare(embeddings, labels, name: str, normalize: bool):
    emb = check_embeddings(embeddings, name)
    lab = check_labels(labels, emb.shape[0], name=f"{name} labels" if name != "embeddings"
                       else "labels", device=emb.device)
    if emb.dtype != torch.float64:
        emb = emb.float()
    if normalize:
        emb = F.normalize(emb, dim=1)
    return emb, lab


def _check_ks(ks, name: str = "ks") -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"{name} must be positive integers, got {ks}")
    return ks


def _check_choice(value, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(map(repr, choices))}")
    return value


def _split_gallery(gallery, normalize: bool, q_emb: torch.Tensor):
    if gallery is None:
        return None, None
    if not isinstance(gallery, (tuple, list)) or len(gallery) != 2:
        raise ValueError("gallery must be a (gallery_embeddings, gallery_labels) pair")
    g_emb, g_lab = _prepare(gallery[0], gallery[1], "gallery embeddings", normalize)
    if g_emb.shape[1] != q_emb.shape[1]:
        raise ValueError(
            f"gallery embeddings have dimension {g_emb.shape[1]} but queries have {q_emb.shape[1]}"
        )
    g_emb = g_emb.to(device=q_emb.device, dtype=q_emb.dtype)
    return g_emb, g_lab.to(q_emb.device)


def _class_index(q_lab: torch.Tensor, g_lab: torch.Tensor, self_mode: bool):
    """Per query: R (other same-class database items) and a padded list of their indices."""
    device = g_lab.device
    order = torch.argsort(g_lab, stable=True)
    g_sorted = g_lab[order]
    uniq, counts = torch.unique_consecutive(g_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pos_in_uniq = torch.searchsorted(uniq, q_lab).clamp(max=max(len(uniq) - 1, 0))
    found = uniq[pos_in_uniq] == q_lab
    start = torch.where(found, starts[pos_in_uniq], torch.zeros_like(q_lab))
    count = torch.where(found, counts[pos_in_uniq], torch.zeros_like(q_lab))
    r = count - int(self_mode)
    return order, start, count, r.clamp(min=0), device


def _positives(order, start, count, rows: torch.Tensor, self_index: torch.Tensor | None):
    """Padded (c, P) database indices of the positives of the queries ``rows`` (-1 = padding)."""
    p_max = int(count[rows].max()) if rows.numel() else 0
    if p_max == 0:
        return torch.full((rows.numel(), 0), -1, dtype=torch.long, device=order.device)
    offs = torch.arange(p_max, device=order.device)
    valid = offs[None, :] < count[rows, None]
    pos = order[(start[rows, None] + offs[None, :]).clamp(max=order.numel() - 1)]
    pos = torch.where(valid, pos, torch.full_like(pos, -1))
    if self_index is not None:
        pos = torch.where(pos == self_index[:, None], torch.full_like(pos, -1), pos)
    return pos


def _ordered_topk(S: torch.Tensor, k: int, n_db: int) -> torch.Tensor:
    """Indices of the first ``k`` items of each row in (similarity desc, index asc) order.

    ``S`` (c, M) holds -inf at excluded entries; ``n_db`` is the number of rankable items per
    row (k <= n_db). Exact ties that straddle position k are resolved by a full stable sort of
    the affected rows only.
    """
    c = S.shape[0]
    if k == 0:
        return torch.empty((c, 0), dtype=torch.long, device=S.device)
    k_probe = min(k + 1, n_db)
    vals, idx = torch.topk(S, k_probe, dim=1, largest=True, sorted=True)
    # re-sort by (value desc, index asc): sort by index, then stable sort by value
    idx_sorted, perm = torch.sort(idx, dim=1)
    vals = torch.gather(vals, 1, perm)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    idx = torch.gather(idx_sorted, 1, perm)
    if k_probe > k:
        tied = vals[:, k] == vals[:, k - 1]
        if bool(tied.any()):
            rows = torch.nonzero(tied).flatten()
            full = torch.sort(S[rows], dim=1, descending=True, stable=True).indices[:, :k_probe]
            idx[rows] = full
    return idx[:, :k]


def _row_count(mask: torch.Tensor) -> torch.Tensor:
    """Row sums of a (c, M) bool mask as int64 (uint8 -> int16 sums over column blocks: fast)."""
    m8 = mask.view(torch.uint8)
    total = torch.zeros(mask.shape[0], dtype=torch.int64, device=mask.device)
    for j in range(0, mask.shape[1], 32767):
        total += m8[:, j:j + 32767].sum(dim=1, dtype=torch.int16)
    return total


def _first_rank_by_count(S: torch.Tensor, pos: torch.Tensor, ar_g: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's first positive under (similarity desc, index asc).

    ``S`` (c, M) similarities (-inf where excluded), ``pos`` (c, P) positive indices (-1 pad,
    at least one valid per row). Rank = #items more similar than the best positive + #items
    as similar with a lower index than the lowest-index best positive.
    """
    s_pos = torch.gather(S, 1, pos.clamp(min=0)).masked_fill(pos < 0, -math.inf)
    best = s_pos.max(dim=1, keepdim=True).values
    j_star = torch.where((s_pos == best) & (pos >= 0), pos, torch.full_like(pos, S.shape[1]))
    j_star = j_star.min(dim=1).values
    above = _row_count(best < S)
    n_eq = _row_count(best == S)
    ties = torch.nonzero(n_eq > 1).flatten()
    if ties.numel():
        eq_before = (S[ties] == best[ties]) & (ar_g[None, :] < j_star[ties, None])
        above[ties] += _row_count(eq_before)
    return above


def _block_rows(n_query: int, n_db: int, max_block: int) -> int:
    return int(max(1, min(n_query, max_block // max(n_db, 1))))


# --------------------------------------------------------------------------- retrieval core


def _retrieval_core(q_emb, q_lab, g_emb, g_lab, self_mode: bool, r_metrics: bool,
                    precision_ks: tuple[int, ...], max_block: int):
    """Per query: first-positive rank (-1 if none), R, MAP@R, R-precision, hits in each top-k.

    ``precision_ks`` must already be capped at the database size.
    """
    n_q = q_emb.shape[0]
    n_g = g_emb.shape[0]
    n_db = n_g - int(self_mode)
    device = q_emb.device
    order, start, count, r_all, _ = _class_index(q_lab, g_lab, self_mode)
    first_rank = torch.full((n_q,), -1, dtype=torch.long, device=device)
    map_r = torch.zeros(n_q, dtype=torch.float64, device=device)
    r_prec = torch.zeros(n_q, dtype=torch.float64, device=device)
    precision_k = max(precision_ks, default=0)
    prec_hits = torch.zeros((n_q, len(precision_ks)), dtype=torch.int32, device=device)
    k_cols = torch.tensor([k - 1 for k in precision_ks], dtype=torch.long, device=device)
    if n_db == 0:
        return first_rank, r_all, map_r, r_prec, prec_hits
    step = _block_rows(n_q, n_g, max_block)
    ar_g = torch.arange(n_g, device=device)
    for a in range(0, n_q, step):
        b = min(a + step, n_q)
        rows = torch.arange(a, b, device=device)
        S = q_emb[a:b] @ g_emb.T
        if self_mode:
            S[rows - a, rows] = -math.inf
        lab = q_lab[a:b]
        r = r_all[a:b]
        has_pos = r > 0
        # ---- one ordered top list serves MAP@R / R-precision, precision@k and most first hits
        depth = max(int(r.max()) if r_metrics else 0, precision_k or 0, _FIRST_HIT_DEPTH)
        depth = min(depth, n_db)
        idx = _ordered_topk(S, depth, n_db)
        hits = g_lab[idx] == lab[:, None]
        found = hits.any(dim=1)
        first = torch.where(found, hits.to(torch.uint8).argmax(dim=1), -1)
        # queries whose first positive lies beyond the list: count the items ranked above it
        miss = torch.nonzero(has_pos & ~found).flatten()
        if miss.numel():
            pos = _positives(order, start, count, rows[miss],
                             rows[miss] if self_mode else None)
            first[miss] = _first_rank_by_count(S[miss], pos, ar_g)
        first_rank[a:b] = torch.where(has_pos, first, -1)
        if precision_ks:
            cum_hits = torch.cumsum(hits[:, :precision_k].int(), dim=1, dtype=torch.int32)
            prec_hits[a:b] = cum_hits[:, k_cols]
        if r_metrics:
            within = torch.arange(depth, device=device)[None, :] < r[:, None]
            rel = (hits & within).double()
            cum = torch.cumsum(rel, dim=1)
            ranks = torch.arange(1, depth + 1, device=device, dtype=torch.float64)
            r_safe = r.clamp(min=1).double()
            map_r[a:b] = (rel * cum / ranks).sum(dim=1) / r_safe
            r_prec[a:b] = rel.sum(dim=1) / r_safe
    return first_rank, r_all, map_r, r_prec, prec_hits


def _average(values: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, average: str):
    values = values[mask].double()
    if values.numel() == 0:
        return float("nan")
    if average == "query":
        return float(values.mean())
    _, inv = torch.unique(labels[mask], return_inverse=True)
    sums = torch.zeros(int(inv.max()) + 1, dtype=torch.float64, device=values.device)
    sums.index_add_(0, inv, values)
    cnts = torch.bincount(inv).double()
    return float((sums / cnts).mean())


def retrieval_metrics(
    embeddings,
    labels,
    ks: Iterable[int] = (1, 2, 4, 8),
    gallery=None,
    *,
    precision_ks: Iterable[int] = (),
    r_metrics: bool = True,
    normalize: bool = True,
    lone_queries: str = "exclude",
    average: str = "query",
    max_block: int = _DEFAULT_BLOCK,
) -> dict[str, float]:
    """Recall@K, precision@K, MAP@R and R-precision, exact (see the module conventions).

    Args:
        embeddings: (N, D) query embeddings (the whole test set when ``gallery`` is None).
        labels: (N,) integer class labels.
        ks: Recall@K list; :data:`PRESETS` holds the papers' lists.
        gallery: optional ``(gallery_embeddings (M, D), gallery_labels (M,))`` for query/gallery
            retrieval (In-shop); then no item is removed from the ranking.
        precision_ks: precision@K list (fraction of the top K that share the query's class).
        r_metrics: compute MAP@R and R-precision (Musgrave et al. 2020).
        normalize: L2-normalise first (cosine similarity, the papers' setting).
        lone_queries: ``"exclude"`` (default, as PML) or ``"miss"`` (count in Recall@K and
            precision@K as failures).
        average: ``"query"`` (default) or ``"class"`` (mean of per-class means, PML's
            ``avg_of_avgs``).
        max_block: floats in one similarity block; bounds memory.

    Returns:
        ``{"recall@K": ..., "precision@K": ..., "map@r": ..., "r_precision": ...}`` as floats
        (NaN when no query counts).

    Recall@K = fraction of queries with a same-class item among their K nearest neighbours
    (Oh Song et al. 2016); R-precision = (#same-class among the top R) / R and
    MAP@R = (1/R) sum_{i<=R} P@i rel_i with R the number of other same-class items.
    """
    ks = _check_ks(ks)
    precision_ks = _check_ks(precision_ks, "precision_ks")
    _check_choice(lone_queries, "lone_queries", ("exclude", "miss"))
    _check_choice(average, "average", ("query", "class"))
    q_emb, q_lab = _prepare(embeddings, labels, "embeddings", normalize)
    g_emb, g_lab = _split_gallery(gallery, normalize, q_emb)
    self_mode = g_emb is None
    if self_mode:
        g_emb, g_lab = q_emb, q_lab
    n_db = g_emb.shape[0] - int(self_mode)
    capped = tuple(sorted({min(k, n_db) for k in precision_ks if n_db > 0}))
    first_rank, r, map_r, r_prec, prec_hits = _retrieval_core(
        q_emb, q_lab, g_emb, g_lab, self_mode, r_metrics, capped, max_block)
    has_pos = r > 0
    count_mask = has_pos if lone_queries == "exclude" else torch.ones_like(has_pos)
    out: dict[str, float] = {}
    for k in ks:
        hit = (first_rank >= 0) & (first_rank < k)
        out[f"recall@{k}"] = _average(hit.double(), count_mask, q_lab, average)
    for k in precision_ks:
        kk = min(k, n_db)
        if kk == 0:
            out[f"precision@{k}"] = float("nan")
            continue
        prec = prec_hits[:, capped.index(kk)].double() / kk
        out[f"precision@{k}"] = _average(prec, count_mask, q_lab, average)
    if r_metrics:
        out["map@r"] = _average(map_r, has_pos, q_lab, average)
        out["r_precision"] = _average(r_prec, has_pos, q_lab, average)
    return out


def recall_at_k(embeddings, labels, ks: Iterable[int] = (1, 2, 4, 8), gallery=None,
                **kwargs) -> dict[str, float]:
    """Recall@K only (see :func:`retrieval_metrics`, same keyword options)."""
    return retrieval_metrics(embeddings, labels, ks, gallery, r_metrics=False, **kwargs)


# --------------------------------------------------------------------------- re-identification


def reid_metrics(
    embeddings,
    labels,
    gallery=None,
    ranks: Iterable[int] = (1, 5, 10, 20),
    *,
    query_cams=None,
    gallery_cams=None,
    normalize: bool = True,
    max_block: int = 2**23,
) -> dict[str, float]:
    """CMC rank-k and mAP over the full ranking (re-identification, MARS; seed 003).

    Args:
        embeddings: (N, D) queries; labels: (N,) identities.
        gallery: ``(gallery_embeddings (M, D), gallery_labels (M,))``; None = leave-one-out on
            the query set.
        ranks: CMC ranks (MARS tables: 1, 5, 20).
        query_cams, gallery_cams: optional (N,), (M,) camera ids; when given, gallery items of
            the query's identity seen by the query's camera are removed from its ranking (the
            Market-1501 / MARS "junk" rule).

    CMC@k = fraction of queries whose first correct match ranks <= k; AP = (1/R) sum over the
    R correct matches of (correct within the top rank_m) / rank_m (the whole gallery ranked);
    mAP = mean AP. Queries without a correct match in the gallery are left out. Cost is a full
    stable sort of every row (O(N M log M)), fine for MARS / In-shop sizes.
    """
    ranks = _check_ks(ranks, "ranks")
    q_emb, q_lab = _prepare(embeddings, labels, "embeddings", normalize)
    g_emb, g_lab = _split_gallery(gallery, normalize, q_emb)
    self_mode = g_emb is None
    if self_mode:
        g_emb, g_lab = q_emb, q_lab
    n_q, n_g = q_emb.shape[0], g_emb.shape[0]
    if (query_cams is None) != (gallery_cams is None):
        raise ValueError("give both query_cams and gallery_cams, or neither")
    if query_cams is not None:
        q_cam = check_labels(query_cams, n_q, "query_cams", device=q_emb.device)
        g_cam = q_cam if gallery_cams is None and self_mode else check_labels(
            gallery_cams, n_g, "gallery_cams", device=q_emb.device)
    device = q_emb.device
    first = torch.full((n_q,), -1, dtype=torch.long, device=device)
    ap = torch.zeros(n_q, dtype=torch.float64, device=device)
    step = _block_rows(n_q, n_g, max_block)
    for a in range(0, n_q, step):
        b = min(a + step, n_q)
        S = q_emb[a:b] @ g_emb.T
        rel = q_lab[a:b, None] == g_lab[None, :]
        drop = torch.zeros_like(rel)
        if self_mode:
            drop[torch.arange(b - a, device=device), torch.arange(a, b, device=device)] = True
        if query_cams is not None:
            drop |= rel & (q_cam[a:b, None] == g_cam[None, :])
        S = S.masked_fill(drop, -math.inf)
        rel &= ~drop
        order = torch.sort(S, dim=1, descending=True, stable=True).indices
        rel_sorted = torch.gather(rel, 1, order).double()
        n_rel = rel_sorted.sum(dim=1)
        cum = torch.cumsum(rel_sorted, dim=1)
        pos_rank = torch.arange(1, n_g + 1, device=device, dtype=torch.float64)
        ap[a:b] = (rel_sorted * cum / pos_rank).sum(dim=1) / n_rel.clamp(min=1)
        first[a:b] = torch.where(n_rel > 0, rel_sorted.argmax(dim=1), torch.full_like(first[a:b],
                                                                                      -1))
    valid = first >= 0
    out = {}
    for k in ranks:
        out[f"cmc@{k}"] = float(((first < k) & valid)[valid].double().mean()) if valid.any() \
            else float("nan")
    out["map"] = float(ap[valid].mean()) if valid.any() else float("nan")
    return out


# --------------------------------------------------------------------------- verification


def verification_accuracy(
    embeddings,
    labels,
    neg: int = 1,
    seed: int = 0,
    *,
    n_trials: int = 1,
    normalize: bool = True,
    max_block: int = 2**24,
) -> float:
    """Verification accuracy VRF with one positive and ``neg`` negatives (Sohn 2016, seed 002).

    Every item with at least one other same-class item and at least ``neg`` items of other
    classes is the query of ``n_trials`` trials; a trial draws one positive (uniformly among the
    other same-class items) and ``neg`` distinct negatives (uniformly among the other-class
    items) with ``numpy.random.default_rng(seed)``, and succeeds when the positive is strictly
    more similar to the query than every negative (ties count as failures). Returns the mean
    success rate; the paper reports neg = 1 and neg = 71.
    """
    if int(neg) < 1:
        raise ValueError(f"neg must be a positive integer, got {neg}")
    if int(n_trials) < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials}")
    neg = int(neg)
    emb, lab = _prepare(embeddings, labels, "embeddings", normalize)
    lab_np = lab.cpu().numpy()
    n = lab_np.shape[0]
    order = np.argsort(lab_np, kind="stable")
    _uniq, inv, counts = np.unique(lab_np, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    n_c = counts[inv]
    ok = (n_c >= 2) & (n - n_c >= neg)
    if not ok.any():
        raise ValueError(
            f"no query has both a same-class item and {neg} other-class items; "
            "VRF needs classes with >= 2 items and enough other items")
    anchors = np.tile(np.nonzero(ok)[0], int(n_trials))
    rng = np.random.default_rng(seed)
    a_start, a_cnt = starts[inv[anchors]], n_c[anchors]
    # positive: a uniform other member of the class (skip the anchor's own slot)
    rank_in_class = np.empty(n, dtype=np.int64)
    rank_in_class[order] = np.arange(n) - starts[inv[order]]
    p = rng.integers(0, a_cnt - 1)
    p = p + (p >= rank_in_class[anchors])
    positives = order[a_start + p]
    # negatives: `neg` distinct uniform draws among the n - n_c other-class items
    m = n - a_cnt
    draws = rng.integers(0, m[:, None], size=(anchors.size, neg))
    for _ in range(100):
        srt = np.sort(draws, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1) if neg > 1 else np.zeros(len(draws), bool)
        if not dup.any():
            break
        draws[dup] = rng.integers(0, m[dup, None], size=(int(dup.sum()), neg))
    else:  # pragma: no cover - only when neg is close to the number of other items
        for i in np.nonzero(dup)[0]:
            draws[i] = rng.permutation(m[i])[:neg]
    slot = draws + np.where(draws >= a_start[:, None], a_cnt[:, None], 0)
    negatives = order[slot]
    dev = emb.device
    a_t = torch.from_numpy(anchors).to(dev)
    p_t = torch.from_numpy(positives).to(dev)
    n_t = torch.from_numpy(negatives).to(dev)
    success = torch.zeros(anchors.size, dtype=torch.bool, device=dev)
    step = max(1, max_block // ((neg + 1) * emb.shape[1]))
    for s in range(0, anchors.size, step):
        e = min(s + step, anchors.size)
        q = emb[a_t[s:e]]
        s_pos = (q * emb[p_t[s:e]]).sum(dim=1)
        s_neg = torch.einsum("bd,bnd->bn", q, emb[n_t[s:e]])
        success[s:e] = s_pos > s_neg.max(dim=1).values
    return float(success.double().mean())


# --------------------------------------------------------------------------- clustering


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
    max_block: int = _DEFAULT_BLOCK,
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
    _check_choice(backend, "backend", ("torch", "faiss"))
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
    step = _block_rows(n, n_clusters, max_block)
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
    emb, lab = _prepare(embeddings, labels, "embeddings", normalize)
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


# --------------------------------------------------------------------------- one call


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
) -> dict[str, float]:
    """Compute a chosen set of metrics and return one flat dict (a results-table row).

    Args:
        metrics: names from :data:`METRICS`; default ``recall, map@r, r_precision, nmi, f1``
            (without NMI / F1 when a gallery is given).
        preset: ``"cub" | "cars" | "sop" | "inshop"``: the papers' K list (:data:`PRESETS`);
            ``"inshop"`` needs ``gallery``. ``ks`` overrides it; default K list (1, 2, 4, 8).
        gallery: ``(gallery_embeddings, gallery_labels)`` for query/gallery retrieval.
        seed: k-means and VRF sampling seed.
        precision_ks: K list for ``"precision"`` (default: the recall K list).
        vrf_negs: the ``neg`` values for ``"vrf"`` (keys ``vrf_neg1``, ``vrf_neg71``).
        cmc_ranks: ranks for ``"cmc"`` (keys ``cmc@k``); ``"map"`` is the re-ID mAP.
    Keys: ``recall@K``, ``precision@K``, ``map@r``, ``r_precision``, ``nmi``, ``f1``,
    ``vrf_neg{n}``, ``cmc@k``, ``map``.
    """
    if preset is not None:
        _check_choice(preset, "preset", tuple(PRESETS))
        if preset == "inshop" and gallery is None:
            raise ValueError(
                "preset 'inshop' is a query/gallery protocol: pass gallery=(emb, labels)")
    if metrics is None:
        metrics = ("recall", "map@r", "r_precision") + (("nmi", "f1") if gallery is None else ())
    elif isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    for m in metrics:
        _check_choice(m, "metric", METRICS)
    if ks is None:
        ks = PRESETS[preset] if preset is not None else (1, 2, 4, 8)
    ks = _check_ks(ks)
    precision_ks = ks if precision_ks is None else _check_ks(precision_ks, "precision_ks")
    out: dict[str, float] = {}
    want = set(metrics)
    if want & {"recall", "precision", "map@r", "r_precision"}:
        res = retrieval_metrics(
            embeddings, labels, ks if "recall" in want else (), gallery,
            precision_ks=precision_ks if "precision" in want else (),
            r_metrics=bool(want & {"map@r", "r_precision"}), normalize=normalize,
            lone_queries=lone_queries, average=average)
        for key, val in res.items():
            if key in ("map@r", "r_precision") and key not in want:
                continue
            out[key] = val
    if want & {"nmi", "f1"}:
        if gallery is not None:
            raise ValueError("nmi / f1 cluster one set: call clustering_metrics on the embeddings "
                             "to cluster instead of passing a gallery")
        res = clustering_metrics(embeddings, labels, seed, niter=kmeans_niter,
                                 n_init=kmeans_n_init, normalize=normalize)
        out.update({k: v for k, v in res.items() if k in want})
    if "vrf" in want:
        if gallery is not None:
            raise ValueError("vrf samples pairs within one set; pass no gallery")
        for n_neg in _check_ks(vrf_negs, "vrf_negs"):
            out[f"vrf_neg{n_neg}"] = verification_accuracy(embeddings, labels, n_neg, seed,
                                                           normalize=normalize)
    if want & {"cmc", "map"}:
        res = reid_metrics(embeddings, labels, gallery, cmc_ranks, normalize=normalize)
        out.update({k: v for k, v in res.items()
                    if (k == "map" and "map" in want) or (k != "map" and "cmc" in want)})
    return out


# --------------------------------------------------------------------------- embedding


def embed(model: torch.nn.Module, loader, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode under ``torch.no_grad`` over a loader of (images, labels).

    Returns ``(embeddings (N, D) float32, labels (N,) int64)`` as numpy arrays, in loader order.
    The model's training mode is restored afterwards. ``device`` defaults to the model's.
    """
    from tqdm.auto import tqdm

    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    was_training = model.training
    model.eval()
    embs, labs = [], []
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="embed", leave=False):
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ValueError("the loader must yield (images, labels) batches")
                images, labels = batch[0], batch[1]
                out = model(images.to(device, non_blocking=True))
                embs.append(out.detach().float().cpu())
                labs.append(torch.as_tensor(labels).long().cpu())
    finally:
        model.train(was_training)
    if not embs:
        raise ValueError("the loader yielded no batches")
    return torch.cat(embs).numpy(), torch.cat(labs).numpy()
