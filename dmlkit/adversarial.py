"""Adversarial hard-negative generation: DAML (seed 000) and its synthetic-positive extension
(seed 001), for every pair-based loss of :mod:`dmlkit.losses`.

A generator ``G`` reads an (anchor, positive, negative) triple of features and writes a
synthetic negative ``x~-_i = G([x_i, x+_i, x-_i])`` (FORMULAS.md section 3)::

    J_gen = J_hard + lambda1 J_reg + lambda2 J_adv
    J_hard = ||x~- - x||^2          (near the anchor, in the generator's space)
    J_reg  = ||x~- - x-||^2         (not too far from the real negative)
    J_adv  = [ D(x~-, x)^2 - D(x+, x)^2 + alpha_sign * alpha ]_+   (hard for the current metric)
    J = J_gen + lam * J_m           (J_m: any dmlkit pair-based loss on the synthetic negatives)

``D`` is the learned metric: the Euclidean distance between the metric head's embeddings
(L2-normalised when the loss normalises). Sign of the hinge: seed 000 (DAML, the official
code) writes ``- alpha``; seed 001 writes ``+ alpha``. Default here: ``alpha_sign=-1`` (seed 000)
for both methods; ``alpha_sign=+1`` gives seed 001's eq. 4 exactly.

Synthetic positive (seed 001, ``method="daml+sp"``): a second generator writes
``g+ = G+([x, x+, x-])`` trained on ``J+_gen = ||g+ - x||^2 + lambda1 ||g+ - x+||^2``; the
negative generator then reads ``[x, g+, x-]`` and uses ``D(g+, x)`` in ``J_adv``.

How the synthetic negatives enter a loss (:func:`metric_loss_with_synthetic`): one
query-vs-reference similarity matrix. Queries are the batch (anchors); references are the
batch itself followed by the synthetic negatives. Row ``i`` keeps its real positives (same label,
not itself) and, as negatives, ONLY the synthetic negatives generated for anchor ``i`` (its real
negatives are replaced; ``keep_real_negatives=True`` keeps them too). The loss's own
``compute(PairBatch)`` then runs unchanged, so every loss built on ``batch.S`` and the masks works:
triplet / contrastive see (anchor, positive, synthetic negative) triplets / pairs, lifted
structure and N-pair see each anchor's negatives replaced by negatives generated from them.
A synthetic negative carries the label of the real negative it was generated from. The N-pair
losses pair samples by label rather than by mask, so they are evaluated anchor by anchor on
Sohn's pairing: anchor ``x_i``, positive ``x_i^+`` and synthetic negatives ``G(x_i, x_i^+, x_j^+)``.

Gradient routing (an implementation choice, the papers do not spell it out): the generator(s)
are updated with ``J_gen`` (and ``J+_gen``) only; the metric head (and an optional trainable
trunk) with ``lam * J_m`` only, the synthetic negatives entering ``J_m`` as constants. The metric
never minimises ``J_adv`` (that would help the generator instead of resisting it). With
``generator_metric_grad=True`` the generator also receives ``lam * dJ_m/dtheta_g`` (the literal
``min_theta_g J_gen + lam J_m``). Under Adam ``lam`` then barely matters in the default routing:
it only rescales the metric's gradient.

Schedule (official code): ``warmup_epochs`` of metric loss alone, then (optionally)
``generator_epochs`` of generator alone ("initialise the generator adversarial to the
pre-trained metric"), then joint training with separate Adam optimisers: head at ``lr``,
generator at ``lr * generator_lr_factor`` (official 1/10), trunk at ``lr * trunk_lr_factor``
(official 1/1000). The generator is not used at test time (:meth:`AdversarialResult.embed`).

Scale notes. ``J_hard`` / ``J_reg`` are measured in the generator's space and ``J_adv`` on
unit-norm embeddings (``D^2 <= 4``): feed L2-normalised features (as the official code does) so
the three terms are comparable. With ``alpha_sign=-1, alpha=1`` the hinge is inactive whenever
``D(x~, x)^2 < D(x+, x)^2 + 1``, which is common on the unit sphere, and the generator then
just interpolates between anchor and negative. On small CPU benchmarks (benchmarks/adversarial.py)
the metric can learn to tell synthetic from real features instead of learning the classes;
``normalize_synthetic=True`` and ``keep_real_negatives=True`` are the knobs to try.

>>> from dmlkit import adversarial
>>> rec = adversarial.NegativeRecorder()
>>> res = adversarial.fit_adversarial(features, labels, "triplet", "daml", recorder=rec,
...                                   warmup_epochs=10, epochs=30)   # doctest: +SKIP
>>> test_embeddings = res.embed(test_features)                        # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_embeddings, check_embeddings_labels, check_labels
from .losses.base import PairBatch, PairLoss
from .similarity import pair_masks, similarity_matrix

__all__ = [
    "METHODS",
    "AdversarialResult",
    "AdversarialTrainer",
    "HardNegativeGenerator",
    "MetricHead",
    "NegativeRecorder",
    "SyntheticPositiveGenerator",
    "fit_adversarial",
    "generator_objective",
    "metric_loss_with_synthetic",
    "sample_triplets",
    "synthetic_positive_objective",
]

METHODS = ("metric", "daml", "daml+sp")
_REDUCTIONS = ("mean", "sum")


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------
def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, int(width)), nn.ReLU()]
        prev = int(width)
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


class HardNegativeGenerator(nn.Module):
    """DAML's hard-negative generator: an MLP over ``concat[anchor, positive, negative]``.

    dim: D, the size of the features it reads and writes (backbone features or embeddings).
    hidden: widths of the hidden ReLU layers; default ``(512,)`` gives ``3D -> 512 -> D``, which is
    the official ``1536 -> 512 -> 512`` for D = 512. out_activation: None (default, linear output,
    so signed features are reachable) or ``"relu"`` (for non-negative backbone features).
    normalize_output: L2-normalise the output (for unit-norm features, as in the official code).

    forward(anchor (T, D), positive (T, D), negative (T, D)) -> synthetic negative (T, D).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (512,), out_activation: str | None = None,
                 normalize_output: bool = False):
        super().__init__()
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if out_activation not in (None, "relu"):
            raise ValueError(f"out_activation must be None or 'relu', got {out_activation!r}")
        self.dim = int(dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.out_activation = out_activation
        self.normalize_output = bool(normalize_output)
        self.net = _mlp(3 * self.dim, self.hidden, self.dim)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                negative: torch.Tensor) -> torch.Tensor:
        for name, t in (("anchor", anchor), ("positive", positive), ("negative", negative)):
            if t.dim() != 2 or t.shape[1] != self.dim:
                raise ValueError(f"{name} must have shape (T, {self.dim}) for this generator, "
                                 f"got {tuple(t.shape)}")
        if not (anchor.shape[0] == positive.shape[0] == negative.shape[0]):
            raise ValueError("anchor, positive and negative must have the same number of rows, got "
                             f"{anchor.shape[0]}, {positive.shape[0]}, {negative.shape[0]}")
        out = self.net(torch.cat([anchor, positive, negative], dim=1))
        if self.out_activation == "relu":
            out = F.relu(out)
        if self.normalize_output:
            out = F.normalize(out, dim=1)
        return out

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, out_activation={self.out_activation!r}, "
                f"normalize_output={self.normalize_output}")


