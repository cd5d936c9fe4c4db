"""The pairs and triplets of one batch, laid out for inspection: which pairs a loss uses, every
triplet with its category, every pair's OSM / CAA weight, and the loss landscape of a 2-D toy.

Everything here enumerates the pairs (or triplets) of a small batch: analysis and teaching
sizes, not training.

>>> import torch
>>> from dmlkit import losses, pairs
>>> emb = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
>>> pairs.mining_stats(losses.build("raw"), emb, labels)
{'pos_kept': 1.0, 'neg_kept': 1.0}
>>> table = pairs.triplet_table(emb, labels, margin=0.2)
>>> len(table)                      # 8 anchors x 1 positive x 6 negatives
48
>>> list(table.columns)
['anchor', 'positive', 'negative', 't_ap', 't_an', 'violation', 'category']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import losses as _losses
from . import weights as _weights
from .losses.base import PairLoss, make_batch
from .losses.osm_caa import OSMCAALoss
from .losses.triplet import TripletLoss, triplet_counts

__all__ = ["loss_landscape_2d", "mining_stats", "osm_caa_pair_table", "triplet_table"]


def mining_stats(loss: PairLoss, embeddings, labels) -> dict[str, float]:
    """Which pairs of a batch a loss actually uses: shares of pairs with a non-zero weight.

    Returns ``pos_kept`` / ``neg_kept`` = fraction of the positive / negative (ordered) pairs
    whose weight ``W_ij`` (:func:`dmlkit.weights.pair_weights`) is non-zero, and for triplet
    losses ``triplets_kept`` = fraction of the valid triplets with a non-zero loss / kept by
    the mining. Embeddings: (B, D); labels: (B,).
    """
    emb = torch.as_tensor(embeddings).detach()
    lab = torch.as_tensor(labels)
    _, W = _weights.pair_weights(loss, emb, lab)
    batch = make_batch(emb, lab, normalize=loss.normalize)
    pos, neg = batch.pos, batch.neg
    out = {"pos_kept": float(((W != 0) & pos).sum()) / max(int(pos.sum()), 1),
           "neg_kept": float(((W != 0) & neg).sum()) / max(int(neg.sum()), 1)}
    if isinstance(loss, TripletLoss) and loss.mining != "batch_hard":
        _, _, kept, total = triplet_counts(loss.scores(batch), pos, neg, loss.margin,
                                           loss.mining)
        out["triplets_kept"] = float(kept) / max(float(total), 1.0)
    return out


def triplet_table(embeddings, labels, margin: float = 0.2, form: str = "distance",
                  normalize: bool = True) -> pd.DataFrame:
    """Every valid triplet (anchor, positive, negative) of a small batch, one row each.

    Columns: anchor, positive, negative, ``t_ap``, ``t_an`` (the triplet loss's scores T:
    minus the distance, minus the squared distance, or the similarity, see
    :class:`dmlkit.losses.triplet.TripletLoss`), ``violation = t_an - t_ap + margin`` and
    ``category``: ``"easy"`` (violation <= 0, zero loss), ``"semi-hard"`` (t_ap - margin <
    t_an < t_ap) or ``"hard"`` (t_an >= t_ap). Embeddings: (B, D); labels: (B,).
    Enumerates B x B x B triplets: analysis only.
    """
    loss = _losses.build("triplet", margin=margin, form=form, normalize=normalize)
    b = make_batch(torch.as_tensor(embeddings).detach().double(), labels, normalize=normalize)
    T = loss.scores(b)
    a, p, n = torch.nonzero(b.pos[:, :, None] & b.neg[:, None, :], as_tuple=True)
    t_ap, t_an = T[a, p], T[a, n]
    viol = t_an - t_ap + margin
    cat = np.where(viol.numpy() <= 0, "easy",
                   np.where((t_an < t_ap).numpy(), "semi-hard", "hard"))
    return pd.DataFrame({"anchor": a.numpy(), "positive": p.numpy(), "negative": n.numpy(),
                         "t_ap": t_ap.numpy(), "t_an": t_an.numpy(), "violation": viol.numpy(),
                         "category": cat})


@torch.no_grad()
def osm_caa_pair_table(loss: PairLoss, embeddings, labels, flags=None) -> pd.DataFrame:
    """Every pair's OSM weight, CAA attention and final weight (Wang et al. 2019a), one row a pair.

    Columns: i, j, pair (positive / negative), distance, ``osm`` (s+ = exp(-d^2/sigma^2) or
    s- = [alpha - d]_+), ``a_i``, ``a_j``, ``attention`` = min(a_i, a_j), ``weight`` = osm x
    attention, and with ``flags`` (N,) bool (e.g. flipped labels) ``flagged`` = flags[i] or
    flags[j]. Embeddings (B, D), labels (B,); ``loss`` built with ``losses.build("osm_caa")``.
    """
    if not isinstance(loss, OSMCAALoss):
        raise ValueError(f"osm_caa_pair_table needs an osm_caa loss, got {type(loss).__name__}")
    b = make_batch(torch.as_tensor(embeddings).detach().float(), labels, normalize=loss.normalize)
    w_pos, w_neg = loss.pair_weights_osm_caa(b)
    a = loss.sample_attention(b.embeddings, b.labels)
    d = b.distances()
    s_pos = torch.exp(-b.squared_distances() / loss.sigma ** 2)
    s_neg = (loss.alpha - d).clamp_min(0.0)
    i, j = torch.nonzero(b.pos | b.neg, as_tuple=True)
    is_pos = b.pos[i, j]
    osm = torch.where(is_pos, s_pos[i, j], s_neg[i, j])
    df = pd.DataFrame({"i": i.numpy(), "j": j.numpy(),
                       "pair": np.where(is_pos.numpy(), "positive", "negative"),
                       "distance": d[i, j].numpy(), "osm": osm.numpy(),
                       "a_i": a[i].numpy(), "a_j": a[j].numpy(),
                       "attention": torch.minimum(a[i], a[j]).numpy(),
                       "weight": torch.where(is_pos, w_pos[i, j], w_neg[i, j]).numpy()})
    if flags is not None:
        fl = torch.as_tensor(flags, dtype=torch.bool)
        df["flagged"] = (fl[i] | fl[j]).numpy()
    return df


def loss_landscape_2d(loss: PairLoss, points, labels, moving_label: int,
                      lim: float = 2.0, n: int = 41) -> dict[str, np.ndarray]:
    """Loss as a function of the position of one extra 2-D point (the others fixed).

    ``points`` (B, 2) fixed embeddings with ``labels`` (B,); a point of class ``moving_label``
    is placed at every node of an ``n x n`` grid over ``[-lim, lim]^2``. Returns ``x``, ``y``
    (n,), ``loss`` (n, n) (rows: y) and ``grad_x``, ``grad_y`` (n, n): the gradient of the loss
    with respect to the moving point (gradient descent moves it along minus this).
    Use ``normalize=False`` losses to see the plane; normalised ones only see the angle.

    >>> from dmlkit import losses
    >>> loss = losses.build("contrastive", reduction="sum", normalize=False)
    >>> land = loss_landscape_2d(loss, [[-1.0, 0.0], [1.0, 0.0]], [0, 1], moving_label=0, n=3)
    >>> land["loss"].shape, float(land["loss"][1, 1])   # the moving point at the origin
    ((3, 3), 2.0)
    """
    pts = torch.as_tensor(points, dtype=torch.float64)
    lab = torch.as_tensor(labels, dtype=torch.int64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (B, 2), got {tuple(pts.shape)}")
    lab_all = torch.cat([lab, torch.tensor([int(moving_label)])])
    xs = np.linspace(-lim, lim, n)
    values = np.zeros((n, n))
    gx, gy = np.zeros((n, n)), np.zeros((n, n))
    for r, yv in enumerate(xs):
        for c, xv in enumerate(xs):
            p = torch.tensor([[xv, yv]], dtype=torch.float64, requires_grad=True)
            value = loss(torch.cat([pts, p]), lab_all)
            (g,) = torch.autograd.grad(value, p)
            values[r, c] = float(value.detach())
            gx[r, c], gy[r, c] = float(g[0, 0]), float(g[0, 1])
    return {"x": xs, "y": xs, "loss": values, "grad_x": gx, "grad_y": gy}
