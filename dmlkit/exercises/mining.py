"""Exercises on pair weights and mining: the multi-similarity weight of a negative pair (closed
form) and the VTHM masks.

Every expected output comes from dmlkit itself (``raw_pair_weights`` of
:mod:`dmlkit.losses.multi_similarity`, :func:`dmlkit.miners.vthm`); the batches, the input
display and the mask comparison are those of :mod:`dmlkit.exercises.losses`. Each exercise
lists the typical mistakes (a function making each one) that the checker uses to name what
went wrong.
"""

from __future__ import annotations

import torch

from .. import miners
from ..losses.multi_similarity import raw_pair_weights
from ..similarity import pair_masks as _pair_masks
from ..similarity import similarity_matrix
from .engine import Case, Exercise, Problem, compare_tensor
from .losses import _batches, _compare_masks, _half_batch, _show

__all__ = ["EXERCISES"]


# ============================================================================ MS weight
def _ms_reference(S, neg, beta=50.0, lam=0.5):
    S = S.float() if S.dtype == torch.float16 else S
    W = raw_pair_weights(S, torch.zeros_like(neg), neg, 2.0, beta, lam)
    return torch.where(neg, W, torch.zeros((), dtype=S.dtype))


def _ms_cases(seed: int = 7) -> list[Case]:
    cases = []
    params = [dict(beta=50.0, lam=0.5), dict(beta=10.0, lam=0.3), dict(beta=50.0, lam=0.5)]
    for k, (label, x, labels, printed) in enumerate(_batches(seed)):
        p = params[k % len(params)]
        S = similarity_matrix(x)
        _pos, neg = _pair_masks(labels)
        cases.append(Case(label, (S, neg), _ms_reference(S, neg, **p), dict(p),
                          show=_show(S, labels, **p) if printed else None))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    x[1] = x[0] + 0.05 * x[1]                   # a negative of similarity close to 1
    labels = torch.tensor([0, 1, 1, 2, 2, 0])
    S = similarity_matrix(x)
    neg = _pair_masks(labels)[1]
    cases.append(Case("hard negative: s close to 1 with beta = 50", (S, neg),
                      _ms_reference(S, neg), dict(beta=50.0, lam=0.5)))
    S16 = S.half()
    cases.append(Case("float16: exp(50 (s - 0.5)) overflows half precision (max 65504)",
                      (S16, neg), _ms_reference(S16, neg), dict(beta=50.0, lam=0.5),
                      rtol=1e-2, atol=2e-3))
    return cases


def _ms_plain(S, neg, beta=50.0, lam=0.5, one=True, sign=1.0, over=None, norm=True):
    over = neg if over is None else over
    e = torch.exp(sign * beta * (S - lam))
    total = torch.where(over, e, torch.zeros((), dtype=S.dtype)).sum(1, keepdim=True)
    w = e / ((1.0 if one else 0.0) + total) if norm else e
    return torch.where(neg, w, torch.zeros((), dtype=S.dtype))


_MS_MISTAKES = {
    "the 1 in the denominator is missing (the anchor's own term e^{beta (lam - lam)}: "
    "w_ij = e^{beta (s_ij - lam)} / (1 + sum_k e^{beta (s_ik - lam)}))":
        lambda S, neg, beta=50.0, lam=0.5: _ms_plain(S, neg, beta, lam, one=False),
    "the sign of beta is flipped (a harder negative, larger s_ij, must weigh more)":
        lambda S, neg, beta=50.0, lam=0.5: _ms_plain(S, neg, beta, lam, sign=-1.0),
    "the normalisation is missing (divide by 1 + sum_k e^{beta (s_ik - lam)})":
        lambda S, neg, beta=50.0, lam=0.5: _ms_plain(S, neg, beta, lam, norm=False),
    "the denominator sums over the whole row (positives and the diagonal too), not over the "
    "negatives N_i": lambda S, neg, beta=50.0, lam=0.5: _ms_plain(
        S, neg, beta, lam, over=torch.ones_like(neg)),
    "the weights are divided by the batch size (that 1/m belongs to the loss, not to w_ij)":
        lambda S, neg, beta=50.0, lam=0.5: _ms_reference(S, neg, beta, lam) / S.shape[0],
    "exp(beta (s - lam)) overflows in float16: compute in float32 (S.float()) or as a "
    "softmax": lambda S, neg, beta=50.0, lam=0.5: _ms_plain(S, neg, beta, lam),
}


# ============================================================================ VTHM
def _vthm_cases() -> list[Case]:
    S4 = torch.tensor([[1.0, 0.9, 0.2, 0.85], [0.9, 1.0, 0.1, 0.3],
                       [0.2, 0.1, 1.0, 0.8], [0.85, 0.3, 0.8, 1.0]], dtype=torch.float64)
    l4 = torch.tensor([0, 0, 1, 1])
    dyadic = torch.tensor([[1.0, 0.75, 0.5, 0.25], [0.75, 1.0, 0.5, 0.0],
                           [0.5, 0.5, 1.0, 0.25], [0.25, 0.0, 0.25, 1.0]], dtype=torch.float64)
    specs = [("the 4 x 4 example of the notebook", S4, l4, 0.1, True)]
    for k, (label, x, labels, printed) in enumerate(_batches(11)):
        specs.append((label, similarity_matrix(x), labels, (0.1, 0.3)[k % 2], printed))
    specs.append(("ties: s_ij + epsilon equals the hardest positive exactly (the tests are "
                  "strict)", dyadic, l4, 0.25, True))
    cases = []
    for label, S, labels, eps, printed in specs:
        pos, neg = _pair_masks(labels)
        cases.append(Case(label, (S, pos, neg), miners.vthm(S, pos, neg, eps),
                          dict(epsilon=eps),
                          show=_show(S, labels, epsilon=eps) if printed else None))
    S, labels = _half_batch(13)
    pos, neg = _pair_masks(labels)
    cases.append(Case("float16: a half-precision S of 16", (S, pos, neg),
                      miners.vthm(S, pos, neg, 0.1), dict(epsilon=0.1),
                      extra={"also": miners.vthm(S.float(), pos, neg, 0.1)}))
    return cases


