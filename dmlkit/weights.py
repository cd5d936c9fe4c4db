"""The unified weight view (Wang et al. 2019b, Theorem 3.1): a pair-based loss is a pair weighting.

For a loss ``L = H(S)`` of the similarity matrix, the weight of an ordered pair (i, j) is

    W_ij = -dL/dS_ij  (positive pair),   W_ij = +dL/dS_ij  (negative pair),   0 elsewhere,

read by autograd on a leaf S. Theorem 3.1: with W held fixed (detached), the surrogate
``F(S) = sum_{neg} W_ij S_ij - sum_{pos} W_ij S_ij`` has the same gradient with respect to the
embeddings as the loss itself. (The paper writes a factor 1/2 because it counts an unordered pair
once; on the ordered matrix (i, j) and (j, i) are separate entries.)

Where a loss has a closed form of its weights in Wang et al. 2019b (eq. 6-16), the loss states it
(:meth:`dmlkit.losses.PairLoss.closed_form_weights`) and :func:`closed_form_weights` computes
it; :func:`theorem_table` checks both for several losses at once. The closed forms, loss by loss:
docs/formulas.md#the-weight-view.

>>> import torch
>>> from dmlkit import losses, weights
>>> emb = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> labels = torch.arange(12) % 3
>>> loss = losses.build("binomial")
>>> S, W = weights.pair_weights(loss, emb, labels)
>>> S.shape, W.shape
(torch.Size([12, 12]), torch.Size([12, 12]))
>>> bool((W - weights.closed_form_weights(loss, emb, labels)[1]).abs().max() < 1e-12)
True
>>> weights.theorem_3_1_check(loss, emb, labels)[2] < 1e-12
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from . import losses as _losses
from .losses.base import PairBatch, PairLoss, make_batch

__all__ = [
    "WeightCurve",
    "closed_form_weights",
    "pair_weights",
    "pair_weights_from_batch",
    "surrogate",
    "theorem_3_1_check",
    "theorem_table",
    "weight_curve",
]


def _require_pair_loss(loss) -> PairLoss:
    if not isinstance(loss, PairLoss):
        raise ValueError(f"pair weights need a dmlkit PairLoss (built with losses.build), got "
                         f"{type(loss).__name__}")
    return loss


def _references(loss: PairLoss, embeddings, ref_embeddings, ref_labels):
    """The references given, or, for a loss that owns its references (the proxy losses,
    ``loss.references``) and none given, the loss's own."""
    if ref_embeddings is None and ref_labels is None and hasattr(loss, "references"):
        return loss.references(torch.as_tensor(embeddings))
    return ref_embeddings, ref_labels


def _tile_chunk(loss: PairLoss, batch: PairBatch) -> int | None:
    """The tile side of a tiled loss on a label-masked batch (None: the dense path)."""
    if loss.chunk_size is None or not batch.label_masks:
        return None
    return loss.tiled_chunk(batch.S.shape[0], batch.S.shape[1], batch.S.dtype)


