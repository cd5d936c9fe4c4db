"""Brute-force retrieval, re-ID, verification and clustering metrics (per-query loops in
float64): the references for every metric test.

The ranking convention is dmlkit.evaluate's: cosine similarity descending (float64 dot
products of the given vectors with ``normalize=False``), exact ties by database index
ascending; without a gallery each query's own row is left out by index.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

__all__ = ["brute_force_metrics", "expected_vrf", "pair_f1", "rankings"]


def _unit(x, normalize: bool = True) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x


def rankings(queries, query_labels, gallery=None, gallery_labels=None, *, query_cams=None,
             gallery_cams=None, normalize: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: (database indices in rank order, whether each shares the query's label).

    Without ``gallery`` the queries are the database and the query itself is left out. With
    cameras, gallery items of the query's label seen by the query's camera are left out (the
    Market-1501 / MARS junk rule).
    """
    q, ql = _unit(queries, normalize), np.asarray(query_labels)
    self_mode = gallery is None
    g, gl = (q, ql) if self_mode else (_unit(gallery, normalize), np.asarray(gallery_labels))
    out = []
    for i in range(len(q)):
        keep = np.ones(len(g), bool)
        if self_mode:
            keep[i] = False
        if query_cams is not None:
            keep &= ~((gl == ql[i]) & (np.asarray(gallery_cams) == np.asarray(query_cams)[i]))
        idx = np.nonzero(keep)[0]
        s = g[idx] @ q[i]
        ranked = idx[np.lexsort((idx, -s))]
        out.append((ranked, gl[ranked] == ql[i]))
    return out


def brute_force_metrics(queries, query_labels, gallery=None, gallery_labels=None, *,
                        metrics=("recall", "precision", "map@r", "r_precision"),
                        ks=(1, 2, 4, 8), precision_ks=(), cmc_ranks=(1, 5, 10, 20),
                        lone="exclude", average="query", query_cams=None,
                        gallery_cams=None, normalize: bool = True) -> dict[str, float]:
    """The metrics named in ``metrics`` (dmlkit.evaluate names), one query at a time.

    * ``recall`` / ``precision``: ``recall@k`` for ``ks``, ``precision@k`` (hits in the top k
      / min(k, database size)) for ``precision_ks``, over the queries with a positive
      (``lone="exclude"``) or over all queries (``lone="miss"``);
    * ``map@r`` / ``r_precision``: MAP@R and R-precision, R = number of positives, over the
      queries with a positive;
    * ``cmc`` / ``map``: re-ID CMC@k for ``cmc_ranks`` and the mean over queries with a positive
      of AP over the whole ranking (camera junk rule with ``query_cams`` / ``gallery_cams``).

    ``average="class"`` averages recall, precision, MAP@R and R-precision per class first.
    """
    ranked = rankings(queries, query_labels, gallery, gallery_labels, query_cams=query_cams,
                      gallery_cams=gallery_cams, normalize=normalize)
    ql = np.asarray(query_labels)
    rows: dict[str, list] = {}
    if "recall" in metrics:
        rows |= {f"recall@{k}": [] for k in ks}
    if "precision" in metrics:
        rows |= {f"precision@{k}": [] for k in precision_ks}
    rows |= {m: [] for m in ("map@r", "r_precision") if m in metrics}
    if "cmc" in metrics:
        rows |= {f"cmc@{k}": [] for k in cmc_ranks}
    if "map" in metrics:
        rows["map"] = []
    k_labels, r_labels = [], []
    for i, (_, rel) in enumerate(ranked):
        n_rel = int(rel.sum())
        if n_rel > 0 or lone == "miss":
            k_labels.append(ql[i])
            for k in ks if "recall" in metrics else ():
                rows[f"recall@{k}"].append(float(rel[:k].any()))
            for k in precision_ks if "precision" in metrics else ():
                rows[f"precision@{k}"].append(rel[:k].sum() / min(k, len(rel)))
        if n_rel == 0:
            continue
        r_labels.append(ql[i])
        top = rel[:n_rel]
        if "r_precision" in metrics:
            rows["r_precision"].append(top.sum() / n_rel)
        if "map@r" in metrics:
            prec = np.cumsum(top) / np.arange(1, n_rel + 1)
            rows["map@r"].append(float((prec * top).sum() / n_rel))
        for k in cmc_ranks if "cmc" in metrics else ():
            rows[f"cmc@{k}"].append(np.argmax(rel) < k)
        if "map" in metrics:
            hits = np.nonzero(rel)[0]
            rows["map"].append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))

    def avg(key, vals):
        vals = np.asarray(vals, float)
        if average == "query" or key == "map" or key.startswith("cmc@"):
            return vals.mean()
        labs = np.asarray(r_labels if key in ("map@r", "r_precision") else k_labels)
        return np.mean([vals[labs == c].mean() for c in np.unique(labs)])

    return {key: avg(key, vals) for key, vals in rows.items()}


def pair_f1(labels, clusters) -> float:
    """Pair-counting F1 of a clustering by a loop over all pairs of items."""
    y, c = np.asarray(labels), np.asarray(clusters)
    tp = fp = fn = 0
    for i, j in combinations(range(len(y)), 2):
        same_c, same_k = y[i] == y[j], c[i] == c[j]
        tp += same_c and same_k
        fp += same_k and not same_c
        fn += same_c and not same_k
    p, r = tp / (tp + fp), tp / (tp + fn)
    return 2 * p * r / (p + r)


def expected_vrf(x, y, neg: int, replace: bool = False) -> float:
    """E[VRF]: per anchor, mean over positives of C(#neg below s_ap, neg) / C(#neg, neg);
    ``replace=True``: of (#neg below / #neg) ** neg, the expectation if the ``neg`` negatives
    were drawn with replacement (the rule violation the tests must tell apart)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    per_anchor = []
    for a in range(len(y)):
        pos = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        negs = np.nonzero(y != y[a])[0]
        if not pos or len(negs) < neg:
            continue
        below = [int((s[a, negs] < s[a, p]).sum()) for p in pos]
        per_anchor.append(np.mean([(b / len(negs)) ** neg if replace else
                                   math.comb(b, neg) / math.comb(len(negs), neg)
                                   for b in below]))
    return float(np.mean(per_anchor))
