"""Angular loss (Wang, Zhou, Wen, Liu & Lin, ICCV 2017), dense over all positive pairs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..similarity import similarity_matrix
from .base import PairBatch, PairLoss, zero_loss
from .registry import register

__all__ = ["AngularLoss"]


@register("angular")
class AngularLoss(PairLoss):
    r"""Angular loss, the N-pair (multi-class) form of Wang et al. 2017 (a DAML baseline).

    For each positive pair (a, p) and the negatives ``n in N_a`` of the batch, with unit
    embeddings and ``t = tan^2(alpha)``:

        l_ap = log(1 + sum_{n in N_a} exp(4 t (f_a + f_p)^T f_n - 2 (1 + t) f_a^T f_p))
             = softplus( logsumexp_{n in N_a} 4 t (s_an + s_pn) - 2 (1 + t) s_ap )

    a function of S only. The inner sum over n for all pairs (a, p) is a matrix product,
    ``sum_n [n in N_a] e^{4t s_an} e^{4t s_pn} = (A @ E^T)_ap`` with row-max shifts for stability,
    so no (B, M, M) tensor is formed (with un-normalised embeddings of very different norms the
    shifted products can underflow; they are clamped to the smallest float). Reduction: mean
    over all positive pairs (ordered entries of S; a pair whose anchor has no negative
    contributes 0 and still counts).

    Query-vs-reference form: a is a query, p and n are references; ``s_pn`` is then a
    reference-reference similarity, computed from the reference embeddings (in-batch it is
    ``batch.S`` itself, so :func:`dmlkit.weights.pair_weights` sees every term).

    Args:
        alpha: the angle bound in degrees (default 40; the paper reports 36-45 as best).
            ``alpha`` must be in (0, 90); large angles make ``4 t`` huge and the loss harsh.
        normalize: L2-normalise first (default True; the loss is defined for unit vectors).

    PML mapping (tests): ``AngularLoss(alpha=a)`` == ``angular(alpha=a)`` in value and in the
    gradient through a normalisation layer. Difference: PML normalises the anchors and
    positives but multiplies by the *raw* reference embeddings ``f_n``; the two agree for unit
    inputs (and the gradients differ only along the radial directions, which a preceding
    normalisation removes).
    """

    hyperparameters = ("alpha",)

    def __init__(self, alpha: float = 40.0, normalize: bool = True):
        super().__init__(normalize=normalize)
        if not 0.0 < float(alpha) < 90.0:
            raise ValueError(f"alpha must be an angle in degrees in (0, 90), got {alpha}")
        self.alpha = float(alpha)

    def tiling_unsupported(self) -> str | None:
        return ("its inner sum couples every positive pair (a, p) with every negative n "
                "through the reference-reference similarity s_pn (the (B, M) x (M, M) product "
                "A E^T); dmlkit has no tile formulation for that yet (use chunk_size=None)")

    def compute(self, batch: PairBatch) -> torch.Tensor:
        S, pos, neg = batch.S, batch.pos, batch.neg
        n_pos = int(pos.sum())
        if n_pos == 0 or not bool(neg.any()):
            return zero_loss(batch)
        t = math.tan(math.radians(self.alpha)) ** 2
        c1, c2 = 4.0 * t, 2.0 * (1.0 + t)
        if batch.in_batch:
            R = S
        else:
            R = similarity_matrix(batch.ref_embeddings, normalize=batch.normalized).to(S.dtype)
        zero = torch.zeros((), dtype=S.dtype, device=S.device)
        U = c1 * S                                        # (B, M): 4t s_an
        V = c1 * R                                        # (M, M): 4t s_pn
        has_neg = neg.any(1)
        mu = torch.where(neg, U, torch.full_like(U, float("-inf"))).amax(1)
        mu = torch.where(has_neg, mu, zero).detach()
        nu = V.amax(1).detach()
        A = torch.where(neg, torch.exp(U - mu[:, None]), zero)
        E = torch.exp(V - nu[:, None])
        T = A @ E.t()                                     # (B, M): sum_n A_an E_pn
        tiny = torch.finfo(T.dtype).tiny
        lse = torch.log(T.clamp_min(tiny)) + mu[:, None] + nu[None, :]
        valid = pos & has_neg[:, None]
        terms = torch.where(valid, F.softplus(lse - c2 * S), zero)
        return terms.sum() / n_pos
