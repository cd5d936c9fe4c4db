"""Proxy losses: one learnable vector per class, and S between the samples and the proxies.

A proxy loss owns its references: ``proxies`` (an ``nn.Parameter`` of shape (C, D)) with the
labels ``0 .. C-1``. ``loss(embeddings, labels)`` builds the query-vs-reference
:class:`~dmlkit.losses.PairBatch` of the batch against the proxies (S is B x C, cosine), so
the same ``compute(batch)`` serves training and the weight view: ``weights.pair_weights``
gives the weight of every sample-proxy pair and ``weights.weight_curve`` draws them
(:meth:`ProxyLoss.references` is how the weight view finds the proxies).

Initialisation (both as the official Proxy-Anchor code and PML): ``kaiming_normal_`` with
``mode="fan_out"`` on the (C, D) matrix, i.e. N(0, 2 / C) entries; the losses only see the
directions of the proxies, so the scale matters only for the optimiser's step sizes.
Training: the official Proxy-Anchor code gives the proxies a 100x larger learning rate;
``train.fit(loss_lr_mult=100)`` does the same. Formulas: docs/formulas.md#proxy-losses.

>>> import torch
>>> from dmlkit import losses, weights
>>> loss = losses.build("proxy_anchor", num_classes=3, embedding_dim=4)
>>> loss.proxies.shape
torch.Size([3, 4])
>>> emb, lab = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
>>> S, W = weights.pair_weights(loss, emb, lab)     # sample x proxy
>>> S.shape, bool((W >= 0).all())
(torch.Size([6, 3]), True)
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_embeddings_labels
from ..precision import compute_dtype
from .base import PairBatch, PairLoss, make_batch, zero_loss
from .registry import register

__all__ = ["DENOMINATORS", "ProxyAnchorLoss", "ProxyLoss", "ProxyNCALoss"]

#: ProxyNCA's softmax denominators: the paper's (the other classes) and PML's (every class)
DENOMINATORS = ("negatives", "all")


def _log1p_sum_exp(logits: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """``log(1 + sum_{keep} e^{logits})`` along ``dim`` (stable; 0 where nothing is kept)."""
    x = logits.masked_fill(~keep, float("-inf"))
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.logsumexp(torch.cat([x, zero], dim=dim), dim=dim)


class ProxyLoss(PairLoss):
    """Base of the proxy losses: owns ``proxies`` (C, D) and builds S = samples x proxies.

    Labels must lie in ``[0, num_classes)``; the embeddings must have ``embedding_dim``
    columns; passing references (``ref_embeddings``) is a ValueError: the proxies are the
    references. Half-precision embeddings are computed in float32 with float32 proxies
    (docs/precision.md); otherwise the proxies are cast (differentiably) to the embeddings'
    dtype and device.
    """

    def __init__(self, num_classes: int | None = None, embedding_dim: int | None = None,
                 normalize: bool = True):
        super().__init__(normalize=normalize)
        name = type(self).__name__
        if num_classes is None or embedding_dim is None:
            raise ValueError(f"{name} owns one proxy per class: pass num_classes and "
                             "embedding_dim, e.g. build('proxy_anchor', num_classes=100, "
                             "embedding_dim=512)")
        if int(num_classes) < 1 or int(embedding_dim) < 1:
            raise ValueError(f"num_classes and embedding_dim must be >= 1, got "
                             f"{num_classes}, {embedding_dim}")
        self.num_classes, self.embedding_dim = int(num_classes), int(embedding_dim)
        self.proxies = nn.Parameter(torch.empty(self.num_classes, self.embedding_dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def references(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(proxies, labels 0..C-1)`` in the dtype / device of ``like`` (the embeddings)."""
        like = torch.as_tensor(like)
        dtype = compute_dtype(like.dtype) if like.is_floating_point() else self.proxies.dtype
        proxies = self.proxies.to(device=like.device, dtype=dtype)
        return proxies, torch.arange(self.num_classes, device=like.device)

    def proxy_batch(self, embeddings, labels) -> PairBatch:
        """The checked :class:`PairBatch` of ``embeddings`` (queries) against the proxies."""
        emb, lab = check_embeddings_labels(embeddings, labels)
        if emb.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings have dimension {emb.shape[1]} but "
                             f"{type(self).__name__} was built with "
                             f"embedding_dim={self.embedding_dim}")
        if int(lab.min()) < 0 or int(lab.max()) >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}) (num_classes), got "
                             f"range [{int(lab.min())}, {int(lab.max())}]")
        proxies, proxy_labels = self.references(emb)
        return make_batch(emb, lab, proxies, proxy_labels, normalize=self.normalize)

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None) -> torch.Tensor:
        if ref_embeddings is not None or ref_labels is not None:
            raise ValueError(f"{type(self).__name__} takes no ref_embeddings / ref_labels: its "
                             "references are its proxies")
        batch = self.proxy_batch(embeddings, labels)
        return self.compute(batch) + self.regularizer(batch)


