"""Exercises on generated samples (notebooks 06 and 07): DAML's generator objective J_gen
(Duan et al. 2018), the hardness of synthetic negatives, the synthetic-positive objective
J+_gen (Zou et al. n.d.), a prediction for each notebook and an experiment.

Every expected output comes from dmlkit itself (:func:`dmlkit.adversarial.generator_objective`,
:func:`dmlkit.adversarial.hardness`, :func:`dmlkit.adversarial.synthetic_positive_objective`),
with its gradient by autograd. Each implement exercise lists the typical mistakes (a function
making each one) that the checker uses to name what went wrong.
"""

from __future__ import annotations

import math

import torch

from ..adversarial import generator_objective, hardness, synthetic_positive_objective
from .engine import Case, Exercise, Problem, compare_float, compare_tensor, format_input
from .losses import _value_and_grads

__all__ = ["EXERCISES", "SP_EXAMPLE"]

_TRIPLE = ("anchor", "positive", "negative", "synthetic")


def _rnd(g, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=g, dtype=torch.float64)


# ============================================================================ J_gen
def _jgen_reference(anchor, positive, negative, synthetic, lambda1=1.0, lambda2=1.0, alpha=1.0):
    if anchor.dtype == torch.float16:
        anchor, positive, negative, synthetic = (t.float() for t in
                                                 (anchor, positive, negative, synthetic))
    return generator_objective(anchor, positive, negative, synthetic, lambda1=lambda1,
                               lambda2=lambda2, alpha=alpha)["total"]


def _jgen_cases(seed: int = 23) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    a, p, n = _rnd(g, 6, 3), _rnd(g, 6, 3), _rnd(g, 6, 3)
    specs = [
        ("random: 4 triples in 2-D", *(_rnd(g, 4, 2) for _ in range(4)),
         dict(lambda1=1.0, lambda2=1.0, alpha=1.0), True),
        ("random: 6 triples in 3-D, lambda1 = 0.5, lambda2 = 2", a, p, n, _rnd(g, 6, 3),
         dict(lambda1=0.5, lambda2=2.0, alpha=1.0), False),
        ("random: 6 triples, alpha = 0.5, lambda1 = 2, lambda2 = 0.1", a, p, n, _rnd(g, 6, 3),
         dict(lambda1=2.0, lambda2=0.1, alpha=0.5), False),
        ("identity generator: x~ = x- (J_reg = 0)", a, p, n, n.clone(),
         dict(lambda1=1.0, lambda2=1.0, alpha=1.0), False),
        ("one triple: the synthetic negative on the anchor (J_hard = 0, J_adv = 0)",
         a[:1], p[:1], n[:1], a[:1].clone(), dict(lambda1=1.0, lambda2=3.0, alpha=1.0), True),
        ("far synthetic negatives: every hinge J_adv is 0", a, 0.1 * a + 0.1 * p, n, a + 5.0,
         dict(lambda1=0.5, lambda2=2.0, alpha=1.0), False),
    ]
    cases = []
    for label, an, po, ne, sy, params, printed in specs:
        value, grads = _value_and_grads(_jgen_reference, (an, po, ne, sy), (0, 3), params)
        cases.append(Case(label, (an, po, ne, sy), value, dict(params),
                          show=format_input(anchor=an, positive=po, negative=ne, synthetic=sy,
                                            **params) if printed else None,
                          grad_args=(0, 3), expected_grads=grads, rtol=1e-6, atol=1e-9))
    half = tuple(_rnd(g, 8, 4).half() for _ in range(4))
    cases.append(Case("float16: 8 triples in half precision", half,
                      _jgen_reference(*half).detach(), dict(lambda1=1.0, lambda2=1.0, alpha=1.0),
                      rtol=2e-2, atol=5e-3))
    return cases


