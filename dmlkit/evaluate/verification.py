"""Verification accuracy VRF: one positive against ``neg`` negatives (Sohn 2016).

>>> import numpy as np
>>> from dmlkit.evaluate import verification_accuracy
>>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
>>> verification_accuracy(x, [0, 0, 1, 1], neg=2)
1.0
"""

from __future__ import annotations

import numpy as np
import torch

from .inputs import prepare

__all__ = ["verification_accuracy"]


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
    """Verification accuracy VRF with one positive and ``neg`` negatives (Sohn 2016).

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
    emb, lab = prepare(embeddings, labels, "embeddings", normalize)
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