@register("proxy_anchor")
class ProxyAnchorLoss(ProxyLoss):
    r"""Proxy-Anchor loss (Kim et al. 2020).

    With ``s(x, p)`` the cosine between a sample and a proxy, ``X+_p`` / ``X-_p`` the samples
    of the batch of / not of the proxy's class, ``P+`` the proxies with at least one positive
    sample in the batch and ``P`` all proxies:

    .. math::
        L = \frac{1}{|P^+|}\sum_{p\in P^+}\log\Big(1+\sum_{x\in X^+_p}e^{-\alpha(s(x,p)-\delta)}
            \Big) + \frac{1}{|P|}\sum_{p\in P}\log\Big(1+\sum_{x\in X^-_p}
            e^{\alpha(s(x,p)+\delta)}\Big)

    Defaults alpha = 32, delta = 0.1 (paper and official code). Each proxy is an anchor: the
    sums run over the samples (the rows of S) of one proxy (a column), so a sample's weight
    depends on the other samples of the batch against the same proxy. |P| is the number of
    columns of S (= num_classes for a real batch). Computed with a stable logsumexp (the
    official code adds 1 to a plain sum of exponentials; the same value where that does not
    overflow). No positive proxy in the batch: the positive part is 0.

    Pair weights (W = -dL/dS positives, +dL/dS negatives, all >= 0):
    ``alpha e^{-alpha(s-delta)} / (|P+| (1 + sum_{X+_p} e^{-alpha(s-delta)}))`` and
    ``alpha e^{alpha(s+delta)} / (|P| (1 + sum_{X-_p} e^{alpha(s+delta)}))``.

    Equal to PML's ``ProxyAnchorLoss(num_classes, embedding_size, margin=delta, alpha=alpha)``
    with the same proxies (value and gradient of embeddings and proxies; tested). PML casts
    its proxies to the embeddings' dtype in place; here the cast is part of the graph.
    """

    hyperparameters = ("num_classes", "embedding_dim", "alpha", "delta")

    def __init__(self, num_classes: int | None = None, embedding_dim: int | None = None,
                 alpha: float = 32.0, delta: float = 0.1, normalize: bool = True):
        super().__init__(num_classes, embedding_dim, normalize)
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.delta = float(alpha), float(delta)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        S, pos, neg = batch.S, batch.pos, batch.neg
        pos_terms = _log1p_sum_exp(-self.alpha * (S - self.delta), pos, dim=0)   # (M,)
        neg_terms = _log1p_sum_exp(self.alpha * (S + self.delta), neg, dim=0)
        n_pos_proxies = int(pos.any(0).sum())
        return pos_terms.sum() / max(n_pos_proxies, 1) + neg_terms.sum() / S.shape[1]

    def closed_form_weights(self, batch: PairBatch) -> torch.Tensor:
        """The sample-proxy weights of the class docstring, computed directly. (B, M)."""
        S, pos, neg = batch.S, batch.pos, batch.neg
        zero = torch.zeros((), dtype=S.dtype, device=S.device)
        e_pos = torch.where(pos, torch.exp(-self.alpha * (S - self.delta)), zero)
        e_neg = torch.where(neg, torch.exp(self.alpha * (S + self.delta)), zero)
        n_pos_proxies = max(int(pos.any(0).sum()), 1)
        w_pos = self.alpha * e_pos / (n_pos_proxies * (1.0 + e_pos.sum(0, keepdim=True)))
        w_neg = self.alpha * e_neg / (S.shape[1] * (1.0 + e_neg.sum(0, keepdim=True)))
        return w_pos + w_neg


