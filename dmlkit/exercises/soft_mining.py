"""Exercises on online soft mining and class-aware attention (Wang et al. 2019a; notebook 05):
the OSM weights of the positive and negative pairs, the CAA attention of every pair.

Every expected output comes from dmlkit's own :class:`~dmlkit.losses.osm_caa.OSMCAALoss`
(``pair_weights_osm_caa`` with ``attention="none"`` for OSM alone, ``pair_attention`` for CAA),
on the batches of :mod:`dmlkit.exercises.losses`. Each exercise lists the typical mistakes (a
function making each one) that the checker uses to name what went wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses.base import PairBatch
from ..losses.osm_caa import OSMCAALoss
from ..similarity import pair_masks as _pair_masks
from ..similarity import distances_from_similarity, similarity_matrix
from .engine import Case, Exercise, Problem, compare_tensor, format_input
from .losses import _batches

__all__ = ["EXERCISES"]


# ============================================================================ OSM weights
def _batch(S, pos=None, neg=None, embeddings=None, labels=None):
    B = S.shape[0] if S is not None else embeddings.shape[0]
    return PairBatch(S=S, pos=pos, neg=neg,
                     labels=torch.zeros(B, dtype=torch.long) if labels is None else labels,
                     ref_labels=torch.zeros(B, dtype=torch.long) if labels is None else labels,
                     embeddings=torch.zeros(B, 1) if embeddings is None else embeddings,
                     ref_embeddings=torch.zeros(B, 1) if embeddings is None else embeddings,
                     in_batch=True, normalized=True)


def _osm_reference(S, pos, neg, sigma=0.8, alpha=1.2):
    """(w+, w-) of OSM alone, from dmlkit's loss on the similarities S of unit vectors."""
    loss = OSMCAALoss(num_classes=1, embedding_dim=1, sigma=sigma, alpha=alpha,
                      attention="none")
    w_pos, w_neg = loss.pair_weights_osm_caa(_batch(S, pos, neg))
    return w_pos.detach(), w_neg.detach()


def _osm_show(D, labels, **params) -> str:
    return format_input(D=D, labels=labels, **params) + (
        "\n  (pos / neg: the pairs of these labels; the diagonal is in neither)")


def _osm_cases(seed: int = 17) -> list[Case]:
    params = [dict(sigma=0.8, alpha=1.2), dict(sigma=0.5, alpha=1.0), dict(sigma=0.8, alpha=1.2)]
    cases = []
    for k, (label, x, labels, printed) in enumerate(_batches(seed)):
        p = params[k % len(params)]
        S = similarity_matrix(x)
        pos, neg = _pair_masks(labels)
        D = distances_from_similarity(S).detach()
        cases.append(Case(label, (D, pos, neg), _osm_reference(S, pos, neg, **p), dict(p),
                          show=_osm_show(D, labels, **p) if printed else None,
                          rtol=1e-6, atol=1e-9))
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(8, 3, generator=g), dim=1).half()
    labels = torch.arange(8) % 3
    S = similarity_matrix(x.float())
    pos, neg = _pair_masks(labels)
    D = distances_from_similarity(S).detach().half()
    cases.append(Case("float16: distances of 8 unit vectors in half precision", (D, pos, neg),
                      _osm_reference(S, pos, neg), dict(sigma=0.8, alpha=1.2),
                      rtol=2e-2, atol=4e-3))
    return cases


def _compare_pair(out, case: Case, names=("w_pos", "w_neg")) -> Problem | None:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return Problem(f"return the two weight matrices as a tuple ({', '.join(names)}); got "
                       f"{type(out).__name__}", "type")
    for name, o, e in zip(names, out, case.expected):
        problem = compare_tensor(o, e, case, f"your {name}")
        if problem:
            return problem
    return None


