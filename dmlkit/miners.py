"""Pair mining as boolean masks over the (B, M) similarity matrix.

A miner is a function ``(S, pos, neg, **params) -> (pos_keep, neg_keep)``: ``S`` is the (B, M)
similarity matrix (cosine for unit vectors), ``pos`` / ``neg`` the (B, M) bool masks of positive
and negative pairs (see :func:`dmlkit.similarity.pair_masks`), and the result the subsets of the
pairs a loss should weight. Mining is a *selection*: it runs under ``torch.no_grad()`` and
returns bool masks (the loss then weights the kept pairs with a differentiable function of S).
A half-precision S is compared in float32 (docs/precision.md).
VTHM and the Table 1 miners: docs/formulas.md#vthm-mining.

Registry (:data:`MINERS`, a :class:`dmlkit.registry.Registry`): :func:`available`,
:func:`get` (the function), :func:`parameters` and :func:`build` (the function with its
parameters bound), with the names ``"none"``, ``"vthm"``, ``"semihard"``, ``"hard"``,
``"distance_weighted"``.

>>> import torch
>>> from dmlkit import miners
>>> from dmlkit.similarity import pair_masks
>>> S = torch.tensor([[1.0, 0.9, 0.2, 0.85], [0.9, 1.0, 0.1, 0.3],
...                   [0.2, 0.1, 1.0, 0.8], [0.85, 0.3, 0.8, 1.0]])
>>> pos, neg = pair_masks(torch.tensor([0, 0, 1, 1]))
>>> mine = miners.build("vthm", epsilon=0.1)
>>> pos_keep, neg_keep = mine(S, pos, neg)
>>> neg_keep[0].tolist()     # s_03 + 0.1 > s_01 (the hardest positive); s_02 + 0.1 is not
[False, False, False, True]
>>> pos_keep[0].tolist()     # s_01 - 0.1 < s_03 (the hardest negative)
[False, True, False, False]
>>> miners.parameters("semihard")
['margin']
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .precision import promote
from .registry import Registry

__all__ = [
    "MINERS",
    "available",
    "build",
    "distance_weighted",
    "distance_weighted_probabilities",
    "get",
    "hard",
    "none",
    "parameters",
    "semihard",
    "vthm",
    "vthm_negative_threshold",
]

Masks = tuple[torch.Tensor, torch.Tensor]

#: every miner, by name
MINERS = Registry("miner")

#: the inputs of every miner, not hyper-parameters
_INPUTS = ("S", "pos", "neg")


def _check(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    if not isinstance(S, torch.Tensor) or S.dim() != 2:
        raise ValueError(f"S must be a 2-D (B, M) tensor, got "
                         f"{tuple(S.shape) if isinstance(S, torch.Tensor) else type(S).__name__}")
    for name, m in (("pos", pos), ("neg", neg)):
        if not isinstance(m, torch.Tensor) or m.shape != S.shape or m.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor of the shape of S {tuple(S.shape)}")
    return promote(S.detach())      # half precision is compared in float32 (docs/precision.md)


@MINERS.register("none")
def none(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Masks:
    """No mining: every positive and every negative pair is kept."""
    _check(S, pos, neg)
    return pos.clone(), neg.clone()


@MINERS.register("vthm")
@torch.no_grad()
def vthm(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, epsilon: float = 0.1) -> Masks:
    """VTHM, valid-triplet-based hard mining (Wang et al. 2019b, MS loss, Sec. 5.1).

    For anchor i (row i) with hardest positive ``min_{k in P_i} s_ik`` and hardest negative
    ``max_{k in N_i} s_ik``::

        keep negative j  iff  s_ij + epsilon > min_{k in P_i} s_ik
        keep positive j  iff  s_ij - epsilon < max_{k in N_i} s_ik

    Both inequalities are strict and written exactly as in PML's ``MultiSimilarityMiner``
    (same floating-point expressions, so the masks are identical). An anchor without positives
    keeps no negatives, an anchor without negatives keeps no positives (the min / max of an
    empty set is +inf / -inf). Default epsilon = 0.1 (paper and official code).
    """
    S = _check(S, pos, neg)
    inf = torch.tensor(float("inf"), dtype=S.dtype, device=S.device)
    pos_min = torch.where(pos, S, inf).amin(dim=1, keepdim=True)
    neg_max = torch.where(neg, S, -inf).amax(dim=1, keepdim=True)
    pos_keep = pos & (S - epsilon < neg_max)
    neg_keep = neg & (S + epsilon > pos_min)
    return pos_keep, neg_keep


def _ordered_keys(x: torch.Tensor) -> torch.Tensor:
    """The floats x as integers in the same order (their bits, the magnitude of a negative
    one flipped); the map is its own inverse on the integers (:func:`_from_keys`)."""
    bits = x.view(torch.int64 if x.dtype == torch.float64 else torch.int32)
    mask = (1 << (bits.element_size() * 8 - 1)) - 1
    return bits ^ ((bits >> (bits.element_size() * 8 - 1)) & mask)


def _from_keys(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _ordered_keys(keys.view(dtype)).view(dtype)


def vthm_negative_threshold(p: torch.Tensor, epsilon: float) -> torch.Tensor:
    """VTHM's negative test as a threshold: per entry of p (each anchor's hardest positive),
    the largest t (in p's dtype) with ``t + epsilon <= p`` as rounded; then ``x > t`` iff
    ``x + epsilon > p`` (:func:`vthm`'s expression) for every x of that dtype, since rounding
    is monotone, so a tiled pass tests its negatives without adding epsilon. Found by
    bisection on the floats' bits (32 or 64 steps; many consecutive floats x can share one
    rounded x + epsilon). p = +inf gives +inf (nothing is kept); half precision is
    computed in float32."""
    p = promote(p)
    finite = torch.isfinite(p)
    q = torch.where(finite, p, 0.0)
    room = q.abs() + abs(epsilon) + 1.0
    lo, hi = _ordered_keys(q - epsilon - room), _ordered_keys(q - epsilon + room)
    for _ in range(p.element_size() * 8):          # invariant: lo passes, hi does not
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
        passes = (_from_keys(mid, p.dtype) + epsilon) <= q
        lo, hi = torch.where(passes, mid, lo), torch.where(passes, hi, mid)
    return torch.where(finite, _from_keys(lo, p.dtype), p)


@MINERS.register("semihard")
@torch.no_grad()
def semihard(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float = 0.1) -> Masks:
    """FaceNet semi-hard mining (Schroff et al. 2015) expressed as a pair mining.

    A triplet (i, p, n) is semi-hard when the negative is farther than the positive but inside
    the margin: ``s_ip - margin < s_in < s_ip`` (both strict). Kept pairs:

    * negative (i, n) iff at least one positive p of anchor i makes (i, p, n) semi-hard;
    * positive (i, p) iff at least one negative n of anchor i makes (i, p, n) semi-hard.

    i.e. the pairs that occur in at least one semi-hard triplet. FaceNet states the condition
    with squared distances ``d_ap^2 < d_an^2 < d_ap^2 + a``; for unit vectors
    ``d^2 = 2 - 2 s`` so ``margin = a / 2`` (FaceNet's a = 0.2 gives the default 0.1).
    Computed with a per-row sort and ``searchsorted`` (O(B M log M), no B x M x M tensor).
    """
    S = _check(S, pos, neg)
    inf = torch.tensor(float("inf"), dtype=S.dtype, device=S.device)
    # negative n: is there a positive similarity in the open interval (s_in, s_in + margin)?
    pos_sorted = torch.where(pos, S, inf).sort(dim=1).values          # positives first, +inf last
    idx = torch.searchsorted(pos_sorted, S.contiguous(), right=True)  # first s_ip > s_in
    nxt = pos_sorted.gather(1, idx.clamp_max(S.shape[1] - 1))
    nxt = torch.where(idx < S.shape[1], nxt, inf)
    neg_keep = neg & (nxt - margin < S)
    # positive p: is there a negative similarity in the open interval (s_ip - margin, s_ip)?
    neg_sorted = torch.where(neg, S, -inf).sort(dim=1).values         # -inf first, negatives last
    idx = torch.searchsorted(neg_sorted, S.contiguous(), right=False) - 1  # last s_in < s_ip
    prev = neg_sorted.gather(1, idx.clamp_min(0))
    prev = torch.where(idx >= 0, prev, -inf)
    pos_keep = pos & (S - margin < prev)
    return pos_keep, neg_keep


@MINERS.register("hard")
@torch.no_grad()
def hard(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> Masks:
    """Batch-hard mining (Hermans et al. 2017): per anchor the hardest positive and negative.

    Keeps, for every anchor i with at least one positive AND one negative (a valid triplet),
    the positive of smallest similarity and the negative of largest similarity (ties: the
    lowest column index). Anchors without a valid triplet keep nothing.
    """
    S = _check(S, pos, neg)
    inf = torch.tensor(float("inf"), dtype=S.dtype, device=S.device)
    valid = (pos.any(dim=1) & neg.any(dim=1))[:, None]
    rows = torch.arange(S.shape[0], device=S.device)
    p_idx = torch.where(pos, S, inf).argmin(dim=1)
    n_idx = torch.where(neg, S, -inf).argmax(dim=1)
    pos_keep = torch.zeros_like(pos)
    neg_keep = torch.zeros_like(neg)
    pos_keep[rows, p_idx] = True
    neg_keep[rows, n_idx] = True
    return pos_keep & pos & valid, neg_keep & neg & valid


@torch.no_grad()
def distance_weighted_probabilities(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                                    dim: int, cutoff: float = 0.5,
                                    nonzero_loss_cutoff: float = 1.4) -> torch.Tensor:
    """Per-anchor sampling probabilities of the negatives for distance-weighted sampling.

    Wu et al. 2017 ("Sampling matters"): on the unit sphere in R^n the pairwise distance of
    uniformly spread points has density ``q(d) ∝ d^{n-2} (1 - d^2/4)^{(n-3)/2}``; negatives
    are drawn with probability ∝ ``1 / q(max(d, cutoff))``, restricted to
    ``d < nonzero_loss_cutoff`` (pairs farther than that give no loss with the paper's margin).
    ``d = sqrt(2 - 2 s)``. Computed in log space and normalised per row by a softmax, so
    large ``dim`` does not overflow. A row whose negatives are all beyond
    ``nonzero_loss_cutoff`` falls back to uniform over its negatives (the official code samples
    uniformly when all weights are zero);
    a row without negatives is all zero. Returns (B, M) probabilities, rows summing to 1 or 0.
    """
    S = _check(S, pos, neg)
    if int(dim) < 2:
        raise ValueError(f"dim (the embedding dimension) must be >= 2, got {dim}")
    n = float(dim)
    d = (2.0 - 2.0 * S).clamp_min(0.0).sqrt().clamp_min(cutoff)
    one_minus = (1.0 - 0.25 * d * d).clamp_min(1e-8)
    log_q = (n - 2.0) * torch.log(d) + 0.5 * (n - 3.0) * torch.log(one_minus)
    eligible = neg & (d < nonzero_loss_cutoff)
    fallback = ~eligible.any(dim=1, keepdim=True)
    allowed = torch.where(fallback, neg, eligible)
    logits = torch.where(eligible, -log_q, torch.zeros_like(log_q))
    logits = logits.masked_fill(~allowed, float("-inf"))
    has_any = allowed.any(dim=1, keepdim=True)
    logits = torch.where(has_any, logits, torch.zeros_like(logits))
    return torch.log_softmax(logits, dim=1).exp() * has_any


@MINERS.register("distance_weighted")
@torch.no_grad()
def distance_weighted(S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, dim: int,
                      cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4,
                      num_negatives: int = 1,
                      generator: torch.Generator | None = None) -> Masks:
    """Distance-weighted sampling (Wu et al. 2017): keep all positives, sample negatives.

    For every anchor, ``num_negatives`` distinct negatives are drawn without replacement with
    the probabilities of :func:`distance_weighted_probabilities` (Gumbel-top-k: the top-k of
    ``log p + Gumbel noise``, with the noise drawn from ``generator``, so a seeded generator
    reproduces the selection). Rows with fewer eligible negatives keep all of them. ``dim`` is
    the embedding dimension n in q(d) (a loss passes ``embeddings.shape[1]``). Defaults as
    the paper: cutoff 0.5, nonzero_loss_cutoff 1.4, one negative per anchor (the paper pairs
    every positive of the anchor with a sampled negative; here positives are all kept).
    """
    S = _check(S, pos, neg)
    if int(num_negatives) < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    prob = distance_weighted_probabilities(S, pos, neg, dim, cutoff, nonzero_loss_cutoff)
    u = torch.rand(S.shape, generator=generator, dtype=torch.float64,
                   device="cpu" if generator is None else generator.device).to(S.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
    keys = torch.log(prob.double()) + gumbel                # -inf where prob == 0
    k = min(int(num_negatives), S.shape[1])
    top = keys.topk(k, dim=1).indices
    neg_keep = torch.zeros_like(neg)
    neg_keep.scatter_(1, top, True)
    neg_keep &= prob > 0
    return pos.clone(), neg_keep


available = MINERS.available
get = MINERS.get


def parameters(name: str) -> list[str]:
    """The hyper-parameter names a miner accepts (besides S, pos, neg)."""
    return MINERS.parameters(name, skip=_INPUTS)


def build(name: str, **params) -> Callable[..., Masks]:
    """The miner ``name`` with its hyper-parameters bound: a function ``(S, pos, neg)``."""
    MINERS.check_parameters(name, params, skip=_INPUTS)
    return functools.partial(get(name), **params)