def _jgen_plain(anchor, positive, negative, synthetic, lambda1=1.0, lambda2=1.0, alpha=1.0,
                sign=-1.0, power=2, reg_to=None, hinge=True, flip=False, reduce="mean"):
    def d(x, y):
        return (x - y).pow(2).sum(1) if power == 2 else (x - y).norm(dim=1)

    hard = d(synthetic, anchor)
    reg = d(synthetic, negative if reg_to is None else reg_to)
    gap = d(synthetic, anchor) - d(positive, anchor)
    gap = -gap if flip else gap
    adv = gap + sign * alpha
    adv = torch.relu(adv) if hinge else adv
    total = hard + lambda1 * reg + lambda2 * adv
    return total.mean() if reduce == "mean" else total.sum()


_JGEN_MISTAKES = {
    "alpha has the wrong sign: DAML's hinge is [D(x~, x)^2 - D(x+, x)^2 - alpha]_+ (the "
    "+alpha is the hinge Zou et al. write for DAML+SP)":
        lambda a, p, n, s, lambda1=1.0, lambda2=1.0, alpha=1.0: _jgen_plain(
            a, p, n, s, lambda1, lambda2, alpha, sign=1.0),
    "the distances are not squared: every term uses ||.||^2":
        lambda a, p, n, s, lambda1=1.0, lambda2=1.0, alpha=1.0: _jgen_plain(
            a, p, n, s, lambda1, lambda2, alpha, power=1),
    "J_reg pulls x~ toward the positive: it keeps x~ near the REAL NEGATIVE x-":
        lambda a, p, n, s, lambda1=1.0, lambda2=1.0, alpha=1.0: _jgen_plain(
            a, p, n, s, lambda1, lambda2, alpha, reg_to=p),
    "the hinge [.]_+ is missing on J_adv":
        lambda a, p, n, s, lambda1=1.0, lambda2=1.0, alpha=1.0: _jgen_plain(
            a, p, n, s, lambda1, lambda2, alpha, hinge=False),
    "J_adv is reversed: it penalises a synthetic negative FARTHER from the anchor than the "
    "positive, [D(x~, x)^2 - D(x+, x)^2 - alpha]_+":
        lambda a, p, n, s, lambda1=1.0, lambda2=1.0, alpha=1.0: _jgen_plain(
            a, p, n, s, lambda1, lambda2, alpha, flip=True),
    "lambda1 and lambda2 are swapped (lambda1 weighs J_reg, lambda2 J_adv)":
        lambda a, p, n, s, lambda1=1.0, lambda2=1.0, alpha=1.0: _jgen_plain(
            a, p, n, s, lambda2, lambda1, alpha),
    "the sum over the triples instead of the mean":
        lambda a, p, n, s, lambda1=1.0, lambda2=1.0, alpha=1.0: _jgen_plain(
            a, p, n, s, lambda1, lambda2, alpha, reduce="sum"),
}


# ============================================================================ hardness
def _hardness_reference(anchor, positive, synthetic, margin=0.0):
    h = hardness(anchor, positive, synthetic, margin=margin)
    return h["d_ap"], h["d_asyn"], h["violating"]