def _osm_plain(D, pos, neg, sigma=0.8, alpha=1.2, pos_w=None, neg_w=None, pos_mask=None,
               neg_mask=None):
    zero = torch.zeros((), dtype=D.dtype)
    pos_w = (lambda d: torch.exp(-d ** 2 / sigma ** 2)) if pos_w is None else pos_w
    neg_w = (lambda d: torch.relu(alpha - d)) if neg_w is None else neg_w
    pos_mask = pos if pos_mask is None else pos_mask
    neg_mask = neg if neg_mask is None else neg_mask
    return torch.where(pos_mask, pos_w(D), zero), torch.where(neg_mask, neg_w(D), zero)


_OSM_MISTAKES = {
    "sigma is not squared: s+_ij = exp(-d_ij^2 / sigma^2)":
        lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(
            D, pos, neg, sigma, alpha, pos_w=lambda d: torch.exp(-d ** 2 / sigma)),
    "the distance is not squared: s+_ij = exp(-d_ij^2 / sigma^2)":
        lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(
            D, pos, neg, sigma, alpha, pos_w=lambda d: torch.exp(-d / sigma ** 2)),
    "the sign in the exponent is flipped: a closer positive (smaller d_ij) must weigh MORE, "
    "s+_ij = exp(-d_ij^2 / sigma^2) <= 1":
        lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(
            D, pos, neg, sigma, alpha, pos_w=lambda d: torch.exp(d ** 2 / sigma ** 2)),
    "the hinge is missing on the negatives ([alpha - d_ij]_+: a negative beyond alpha weighs "
    "0, not a negative number)": lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(
        D, pos, neg, sigma, alpha, neg_w=lambda d: alpha - d),
    "the hinge is flipped: a CLOSER negative weighs more, [alpha - d_ij]_+, not "
    "[d_ij - alpha]_+": lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(
        D, pos, neg, sigma, alpha, neg_w=lambda d: torch.relu(d - alpha)),
    "the negatives' weight is the squared hinge (that is the loss term [alpha - d_ij]_+^2; "
    "its OSM weight is [alpha - d_ij]_+)": lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(
        D, pos, neg, sigma, alpha, neg_w=lambda d: torch.relu(alpha - d) ** 2),
    "the diagonal is weighted as a positive pair (a sample is not its own positive: use the "
    "pos mask)": lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(
        D, pos, neg, sigma, alpha, pos_mask=pos | torch.eye(len(D), dtype=torch.bool)),
    "w_pos and w_neg are swapped: return (w_pos, w_neg)":
        lambda D, pos, neg, sigma=0.8, alpha=1.2: tuple(reversed(_osm_plain(
            D, pos, neg, sigma, alpha))),
    "the sigma and alpha passed in are ignored (fixed 0.8 and 1.2 instead)":
        lambda D, pos, neg, sigma=0.8, alpha=1.2: _osm_plain(D, pos, neg),
}


# ============================================================================ CAA attention
def _caa_reference(f, labels, centres, scale=1.0):
    """(B, B) a_ij = min(a_i, a_j) from dmlkit's loss with these centres."""
    C, E = centres.shape
    dtype = torch.float32 if f.dtype == torch.float16 else f.dtype
    loss = OSMCAALoss(num_classes=C, embedding_dim=E, scale=scale).to(dtype)
    with torch.no_grad():
        loss.centres.copy_(centres.to(dtype))
        A = loss.pair_attention(_batch(None, embeddings=f.to(dtype), labels=labels))
    return A.detach()


