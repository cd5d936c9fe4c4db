"""Retrieval metrics: Recall@K, precision@K, MAP@R and R-precision, exact and chunked.

Every number here is the papers' metric, to the definition
(docs/formulas.md#evaluation-metrics), computed exactly (no approximate search) with memory
bounded by chunking, fast enough for Stanford Online Products (60,502 test images) every few
epochs. Inputs may be torch tensors or numpy arrays, on
CPU or GPU; metrics are returned as fractions in [0, 1] (the papers print them x 100).

Conventions (the same in every function of dmlkit.evaluate)
-----------------------------------------------------------
* **Similarity.** Cosine similarity (embeddings L2-normalised, ``normalize=True``, the papers'
  setting; on unit vectors this ranks exactly as Euclidean distance). ``normalize=False`` ranks
  by the raw inner product. Computation is float32 (float64 inputs stay float64; half
  precision is cast to float32 and autocast is off: docs/precision.md); queries
  with neighbours in their top list within float32 resolution of each other (nearly collinear
  embeddings) are ranked again in float64 (``near_ties``).
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
``k + extra`` retrieval to drop the query, and runs on CUDA without faiss-gpu.

>>> import numpy as np
>>> from dmlkit.evaluate import retrieval_metrics
>>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0]])
>>> retrieval_metrics(x, [0, 0, 1, 1], ks=(1, 2))
{'recall@1': 1.0, 'recall@2': 1.0, 'map@r': 1.0, 'r_precision': 1.0}
>>> retrieval_metrics(x, [0, 1, 0, 1], ks=(1, 2))
{'recall@1': 0.0, 'recall@2': 0.5, 'map@r': 0.0, 'r_precision': 0.0}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import torch

from ..precision import without_autocast
from .inputs import DEFAULT_BLOCK, block_rows, check_choice, check_ks, query_database

__all__ = ["recall_at_k", "retrieval_metrics"]

_FIRST_HIT_DEPTH = 16  # top-list length that settles most queries' first positive


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


def _near_tie_tolerance(dim: int, top: torch.Tensor) -> torch.Tensor:
    """The float32 resolution of a similarity ``top`` of ``dim``-dimensional vectors: a few
    rounding errors of a dot product (about ``sqrt(dim)`` ulps of 1 for unit vectors)."""
    eps = torch.finfo(torch.float32).eps
    return 4.0 * math.sqrt(dim) * eps * top.abs().clamp(min=1.0)


def _retrieval_core(q_emb, q_lab, g_emb, g_lab, self_mode: bool, r_metrics: bool,
                    precision_ks: tuple[int, ...], max_block: int,
                    q_index: torch.Tensor | None = None):
    """Per query: first-positive rank (-1 if none), R, MAP@R, R-precision, hits in each top-k,
    and whether two neighbours in its ordered top list lie within float32 resolution of each
    other.

    ``precision_ks`` must already be capped at the database size. q_index: the database
    index of each query when the queries are a subset of the database (self mode; default:
    query i is database item i).
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
    near = torch.zeros(n_q, dtype=torch.bool, device=device)
    if n_db == 0:
        return first_rank, r_all, map_r, r_prec, prec_hits, near
    if q_index is None:
        q_index = torch.arange(n_q, device=device)
    step = block_rows(n_q, n_g, max_block)
    ar_g = torch.arange(n_g, device=device)
    for a in range(0, n_q, step):
        b = min(a + step, n_q)
        rows = torch.arange(a, b, device=device)
        me = q_index[a:b]
        S = q_emb[a:b] @ g_emb.T
        if self_mode:
            S[rows - a, me] = -math.inf
        lab = q_lab[a:b]
        r = r_all[a:b]
        has_pos = r > 0
        # ---- one ordered top list serves MAP@R / R-precision, precision@k and most first hits
        depth = max(int(r.max()) if r_metrics else 0, precision_k or 0, _FIRST_HIT_DEPTH)
        depth = min(depth, n_db)
        idx = _ordered_topk(S, depth, n_db)
        if depth >= 2:   # a near tie in the row's own list (R@1, MAP@R, precision)
            top = torch.gather(S, 1, idx)
            # finite: query_database keeps every similarity finite, and the list (depth <=
            # n_db) never reaches the query's own -inf entry
            gaps = top[:, :-1] - top[:, 1:]
            # each row scans max(its R, K, 16) items (capped by depth), not the block's
            # deepest list
            own = (r if r_metrics else torch.zeros_like(r)).clamp(
                min=max(precision_k, _FIRST_HIT_DEPTH))
            scanned = torch.arange(1, depth, device=device)[None, :] < own[:, None]
            near[a:b] = ((gaps <= _near_tie_tolerance(q_emb.shape[1], top[:, :1]))
                         & scanned).any(dim=1)
        hits = g_lab[idx] == lab[:, None]
        found = hits.any(dim=1)
        first = torch.where(found, hits.to(torch.uint8).argmax(dim=1), -1)
        # queries whose first positive lies beyond the list: count the items ranked above it
        miss = torch.nonzero(has_pos & ~found).flatten()
        if miss.numel():
            pos = _positives(order, start, count, rows[miss],
                             me[miss] if self_mode else None)
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
    return first_rank, r_all, map_r, r_prec, prec_hits, near