def _compare_vthm(out, case: Case) -> Problem | None:
    problem = _compare_masks(out, case)
    if problem and "also" in case.extra and problem.kind == "value":
        alt = Case(case.label, case.args, case.extra["also"])
        if _compare_masks(out, alt) is None:
            return None
    if problem and problem.kind == "value":
        problem.what = problem.what.replace("your pos", "your pos_keep").replace(
            "your neg", "your neg_keep")
    return problem


def _vthm_plain(S, pos, neg, epsilon=0.1, strict=True, eps_sign=1.0, hardest="min",
                row_pos=None):
    inf = torch.tensor(float("inf"), dtype=S.dtype)
    row_pos = pos if row_pos is None else row_pos
    if hardest == "min":
        pos_ref = torch.where(row_pos, S, inf).amin(1, keepdim=True)
    else:
        pos_ref = torch.where(row_pos, S, -inf).amax(1, keepdim=True)
    neg_max = torch.where(neg, S, -inf).amax(1, keepdim=True)
    if strict:
        pos_keep = pos & (S - eps_sign * epsilon < neg_max)
        neg_keep = neg & (S + eps_sign * epsilon > pos_ref)
    else:
        pos_keep = pos & (S - eps_sign * epsilon <= neg_max)
        neg_keep = neg & (S + eps_sign * epsilon >= pos_ref)
    return pos_keep, neg_keep


_VTHM_MISTAKES = {
    "the tests are not strict: keep a negative iff s_ij + epsilon > min_P s_ik (and a positive "
    "iff s_ij - epsilon < max_N s_ik), not >= / <=":
        lambda S, pos, neg, epsilon=0.1: _vthm_plain(S, pos, neg, epsilon, strict=False),
    "epsilon has the wrong sign: VTHM keeps a negative that comes within epsilon of the "
    "hardest positive (s_ij + epsilon > ...)":
        lambda S, pos, neg, epsilon=0.1: _vthm_plain(S, pos, neg, epsilon, eps_sign=-1.0),
    "the hardest positive is the LEAST similar one (min over P_i), not the most similar":
        lambda S, pos, neg, epsilon=0.1: _vthm_plain(S, pos, neg, epsilon, hardest="max"),
    "the minimum runs over the whole row (the diagonal and the negatives too), not over the "
    "positives P_i": lambda S, pos, neg, epsilon=0.1: _vthm_plain(
        S, pos, neg, epsilon, row_pos=torch.ones_like(pos)),
    "the two masks are swapped: return (pos_keep, neg_keep)":
        lambda S, pos, neg, epsilon=0.1: tuple(reversed(miners.vthm(S, pos, neg, epsilon))),
}


# ============================================================================ the catalogue


EXERCISES = [
    Exercise(
        name="ms_negative_weights", notebook="03", kind="implement", minutes=10,
        title="The multi-similarity weight of a negative pair (closed form)",
        call="ms_negative_weights(S, neg, beta=50.0, lam=0.5)",
        statement=(
            "The negative part of the multi-similarity loss of anchor i is "
            "(1/beta) log(1 + sum_{k in N_i} exp(beta (s_ik - lam))). Its weight on the "
            "negative pair (i, j), w_ij = dL/ds_ij, has a closed form. Return the (B, B) "
            "weights: w_ij on the negative pairs, 0 elsewhere, finite for float16 S too."),
        hints=[
            "Differentiate log(1 + sum_k e^{z_k}) w.r.t. z_j: the answer is a softmax.",
            "w_ij = e^{beta (s_ij - lam)} / (1 + sum_{k in N_i} e^{beta (s_ik - lam)}); the 1 "
            "is e^0, the anchor's own logit 0.",
            "Stable form: the softmax over the row [beta (s_ik - lam) for k in N_i (-inf "
            "elsewhere), 0]; compute in float32 for a float16 S.",
        ],
        cases=_ms_cases, compare=lambda out, case: compare_tensor(out, case.expected, case,
                                                                  "your weights"),
        mistakes=_MS_MISTAKES),
    Exercise(
        name="vthm_masks", notebook="04", kind="implement", minutes=10,
        title="The VTHM mining masks (valid-triplet-based hard mining)",
        call="vthm_masks(S, pos, neg, epsilon=0.1)",
        statement=(
            "Keep the negative pair (i, j) iff s_ij + epsilon > min_{k in P_i} s_ik (it comes "
            "within epsilon of the anchor's hardest positive) and the positive pair (i, j) iff "
            "s_ij - epsilon < max_{k in N_i} s_ik. An anchor without positives keeps no "
            "negative, one without negatives keeps no positive. Return (pos_keep, neg_keep), "
            "(B, B) bool."),
        hints=[
            "Two row statistics: the hardest positive (min of S over P_i) and the hardest "
            "negative (max of S over N_i), each (B, 1).",
            "Mask before the min / max: torch.where(pos, S, inf).amin(1, keepdim=True); an "
            "empty row then gives +inf (-inf for the max), which keeps nothing.",
            "Both tests are strict (> and <), and the kept pairs stay inside their masks: "
            "neg & (...), pos & (...).",
        ],
        cases=_vthm_cases, compare=_compare_vthm, mistakes=_VTHM_MISTAKES),
]
