"""Exercises on pair-based losses: the masks, contrastive, triplet, generalised lifted
structure, N-pair (the weights and mining exercises: :mod:`dmlkit.exercises.mining`).

Every expected output comes from dmlkit itself (:mod:`dmlkit.similarity`,
:mod:`dmlkit.losses`, :mod:`dmlkit.miners`), evaluated on a :class:`~dmlkit.losses.PairBatch`
built from the exercise's S and masks, with its gradient by autograd. Each exercise lists the
typical mistakes (a function making each one) that the checker uses to name what went wrong.
"""

from __future__ import annotations

import torch

from ..losses.base import PairBatch
from ..losses.contrastive import ContrastiveLoss
from ..losses.lifted import GeneralizedLiftedStructureLoss
from ..losses.npair import NPairLoss
from ..losses.triplet import TripletLoss
from ..similarity import pair_masks as _pair_masks
from ..similarity import similarity_matrix
from .engine import Case, Exercise, Problem, compare_tensor, format_input

__all__ = ["EXERCISES", "loss_on_S"]

_NINF = float("-inf")


# ----------------------------------------------------------------------------- inputs
def loss_on_S(loss, S: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """A dmlkit loss's ``compute`` on a given S (B, M) and masks (half precision: float32)."""
    S = S.float() if S.dtype in (torch.float16, torch.bfloat16) else S
    B, M = S.shape
    batch = PairBatch(S=S, pos=pos, neg=neg, labels=torch.zeros(B, dtype=torch.long),
                      ref_labels=torch.zeros(M, dtype=torch.long),
                      embeddings=torch.zeros(B, 1, dtype=S.dtype),
                      ref_embeddings=torch.zeros(M, 1, dtype=S.dtype), in_batch=False,
                      normalized=True)
    return loss.compute(batch)


def _value_and_grads(fn, args: tuple, grad_args: tuple, kwargs: dict):
    args = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
    for i in grad_args:
        args[i].requires_grad_(True)
    with torch.enable_grad():
        out = fn(*args, **kwargs)
        grads = ()
        if grad_args:
            got = torch.autograd.grad(out, [args[i] for i in grad_args], allow_unused=True)
            grads = tuple(torch.zeros_like(args[i]) if g is None else g.detach()
                          for i, g in zip(grad_args, got))
    return out.detach(), grads


def _batches(seed: int):
    """The labelled batches every S-based exercise runs on: (label, embeddings, labels,
    printed?). S = cosine similarities, float64."""
    g = torch.Generator().manual_seed(seed)

    def emb(n, d=3):
        return torch.randn(n, d, generator=g, dtype=torch.float64)

    ties = emb(6)
    ties[3], ties[4] = ties[0], ties[1]          # copies across classes: tied similarities
    lonely = torch.tensor([0, 0, 1, 1, 1, 2, 3])  # samples 5 and 6 have no positive
    centre = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    tight = torch.cat([centre, -centre]).repeat_interleave(3, 0) + 0.05 * emb(6)
    return [
        ("random: a batch of 5 (2 classes)", emb(5), torch.tensor([0, 1, 0, 1, 1]), True),
        ("random: a batch of 12 (4 classes, uneven)", emb(12, 4),
         torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]), False),
        ("one class: no negative pair", emb(4), torch.zeros(4, dtype=torch.long), True),
        ("singletons: no positive pair", emb(4), torch.arange(4), True),
        ("lonely samples: two anchors without a positive", emb(7), lonely, False),
        ("ties: copied embeddings, tied similarities", ties,
         torch.tensor([0, 0, 1, 1, 2, 2]), True),
        ("well separated: two tight, opposite classes (every triplet easy)", tight,
         torch.tensor([0, 0, 0, 1, 1, 1]), False),
    ]


def _half_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 8, generator=g)
    labels = torch.arange(16) % 4
    return similarity_matrix(x).half(), labels


def _show(S, labels, **params) -> str:
    return format_input(S=S, labels=labels, **params) + (
        "\n  (pos / neg: the pairs of these labels; the diagonal is in neither)")


