"""OSM + CAA weighted contrastive loss (Wang et al. 2019a; docs/references.md).

Formula, pair weights and the official code's variants: docs/formulas.md#osm-and-caa."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import PairBatch, PairLoss
from ..similarity import distances_from_similarity
from .registry import register
from .tiles import Tile, TileContext, TileFormulation, elementwise_grad

__all__ = ["ATTENTIONS", "OSMCAALoss", "OSMCAATiles"]

ATTENTIONS = ("softmax", "gaussian", "none")


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 (graph-connected, finite gradient) where den == 0."""
    tiny = torch.finfo(den.dtype).tiny
    return torch.where(den > 0, num / den.clamp_min(tiny), num * 0.0)


@register("osm_caa")
class OSMCAALoss(PairLoss):
    r"""Online soft mining + class-aware attention weighted contrastive loss (Wang et al. 2019a).

    With ``d_ij`` the Euclidean distances (from S for unit vectors, ``normalize=True``):

    * OSM weights: ``s+_ij = exp(-d_ij^2 / sigma^2)`` (positives), ``s-_ij = [alpha - d_ij]_+``
      (negatives);
    * CAA: ``a_i`` = attention of sample i from the class centres ``c_k`` this loss owns (an
      ``nn.Parameter`` ``centres`` of shape (num_classes, embedding_dim)); with logits
      ``z_ik = scale * <f_i/|f_i|, c_k/|c_k|>`` and ``p_i = softmax(z_i)[y_i]``:
      ``attention="softmax"`` (default, the paper and the PyTorch ports): ``a_i = p_i``;
      ``attention="gaussian"`` (official code): ``a_i = N(p_i; 1.0, 0.68)`` (the Gaussian pdf,
      mean / std ``gaussian_mean`` / ``gaussian_std``); ``attention="none"``: ``a_i = 1`` (OSM
      alone). ``a_ij = min(a_i, a_j)``; for a reference sample j (query-vs-reference mode) a_j
      uses its own embedding and label;
    * ``w+_ij = s+_ij a_ij``, ``w-_ij = s-_ij a_ij`` and

    .. math::
        L = (1-\lambda)\frac{\sum_P w^+_{ij} d_{ij}^2}{\sum_P w^+_{ij}}
          + \lambda\frac{\sum_N w^-_{ij}[\alpha - d_{ij}]_+^2}{\sum_N w^-_{ij}}

    summed over all positive / negative pairs of the batch (a part whose weights sum to 0,
    e.g. no positives or every negative beyond alpha, is 0). Defaults (official code):
    sigma = 0.8, alpha = 1.2, lam = 0.5; scale = 1 (the paper's ``exp(f^T c)``, on unit
    vectors as the ports).

    ``detach_weights``: True (default, official code) treats w as constants in the backward
    pass, so the pair weights of the unified view are ``(1-lam) 2 w+_ij / sum_P w+`` and
    ``lam 2 w-_ij [alpha - d_ij]_+ / (d_ij sum_N w-)`` (>= 0) and Theorem 3.1 holds; False (the
    PyTorch ports) lets the gradient flow through w (s+, s- and a), which makes some positive
    pair weights negative and sends gradient to the centres through the attention. Any
    constant factor of a_i (e.g. the Gaussian's normalisation) cancels in the ratios.

    How the centres learn: the official code trains a softmax classifier alongside with
    cross-entropy; here ``classifier_weight * CE(z, y)`` is added in :meth:`regularizer`
    (default classifier_weight = 1; set 0 to leave it out, e.g. when the centres are trained
    elsewhere; a larger ``scale`` such as 16 gives a sharper classifier on unit vectors). The
    weight view (``dmlkit.weights.pair_weights``) covers only :meth:`compute`.
    Official differences: it clamps s- at 1e-12 instead of 0 and some ports multiply both
    parts by 1/2. Labels must lie in [0, num_classes) (ValueError otherwise).
    """

    hyperparameters = ("num_classes", "embedding_dim", "sigma", "alpha", "lam", "attention",
                       "detach_weights", "scale", "classifier_weight")

    def __init__(self, num_classes: int | None = None, embedding_dim: int | None = None,
                 sigma: float = 0.8, alpha: float = 1.2, lam: float = 0.5,
                 attention: str = "softmax", detach_weights: bool = True, scale: float = 1.0,
                 classifier_weight: float = 1.0, gaussian_mean: float = 1.0,
                 gaussian_std: float = 0.68, normalize: bool = True):
        super().__init__(normalize=normalize)
        if num_classes is None or embedding_dim is None:
            raise ValueError("osm_caa owns its class centres: pass num_classes and "
                             "embedding_dim, e.g. build('osm_caa', num_classes=100, "
                             "embedding_dim=512)")
        if int(num_classes) < 1 or int(embedding_dim) < 1:
            raise ValueError(f"num_classes and embedding_dim must be >= 1, got "
                             f"{num_classes}, {embedding_dim}")
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; known: {', '.join(ATTENTIONS)}")
        if sigma <= 0 or gaussian_std <= 0:
            raise ValueError(f"sigma and gaussian_std must be > 0, got {sigma}, {gaussian_std}")
        self.num_classes, self.embedding_dim = int(num_classes), int(embedding_dim)
        self.sigma, self.alpha, self.lam = float(sigma), float(alpha), float(lam)
        self.attention, self.detach_weights = attention, bool(detach_weights)
        self.scale, self.classifier_weight = float(scale), float(classifier_weight)
        self.gaussian_mean, self.gaussian_std = float(gaussian_mean), float(gaussian_std)
        self.centres = nn.Parameter(torch.randn(self.num_classes, self.embedding_dim)
                                    / math.sqrt(self.embedding_dim))

    def class_logits(self, embeddings: torch.Tensor, labels: torch.Tensor,
                     name: str = "labels") -> torch.Tensor:
        """(N, num_classes) logits ``scale * cos(f_i, c_k)``; checks labels and dimension."""
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings have dimension {embeddings.shape[1]} but osm_caa was "
                             f"built with embedding_dim={self.embedding_dim}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"{name} must lie in [0, {self.num_classes}) (num_classes), got "
                             f"range [{int(labels.min())}, {int(labels.max())}]")
        f = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) \
            else embeddings
        c = self.centres.to(f.dtype)
        return self.scale * F.normalize(f, dim=1) @ F.normalize(c, dim=1).t()

    def sample_attention(self, embeddings: torch.Tensor, labels: torch.Tensor,
                         name: str = "labels") -> torch.Tensor:
        """(N,) attention a_i of each sample (see the class docstring)."""
        logits = self.class_logits(embeddings, labels, name)
        if self.attention == "none":
            return torch.ones(labels.shape[0], dtype=logits.dtype, device=logits.device)
        p = logits.log_softmax(dim=1).gather(1, labels[:, None]).squeeze(1).exp()
        if self.attention == "softmax":
            return p
        z = (p - self.gaussian_mean) / self.gaussian_std
        return torch.exp(-0.5 * z * z) / (self.gaussian_std * math.sqrt(2.0 * math.pi))

    def pair_attention(self, batch: PairBatch) -> torch.Tensor:
        """(B, M) a_ij = min(a_i, a_j)."""
        a = self.sample_attention(batch.embeddings, batch.labels)
        a_ref = a if batch.in_batch else self.sample_attention(
            batch.ref_embeddings, batch.ref_labels, "ref_labels")
        return torch.minimum(a[:, None], a_ref[None, :])

    def pair_weights_osm_caa(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(w+, w-), each (B, M), zero outside the positive / negative pairs (not detached)."""
        d = batch.distances()
        A = self.pair_attention(batch).to(d.dtype)
        zero = torch.zeros((), dtype=d.dtype, device=d.device)
        s_pos = torch.exp(-batch.squared_distances() / (self.sigma ** 2))
        s_neg = (self.alpha - d).clamp_min(0.0)
        return torch.where(batch.pos, s_pos * A, zero), torch.where(batch.neg, s_neg * A, zero)

    def compute(self, batch: PairBatch) -> torch.Tensor:
        w_pos, w_neg = self.pair_weights_osm_caa(batch)
        if self.detach_weights:
            w_pos, w_neg = w_pos.detach(), w_neg.detach()
        d2 = batch.squared_distances()
        hinge2 = (self.alpha - batch.distances()).clamp_min(0.0) ** 2
        zero = torch.zeros((), dtype=d2.dtype, device=d2.device)
        loss_pos = _safe_ratio(torch.where(batch.pos, w_pos * d2, zero).sum(), w_pos.sum())
        loss_neg = _safe_ratio(torch.where(batch.neg, w_neg * hinge2, zero).sum(), w_neg.sum())
        return (1.0 - self.lam) * loss_pos + self.lam * loss_neg

    def regularizer(self, batch: PairBatch) -> torch.Tensor | float:
        if self.classifier_weight == 0.0:
            return 0.0
        logits = self.class_logits(batch.embeddings, batch.labels)
        return self.classifier_weight * F.cross_entropy(logits, batch.labels)

    def tiling_unsupported(self) -> str | None:
        if not self.detach_weights:
            return ("with detach_weights=False the gradient flows through the weights and the "
                    "attention into the centres; only the official detached form is tiled")
        if not self.normalize:
            return ("on raw embeddings the distances come from the embeddings, not from S "
                    "(use normalize=True)")
        return None

    def tile_formulation(self, ctx) -> OSMCAATiles:
        """One pass: the weight sums and weighted sums of both parts over the tiles, with
        the (detached) attention of every query and reference (:class:`OSMCAATiles`)."""
        with torch.no_grad():
            a = self.sample_attention(ctx.embeddings, ctx.labels)
            a_ref = a if ctx.in_batch else self.sample_attention(
                ctx.ref_embeddings, ctx.ref_labels, "ref_labels")
        return OSMCAATiles(self, a.to(ctx.dtype), a_ref.to(ctx.dtype))

    def tiled_regularizer(self, embeddings, labels, ref_embeddings, ref_labels, ctx):
        return self.regularizer(PairBatch(S=None, pos=None, neg=None, labels=labels,
                                          ref_labels=ref_labels, embeddings=embeddings,
                                          ref_embeddings=ref_embeddings,
                                          in_batch=ctx.in_batch, normalized=self.normalize))


class OSMCAATiles(TileFormulation):
    """:class:`OSMCAALoss` (detached weights) in tiles: four global sums, then the pair
    weights ``(1 - lam) w+ / sum w+`` and ``lam w- / sum w-`` times the terms' derivatives."""

    def __init__(self, loss: OSMCAALoss, a: torch.Tensor, a_ref: torch.Tensor):
        self.loss, self.a, self.a_ref = loss, a, a_ref
        alpha = loss.alpha
        self.hinge2 = lambda s: (alpha - distances_from_similarity(s)).clamp_min(0.0) ** 2
        self.d2 = lambda s: (2.0 - 2.0 * s).clamp_min(0.0)

    def _w_neg(self, tile: Tile) -> torch.Tensor:
        A = torch.minimum(self.a[tile.rows, None], self.a_ref[None, tile.cols])
        s_neg = (self.loss.alpha - distances_from_similarity(tile.S)).clamp_min(0.0)
        return torch.where(tile.neg, s_neg * A, 0.0)

    def start(self, ctx: TileContext) -> dict:
        return {"w_neg": ctx.zeros(()), "t_neg": ctx.zeros(())}

    def accumulate(self, k: int, tile: Tile, st: dict) -> None:
        w = self._w_neg(tile)
        st["w_neg"] += w.sum()
        st["t_neg"] += torch.where(tile.neg, w * self.hinge2(tile.S), 0.0).sum()

    def finish(self, k: int, st: dict, ctx: TileContext) -> None:
        index, valid = ctx.slots
        s = st["s_pos"]
        A = torch.minimum(self.a[:, None], self.a_ref[index])
        w = torch.where(valid, torch.exp(-self.d2(s) / (self.loss.sigma ** 2)) * A, 0.0)
        st["w_pos_pairs"], w_pos = w, w.sum()
        t_pos = torch.where(valid, w * self.d2(s), 0.0).sum()
        lam = self.loss.lam
        st["c_pos"] = (1.0 - lam) / w_pos if w_pos > 0 else 0.0
        st["c_neg"] = lam / st["w_neg"] if st["w_neg"] > 0 else 0.0
        st["value"] = st["c_pos"] * t_pos + st["c_neg"] * st["t_neg"]

    def value(self, st: dict, ctx: TileContext) -> torch.Tensor:
        v = st["value"]
        return v if isinstance(v, torch.Tensor) else ctx.zeros(()) + v

    def tile_grad(self, tile: Tile, st: dict) -> torch.Tensor | None:
        if not isinstance(st["c_neg"], torch.Tensor):
            return None
        return elementwise_grad(self.hinge2, tile.S, tile.neg, self._w_neg(tile) * st["c_neg"])

    def pair_grads(self, st: dict, ctx: TileContext) -> list:
        if not isinstance(st["c_pos"], torch.Tensor):
            return []
        index, valid = ctx.slots
        return [(index, elementwise_grad(self.d2, st["s_pos"], valid,
                                         st["w_pos_pairs"] * st["c_pos"]))]