def pair_weights_from_batch(loss: PairLoss, batch: PairBatch):
    """Weights of every pair of an existing :class:`PairBatch`; returns (S, W), both (B, M).

    Only the loss's pairwise part (``loss.compute``) is differentiated; a term that is not a
    function of S (e.g. N-pair's L2 penalty on the norms) has no pair weights. A tiled loss
    (``chunk_size`` set, :mod:`dmlkit.losses.tiling`) gives the dL/dS of its tiles (equal to
    the dense weights; tested).
    """
    _require_pair_loss(loss)
    if not batch.normalized and hasattr(loss, "form") and "distance" in str(loss.form):
        raise ValueError("pair weights of a distance-form loss need normalised embeddings "
                         "(normalize=True): only then is the distance a function of S")
    chunk = _tile_chunk(loss, batch)
    if chunk is not None:  # the weights of the tiles the engine uses (dmlkit.losses.tiling)
        from .losses.tiling import tiled_pair_grad
        ref = (None, None) if batch.in_batch else (batch.ref_embeddings.detach(),
                                                   batch.ref_labels)
        S, grad = tiled_pair_grad(loss, batch.embeddings.detach(), batch.labels, *ref, chunk)
        W = torch.where(batch.pos, -grad, torch.where(batch.neg, grad, torch.zeros_like(grad)))
        return S, W
    S = batch.S.detach().clone().requires_grad_(True)
    leaf = replace(batch, S=S, embeddings=batch.embeddings.detach(),
                   ref_embeddings=batch.ref_embeddings.detach())
    value = loss.compute(leaf)
    (grad,) = torch.autograd.grad(value, S, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(S)
    W = torch.where(batch.pos, -grad, torch.where(batch.neg, grad, torch.zeros_like(grad)))
    return S.detach(), W.detach()


def pair_weights(loss: PairLoss, embeddings, labels, ref_embeddings=None, ref_labels=None):
    """Similarities and per-pair weights of ``loss`` on a batch.

    Args:
        loss: a dmlkit pair loss (``losses.build(name, ...)``).
        embeddings: (B, D); labels: (B,); optional ref_embeddings (M, D) / ref_labels (M,)
            for the query-vs-reference form.
    Returns:
        ``(S, W)``, both (B, M) (M = B in-batch): ``W_ij = -dL/dS_ij`` for positive pairs,
        ``+dL/dS_ij`` for negative pairs, 0 on the diagonal and elsewhere. For the losses of the
        papers W >= 0 and equals the closed forms of Wang et al. 2019b (eq. 10-16) up to the loss's
        own normalisation (e.g. the 1/m of eq. 17).
    """
    _require_pair_loss(loss)
    ref_embeddings, ref_labels = _references(loss, embeddings, ref_embeddings, ref_labels)
    batch = make_batch(torch.as_tensor(embeddings).detach(), labels,
                       None if ref_embeddings is None else torch.as_tensor(ref_embeddings).detach(),
                       ref_labels, normalize=loss.normalize)
    return pair_weights_from_batch(loss, batch)


def surrogate(loss: PairLoss, embeddings: torch.Tensor, labels, ref_embeddings=None,
              ref_labels=None) -> torch.Tensor:
    """Theorem 3.1's surrogate ``F = sum_neg W S - sum_pos W S`` (+ the loss's non-S terms).

    W is computed at the current embeddings and detached; S is recomputed from ``embeddings``
    with gradient, so ``F.backward()`` gives the surrogate's gradient.
    """
    ref_embeddings, ref_labels = _references(loss, embeddings, ref_embeddings, ref_labels)
    batch = make_batch(embeddings, labels, ref_embeddings, ref_labels, normalize=loss.normalize)
    _, W = pair_weights_from_batch(loss, batch)
    signed = torch.where(batch.pos, -W, W)
    return (signed * batch.S).sum() + loss.regularizer(batch)


def theorem_3_1_check(loss: PairLoss, embeddings, labels, ref_embeddings=None, ref_labels=None):
    """Gradients of the loss and of its surrogate with respect to the embeddings.

    Returns ``(grad_loss, grad_surrogate, max_abs_difference)``; Theorem 3.1 says they are equal.
    A loss that samples its pairs (distance-weighted sampling) draws them again for the
    surrogate's weights: the random state it draws from (torch's global CPU generator and the
    loss's own ``generator``, if any) is restored in between, so both see the same pairs.
    """
    emb = torch.as_tensor(embeddings).detach()
    private = getattr(loss, "mining_params", {}).get("generator")
    states = (torch.get_rng_state(), None if private is None else private.get_state())
    x1 = emb.clone().requires_grad_(True)
    (g_loss,) = torch.autograd.grad(loss(x1, labels, ref_embeddings, ref_labels), x1)
    torch.set_rng_state(states[0])
    if private is not None:
        private.set_state(states[1])
    x2 = emb.clone().requires_grad_(True)
    (g_sur,) = torch.autograd.grad(surrogate(loss, x2, labels, ref_embeddings, ref_labels), x2)
    return g_loss, g_sur, float((g_loss - g_sur).abs().max())


@dataclass
class WeightCurve:
    """Weight of one pair as its similarity sweeps a grid (Wang et al. 2019b, Figure 1)."""

    similarity: np.ndarray
    weight: np.ndarray
    pair: str
    loss_name: str
    context_pos: tuple
    context_neg: tuple


def weight_curve(loss: PairLoss, pair: str = "negative", grid: Sequence[float] | None = None,
                 context_pos: Sequence[float] = (0.6, 0.7, 0.8),
                 context_neg: Sequence[float] = (0.2, 0.3, 0.4),
                 name: str | None = None) -> WeightCurve:
    """Weight of a single positive or negative pair of one anchor versus its similarity.

    One anchor (the query) faces references with fixed similarities ``context_pos`` (same class)
    and ``context_neg`` (other classes) plus the swept pair, whose similarity runs over ``grid``.
    This is the query-vs-reference form with S given directly (1 x M), so any S-based loss can
    be drawn; losses that need the embeddings themselves (class-centre attention) cannot.
    """
    _require_pair_loss(loss)
    if pair not in ("positive", "negative"):
        raise ValueError(f"pair must be 'positive' or 'negative', got {pair!r}")
    grid = np.linspace(-1, 1, 201) if grid is None else np.asarray(grid, dtype=float)
    ctx_p, ctx_n = list(map(float, context_pos)), list(map(float, context_neg))
    ref_labels = torch.tensor([0] * len(ctx_p) + [1 + k for k in range(len(ctx_n))]
                              + [0 if pair == "positive" else 1 + len(ctx_n)])
    labels = torch.tensor([0])
    m = len(ref_labels)
    dummy = torch.zeros(1, 1, dtype=torch.float64)
    weights = []
    for s in grid:
        S = torch.tensor([ctx_p + ctx_n + [float(s)]], dtype=torch.float64)
        pos = (labels[:, None] == ref_labels[None, :])
        batch = PairBatch(S=S, pos=pos, neg=~pos, labels=labels, ref_labels=ref_labels,
                          embeddings=dummy, ref_embeddings=dummy.expand(m, 1), in_batch=False,
                          normalized=True)
        try:
            _, W = pair_weights_from_batch(loss, batch)
        except (RuntimeError, IndexError) as exc:
            raise ValueError(f"{type(loss).__name__} needs the embeddings themselves (not only S); "
                             "use pair_weights on a real batch instead") from exc
        weights.append(float(W[0, -1]))
    return WeightCurve(similarity=grid, weight=np.asarray(weights), pair=pair,
                       loss_name=name or type(loss).__name__, context_pos=tuple(ctx_p),
                       context_neg=tuple(ctx_n))


def closed_form_weights(loss: PairLoss, embeddings, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed-form pair weights (Wang et al. 2019b, Sec. 4-5, eq. 6-16), computed directly.

    The loss states its closed form (:meth:`~dmlkit.losses.PairLoss.closed_form_weights`):
    ``contrastive(form="similarity")``, ``triplet(form="similarity", mining="all")`` (weights =
    number of active triplets of the pair, by brute-force enumeration of the (B, M, M)
    triplets: for small analysis batches only), ``generalized_lifted_structure(
    form="similarity")`` (eq. 10-11), ``binomial`` (eq. 13-14), and the weighted-pair family
    (``multi_similarity``, ``raw``, ``vthm``, ``binomial+vthm``, ``raw+semihard``: eq. 15-16 /
    13-14 / 1 on the mined pairs). Each includes the loss's own normalisation (reduction), so
    it must EQUAL :func:`pair_weights`; any other loss or setting raises a ValueError.
    Embeddings: (B, D); labels: (B,). Returns ``(S, W)`` (B, B) float64 ((B, C) for a proxy loss).
    """
    _require_pair_loss(loss)
    emb = torch.as_tensor(embeddings).detach().double()
    ref, ref_labels = _references(loss, emb, None, None)
    batch = make_batch(emb, labels, None if ref is None else ref.detach(), ref_labels,
                       normalize=loss.normalize)
    return batch.S, loss.closed_form_weights(batch)


def theorem_table(specs: Mapping[str, object] | Sequence[str], embeddings, labels,
                  closed_forms: bool = True) -> pd.DataFrame:
    """Theorem 3.1 checked numerically for several losses (float64).

    For each loss: ``max_grad_diff`` = max |dL/df - dF/df| between the loss and its surrogate
    ``F = sum_neg W s - sum_pos W s`` (:func:`theorem_3_1_check`), ``max_grad`` = max |dL/df|
    (the scale), ``min_weight`` (weights are >= 0 for the papers' losses), ``active_pairs``
    (share of pairs with W != 0) and, where :func:`closed_form_weights` applies,
    ``closed_form_err`` = max |W_autograd - W_closed| (NaN for the others).
    ``specs``: names or ``{label: name}`` / ``{label: (name, params)}``; ``osm_caa`` gets
    num_classes / embedding_dim from the data. Embeddings: (B, D); labels: (B,).
    """
    if not isinstance(specs, Mapping):
        specs = {name: name for name in specs}
    emb = torch.as_tensor(embeddings).detach().double()
    lab = torch.as_tensor(labels, dtype=torch.int64)
    rows = []
    for label, spec in specs.items():
        name, params = (spec, None) if isinstance(spec, str) else spec
        name, params = str(name), dict(params or {})
        if "num_classes" in (_losses.parameters(name) or ()):   # osm_caa, proxy losses
            params.setdefault("num_classes", int(lab.max()) + 1)
            params.setdefault("embedding_dim", emb.shape[1])
        torch.manual_seed(0)
        loss = _losses.build(name, **params).double()
        g_loss, _, diff = theorem_3_1_check(loss, emb, lab)
        _, W = pair_weights(loss, emb, lab)
        b = make_batch(emb, lab, *_references(loss, emb, None, None), normalize=loss.normalize)
        pairs = b.pos | b.neg
        row = {"loss": label, "max_grad_diff": diff, "max_grad": float(g_loss.abs().max()),
               "min_weight": float(W[pairs].min()),
               "active_pairs": float((W[pairs] != 0).double().mean())}
        if closed_forms:
            try:
                _, Wc = closed_form_weights(loss, emb, lab)
                row["closed_form_err"] = float((W - Wc).abs().max())
            except ValueError:
                row["closed_form_err"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
