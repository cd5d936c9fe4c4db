"""Fused forward / backward kernels for the hot (B, M) passes of the losses (CPU speed).

Each is a ``torch.autograd.Function`` of S whose forward writes into one or two buffers in
place and whose backward is a single multiplication, instead of the chain of element-wise
autograd nodes (each allocating a fresh (B, M) tensor, i.e. page faults on CPU) that the
same formula written with ordinary ops would record. The values and gradients are those of
the formulas; the tests compare them with naive loops, ``gradcheck`` and the generic paths.
"""

from __future__ import annotations

import torch

from ..similarity import unit_distances, zero_where_clamped_

__all__ = ["fused_loss", "hinge_of_distance", "kept_lse1p", "relu_of_shift", "slot_terms"]


class _KeptLogSumExp1p(torch.autograd.Function):
    """Per row ``log(1 + sum_k keep_ik exp(z_ik)) / |scale|`` with ``z = scale (S - shift)``,
    keep a 0 / 1 float matrix and ``row_max`` (B,) the largest kept z of each row (any value
    where nothing is kept). Forward: one buffer; backward: one pass, the softmax weights
    ``keep e^z / (1 + sum keep e^z)`` times the incoming gradient and the sign of scale."""

    @staticmethod
    def forward(ctx, S, keep, scale, shift, row_max):
        m = row_max.clamp_min(0.0)                      # the "1" is the logit 0
        # z - m <= 0 on the kept entries; clamping to [-80, 0] keeps the others from
        # overflowing (they are multiplied by 0) and avoids denormals (~100x slower): e^-80 is
        # a normal float32 and 1e-35 of the denominator (>= 1), below any rounding
        e = torch.sub(S, shift).mul_(scale).sub_(m[:, None]).clamp_(-80.0, 0.0).exp_().mul_(keep)
        denom = e.sum(1).add_(torch.exp(-m))
        ctx.save_for_backward(e, denom)
        ctx.sign = 1.0 if scale > 0 else -1.0
        return (m + denom.log()) / abs(scale)

    @staticmethod
    def backward(ctx, grad):
        e, denom = ctx.saved_tensors
        return e * (grad / denom).mul_(ctx.sign)[:, None], None, None, None, None


def kept_lse1p(S, keep, scale, shift, row_max=None):
    """:class:`_KeptLogSumExp1p`; ``row_max`` is computed (a masked pass) when not given."""
    if row_max is None:
        with torch.no_grad():
            z = torch.sub(S, shift).mul_(scale)
            row_max = z.masked_fill_(keep == 0, float("-inf")).amax(1)
            row_max = torch.nan_to_num(row_max, neginf=0.0)
    return _KeptLogSumExp1p.apply(S, keep, scale, shift, row_max)


def _count(indicator: torch.Tensor) -> torch.Tensor:
    """The number of ones of a 0 / 1 float tensor: summed in its own dtype while that is exact
    (below 2^24 entries in float32; converting to float64 costs a copy), else in float64."""
    if indicator.dtype == torch.float64 or indicator.numel() < 2 ** 24:
        return indicator.sum()
    return indicator.sum(dtype=torch.float64)


class _FusedLoss(torch.autograd.Function):
    """A scalar ``kernel(S) -> (value, dvalue/dS)`` computed without autograd; backward
    multiplies the saved derivative by the incoming gradient (one (B, M) tensor for the
    whole loss instead of one per autograd node)."""

    @staticmethod
    def forward(ctx, S, kernel):
        value, deriv = kernel(S)
        ctx.save_for_backward(deriv)
        return value

    @staticmethod
    def backward(ctx, grad):
        (deriv,) = ctx.saved_tensors
        return deriv * grad, None


def fused_loss(S: torch.Tensor, kernel) -> torch.Tensor:
    """The differentiable scalar of a kernel as in :class:`_FusedLoss`."""
    return _FusedLoss.apply(S, kernel)


def slot_terms(S: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, fn):
    """Terms ``fn(s)`` of the compacted positive slots, 0 on padding, and their derivative:
    ``(terms (B, w), dterms/ds (B, w))`` by autograd on the small (B, w) gather."""
    with torch.enable_grad():
        s = S.gather(1, index).detach().requires_grad_(True)
        terms = torch.where(valid, fn(s), 0.0)
        (deriv,) = torch.autograd.grad(terms.sum(), s)
    return terms.detach(), deriv


def hinge_of_distance(S: torch.Tensor, margin: float, power: float, mask_):
    """``(sum of the terms, number of non-zero terms, d sum/dS)`` for the terms
    ``[margin - d]_+^power`` with ``d = sqrt(max(2 - 2 s, 0) + eps)`` (unit vectors), on the
    entries that ``mask_`` (an in-place ``X -> X`` zeroing the others) keeps. Two buffers;
    derivative ``power [margin - d]_+^(power-1) / d`` (0 where the hinge is inactive, off the
    mask, and where ``s > 1`` was clamped)."""
    A = unit_distances(S)                                                  # d
    H = mask_(A.neg().add_(margin).clamp_min_(0.0))                        # the hinge
    A.reciprocal_()
    if power == 1.0:
        total = H.sum()
        A.mul_(H.gt_(0.0))
        count = _count(H)
    else:
        total = H.pow(power).sum()
        A.mul_(H.pow(power - 1.0)).mul_(power)
        count = _count(H.gt_(0.0))
    return total, count, zero_where_clamped_(A, S)


def relu_of_shift(S: torch.Tensor, shift: float, mask_):
    """As :func:`hinge_of_distance` for the terms ``[s - shift]_+``: derivative
    ``1{s > shift}`` on the mask."""
    H = mask_(torch.sub(S, shift).clamp_min_(0.0))
    total = H.sum()
    H.gt_(0.0)
    return total, _count(H), H
