"""Re-identification metrics: CMC rank-k and mAP over the full ranking (MARS; Wang et al. 2019a).

>>> import numpy as np
>>> from dmlkit.evaluate import reid_metrics
>>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
>>> g = np.array([[1.0, 0.1], [0.1, 1.0], [0.9, 0.2], [0.2, 0.9]])
>>> reid_metrics(q, [0, 1], (g, [1, 0, 0, 1]), ranks=(1, 2))
{'cmc@1': 0.0, 'cmc@2': 1.0, 'map': 0.5}
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .._checks import check_labels
from .inputs import block_rows, check_ks, query_database

__all__ = ["reid_metrics"]


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
    """CMC rank-k and mAP over the full ranking (re-identification, MARS; Wang et al. 2019a).

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
    ranks = check_ks(ranks, "ranks")
    q_emb, q_lab, g_emb, g_lab, self_mode = query_database(embeddings, labels, gallery,
                                                           normalize)
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
    step = block_rows(n_q, n_g, max_block)
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
