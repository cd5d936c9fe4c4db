"""The (anchor, positive, negative) triples the generators read.

>>> import torch
>>> a, p, n = sample_triplets(torch.tensor([0, 0, 1, 1]), 1, torch.Generator().manual_seed(0))
>>> a.tolist(), p.tolist()          # every sample is an anchor; its positive is the other one
([0, 1, 2, 3], [1, 0, 3, 2])
"""

from __future__ import annotations

import torch

from .._checks import check_labels
from ..similarity import pair_masks

__all__ = ["sample_triplets"]


def sample_triplets(labels: torch.Tensor, negatives_per_anchor: int | None = 1,
                    generator: torch.Generator | None = None, scheme: str = "random"):
    """Triples (anchor, positive, negative) of batch indices for the generator.

    Every sample with at least one positive and one negative is an anchor. Its positive is one
    of its positives drawn at random (the ``x+`` of ``J_adv``); its negatives are
    ``negatives_per_anchor`` of its negatives drawn at random without replacement (capped at the
    smallest negative count), or all of them when None.
    scheme="npair": Sohn's N-pair pairing instead: per class with >= 2 samples, its first sample
    (batch order) is the anchor ``x_i`` and its second the positive ``x_i^+``; the negatives of
    anchor i are the positives ``x_j^+`` of the other classes (DAML with the N-pair loss), so
    ``negatives_per_anchor`` is ignored.
    labels: (B,). Returns three (T,) long tensors, grouped by anchor.
    """
    labels = check_labels(labels, labels.shape[0] if hasattr(labels, "shape") else len(labels))
    if scheme not in ("random", "npair"):
        raise ValueError(f"unknown triplet scheme {scheme!r}; known: 'random', 'npair'")
    if scheme == "npair":
        same = labels[:, None] == labels[None, :]
        rank = (same & torch.ones_like(same).tril(diagonal=-1)).sum(1)
        firsts = torch.nonzero(rank == 0, as_tuple=True)[0]
        seconds = torch.nonzero(rank == 1, as_tuple=True)[0]
        firsts = firsts[(labels[firsts][:, None] == labels[seconds][None, :]).any(1)]
        if firsts.numel() < 2:
            empty = torch.empty(0, dtype=torch.long, device=labels.device)
            return empty, empty, empty
        second_of = seconds[(labels[firsts][:, None] == labels[seconds][None, :]).float()
                            .argmax(1)]
        a_pos, n_pos = torch.nonzero(~torch.eye(firsts.numel(), dtype=torch.bool,
                                                device=labels.device), as_tuple=True)
        return firsts[a_pos], second_of[a_pos], second_of[n_pos]
    pos, neg = pair_masks(labels)
    valid = pos.any(1) & neg.any(1)
    if not bool(valid.any()):
        empty = torch.empty(0, dtype=torch.long, device=labels.device)
        return empty, empty, empty
    B = labels.shape[0]
    scores = torch.rand(B, B, generator=generator).to(labels.device)
    positive_of = scores.masked_fill(~pos, -1.0).argmax(1)
    if negatives_per_anchor is None:
        a, n = torch.nonzero(neg & valid[:, None], as_tuple=True)
    else:
        if int(negatives_per_anchor) < 1:
            raise ValueError(f"negatives_per_anchor must be >= 1 or None, got "
                             f"{negatives_per_anchor}")
        k = min(int(negatives_per_anchor), int(neg[valid].sum(1).min()))
        nscores = torch.rand(B, B, generator=generator).to(labels.device).masked_fill(~neg, -1.0)
        top = nscores.topk(k, dim=1).indices
        anchors = torch.nonzero(valid, as_tuple=True)[0]
        a = anchors.repeat_interleave(k)
        n = top[anchors].reshape(-1)
    return a, positive_of[a], n