@register("proxy_nca")
class ProxyNCALoss(ProxyLoss):
    r"""ProxyNCA (Movshovitz-Attias et al. 2017).

    With ``d(x, p) = ||x/|x| - p/|p|||^2`` (squared Euclidean distance of unit vectors,
    ``= 2 - 2 s(x, p)``) and ``scale`` a softmax temperature (1 in the paper):

    .. math::
        L = \frac{1}{B}\sum_x -\log\frac{e^{-\mathrm{scale}\, d(x, p_y)}}
            {\sum_{c\in D(x)} e^{-\mathrm{scale}\, d(x, p_c)}}

    ``denominator="negatives"`` (default, the paper): ``D(x)`` = the other classes' proxies
    (c != y; the loss may then be negative); ``denominator="all"`` (PML's ``ProxyNCALoss``,
    a softmax over every proxy): D(x) = all proxies, ``L >= 0``. Computed from S as
    ``-log softmax(2 scale S)`` (the constant 2 scale cancels). ``normalize=False`` uses the
    squared distances of the raw embeddings and proxies. A sample without a proxy in D(x)
    (one class with "negatives") contributes 0; the mean is over all B samples.

    Pair weights (all >= 0): positive ``2 scale (1 - p_y)`` ("all") or ``2 scale``
    ("negatives"), negative ``2 scale p_c`` (p the softmax over D(x)), times 1/B.

    Equal to PML's ``ProxyNCALoss(num_classes, embedding_size, softmax_scale=scale)`` with
    ``denominator="all"`` and the same proxies (value and gradients; tested). PML drops from
    its mean the samples whose softmax probability underflows to exactly 0 (possible in
    float32 at large scale); here every sample counts. The Proxy-Anchor repository trains its
    ProxyNCA baseline with PML and ``softmax_scale=32``.
    """

    hyperparameters = ("num_classes", "embedding_dim", "scale", "denominator")

    def __init__(self, num_classes: int | None = None, embedding_dim: int | None = None,
                 scale: float = 1.0, denominator: str = "negatives", normalize: bool = True):
        super().__init__(num_classes, embedding_dim, normalize)
        if denominator not in DENOMINATORS:
            raise ValueError(f"unknown denominator {denominator!r}; choose one of "
                             f"{DENOMINATORS}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale, self.denominator = float(scale), denominator

    def compute(self, batch: PairBatch) -> torch.Tensor:
        pos, neg = batch.pos, batch.neg
        if batch.normalized:
            logits = (2.0 * self.scale) * batch.S
        else:
            logits = -self.scale * batch.squared_distances()
        den_mask = neg if self.denominator == "negatives" else pos | neg
        live = (pos.any(1) & den_mask.any(1))[:, None]
        if not bool(live.any()):
            return zero_loss(batch)
        # rows that do not count keep every logit, so that no logsumexp is over nothing
        inf = float("-inf")
        num = torch.logsumexp(logits.masked_fill(~(pos | ~live), inf), dim=1)
        den = torch.logsumexp(logits.masked_fill(~(den_mask | ~live), inf), dim=1)
        per_sample = torch.where(live[:, 0], den - num, 0.0)
        return per_sample.sum() / logits.shape[0]