def _loss_cases(reference, seed: int, params: list[dict], half_params: dict,
                label_of=lambda p: "") -> list[Case]:
    """Value and dL/dS on every batch of :func:`_batches` (one parameter set each, cycling
    through ``params``), then a float16 S (value only, float32 reference)."""
    cases = []
    for k, (label, x, labels, printed) in enumerate(_batches(seed)):
        p = params[k % len(params)]
        S = similarity_matrix(x)
        pos, neg = _pair_masks(labels)
        value, grads = _value_and_grads(lambda S, pos, neg, **kw: reference(S, pos, neg, **kw),
                                        (S, pos, neg), (0,), p)
        cases.append(Case(label + label_of(p), (S.detach(), pos, neg), value, dict(p),
                          show=_show(S, labels, **p) if printed else None, grad_args=(0,),
                          expected_grads=grads, rtol=1e-6, atol=1e-9))
    S, labels = _half_batch(seed)
    pos, neg = _pair_masks(labels)
    value = reference(S.float(), pos, neg, **half_params).detach()
    cases.append(Case("float16: a half-precision S of 16 (4 classes)", (S, pos, neg), value,
                      dict(half_params), rtol=2e-2, atol=2e-3))
    return cases


def _scalar(out, case: Case) -> Problem | None:
    return compare_tensor(out, case.expected, case, "your loss")


# ============================================================================ pair masks
def _masks_reference(labels):
    return _pair_masks(labels)


def _masks_cases() -> list[Case]:
    specs = [("random: 6 samples of 3 classes", torch.tensor([2, 0, 2, 1, 0, 2])),
             ("random: 10 samples of 4 classes", torch.tensor([3, 1, 1, 0, 2, 3, 3, 0, 1, 2])),
             ("one class: no negative pair", torch.zeros(4, dtype=torch.long)),
             ("singletons: no positive pair", torch.tensor([5, 3, 9, 1])),
             ("a single sample", torch.tensor([7]))]
    return [Case(label, (lab,), _masks_reference(lab), show=format_input(labels=lab))
            for label, lab in specs]


def _compare_masks(out, case: Case) -> Problem | None:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return Problem("return the two masks as a tuple (pos, neg); got "
                       f"{type(out).__name__}", "type")
    for name, o, e in zip(("pos", "neg"), out, case.expected):
        problem = compare_tensor(o, e, case, f"your {name}")
        if problem:
            return problem
    return None


def _masks_diag_pos(labels):
    pos = labels[:, None] == labels[None, :]
    return pos, ~pos


def _masks_diag_neg(labels):
    pos = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    return pos, ~pos


def _masks_swapped(labels):
    pos, neg = _pair_masks(labels)
    return neg, pos


# ============================================================================ contrastive
def _contrastive_reference(S, pos, neg, lam=0.5):
    return loss_on_S(ContrastiveLoss(lam=lam, form="similarity", reduction="mean"), S, pos, neg)


def _terms(S, pos, neg, lam, pos_term=lambda s: -s, neg_term=None):
    neg_term = neg_term or (lambda s: torch.relu(s - lam))
    zero = torch.zeros((), dtype=S.dtype)
    return torch.where(pos, pos_term(S), zero), torch.where(neg, neg_term(S), zero)


def _mean(p, n, pos, neg):
    return (p.sum() + n.sum()) / max(int(pos.sum()) + int(neg.sum()), 1)


def _c_guard(fn):
    def wrapped(S, pos, neg, lam=0.5):
        if not bool(pos.any()) or not bool(neg.any()):
            return (S * 0).sum()
        return fn(S, pos, neg, lam)
    return wrapped