class SyntheticPositiveGenerator(HardNegativeGenerator):
    """Seed 001's synthetic-positive generator ``g+ = G+([x, x+, x-])``: same MLP as
    :class:`HardNegativeGenerator`, trained on :func:`synthetic_positive_objective`.

    forward(anchor (T, D), positive (T, D), negative (T, D)) -> synthetic positive (T, D).
    """


class MetricHead(nn.Module):
    """The metric ``f``: features (N, D) -> embeddings (N, E).

    kind="mlp": the official code's extra 2-layer head ``D -> hidden -> E`` (ReLU between);
    kind="linear": one linear map ``D -> E``.
    """

    def __init__(self, in_dim: int, embedding_dim: int = 64, kind: str = "mlp", hidden: int = 512):
        super().__init__()
        if kind not in ("mlp", "linear"):
            raise ValueError(f"unknown head kind {kind!r}; known kinds: 'mlp', 'linear'")
        self.in_dim, self.embedding_dim, self.kind = int(in_dim), int(embedding_dim), kind
        self.net = (_mlp(self.in_dim, (hidden,), self.embedding_dim) if kind == "mlp"
                    else nn.Linear(self.in_dim, self.embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"the metric head expects features of shape (N, {self.in_dim}), "
                             f"got {tuple(x.shape)}")
        return self.net(x)


# --------------------------------------------------------------------------------------------
# objectives
# --------------------------------------------------------------------------------------------
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
    """DAML's generator objective ``J_gen = J_hard + lambda1 J_reg + lambda2 J_adv`` (seed 000).

    anchor, positive, negative, synthetic: (T, D) in the generator's space (``positive`` is the
    synthetic positive ``g+`` for seed 001's ``J-_gen``). embed: the metric mapping this space to
    the space where ``D`` is measured (None: identity). Per triple::

        hard = ||x~ - x||^2,  reg = ||x~ - x-||^2,
        adv  = [ ||e(x~) - e(x)||^2 - ||e(x+) - e(x)||^2 + alpha_sign * alpha ]_+

    alpha_sign: -1 (seed 000 / official code, default) or +1 (seed 001 eq. 4). Defaults
    lambda1 = lambda2 = 1, alpha = 1 (official code; re-implementations use lambda2 = 50).
    reduction: "mean" over triples (default, so the lambdas do not depend on the batch size) or
    "sum" (the papers' ``sum_i``). Returns a dict of 0-dim tensors: hard, reg, adv, total.
    """
    _same_shape(anchor=anchor, positive=positive, negative=negative, synthetic=synthetic)
    if alpha_sign not in (-1, 1):
        raise ValueError(f"alpha_sign must be -1 (seed 000) or +1 (seed 001), got {alpha_sign}")
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
    """Seed 001 eq. 3: ``J+_gen = sum_i ||g+_i - x_i||^2 + lambda1 ||g+_i - x+_i||^2``.

    anchor, positive, synthetic_positive: (T, D). Returns a dict: hard, reg, total (0-dim).
    Its minimiser is ``(x + lambda1 x+) / (1 + lambda1)``: a point between anchor and positive.
    """
    _same_shape(anchor=anchor, positive=positive, synthetic_positive=synthetic_positive)
    hard = (synthetic_positive - anchor).pow(2).sum(1)
    reg = (synthetic_positive - positive).pow(2).sum(1)
    out = {"hard": _reduce(hard, reduction), "reg": _reduce(reg, reduction)}
    out["total"] = out["hard"] + float(lambda1) * out["reg"]
    return out


# --------------------------------------------------------------------------------------------
# triplets and the loss on synthetic negatives
# --------------------------------------------------------------------------------------------
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


def metric_loss_with_synthetic(loss: PairLoss, embeddings: torch.Tensor, labels: torch.Tensor,
                               synthetic: torch.Tensor, synthetic_labels: torch.Tensor,
                               owner: torch.Tensor, keep_real_negatives: bool = False,
                               mode: str = "auto") -> torch.Tensor:
    """``J_m``: a pair-based loss where each anchor's negatives are its synthetic negatives.

    embeddings: (B, E) the batch (queries); labels: (B,); synthetic: (T, E) synthetic negatives;
    synthetic_labels: (T,) the labels of the real negatives they came from; owner: (T,) the
    anchor (row of ``embeddings``) each was generated for. References = ``[embeddings;
    synthetic]`` (B + T rows). Row i: positives = its real positives (same label, not itself);
    negatives = the synthetic negatives with ``owner == i`` (+ its real negatives when
    ``keep_real_negatives``). Returns ``loss.compute(batch) + loss.regularizer(batch)``.

    mode: "masked" (one (B, B + T) PairBatch with these masks, for losses that read
    ``batch.pos`` / ``batch.neg``), "per_anchor" (for losses that pair samples by label, such as
    the N-pair losses: for each anchor, ``loss(anchor, its label, [its positives; its synthetic
    negatives], their labels)``, averaged over the anchors; a Python loop over anchors) or
    "auto" (default: "per_anchor" for the N-pair-mc / -ovo losses, "masked" otherwise).
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
    if mode == "per_anchor":
        return _per_anchor_loss(loss, emb, lab, syn, syn_lab, own, keep_real_negatives)
    if mode != "masked":
        raise ValueError(f"unknown mode {mode!r}; known: 'auto', 'masked', 'per_anchor'")
    normalize = bool(getattr(loss, "normalize", True))
    ref = torch.cat([emb, syn.to(emb.dtype)], dim=0)
    ref_lab = torch.cat([lab, syn_lab])
    S = similarity_matrix(emb, ref, normalize=normalize)
    pos_real, neg_real = pair_masks(lab)
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
    from .losses import npair as _npair

    base = getattr(_npair, "_NPairBase", None)
    return base is not None and isinstance(loss, base)


def _per_anchor_loss(loss, emb, lab, syn, syn_lab, own, keep_real_negatives):
    pos_real, neg_real = pair_masks(lab)
    values = []
    for i in torch.unique(own).tolist():
        refs = [emb[pos_real[i]], syn[own == i].to(emb.dtype)]
        ref_labels = [lab[pos_real[i]], syn_lab[own == i]]
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


# --------------------------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------------------------
class NegativeRecorder:
    """Keeps (anchor, positive, real negative, synthetic negative) triples during training.

    Called by :class:`AdversarialTrainer` once per joint step; keeps at most ``max_per_epoch``
    triples per epoch (the first ones seen), every ``every`` epochs. Stores the generator-space
    vectors and the metric's embeddings (L2-normalised when the loss normalises) at record time,
    the labels and the epoch. ``margin``: the loss margin, kept for hardness plots.

    >>> rec = NegativeRecorder(); fit_adversarial(..., recorder=rec)   # doctest: +SKIP
    >>> rec.hardness_frame()     # one row per triple: d_ap, d_an, d_asyn (embedding space)
    >>> X, meta = rec.points("embedding")   # stacked points for UMAP / t-SNE
    """

    KINDS = ("anchor", "positive", "negative", "synthetic")

    def __init__(self, max_per_epoch: int = 256, every: int = 1):
        if max_per_epoch < 1 or every < 1:
            raise ValueError("max_per_epoch and every must be >= 1")
        self.max_per_epoch, self.every = int(max_per_epoch), int(every)
        self.records: list[dict[str, np.ndarray]] = []
        self._count: dict[int, int] = {}
        self.margin: float | None = None

    def wants(self, epoch: int) -> bool:
        return epoch % self.every == 0 and self._count.get(epoch, 0) < self.max_per_epoch

    def record(self, epoch: int, *, anchor, positive, negative, synthetic, anchor_emb,
               positive_emb, negative_emb, synthetic_emb, labels, negative_labels,
               synthetic_positive=None) -> None:
        """All arrays (T, ...) aligned by triple; ``labels``: anchor labels (T,)."""
        if not self.wants(epoch):
            return
        take = min(self.max_per_epoch - self._count.get(epoch, 0), int(anchor.shape[0]))

        def np_(t):
            return t[:take].detach().float().cpu().numpy()

        rec = {"epoch": np.full(take, epoch), "label": np_(labels.float()).astype(np.int64),
               "negative_label": np_(negative_labels.float()).astype(np.int64),
               "anchor": np_(anchor), "positive": np_(positive), "negative": np_(negative),
               "synthetic": np_(synthetic), "anchor_emb": np_(anchor_emb),
               "positive_emb": np_(positive_emb), "negative_emb": np_(negative_emb),
               "synthetic_emb": np_(synthetic_emb)}
        if synthetic_positive is not None:
            rec["synthetic_positive"] = np_(synthetic_positive)
        self.records.append(rec)
        self._count[epoch] = self._count.get(epoch, 0) + take

    def __len__(self) -> int:
        return sum(len(r["epoch"]) for r in self.records)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every recorded field concatenated over records (fields absent somewhere dropped)."""
        if not self.records:
            raise ValueError("nothing recorded yet (the recorder only sees joint-training steps)")
        keys = set.intersection(*(set(r) for r in self.records))
        return {k: np.concatenate([r[k] for r in self.records]) for k in sorted(keys)}

    def hardness_frame(self):
        """pandas DataFrame, one row per triple: epoch, label, negative_label, d_ap, d_an,
        d_asyn (Euclidean distances between the metric's embeddings), the same in the
        generator's space (f_d_ap, f_d_an, f_d_asyn), and ``margin``."""
        import pandas as pd

        a = self.arrays()

        def d(x, y):
            return np.linalg.norm(a[x] - a[y], axis=1)

        return pd.DataFrame({
            "epoch": a["epoch"], "label": a["label"], "negative_label": a["negative_label"],
            "d_ap": d("anchor_emb", "positive_emb"), "d_an": d("anchor_emb", "negative_emb"),
            "d_asyn": d("anchor_emb", "synthetic_emb"), "f_d_ap": d("anchor", "positive"),
            "f_d_an": d("anchor", "negative"), "f_d_asyn": d("anchor", "synthetic"),
            "margin": np.full(len(a["epoch"]), np.nan if self.margin is None else self.margin),
        })

    def points(self, space: str = "embedding", epoch: int | None = None):
        """Stacked points for UMAP / t-SNE: returns (X (4T, dim), meta DataFrame with kind,
        label (the class of the point: anchor label for anchor/positive, negative label for
        negative/synthetic), epoch, triple)."""
        import pandas as pd

        if space not in ("embedding", "feature"):
            raise ValueError(f"space must be 'embedding' or 'feature', got {space!r}")
        a = self.arrays()
        keep = np.ones(len(a["epoch"]), bool) if epoch is None else a["epoch"] == epoch
        suffix = "_emb" if space == "embedding" else ""
        xs, metas = [], []
        for kind in self.KINDS:
            xs.append(a[kind + suffix][keep])
            lab = a["label"] if kind in ("anchor", "positive") else a["negative_label"]
            metas.append(pd.DataFrame({"kind": kind, "label": lab[keep],
                                       "epoch": a["epoch"][keep],
                                       "triple": np.nonzero(keep)[0]}))
        return np.concatenate(xs), pd.concat(metas, ignore_index=True)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _resolve_loss(loss, loss_kwargs: dict | None):
    if isinstance(loss, str):
        from . import losses as _losses

        return _losses.build(loss, **(loss_kwargs or {})), _losses.registry.get(loss)
    if loss_kwargs:
        raise ValueError("loss_kwargs only apply when loss is given by name")
    if not hasattr(loss, "compute"):
        raise ValueError(f"loss must be a registered loss name or a dmlkit PairLoss, got "
                         f"{type(loss).__name__}")
    return loss, type(loss)


def _auto_negatives(loss_name: str) -> int | None:
    """1 synthetic negative per anchor for triplet / contrastive (official code), all for the
    losses that look at every negative of an anchor (lifted structure, N-pair, ...)."""
    key = loss_name.lower()
    return 1 if ("triplet" in key or "contrastive" in key) else None


@dataclass
class AdversarialResult:
    """What :func:`fit_adversarial` returns. history: one dict per epoch (phase, mean losses,
    and the evaluation metrics at the epochs where they were computed)."""

    head: nn.Module
    generator: HardNegativeGenerator | None
    positive_generator: SyntheticPositiveGenerator | None
    trunk: nn.Module | None
    loss: nn.Module
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    recorder: NegativeRecorder | None = None

    @torch.no_grad()
    def embed(self, features, batch_size: int = 4096) -> torch.Tensor:
        """Test-time embeddings (N, E) of features (N, D): trunk + head, no generator;
        L2-normalised when the loss normalises."""
        x = check_embeddings(features, "features")
        p = next(self.head.parameters())
        modules = [m for m in (self.trunk, self.head) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        outs = []
        for i in range(0, x.shape[0], batch_size):
            z = x[i:i + batch_size].to(device=p.device, dtype=p.dtype)
            if self.trunk is not None:
                z = self.trunk(z)
            z = self.head(z)
            if getattr(self.loss, "normalize", True):
                z = F.normalize(z, dim=1)
            outs.append(z.cpu())
        for m, mode in zip(modules, modes):
            m.train(mode)
        return torch.cat(outs)


class AdversarialTrainer:
    """One training step of the metric-only, DAML or DAML+SP schedule on a feature batch.

    :func:`fit_adversarial` is the usual entry point; this class is the step it repeats, usable
    from a notebook. ``step(x, y, phase)`` with phase "metric" (metric loss alone), "generator"
    (generator alone) or "joint"; returns a dict of floats (the batch's objective terms).
    triplet_scheme: how the generator's triples are drawn (:func:`sample_triplets`): "auto" =
    "npair" (Sohn's pairing) for the N-pair losses, "random" otherwise.
    """

    def __init__(self, loss: nn.Module, head: nn.Module, generator: HardNegativeGenerator | None,
                 positive_generator: SyntheticPositiveGenerator | None = None,
                 trunk: nn.Module | None = None, *, space: str = "feature", lr: float = 1e-3,
                 generator_lr_factor: float = 0.1, trunk_lr_factor: float = 1e-3,
                 lambda1: float = 1.0, lambda2: float = 1.0, lam: float = 1.0,
                 alpha: float = 1.0, alpha_sign: int = -1, negatives_per_anchor: int | None = 1,
                 keep_real_negatives: bool = False, generator_metric_grad: bool = False,
                 weight_decay: float = 0.0, recorder: NegativeRecorder | None = None,
                 seed: int = 0, triplet_scheme: str = "auto"):
        if space not in ("feature", "embedding"):
            raise ValueError(f"space must be 'feature' or 'embedding', got {space!r}")
        if alpha_sign not in (-1, 1):
            raise ValueError(f"alpha_sign must be -1 (seed 000) or +1 (seed 001), got {alpha_sign}")
        if positive_generator is not None and generator is None:
            raise ValueError("a positive generator needs a negative generator")
        self.loss, self.head, self.trunk = loss, head, trunk
        self.generator, self.positive_generator = generator, positive_generator
        self.space, self.lam = space, float(lam)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        self.alpha, self.alpha_sign = float(alpha), int(alpha_sign)
        self.negatives_per_anchor = negatives_per_anchor
        if triplet_scheme == "auto":
            triplet_scheme = "npair" if _pairs_by_labels(loss) else "random"
        if triplet_scheme not in ("random", "npair"):
            raise ValueError(f"unknown triplet_scheme {triplet_scheme!r}; known: 'auto', "
                             "'random', 'npair'")
        self.triplet_scheme = triplet_scheme
        self.keep_real_negatives = bool(keep_real_negatives)
        self.generator_metric_grad = bool(generator_metric_grad)
        self.recorder = recorder
        self.normalize = bool(getattr(loss, "normalize", True))
        self.rng = torch.Generator().manual_seed(int(seed))
        self.epoch = 0
        metric_params = list(head.parameters()) + list(loss.parameters())
        self.opt_metric = torch.optim.Adam(metric_params, lr=lr, weight_decay=weight_decay)
        self.metric_params = metric_params
        self.trunk_params = list(trunk.parameters()) if trunk is not None else []
        self.opt_trunk = (torch.optim.Adam(self.trunk_params, lr=lr * trunk_lr_factor)
                          if self.trunk_params else None)
        gens = [g for g in (generator, positive_generator) if g is not None]
        self.generator_params = [p for g in gens for p in g.parameters()]
        self.opt_generator = (torch.optim.Adam(self.generator_params, lr=lr * generator_lr_factor)
                              if self.generator_params else None)
        if (generator is not None and space == "feature" and hasattr(head, "in_dim")
                and generator.dim != head.in_dim):
            raise ValueError(f"the generator works on {generator.dim}-d vectors but the "
                                 f"metric head reads {head.in_dim}-d features")

    # the metric D: generator space -> embedding space
    def _metric(self, z: torch.Tensor) -> torch.Tensor:
        e = self.head(z) if self.space == "feature" else z
        return F.normalize(e, dim=1) if self.normalize else e

    def _set_grads(self, params, grads) -> None:
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g

    def _zero(self) -> None:
        for p in self.metric_params + self.trunk_params + self.generator_params:
            p.grad = None

    def step(self, features: torch.Tensor, labels: torch.Tensor, phase: str = "joint") -> dict:
        if phase not in ("metric", "generator", "joint"):
            raise ValueError(f"unknown phase {phase!r}; known: 'metric', 'generator', 'joint'")
        if phase != "metric" and self.generator is None:
            raise ValueError(f"phase {phase!r} needs a generator (method 'daml' or 'daml+sp')")
        self._zero()
        x = features if self.trunk is None else self.trunk(features)
        emb = self.head(x)
        if phase == "metric":
            value = self.loss(emb, labels)
            (self.lam * value).backward()
            self.opt_metric.step()
            if self.opt_trunk is not None:
                self.opt_trunk.step()
            return {"J_m": float(value.detach())}
        a, p, n = sample_triplets(labels, self.negatives_per_anchor, self.rng,
                                  self.triplet_scheme)
        if a.numel() == 0:
            return {}
        base = x.detach() if self.space == "feature" else emb.detach()
        xa, xp, xn = base[a], base[p], base[n]
        out: dict[str, float] = {}
        gen_objective = 0.0
        pos_for_neg = xp
        g_pos = None
        if self.positive_generator is not None:
            g_pos = self.positive_generator(xa, xp, xn)
            jp = synthetic_positive_objective(xa, xp, g_pos, lambda1=self.lambda1)
            gen_objective = jp["total"]
            out["J+_gen"] = float(jp["total"].detach())
            pos_for_neg = g_pos.detach()
        syn = self.generator(xa, pos_for_neg, xn)
        jg = generator_objective(xa, pos_for_neg, xn, syn, self._metric, lambda1=self.lambda1,
                                 lambda2=self.lambda2, alpha=self.alpha,
                                 alpha_sign=self.alpha_sign)
        gen_objective = gen_objective + jg["total"]
        out.update({name: float(jg[key].detach()) for name, key in
                    (("J_gen", "total"), ("J_hard", "hard"), ("J_reg", "reg"), ("J_adv", "adv"))})
        syn_in = syn if (phase == "joint" and self.generator_metric_grad) else syn.detach()
        syn_emb = self.head(syn_in) if self.space == "feature" else syn_in
        jm = metric_loss_with_synthetic(self.loss, emb, labels, syn_emb, labels[n], a,
                                        self.keep_real_negatives)
        out["J_m"] = float(jm.detach())
        gen_total = gen_objective + (self.lam * jm if syn_in.requires_grad else 0.0)
        gen_grads = torch.autograd.grad(gen_total, self.generator_params, retain_graph=True,
                                        allow_unused=True)
        self._set_grads(self.generator_params, gen_grads)
        if phase == "joint":
            mparams = [q for q in self.metric_params + self.trunk_params if q.requires_grad]
            m_grads = torch.autograd.grad(self.lam * jm, mparams, allow_unused=True)
            self._set_grads(mparams, m_grads)
            self.opt_metric.step()
            if self.opt_trunk is not None:
                self.opt_trunk.step()
        self.opt_generator.step()
        if self.recorder is not None and self.recorder.wants(self.epoch):
            with torch.no_grad():
                self.recorder.record(
                    self.epoch, anchor=xa, positive=xp, negative=xn, synthetic=syn,
                    anchor_emb=self._metric(xa), positive_emb=self._metric(xp),
                    negative_emb=self._metric(xn), synthetic_emb=self._metric(syn),
                    labels=labels[a], negative_labels=labels[n], synthetic_positive=g_pos)
        return out


def _pk_batches(labels: np.ndarray, P: int, K: int, rng: np.random.Generator, n_batches: int):
    """PK batches of indices: P classes, K samples each (with replacement when a class is
    smaller than K)."""
    classes = np.unique(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in classes}
    for _ in range(n_batches):
        chosen = rng.choice(classes, size=P, replace=False)
        idx = [rng.choice(by_class[c], size=K, replace=len(by_class[c]) < K) for c in chosen]
        yield np.concatenate(idx)


def fit_adversarial(features, labels, loss: str | nn.Module = "triplet", method: str = "daml", *,
                    loss_kwargs: dict | None = None, head: str | nn.Module = "mlp",
                    embedding_dim: int = 64, head_hidden: int = 512,
                    trunk: nn.Module | None = None, space: str = "feature",
                    generator_hidden: Sequence[int] = (512,), normalize_synthetic: bool = False,
                    epochs: int = 30, warmup_epochs: int = 10, generator_epochs: int = 1,
                    lr: float = 1e-3, generator_lr_factor: float = 0.1,
                    trunk_lr_factor: float = 1e-3, weight_decay: float = 0.0,
                    lambda1: float = 1.0, lambda2: float = 1.0, lam: float = 1.0,
                    alpha: float = 1.0, alpha_sign: int = -1,
                    negatives_per_anchor: int | str | None = "auto",
                    keep_real_negatives: bool = False, generator_metric_grad: bool = False,
                    triplet_scheme: str = "auto", P: int = 8, K: int = 4,
                    batches_per_epoch: int | None = None, seed: int = 0,
                    recorder: NegativeRecorder | None = None, eval_features=None,
                    eval_labels=None, eval_every: int | None = None,
                    eval_kwargs: dict | None = None,
                    device: str | torch.device = "cpu", progress: bool = False
                    ) -> AdversarialResult:
    """Train a metric head on cached features with metric-only, DAML or DAML+SP.

    features: (N, D) float (cached backbone features); labels: (N,) int. loss: a registered
    pair-based loss name (``losses.available()``) or a PairLoss. method: "metric" (the loss
    alone, the baseline), "daml" (seed 000) or "daml+sp" (seed 001).
    Schedule: epochs [0, warmup_epochs) metric alone; then ``generator_epochs`` of generator
    alone (metric frozen); then joint training until ``epochs`` (total, warm-up included). For
    "metric" every epoch is metric-only. An epoch is ``ceil(N / (P K))`` PK batches unless
    ``batches_per_epoch``. negatives_per_anchor: synthetic negatives per anchor; "auto" = 1 for
    triplet / contrastive losses (official code), all of the anchor's batch negatives otherwise.
    Other knobs: see the module docstring (defaults: lambda1 = lambda2 = 1, alpha = 1,
    alpha_sign = -1, generator lr = lr / 10, trunk lr = lr / 1000).
    eval_features / eval_labels: evaluated with :func:`dmlkit.evaluate.evaluate` every
    ``eval_every`` epochs (default: at the end only) into ``history``.
    Returns an :class:`AdversarialResult`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    x_all, y_all = check_embeddings_labels(features, labels)
    x_all = x_all.float()
    loss_mod, loss_cls = _resolve_loss(loss, loss_kwargs)
    loss_name = loss if isinstance(loss, str) else loss_cls.__name__
    if eval_features is not None:
        ex = check_embeddings(eval_features, "eval_features")
        if eval_labels is None:
            raise ValueError("eval_features given without eval_labels")
        check_labels(eval_labels, ex.shape[0], "eval_labels")
        if ex.shape[1] != x_all.shape[1]:
            raise ValueError(f"eval_features have dimension {ex.shape[1]} but the training "
                             f"features have {x_all.shape[1]}")
    if not (0 <= warmup_epochs <= epochs) or generator_epochs < 0:
        raise ValueError(f"need 0 <= warmup_epochs ({warmup_epochs}) <= epochs ({epochs}) and "
                         f"generator_epochs >= 0")
    y_np = y_all.cpu().numpy()
    counts = np.unique(y_np, return_counts=True)[1]
    if P < 2 or K < 2:
        raise ValueError(f"P and K must be >= 2 (got P={P}, K={K})")
    if len(counts) < P:
        raise ValueError(f"P={P} classes per batch but the data has only {len(counts)} classes")
    if negatives_per_anchor == "auto":
        negatives_per_anchor = _auto_negatives(loss_name)
    torch.manual_seed(seed)
    D = x_all.shape[1]
    if isinstance(head, str):
        head_mod = MetricHead(D if trunk is None else _out_dim(trunk, D), embedding_dim, head,
                              head_hidden)
    else:
        head_mod = head
    gen_dim = (head_mod.in_dim if hasattr(head_mod, "in_dim") else D) if space == "feature" \
        else embedding_dim
    generator = positive_generator = None
    if method in ("daml", "daml+sp"):
        generator = HardNegativeGenerator(gen_dim, generator_hidden,
                                          normalize_output=normalize_synthetic)
    if method == "daml+sp":
        positive_generator = SyntheticPositiveGenerator(gen_dim, generator_hidden,
                                                        normalize_output=normalize_synthetic)
    dev = torch.device(device)
    for m in (head_mod, generator, positive_generator, trunk, loss_mod):
        if m is not None:
            m.to(dev)
    if recorder is not None:
        recorder.margin = next((float(getattr(loss_mod, k)) for k in ("margin", "lam")
                                if isinstance(getattr(loss_mod, k, None), (int, float))), None)
    trainer = AdversarialTrainer(
        loss_mod, head_mod, generator, positive_generator, trunk, space=space, lr=lr,
        generator_lr_factor=generator_lr_factor, trunk_lr_factor=trunk_lr_factor,
        lambda1=lambda1, lambda2=lambda2, lam=lam, alpha=alpha, alpha_sign=alpha_sign,
        negatives_per_anchor=negatives_per_anchor, keep_real_negatives=keep_real_negatives,
        generator_metric_grad=generator_metric_grad, weight_decay=weight_decay,
        recorder=recorder, seed=seed, triplet_scheme=triplet_scheme)
    result = AdversarialResult(head_mod, generator, positive_generator, trunk, loss_mod,
                               config={"loss": loss_name, "method": method, "epochs": epochs,
                                       "warmup_epochs": warmup_epochs,
                                       "generator_epochs": generator_epochs, "lr": lr,
                                       "lambda1": lambda1, "lambda2": lambda2, "lam": lam,
                                       "alpha": alpha, "alpha_sign": alpha_sign, "space": space,
                                       "negatives_per_anchor": negatives_per_anchor, "P": P,
                                       "K": K, "seed": seed},
                               recorder=recorder)
    rng = np.random.default_rng(seed)
    n_batches = batches_per_epoch or max(1, math.ceil(len(y_np) / (P * K)))
    total = epochs + (generator_epochs if method != "metric" else 0)
    from tqdm.auto import tqdm

    for epoch in tqdm(range(total), disable=not progress, desc=f"{method}/{loss_name}"):
        if method == "metric" or epoch < warmup_epochs:
            phase = "metric"
        elif epoch < warmup_epochs + generator_epochs:
            phase = "generator"
        else:
            phase = "joint"
        trainer.epoch = epoch
        for m in (head_mod, generator, positive_generator, trunk):
            if m is not None:
                m.train()
        sums: dict[str, float] = {}
        steps = 0
        for idx in _pk_batches(y_np, P, K, rng, n_batches):
            ib = torch.from_numpy(idx)
            out = trainer.step(x_all[ib].to(dev), y_all[ib].to(dev), phase)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        row = {"epoch": epoch, "phase": phase, **{k: v / steps for k, v in sums.items()}}
        last = epoch == total - 1
        if eval_features is not None and (last or (eval_every and (epoch + 1) % eval_every == 0)):
            row.update(_evaluate(result, eval_features, eval_labels, eval_kwargs))
        result.history.append(row)
    return result


def _out_dim(trunk: nn.Module, in_dim: int) -> int:
    with torch.no_grad():
        p = next(trunk.parameters(), None)
        z = torch.zeros(2, in_dim, dtype=p.dtype if p is not None else torch.float32)
        return int(trunk(z).shape[1])


def _evaluate(result: AdversarialResult, features, labels, eval_kwargs: dict | None) -> dict:
    from . import evaluate as _evaluate_mod

    for m in (result.head, result.trunk):
        if m is not None:
            m.eval()
    emb = result.embed(features)
    metrics = _evaluate_mod.evaluate(emb, labels, **(eval_kwargs or {}))
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