def _float64_inputs(embeddings, gallery):
    """The embeddings (and gallery) as float64 tensors, normalised again from the inputs."""
    def f64(x):
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        return t.detach().double()

    if gallery is None:
        return f64(embeddings), None
    return f64(embeddings), (f64(gallery[0]), gallery[1])


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


@without_autocast
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
    max_block: int = DEFAULT_BLOCK,
    near_ties: str = "float64",
) -> dict[str, float]:
    """Recall@K, precision@K, MAP@R and R-precision, exact (see the module conventions).

    Args:
        embeddings: (N, D) query embeddings (the whole test set when ``gallery`` is None).
        labels: (N,) integer class labels.
        ks: Recall@K list; the papers' lists are
            ``dmlkit.data.dataset_info(name).recall_ks``.
        gallery: optional ``(gallery_embeddings (M, D), gallery_labels (M,))`` for query/gallery
            retrieval (In-shop); then no item is removed from the ranking.
        precision_ks: precision@K list (fraction of the top K that share the query's class).
        r_metrics: compute MAP@R and R-precision (Musgrave et al. 2020).
        normalize: L2-normalise first (cosine similarity, the papers' setting); without it,
            float32 embeddings whose similarities could overflow float32 are ranked in float64.
        lone_queries: ``"exclude"`` (default, as PML) or ``"miss"`` (count in Recall@K and
            precision@K as failures).
        average: ``"query"`` (default) or ``"class"`` (mean of per-class means, PML's
            ``avg_of_avgs``).
        max_block: floats in one similarity block; bounds memory.
        near_ties: what to do with float32 queries where two neighbours of the ordered top
            list (its first max(R, K, 16) items: R with ``r_metrics``, K the deepest
            precision@K) lie within float32 resolution of each other
            (``4 sqrt(D)`` ulps), so that rounding can decide the ranking (nearly
            collinear embeddings, e.g. a shared offset with a tiny residual): ``"float64"``
            (default: those queries are ranked again, in float64, from the given
            embeddings cast to float64), ``"warn"`` (a warning with the fraction of queries affected
            and the fix) or ``"ignore"``. Float64 inputs are never affected.

    Returns:
        ``{"recall@K": ..., "precision@K": ..., "map@r": ..., "r_precision": ...}`` as floats
        (NaN when no query counts).

    Recall@K = fraction of queries with a same-class item among their K nearest neighbours
    (Oh Song et al. 2016); R-precision = (#same-class among the top R) / R and
    MAP@R = (1/R) sum_{i<=R} P@i rel_i with R the number of other same-class items.
    """
    ks = check_ks(ks)
    precision_ks = check_ks(precision_ks, "precision_ks")
    check_choice(lone_queries, "lone_queries", ("exclude", "miss"))
    check_choice(average, "average", ("query", "class"))
    check_choice(near_ties, "near_ties", ("float64", "warn", "ignore"))
    q_emb, q_lab, g_emb, g_lab, self_mode = query_database(embeddings, labels, gallery,
                                                           normalize)
    n_db = g_emb.shape[0] - int(self_mode)
    capped = tuple(sorted({min(k, n_db) for k in precision_ks if n_db > 0}))
    first_rank, r, map_r, r_prec, prec_hits, near = _retrieval_core(
        q_emb, q_lab, g_emb, g_lab, self_mode, r_metrics, capped, max_block)
    if q_emb.dtype == torch.float32 and near_ties != "ignore" and bool(near.any()):
        share = float(near.double().mean())
        if near_ties == "warn":
            warnings.warn(f"{share:.1%} of the queries have neighbours in their ranking within "
                          "float32 resolution of each other, so rounding may decide their "
                          "ranking; pass near_ties='float64' (the default) or float64 "
                          "embeddings", RuntimeWarning, stacklevel=3)
        else:
            e64, g64 = _float64_inputs(embeddings, gallery)
            q64, _, g64_emb, _, _ = query_database(e64, labels, g64, normalize)
            sel = torch.nonzero(near).flatten()
            fr, _, mr, rp, ph, _ = _retrieval_core(
                q64[sel], q_lab[sel], g64_emb.to(q64.device), g_lab, self_mode, r_metrics,
                capped, max_block, q_index=sel)
            first_rank[sel], map_r[sel], r_prec[sel], prec_hits[sel] = fr, mr, rp, ph
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

