"""The objectives of adversarial negative generation (docs/formulas.md#hard-negative-generation)::

    J_gen  = J_hard + lambda1 J_reg + lambda2 J_adv   (negative generator, Duan et al. 2018)
    J+_gen = ||g+ - x||^2 + lambda1 ||g+ - x+||^2      (positive generator, Zou et al. n.d.)
    J_m    = any pair-based loss whose negatives are the synthetic ones

>>> import torch
>>> a, p = torch.zeros(2, 3), torch.ones(2, 3)
>>> synthetic_positive_objective(a, p, 0.5 * p)["total"]     # the minimiser for lambda1 = 1
tensor(1.5000)
>>> out = generator_objective(a, p, p, a)                     # x~ = x: J_hard = 0
>>> float(out["hard"]), float(out["reg"])
(0.0, 3.0)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._checks import check_embeddings, check_embeddings_labels, check_labels
from ..losses.base import PairBatch, PairLoss
from ..similarity import pair_masks, similarity_matrix

__all__ = ["generator_objective", "metric_loss_with_synthetic", "synthetic_positive_objective"]

_REDUCTIONS = ("mean", "sum")


def _reduce(v: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; known: {', '.join(_REDUCTIONS)}")
    return v.sum() if reduction == "sum" else v.mean()


def _same_shape(**tensors: torch.Tensor) -> None:
    shapes = {k: tuple(t.shape) for k, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shape mismatch: {shapes}")
    for k, t in tensors.items():
        if t.dim() != 2:
            raise ValueError(f"{k} must be 2-D (T, D), got shape {tuple(t.shape)}")


def generator_objective(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                        synthetic: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor]
                        | None = None, *, lambda1: float = 1.0, lambda2: float = 1.0,
                        alpha: float = 1.0, alpha_sign: int = -1,
                        reduction: str = "mean") -> dict[str, torch.Tensor]:
    """DAML's generator objective ``J_gen = J_hard + lambda1 J_reg + lambda2 J_adv`` (Duan et
    al. 2018).

    anchor, positive, negative, synthetic: (T, D) in the generator's space (``positive`` is the
    synthetic positive ``g+`` for the ``J-_gen`` of Zou et al. n.d.). embed: the metric
    mapping this space to the space where ``D`` is measured (None: identity). Per triple::

        hard = ||x~ - x||^2,  reg = ||x~ - x-||^2,
        adv  = [ ||e(x~) - e(x)||^2 - ||e(x+) - e(x)||^2 + alpha_sign * alpha ]_+

    alpha_sign: -1 (Duan et al. 2018 / official code, default) or +1 (Zou et al. n.d.,
    eq. 4). Defaults
    lambda1 = lambda2 = 1, alpha = 1 (official code; re-implementations use lambda2 = 50).
    reduction: "mean" over triples (default, so the lambdas do not depend on the batch size) or
    "sum" (the papers' ``sum_i``). Returns a dict of 0-dim tensors: hard, reg, adv, total.
    """
    _same_shape(anchor=anchor, positive=positive, negative=negative, synthetic=synthetic)
    if alpha_sign not in (-1, 1):
        raise ValueError(f"alpha_sign must be -1 (DAML) or +1 (DAML+SP's hinge), got {alpha_sign}")
    e = (lambda z: z) if embed is None else embed
    hard = (synthetic - anchor).pow(2).sum(1)
    reg = (synthetic - negative).pow(2).sum(1)
    ea = e(anchor)
    d_syn = (e(synthetic) - ea).pow(2).sum(1)
    d_pos = (e(positive) - ea).pow(2).sum(1)
    adv = F.relu(d_syn - d_pos + alpha_sign * float(alpha))
    out = {"hard": _reduce(hard, reduction), "reg": _reduce(reg, reduction),
           "adv": _reduce(adv, reduction)}
    out["total"] = out["hard"] + float(lambda1) * out["reg"] + float(lambda2) * out["adv"]
    return out


def synthetic_positive_objective(anchor: torch.Tensor, positive: torch.Tensor,
                                 synthetic_positive: torch.Tensor, *, lambda1: float = 1.0,
                                 reduction: str = "mean") -> dict[str, torch.Tensor]:
    """Zou et al. n.d., eq. 3: ``J+_gen = sum_i ||g+_i - x_i||^2 + lambda1 ||g+_i - x+_i||^2``.

    anchor, positive, synthetic_positive: (T, D). Returns a dict: hard, reg, total (0-dim).
    Its minimiser is ``(x + lambda1 x+) / (1 + lambda1)``: a point between anchor and positive.
    """
    _same_shape(anchor=anchor, positive=positive, synthetic_positive=synthetic_positive)
    hard = (synthetic_positive - anchor).pow(2).sum(1)
    reg = (synthetic_positive - positive).pow(2).sum(1)
    out = {"hard": _reduce(hard, reduction), "reg": _reduce(reg, reduction)}
    out["total"] = out["hard"] + float(lambda1) * out["reg"]
    return out


def metric_loss_with_synthetic(loss: PairLoss, embeddings: torch.Tensor, labels: torch.Tensor,
                               synthetic: torch.Tensor, synthetic_labels: torch.Tensor,
                               owner: torch.Tensor, keep_real_negatives: bool = False,
                               mode: str = "auto",
                               positive: torch.Tensor | None = None) -> torch.Tensor:
    """``J_m``: a pair-based loss where each anchor's negatives are its synthetic negatives.

    embeddings: (B, E) the batch (queries); labels: (B,); synthetic: (T, E) synthetic negatives;
    synthetic_labels: (T,) the labels of the real negatives they came from; owner: (T,) the
    anchor (row of ``embeddings``) each was generated for. References = ``[embeddings;
    synthetic]`` (B + T rows). Row i: positives = its real positives (same label, not itself);
    negatives = the synthetic negatives with ``owner == i`` (+ its real negatives when
    ``keep_real_negatives``). Returns ``loss.compute(batch) + loss.regularizer(batch)``.
    positive: None (default: every real positive of the anchor) or (T,) the batch index of the
    positive of each triple: row ``owner[t]`` then keeps only the positives ``positive[t]``, so
    the loss sees exactly the sampled (anchor, positive, synthetic negative) triples (the
    official code's random triplets). Pass the real negatives as ``synthetic`` for the same
    loss on real triples.

    mode: "masked" (one (B, B + T) PairBatch with these masks, for losses that read
    ``batch.pos`` / ``batch.neg``), "per_anchor" (for losses that pair samples by label, such as
    the N-pair losses: for each anchor, ``loss(anchor, its label, [its positives; its synthetic
    negatives], their labels)``, averaged over the anchors; a Python loop over anchors) or
    "auto" (default: "per_anchor" for the N-pair-mc / -ovo losses, "masked" otherwise).
    With "per_anchor" and ``keep_real_negatives`` each synthetic negative is paired as a class
    of its own, so the anchor sees all its synthetic negatives *and* one real negative per other
    class (the first in batch order, N-pair's pairing); before this was fixed the real
    negatives shared their labels with the synthetic ones and the pairing dropped them.

    >>> import torch
    >>> from dmlkit import losses
    >>> emb = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    >>> lab = torch.tensor([0, 0, 1, 1])
    >>> syn, own = torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 2])
    >>> args = (losses.build("npair", l2_reg=0.0), emb, lab, syn, lab[[2, 0]], own)
    >>> without = metric_loss_with_synthetic(*args)
    >>> with_real = metric_loss_with_synthetic(*args, keep_real_negatives=True)
    >>> bool(with_real > without)                  # the real negatives now count
    True
    """
    if not (isinstance(loss, PairLoss) or hasattr(loss, "compute")):
        raise ValueError(f"synthetic negatives need a pair-based dmlkit loss (a PairLoss with "
                         f"compute(PairBatch)), got {type(loss).__name__}")
    emb, lab = check_embeddings_labels(embeddings, labels)
    syn = check_embeddings(synthetic, "synthetic")
    if syn.shape[1] != emb.shape[1]:
        raise ValueError(f"synthetic negatives have dimension {syn.shape[1]} but embeddings have "
                         f"{emb.shape[1]}")
    syn_lab = check_labels(synthetic_labels, syn.shape[0], "synthetic_labels", device=emb.device)
    own = check_labels(owner, syn.shape[0], "owner", device=emb.device)
    B, T = emb.shape[0], syn.shape[0]
    if bool(((own < 0) | (own >= B)).any()):
        raise ValueError(f"owner indices must lie in [0, {B})")
    if bool((syn_lab == lab[own]).any()):
        raise ValueError("a synthetic negative has the label of its own anchor")
    if mode == "auto":
        mode = "per_anchor" if _pairs_by_labels(loss) else "masked"
    pos_of = None
    if positive is not None:
        pos_of = check_labels(positive, syn.shape[0], "positive", device=emb.device)
        if bool(((pos_of < 0) | (pos_of >= B)).any()) or bool((lab[pos_of] != lab[own]).any()) \
                or bool((pos_of == own).any()):
            raise ValueError("positive[t] must be another sample of the label of owner[t]")
    if mode == "per_anchor":
        return _per_anchor_loss(loss, emb, lab, syn, syn_lab, own, keep_real_negatives, pos_of)
    if mode != "masked":
        raise ValueError(f"unknown mode {mode!r}; known: 'auto', 'masked', 'per_anchor'")
    normalize = bool(getattr(loss, "normalize", True))
    ref = torch.cat([emb, syn.to(emb.dtype)], dim=0)
    ref_lab = torch.cat([lab, syn_lab])
    S = similarity_matrix(emb, ref, normalize=normalize)
    pos_real, neg_real = pair_masks(lab)
    if pos_of is not None:
        pos_real = torch.zeros_like(pos_real)
        pos_real[own, pos_of] = True
    own_mask = own[None, :] == torch.arange(B, device=emb.device)[:, None]
    pos = torch.cat([pos_real, torch.zeros(B, T, dtype=torch.bool, device=emb.device)], dim=1)
    neg_left = neg_real if keep_real_negatives else torch.zeros_like(neg_real)
    neg = torch.cat([neg_left, own_mask], dim=1)
    batch = PairBatch(S=S, pos=pos, neg=neg, labels=lab, ref_labels=ref_lab, embeddings=emb,
                      ref_embeddings=ref, in_batch=False, normalized=normalize)
    return loss.compute(batch) + loss.regularizer(batch)


def _pairs_by_labels(loss) -> bool:
    """True for losses whose ``compute`` pairs samples by label instead of reading the masks."""
    if getattr(loss, "pairs_by_labels", False):
        return True
    from ..losses import npair as _npair

    base = getattr(_npair, "_NPairBase", None)
    return base is not None and isinstance(loss, base)


def _per_anchor_loss(loss, emb, lab, syn, syn_lab, own, keep_real_negatives, pos_of=None):
    pos_real, neg_real = pair_masks(lab)
    if pos_of is not None:
        pos_real = torch.zeros_like(pos_real)
        pos_real[own, pos_of] = True
    fresh = int(torch.cat([lab, syn_lab]).max()) + 1  # labels no real sample has
    values = []
    for i in torch.unique(own).tolist():
        mine = own == i
        syn_labels_i = syn_lab[mine]
        if keep_real_negatives:  # every synthetic negative a class of its own (see docstring)
            syn_labels_i = fresh + torch.arange(int(mine.sum()), device=emb.device)
        refs = [emb[pos_real[i]], syn[mine].to(emb.dtype)]
        ref_labels = [lab[pos_real[i]], syn_labels_i]
        if keep_real_negatives:
            refs.append(emb[neg_real[i]])
            ref_labels.append(lab[neg_real[i]])
        r = torch.cat(refs)
        if r.shape[0] == 0 or not bool(pos_real[i].any()):
            continue
        values.append(loss(emb[i:i + 1], lab[i:i + 1], r, torch.cat(ref_labels)))
    if not values:
        return emb.sum() * 0.0 + syn.sum() * 0.0
    return torch.stack(values).mean()