_CONTRASTIVE_MISTAKES = {
    "the positive term has the wrong sign (a positive pair should add -s_ij: the more similar, "
    "the lower the loss)": _c_guard(lambda S, pos, neg, lam: _mean(
        *_terms(S, pos, neg, lam, pos_term=lambda s: s), pos, neg)),
    "the hinge is missing on the negatives ([s_ij - lam]_+, not s_ij - lam)":
        _c_guard(lambda S, pos, neg, lam: _mean(
            *_terms(S, pos, neg, lam, neg_term=lambda s: s - lam), pos, neg)),
    "the hinge is flipped ([s_ij - lam]_+, not [lam - s_ij]_+)":
        _c_guard(lambda S, pos, neg, lam: _mean(
            *_terms(S, pos, neg, lam, neg_term=lambda s: torch.relu(lam - s)), pos, neg)),
    "the margin lam is ignored ([s_ij]_+ instead of [s_ij - lam]_+)":
        _c_guard(lambda S, pos, neg, lam: _mean(
            *_terms(S, pos, neg, lam, neg_term=torch.relu), pos, neg)),
    "the sum instead of the mean (divide by the number of positive + negative pairs)":
        _c_guard(lambda S, pos, neg, lam: sum(t.sum() for t in _terms(S, pos, neg, lam))),
    "two separate means (positives, negatives) instead of one mean over all the pairs":
        _c_guard(lambda S, pos, neg, lam: sum(
            t.sum() / max(int(m.sum()), 1) for t, m in zip(_terms(S, pos, neg, lam),
                                                           (pos, neg)))),
    "a mean over every entry of S (diagonal and all) instead of over the pairs":
        _c_guard(lambda S, pos, neg, lam: sum(t.sum() for t in _terms(S, pos, neg, lam))
                 / S.numel()),
    "the lam passed in is ignored (a fixed 0.5 instead)":
        lambda S, pos, neg, lam=0.5: _contrastive_reference(S, pos, neg),
    "a batch without positive or without negative pairs must give 0 (dmlkit's convention)":
        lambda S, pos, neg, lam=0.5: _mean(*_terms(S, pos, neg, lam), pos, neg),
}


# ============================================================================ triplet
def _triplet_reference(S, pos, neg, margin=0.2):
    loss = TripletLoss(margin=margin, form="similarity", mining="all", reduction="mean_nonzero")
    return loss_on_S(loss, S, pos, neg)


def _violations(S, pos, neg, margin, sign=1.0, shift=None):
    valid = pos[:, :, None] & neg[:, None, :]
    shift = margin if shift is None else shift
    v = torch.relu(sign * (S[:, None, :] - S[:, :, None]) + shift)
    return torch.where(valid, v, torch.zeros((), dtype=S.dtype)), valid


def _nonzero_mean(v):
    return v.sum() / (v > 0).sum().clamp_min(1)


_TRIPLET_MISTAKES = {
    "the sign is flipped: the loss of (i, p, n) is [s_in - s_ip + margin]_+ (a negative more "
    "similar than the positive is the violation)":
        lambda S, pos, neg, margin=0.2: _nonzero_mean(_violations(S, pos, neg, margin, -1.0)[0]),
    "the margin is subtracted instead of added ([s_in - s_ip + margin]_+)":
        lambda S, pos, neg, margin=0.2: _nonzero_mean(
            _violations(S, pos, neg, margin, shift=-margin)[0]),
    "the margin is missing ([s_in - s_ip + margin]_+)":
        lambda S, pos, neg, margin=0.2: _nonzero_mean(
            _violations(S, pos, neg, margin, shift=0.0)[0]),
    "the mean over all valid triplets instead of over the triplets with a non-zero loss":
        lambda S, pos, neg, margin=0.2: (lambda v, valid: v.sum() / valid.sum().clamp_min(1))(
            *_violations(S, pos, neg, margin)),
    "the sum instead of the mean over the triplets with a non-zero loss":
        lambda S, pos, neg, margin=0.2: _violations(S, pos, neg, margin)[0].sum(),
    "the anchor itself is counted as a negative (use the neg mask, not ~pos)":
        lambda S, pos, neg, margin=0.2: _nonzero_mean(
            _violations(S, pos, ~pos, margin)[0]),
    "the margin passed in is ignored (a fixed 0.2 instead)":
        lambda S, pos, neg, margin=0.2: _triplet_reference(S, pos, neg),
    "NaN when no triplet has a loss: divide by max(count, 1), or return a zero tensor":
        lambda S, pos, neg, margin=0.2: (lambda v: v.sum() / (v > 0).sum())(
            _violations(S, pos, neg, margin)[0]),
}