def _hardness_cases(seed: int = 29) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    p = a + torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    s = a + torch.tensor([[0.0, -1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    a8, p8 = _rnd(g, 8, 3), _rnd(g, 8, 3)
    specs = [
        ("random: 5 triples in 2-D, margin 0.2", _rnd(g, 5, 2), _rnd(g, 5, 2), _rnd(g, 5, 2),
         0.2, True),
        ("random: 8 triples in 3-D, margin 0", a8, p8, _rnd(g, 8, 3), 0.0, False),
        ("random: 8 triples, margin 1", a8, p8, a8 + 0.5 * _rnd(g, 8, 3), 1.0, False),
        ("ties: D(a, syn) = D(a, p) exactly in triple 0 (margin 0; not violating: the test is "
         "strict)", a, p, s, 0.0, True),
        ("ties with a margin: D(a, syn) = D(a, p) + 1 in triple 2", a, p, s, 1.0, True),
        ("one triple: the synthetic negative is the anchor itself", a[:1], p[:1], a[:1].clone(),
         0.5, True),
        ("far synthetic negatives: no triple violates", a8, p8, a8 + 10.0, 0.5, False),
    ]
    cases = []
    for label, an, po, sy, margin, printed in specs:
        cases.append(Case(label, (an, po, sy), _hardness_reference(an, po, sy, margin),
                          dict(margin=margin), show=format_input(
                              anchor=an, positive=po, synthetic=sy, margin=margin)
                          if printed else None, rtol=1e-9, atol=1e-12))
    half = tuple(_rnd(g, 6, 4).half() for _ in range(3))
    cases.append(Case("float16: 6 triples in half precision", half,
                      _hardness_reference(*(t.double() for t in half), 0.3), dict(margin=0.3),
                      rtol=1e-2, atol=2e-3))
    return cases


def _compare_hardness(out, case: Case) -> Problem | None:
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        return Problem("return three numbers (d_ap, d_asyn, violating) as a tuple; got "
                       f"{type(out).__name__}", "type")
    for name, o, e in zip(("d_ap", "d_asyn", "violating"), out, case.expected):
        problem = compare_float(o, e, case, f"your {name}")
        if problem:
            return problem
    return None


def _hardness_plain(anchor, positive, synthetic, margin=0.0, squared=False, strict=True,
                    shift=1.0, easy=False, of_means=False):
    a, p, s = (t.double() for t in (anchor, positive, synthetic))
    if of_means:
        d_ap, d_as = (p.mean(0) - a.mean(0)).norm(), (s.mean(0) - a.mean(0)).norm()
        return float(d_ap), float(d_as), float(d_as < d_ap + margin)
    d_ap, d_as = (p - a).pow(2).sum(1), (s - a).pow(2).sum(1)
    if not squared:
        d_ap, d_as = d_ap.sqrt(), d_as.sqrt()
    bar = d_ap + shift * margin
    viol = (d_as < bar) if strict else (d_as <= bar)
    viol = ~viol if easy else viol
    return float(d_ap.mean()), float(d_as.mean()), float(viol.double().mean())


_HARDNESS_MISTAKES = {
    "squared distances: D is the Euclidean distance ||a - p||, not its square":
        lambda a, p, s, margin=0.0: _hardness_plain(a, p, s, margin, squared=True),
    "the test is not strict: a triple violates iff D(a, syn) < D(a, p) + margin (not <=)":
        lambda a, p, s, margin=0.0: _hardness_plain(a, p, s, margin, strict=False),
    "the margin is ignored (a triple violates iff D(a, syn) < D(a, p) + margin)":
        lambda a, p, s, margin=0.0: _hardness_plain(a, p, s, margin, shift=0.0),
    "the margin is subtracted: the triplet loss still learns from a triple while "
    "D(a, syn) < D(a, p) + margin": lambda a, p, s, margin=0.0: _hardness_plain(
        a, p, s, margin, shift=-1.0),
    "the share counts the triples that do NOT violate the margin (the easy ones)":
        lambda a, p, s, margin=0.0: _hardness_plain(a, p, s, margin, easy=True),
    "the distances of the mean points instead of the mean of the distances (one distance per "
    "triple, then the mean)": lambda a, p, s, margin=0.0: _hardness_plain(
        a, p, s, margin, of_means=True),
}


# ============================================================================ J+_gen
def _jpos_reference(anchor, positive, synthetic_positive, lambda1=1.0):
    if anchor.dtype == torch.float16:
        anchor, positive, synthetic_positive = (t.float() for t in
                                                (anchor, positive, synthetic_positive))
    return synthetic_positive_objective(anchor, positive, synthetic_positive,
                                        lambda1=lambda1)["total"]


def _jpos_cases(seed: int = 31) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    a, p = _rnd(g, 6, 3), _rnd(g, 6, 3)
    specs = [
        ("random: 4 triples in 2-D", _rnd(g, 4, 2), _rnd(g, 4, 2), _rnd(g, 4, 2), 1.0, True),
        ("random: 6 triples in 3-D, lambda1 = 3", a, p, _rnd(g, 6, 3), 3.0, False),
        ("the minimiser: g+ = (x + lambda1 x+) / (1 + lambda1), lambda1 = 0.5", a, p,
         (a + 0.5 * p) / 1.5, 0.5, False),
        ("g+ on the anchor: ||g+ - x||^2 = 0", a[:2], p[:2], a[:2].clone(), 2.0, True),
        ("ties: a positive identical to its anchor, g+ elsewhere", a[:3], a[:3].clone(),
         _rnd(g, 3, 3), 1.0, False),
    ]
    cases = []
    for label, an, po, sy, lambda1, printed in specs:
        value, grads = _value_and_grads(_jpos_reference, (an, po, sy), (2,),
                                        dict(lambda1=lambda1))
        cases.append(Case(label, (an, po, sy), value, dict(lambda1=lambda1),
                          show=format_input(anchor=an, positive=po, synthetic_positive=sy,
                                            lambda1=lambda1) if printed else None,
                          grad_args=(2,), expected_grads=grads, rtol=1e-6, atol=1e-9))
    half = tuple(_rnd(g, 8, 4).half() for _ in range(3))
    cases.append(Case("float16: 8 triples in half precision", half,
                      _jpos_reference(*half, lambda1=1.0).detach(), dict(lambda1=1.0),
                      rtol=2e-2, atol=5e-3))
    return cases


def _jpos_plain(a, p, s, lambda1=1.0, w_hard=None, w_reg=None, power=2, reduce="mean"):
    def d(x, y):
        return (x - y).pow(2).sum(1) if power == 2 else (x - y).norm(dim=1)

    w_hard = 1.0 if w_hard is None else w_hard
    w_reg = lambda1 if w_reg is None else w_reg
    total = w_hard * d(s, a) + w_reg * d(s, p)
    if reduce == "entries":
        return total.sum() / s.numel()
    return total.mean() if reduce == "mean" else total.sum()


_JPOS_MISTAKES = {
    "lambda1 weighs the wrong term: J+_gen = ||g+ - x||^2 + lambda1 ||g+ - x+||^2":
        lambda a, p, s, lambda1=1.0: _jpos_plain(a, p, s, lambda1, w_hard=lambda1, w_reg=1.0),
    "lambda1 is ignored": lambda a, p, s, lambda1=1.0: _jpos_plain(a, p, s, lambda1, w_reg=1.0),
    "the distances are not squared (||.||^2)":
        lambda a, p, s, lambda1=1.0: _jpos_plain(a, p, s, lambda1, power=1),
    "the sum over the triples instead of the mean":
        lambda a, p, s, lambda1=1.0: _jpos_plain(a, p, s, lambda1, reduce="sum"),
    "a mean over every coordinate (T x D entries) instead of a squared norm per triple, then "
    "the mean over the T triples": lambda a, p, s, lambda1=1.0: _jpos_plain(
        a, p, s, lambda1, reduce="entries"),
}


# ============================================================================ predictions
#: notebook 07's prediction: anchor, positive and lambda1
SP_EXAMPLE = {"anchor": (0.0, 0.0), "positive": (3.0, 0.0), "lambda1": 2.0}


def _sp_expected() -> tuple[float, float]:
    """The minimiser of J+_gen for :data:`SP_EXAMPLE`, found by gradient descent on dmlkit's
    objective (not from the closed form the exercise asks for)."""
    a = torch.tensor([SP_EXAMPLE["anchor"]], dtype=torch.float64)
    p = torch.tensor([SP_EXAMPLE["positive"]], dtype=torch.float64)
    g = torch.zeros_like(a, requires_grad=True)
    opt = torch.optim.LBFGS([g], max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = synthetic_positive_objective(a, p, g, lambda1=SP_EXAMPLE["lambda1"])["total"]
        loss.backward()
        return loss

    opt.step(closure)
    return tuple(round(float(v), 6) for v in g.detach()[0])


def _judge_landing(answer):
    try:
        x, y = (float(v) for v in answer)
    except (TypeError, ValueError):
        return "give the point as two numbers (x, y), e.g. (0.5, 0.0)"
    ex, ey = _sp_expected()
    if math.isclose(x, ex, abs_tol=1e-3) and math.isclose(y, ey, abs_tol=1e-3):
        return None
    if math.isclose(x, 1.5, abs_tol=1e-3):
        return ("the midpoint is the minimiser for lambda1 = 1; here the pull toward x+ is "
                "lambda1 = 2 times stronger than the pull toward x")
    if math.isclose(x, 1.0, abs_tol=1e-3):
        return "that point is nearer the anchor; which of the two terms has the larger weight?"
    return ("set the gradient of ||g - x||^2 + lambda1 ||g - x+||^2 to zero: a weighted mean "
            "of x and x+")


def _judge_probe(answer):
    try:
        x = float(answer)
    except (TypeError, ValueError):
        return "give the accuracy as a number between 0 and 1"
    if not 0.0 <= x <= 1.0 and 0.0 <= x / 100 <= 1.0:
        x /= 100
    if math.isclose(x, 0.5, abs_tol=0.05):
        return None
    return ("what does the control's 'generator' output? Can any probe tell two samples of the "
            "same distribution apart better than a coin?")


# ============================================================================ the catalogue
EXERCISES = [
    Exercise(
        name="control_probe", notebook="06", kind="predict", minutes=5,
        title="How well can a probe spot a control's negatives?",
        statement=(
            "A linear probe is trained to tell the negatives the metric sees from real "
            "negatives, and tested on held-out ones. For the control (the generator replaced "
            "by the identity, G(x, x+, x-) = x-), predict its accuracy (a number in [0, 1])."),
        hints=["The identity generator returns its input x- unchanged.",
               "Two samples of the same distribution: no classifier beats guessing."],
        judge=_judge_probe, expected=0.5,
        after=("The control's 'synthetic' negatives ARE real negatives, so the probe is at "
               "chance; the plot below shows how far DAML's generator gets from that.")),
    Exercise(
        name="daml_objective", notebook="06", kind="implement", minutes=15,
        title="DAML's generator objective J_gen = J_hard + lambda1 J_reg + lambda2 J_adv",
        call="daml_objective(anchor, positive, negative, synthetic, lambda1=1.0, lambda2=1.0, "
             "alpha=1.0)",
        statement=(
            "anchor, positive, negative, synthetic: (T, D), one row per triple (x, x+, x-) and "
            "its synthetic negative x~; D is the Euclidean distance in this space. Per triple "
            "J_hard = ||x~ - x||^2, J_reg = ||x~ - x-||^2, J_adv = [D(x~, x)^2 - D(x+, x)^2 - "
            "alpha]_+; return the mean over the triples of J_hard + lambda1 J_reg + lambda2 "
            "J_adv, a 0-dim tensor differentiable w.r.t. the inputs."),
        hints=[
            "One squared distance per row: ((x - y) ** 2).sum(1) gives a (T,) tensor.",
            "Build the three (T,) terms, combine them with the lambdas, then .mean().",
            "The hinge is torch.relu, and DAML subtracts alpha inside it: J_adv is 0 once "
            "D(x~, x)^2 <= D(x+, x)^2 + alpha (squared distances throughout).",
        ],
        cases=_jgen_cases, compare=lambda out, case: compare_tensor(out, case.expected, case,
                                                                    "your J_gen"),
        mistakes=_JGEN_MISTAKES),
    Exercise(
        name="synthetic_hardness", notebook="06", kind="implement", minutes=10,
        title="How hard are the synthetic negatives?",
        call="synthetic_hardness(anchor, positive, synthetic, margin=0.0)",
        statement=(
            "anchor, positive, synthetic: (T, E) embeddings of T triples. Return three "
            "numbers: the mean Euclidean distance d_ap = D(a, p), the mean D(a, syn), and the "
            "share of triples that still violate the margin, D(a, syn) < D(a, p) + margin "
            "(those a triplet loss with this margin learns from)."),
        hints=[
            "One distance per triple: (x - y).norm(dim=1), or the square root of the summed "
            "squares.",
            "The comparison gives a (T,) bool tensor; its mean (after .double()) is the "
            "share.",
            "A triple exactly at D(a, p) + margin does not violate: the test is strict. "
            "float() turns a 0-dim tensor into a number.",
        ],
        cases=_hardness_cases, compare=_compare_hardness, mistakes=_HARDNESS_MISTAKES),
    Exercise(
        name="synthetic_positive_landing", notebook="07", kind="predict", minutes=5,
        title="Where does the synthetic positive land?",
        statement=(
            "Anchor x = (0, 0), positive x+ = (3, 0), lambda1 = 2, one triple. Predict the "
            "point g+ that minimises J+_gen = ||g+ - x||^2 + lambda1 ||g+ - x+||^2, as (x, y)."),
        hints=["Both terms are squared distances: the minimiser lies on the segment from x to "
               "x+.",
               "Setting the gradient 2 (g - x) + 2 lambda1 (g - x+) to 0 gives a weighted mean "
               "of x and x+."],
        judge=_judge_landing, expected=(2.0, 0.0),
        after=("The minimiser g+ = (x + lambda1 x+) / (1 + lambda1) = (2, 0) lies two thirds "
               "of the way to the positive, so D(x, g+) < D(x, x+); the recorded run below "
               "shows where a trained generator puts it.")),
    Exercise(
        name="positive_objective", notebook="07", kind="implement", minutes=10,
        title="The synthetic-positive objective J+_gen",
        call="positive_objective(anchor, positive, synthetic_positive, lambda1=1.0)",
        statement=(
            "anchor, positive, synthetic_positive: (T, D), one row per triple (x, x+, g+). "
            "Return the mean over the triples of ||g+ - x||^2 + lambda1 ||g+ - x+||^2, a 0-dim "
            "tensor differentiable w.r.t. synthetic_positive."),
        hints=["One squared norm per row: ((g - x) ** 2).sum(1), a (T,) tensor.",
               "Weigh the second term by lambda1, add, then .mean() over the T triples."],
        cases=_jpos_cases, compare=lambda out, case: compare_tensor(out, case.expected, case,
                                                                    "your J+_gen"),
        mistakes=_JPOS_MISTAKES),
    Exercise(
        name="lambda1_experiment", notebook="07", kind="experiment", minutes=10,
        title="Pull the synthetic positive toward the real one",
        statement=(
            "Re-run the recorded run of 'Where the synthetic positives lie' with lambda1=10 "
            "added to fit_adversarial_images (the presets use 1). Before you do, write what "
            "you expect for the mean D(anchor, synthetic positive) against D(anchor, "
            "positive), and why; then compare."),
        hints=["Where does the minimiser (x + lambda1 x+) / (1 + lambda1) move as lambda1 "
               "grows?"],
        reveal=("the synthetic positive should move toward the real positive: the minimiser "
                "(x + lambda1 x+) / (1 + lambda1) is 10/11 of the way at lambda1 = 10 instead "
                "of halfway, so the mean D(anchor, synthetic positive) grows toward D(anchor, "
                "positive) (lambda1 also weighs the negative generator's J_reg, so the "
                "synthetic negatives stay nearer the real ones too); how close the trained "
                "generator gets in a few epochs is what the rerun shows.")),
]