def _caa_cases(seed: int = 19) -> list[Case]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=g, dtype=dtype)

    tie_c = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    tie_f = torch.tensor([[1.0, 1.0], [2.0, 0.5], [1.0, 1.0], [0.5, 2.0]], dtype=torch.float64)
    specs = [
        ("random: 5 samples of 2 classes in 2-D (scale 1)", rnd(5, 2), torch.tensor(
            [0, 1, 0, 1, 1]), rnd(2, 2), 1.0, True),
        ("random: 12 samples of 4 classes in 3-D (scale 4)", rnd(12, 3),
         torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]), rnd(4, 3), 4.0, False),
        ("one class: every a_i = 1", rnd(4, 3), torch.zeros(4, dtype=torch.long), rnd(1, 3),
         2.0, True),
        ("unnormalised inputs: embeddings and centres of norm ~ 10 (scale 2)", 10 * rnd(6, 3),
         torch.tensor([0, 1, 2, 0, 1, 2]), 10 * rnd(3, 3), 2.0, False),
        ("ties: samples 0 and 2 halfway between the two centres (a_i = 1/2)", tie_f,
         torch.tensor([0, 0, 1, 1]), tie_c, 4.0, True),
        ("outlier: sample 3 (label 0) lies on class 1's centre (scale 8)",
         torch.tensor([[1.0, 0.1], [0.9, -0.2], [0.1, 1.0], [0.0, 1.0]], dtype=torch.float64),
         torch.tensor([0, 0, 1, 0]), tie_c, 8.0, True),
    ]
    cases = []
    for label, f, labels, centres, scale, printed in specs:
        cases.append(Case(label, (f, labels, centres), _caa_reference(f, labels, centres, scale),
                          dict(scale=scale), show=format_input(
                              f=f, labels=labels, centres=centres, scale=scale) if printed
                          else None, rtol=1e-6, atol=1e-9))
    labels, centres = torch.arange(8) % 4, rnd(4, 4, dtype=torch.float32)
    f = centres[labels] + 0.1 * rnd(8, 4, dtype=torch.float32)     # each near its centre
    cases.append(Case("large scale: logits 100 cos(f_i, c_k) near 100, float32 (exp(100) "
                      "overflows)",
                      (f, labels, centres), _caa_reference(f, labels, centres, 100.0),
                      dict(scale=100.0), rtol=1e-4, atol=1e-6))
    f, centres = rnd(8, 4).half(), rnd(4, 4).half()
    cases.append(Case("float16: embeddings and centres in half precision (scale 16)",
                      (f, labels, centres), _caa_reference(f, labels, centres, 16.0),
                      dict(scale=16.0), rtol=2e-2, atol=4e-3))
    return cases


def _caa_plain(f, labels, centres, scale=1.0, combine=torch.minimum, normalise=True, dim=1,
               own=True, softmax=True, use_scale=True):
    f = f.float() if f.dtype == torch.float16 else f
    c = centres.to(f.dtype)
    if normalise:
        f, c = F.normalize(f, dim=1), F.normalize(c, dim=1)
    z = (scale if use_scale else 1.0) * f @ c.T
    if softmax:
        p = torch.softmax(z, dim=dim)
    else:
        p = torch.exp(z)
    a = p.gather(1, labels[:, None]).squeeze(1) if own else p.amax(1)
    return combine(a[:, None], a[None, :])


def _caa_naive_softmax(f, labels, centres, scale=1.0):
    f = f.float() if f.dtype == torch.float16 else f
    z = scale * F.normalize(f, dim=1) @ F.normalize(centres.to(f.dtype), dim=1).T
    e = torch.exp(z)
    a = (e / e.sum(1, keepdim=True)).gather(1, labels[:, None]).squeeze(1)
    return torch.minimum(a[:, None], a[None, :])


_CAA_MISTAKES = {
    "a_ij is the LARGER of a_i and a_j: it is min(a_i, a_j), so that one unlikely sample is "
    "enough to down-weight the pair":
        lambda f, labels, centres, scale=1.0: _caa_plain(f, labels, centres, scale,
                                                         combine=torch.maximum),
    "a_ij is the product a_i a_j: it is min(a_i, a_j)":
        lambda f, labels, centres, scale=1.0: _caa_plain(f, labels, centres, scale,
                                                         combine=torch.mul),
    "the embeddings and centres are not normalised: the logits are scale * cos(f_i, c_k), "
    "not scale * f_i . c_k": lambda f, labels, centres, scale=1.0: _caa_plain(
        f, labels, centres, scale, normalise=False),
    "the softmax runs over the samples (dim 0); a_i is a probability over the CLASSES k":
        lambda f, labels, centres, scale=1.0: _caa_plain(f, labels, centres, scale, dim=0),
    "a_i is the probability of the sample's OWN label y_i, not of its most likely class":
        lambda f, labels, centres, scale=1.0: _caa_plain(f, labels, centres, scale, own=False),
    "the softmax's denominator is missing: a_i = exp(z_iy) / sum_k exp(z_ik)":
        lambda f, labels, centres, scale=1.0: _caa_plain(f, labels, centres, scale,
                                                         softmax=False),
    "the scale passed in is ignored (logits scale * cos(f_i, c_k))":
        lambda f, labels, centres, scale=1.0: _caa_plain(f, labels, centres, scale,
                                                         use_scale=False),
    "exp(z) / sum(exp(z)) overflows for large logits: use torch.softmax (or subtract the "
    "row's maximum first)": _caa_naive_softmax,
}