# ============================================================================ lifted structure
def _lifted_reference(S, pos, neg, lam=1.0):
    return loss_on_S(GeneralizedLiftedStructureLoss(lam=lam, form="similarity"), S, pos, neg)


def _lse(x, mask, empty_safe=True, fill=_NINF):
    filled = torch.where(mask, x, torch.tensor(fill, dtype=x.dtype))
    if empty_safe:
        filled = torch.where(mask.any(1, keepdim=True), filled, torch.zeros((), dtype=x.dtype))
    return torch.logsumexp(filled, 1)


def _lifted(S, pos, neg, lam, lp=None, ln=None, hinge=True, per="all", safe=True):
    lp = _lse(-S, pos, safe) if lp is None else lp
    ln = _lse(S, neg, safe) if ln is None else ln
    h = lp + ln + lam
    h = torch.relu(h) if hinge else h
    live = pos.any(1) & neg.any(1)
    terms = torch.where(live, h, torch.zeros((), dtype=S.dtype))
    if per == "live":
        return terms.sum() / max(int(live.sum()), 1)
    return terms.sum() / (S.shape[0] if per == "all" else 1)


_LIFTED_MISTAKES = {
    "masked entries still count: multiplying by the mask leaves exp(0) = 1 in the sum (fill "
    "them with -inf before the log-sum-exp)":
        lambda S, pos, neg, lam=1.0: _lifted(
            S, pos, neg, lam, lp=torch.logsumexp(-S * pos, 1), ln=torch.logsumexp(S * neg, 1)),
    "the positives' term has the wrong sign (log sum exp(-s) over P_i)":
        lambda S, pos, neg, lam=1.0: _lifted(S, pos, neg, lam, lp=_lse(S, pos)),
    "the hinge [.]_+ is missing": lambda S, pos, neg, lam=1.0: _lifted(S, pos, neg, lam,
                                                                        hinge=False),
    "the margin lam is missing": lambda S, pos, neg, lam=1.0: _lifted(S, pos, neg, 0.0),
    "the mean over the anchors that have pairs, instead of over all B anchors":
        lambda S, pos, neg, lam=1.0: _lifted(S, pos, neg, lam, per="live"),
    "the sum over the anchors instead of the mean":
        lambda S, pos, neg, lam=1.0: _lifted(S, pos, neg, lam, per="sum"),
}


# ============================================================================ N-pair
def _npair_reference(f, f_pos):
    f32 = f.float() if f.dtype == torch.float16 else f
    p32 = f_pos.float() if f_pos.dtype == torch.float16 else f_pos
    n = f32.shape[0]
    labels = torch.arange(n)
    return NPairLoss(l2_reg=0.0, normalize=False)(f32, labels, p32, labels)


def _npair_cases(seed: int = 5) -> list[Case]:
    g = torch.Generator().manual_seed(seed)

    def rnd(n, d, scale=1.0):
        return scale * torch.randn(n, d, generator=g, dtype=torch.float64)

    f3, p3 = rnd(3, 2), rnd(3, 2)
    tie_f = rnd(4, 3)
    tie_p = tie_f.clone()
    tie_p[2] = tie_p[1]
    specs = [("random: 3 pairs in 2-D", f3, p3, True),
             ("random: 8 pairs in 5-D", rnd(8, 5), rnd(8, 5), False),
             ("one pair: no negative class", rnd(1, 3), rnd(1, 3), True),
             ("ties: two identical positives", tie_f, tie_p, False),
             ("large embeddings (norm ~ 40): exp(f_i . f_j+) overflows", rnd(6, 4, 20.0),
              rnd(6, 4, 20.0), False)]
    cases = []
    for label, f, p, printed in specs:
        value, grads = _value_and_grads(_npair_reference, (f, p), (0, 1), {})
        cases.append(Case(label, (f, p), value, show=format_input(f=f, f_pos=p) if printed
                          else None, grad_args=(0, 1), expected_grads=grads))
    f, p = rnd(8, 4).half(), rnd(8, 4).half()
    cases.append(Case("float16: 8 pairs in half precision", (f, p),
                      _npair_reference(f, p).detach(), rtol=2e-2, atol=5e-3))
    return cases


def _npair_plain(f, f_pos, sign=1.0, reduce="mean", own=True, negatives=None):
    logits = f @ (f_pos if negatives is None else negatives).T
    s_pos = (f * f_pos).sum(1)
    if own:
        lse = torch.logsumexp(logits, 1)
    else:
        eye = torch.eye(len(f), dtype=torch.bool)
        lse = torch.logsumexp(logits.masked_fill(eye, _NINF), 1)
    per = sign * (lse - s_pos)
    return per.mean() if reduce == "mean" else per.sum()


_NPAIR_MISTAKES = {
    "the log-sum-exp leaves out the own positive: log(1 + sum_{j != i} exp(.)) equals "
    "log sum_j exp(f_i . f_j+) - f_i . f_i+ with j running over ALL the positives":
        lambda f, f_pos: _npair_plain(f, f_pos, own=False),
    "the sum over the N anchors instead of the mean":
        lambda f, f_pos: _npair_plain(f, f_pos, reduce="sum"),
    "the sign is flipped": lambda f, f_pos: _npair_plain(f, f_pos, sign=-1.0),
    "the negatives are the other anchors f_j instead of the other positives f_j+":
        lambda f, f_pos: torch.logsumexp(f @ f.T, 1).sub((f * f_pos).sum(1)).mean(),
    "log(sum(exp(.))) without the log-sum-exp trick overflows: use torch.logsumexp "
    "(or subtract the row's maximum first)":
        lambda f, f_pos: (torch.log(torch.exp(f @ f_pos.T).sum(1)) - (f * f_pos).sum(1)).mean(),
}