EXERCISES = [
    Exercise(
        name="osm_weights", notebook="05", kind="implement", minutes=10,
        title="The online soft mining weights of the positive and negative pairs",
        call="osm_weights(D, pos, neg, sigma=0.8, alpha=1.2)",
        statement=(
            "D (B, B) Euclidean distances of unit embeddings, pos / neg (B, B) bool masks. "
            "Return (w_pos, w_neg), two (B, B) tensors: w_pos = exp(-d_ij^2 / sigma^2) on the "
            "positive pairs, w_neg = [alpha - d_ij]_+ on the negative pairs, 0 elsewhere "
            "(OSM alone, no attention)."),
        hints=[
            "Both weights are elementwise functions of D: compute them on the whole matrix, "
            "then keep each on its own mask.",
            "torch.where(pos, torch.exp(-D ** 2 / sigma ** 2), 0.0); the hinge [.]_+ is "
            "torch.relu.",
            "A positive pair at d = 0 weighs 1 and one far away almost 0; a negative pair "
            "weighs alpha - d while closer than alpha, 0 beyond. The diagonal is in neither "
            "mask.",
        ],
        cases=_osm_cases, compare=_compare_pair, mistakes=_OSM_MISTAKES),
    Exercise(
        name="caa_attention", notebook="05", kind="implement", minutes=15,
        title="The class-aware attention of every pair",
        call="caa_attention(f, labels, centres, scale=1.0)",
        statement=(
            "f (B, E) embeddings, labels (B,), centres (C, E) class centres. With logits "
            "z_ik = scale * cos(f_i, c_k), a_i = softmax_k(z_i)[y_i] is how likely sample i's "
            "OWN label is; return the (B, B) pair attention a_ij = min(a_i, a_j), stable for "
            "a large scale. The embeddings and centres need not be unit vectors."),
        hints=[
            "cos(f_i, c_k) for all i, k at once: normalise the rows of f and of the centres "
            "(F.normalize(x, dim=1)), then one matrix product.",
            "torch.softmax(z, dim=1) is a probability over the classes of each row (stable for "
            "any logits); pick column y_i of row i with .gather(1, labels[:, None]).",
            "The pair attention is the smaller of the two samples' attentions: "
            "torch.minimum(a[:, None], a[None, :]).",
        ],
        cases=_caa_cases, compare=lambda out, case: compare_tensor(
            out, case.expected, case, "your attention"),
        mistakes=_CAA_MISTAKES),
    Exercise(
        name="scale_experiment", notebook="05", kind="experiment", minutes=10,
        title="Flatten the attention",
        statement=(
            "Re-run the toy cell of section 1 with scale=1.0 instead of 4.0. Before you do, "
            "write what you expect for the outlier's attention a_6, the clean samples' "
            "attention and the outlier's pair weights, and why; then compare."),
        hints=["With unit vectors the logits scale * cos(f_i, c_k) lie in [-scale, scale]: "
               "how far apart can two classes' probabilities be at scale 1?"],
        reveal=("the attention flattens: at scale 1 the two logits differ by at most 2, so "
                "every a_i lies between 1 / (1 + e^2) ~ 0.12 and 0.88; the outlier's a_6 rises "
                "and the clean samples' a_i fall toward 1/2, so the outlier's pairs are "
                "down-weighted much less than at scale 4 (hence scale 16 for 60 classes in "
                "section 2).")),
]