EXERCISES = [
    Exercise(
        name="pair_masks", notebook="01", kind="implement", minutes=5,
        title="The masks of positive and negative pairs",
        call="pair_masks(labels)",
        statement=(
            "Given labels (B,) (int64), return (pos, neg): two (B, B) bool tensors with "
            "pos[i, j] True when samples i and j have the same label and i != j, neg[i, j] "
            "True when their labels differ. A sample paired with itself is in neither."),
        hints=[
            "Compare every label with every other: broadcasting labels[:, None] against "
            "labels[None, :] gives a (B, B) table.",
            "That table is True on the diagonal too (a sample has its own label): remove it "
            "from pos with a (B, B) identity mask (torch.eye(..., dtype=torch.bool)).",
            "neg is where the labels differ: the diagonal is then already False. Return "
            "bool tensors, combined with & and ~ (not 0 / 1 floats).",
        ],
        cases=_masks_cases, compare=_compare_masks,
        mistakes={
            "the diagonal is counted as a positive pair (a sample is not its own positive)":
                _masks_diag_pos,
            "the diagonal is counted as a negative pair (neg = ~pos puts i == j into neg)":
                _masks_diag_neg,
            "pos and neg are swapped": _masks_swapped,
        }),
    Exercise(
        name="contrastive_loss", notebook="01", kind="implement", minutes=10,
        title="The contrastive loss on S and the masks (similarity form)",
        call="contrastive_loss(S, pos, neg, lam=0.5)",
        statement=(
            "S (B, B) cosine similarities, pos / neg (B, B) bool masks. Each positive pair "
            "adds -s_ij, each negative pair [s_ij - lam]_+; the loss is the MEAN over all "
            "positive and negative pairs (ordered: (i, j) and (j, i) both count). A batch "
            "without any positive pair or without any negative pair gives 0, as a tensor "
            "that still depends on S. Return a 0-dim tensor differentiable w.r.t. S."),
        hints=[
            "Build two (B, B) tensors of terms: -S where pos, [S - lam]_+ where neg, 0 "
            "elsewhere; then one sum and one division.",
            "torch.where(mask, values, 0.0) keeps the terms of a mask (and lets the gradient "
            "through, unlike an in-place S[~mask] = 0); torch.relu is the hinge [.]_+.",
            "Divide by pos.sum() + neg.sum(). Check pos.any() and neg.any() first: if one is "
            "False, return (S * 0).sum().",
        ],
        cases=lambda: _loss_cases(_contrastive_reference, 1,
                                  [dict(lam=0.5), dict(lam=0.3), dict(lam=0.5)],
                                  dict(lam=0.5)),
        compare=_scalar, mistakes=_CONTRASTIVE_MISTAKES),
    Exercise(
        name="triplet_loss", notebook="01", kind="implement", minutes=15,
        title="The triplet loss over all valid triplets (similarity form)",
        call="triplet_loss(S, pos, neg, margin=0.2)",
        statement=(
            "S (B, B) cosine similarities, pos / neg (B, B) bool masks. A valid triplet is "
            "(i, p, n) with pos[i, p] and neg[i, n]; its loss is [s_in - s_ip + margin]_+. "
            "Return the mean over the triplets with a NON-ZERO loss (dmlkit's default "
            "reduction), 0 (a tensor depending on S) when there is none. A (B, B, B) tensor "
            "is fine at these sizes."),
        hints=[
            "Index the triplets with broadcasting: S[:, None, :] is s_in, S[:, :, None] is "
            "s_ip, so S[:, None, :] - S[:, :, None] is (B, B, B) with axes (i, p, n).",
            "The valid triplets are pos[:, :, None] & neg[:, None, :]; zero the others with "
            "torch.where before summing.",
            "Count the terms > 0 and divide the sum by max(count, 1): no NaN when every "
            "triplet is easy or none is valid.",
        ],
        cases=lambda: _loss_cases(_triplet_reference, 2,
                                  [dict(margin=0.2), dict(margin=0.5), dict(margin=0.1)],
                                  dict(margin=0.2)),
        compare=_scalar, mistakes=_TRIPLET_MISTAKES),
    Exercise(
        name="lifted_loss", notebook="02", kind="implement", minutes=15,
        title="The generalised lifted structure loss: log-sum-exp over positives and negatives",
        call="lifted_loss(S, pos, neg, lam=1.0)",
        statement=(
            "S (B, B) cosine similarities, pos / neg bool masks. For anchor i, "
            "h_i = [log sum_{k in P_i} exp(-s_ik) + log sum_{k in N_i} exp(s_ik) + lam]_+; an "
            "anchor without a positive or without a negative contributes 0. Return "
            "(1/B) sum_i h_i (all B anchors count), with a gradient free of NaN."),
        hints=[
            "torch.logsumexp(x, dim=1) is the stable log sum exp of each row; the masked-out "
            "entries must not count at all, so give them -inf (exp(-inf) = 0), not 0.",
            "A row with no entry at all gives logsumexp = -inf and a NaN gradient: replace "
            "such rows by zeros before the logsumexp, and zero their h_i with torch.where.",
            "Sum h_i over the anchors with a positive AND a negative, divide by B.",
        ],
        cases=lambda: _loss_cases(_lifted_reference, 3,
                                  [dict(lam=1.0), dict(lam=0.5), dict(lam=1.0), dict(lam=1.0),
                                   dict(lam=0.5), dict(lam=1.0), dict(lam=0.1)], dict(lam=1.0)),
        compare=_scalar, mistakes=_LIFTED_MISTAKES),
    Exercise(
        name="npair_loss", notebook="02", kind="implement", minutes=10,
        title="The N-pair-mc loss of N pairs",
        call="npair_loss(f, f_pos)",
        statement=(
            "f (N, D) anchors and f_pos (N, D) their positives, one pair per class (raw "
            "embeddings, no normalisation, no L2 penalty). Return "
            "(1/N) sum_i log(1 + sum_{j != i} exp(f_i . f_j+ - f_i . f_i+)), a 0-dim tensor, "
            "stable for large embeddings."),
        hints=[
            "All the inner products at once: the (N, N) matrix f @ f_pos.T; its diagonal "
            "holds f_i . f_i+.",
            "log(1 + sum_{j != i} exp(a_ij - a_ii)) = logsumexp_j(a_ij) - a_ii with j over "
            "ALL columns, the own positive included.",
            "torch.logsumexp never overflows; it is the softmax cross-entropy of each row "
            "with target i.",
        ],
        cases=_npair_cases, compare=_scalar, mistakes=_NPAIR_MISTAKES),
]
