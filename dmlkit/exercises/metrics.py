"""Exercises on evaluation: Recall@K and MAP@R from a distance matrix, one k-means++ step.

The expected metrics come from :func:`dmlkit.evaluate.retrieval_metrics` on the embeddings the
distance matrix is made of (its conventions: the query itself left out by index, ties broken
by database index, lone queries left out of the average); the k-means++ step is the D^2 draw
of :func:`dmlkit.evaluate.kmeans_plusplus` with its uniform number given.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..evaluate import retrieval_metrics
from .engine import Case, Exercise, Problem, compare_float, compare_index, format_input

__all__ = ["EXERCISES", "distance_matrix", "kmeanspp_reference"]


def distance_matrix(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of the rows of x (unit vectors, float64), the diagonal exactly 0;
    they rank the items exactly as the cosine similarities do."""
    S = x @ x.T
    D = (2.0 - 2.0 * S).clamp_min(0.0).sqrt()
    return D.fill_diagonal_(0.0)


def _embedded(seed: int):
    """(label, unit embeddings, labels, printed?) of the retrieval cases."""
    g = torch.Generator().manual_seed(seed)

    def unit(n, d=2):
        return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)

    ties = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0],
                         [0.8, 0.6]], dtype=torch.float64)   # 1, 2 and 5 are copies
    clumps = unit(3, 4).repeat_interleave(4, 0) + 0.05 * torch.randn(12, 4, generator=g,
                                                                     dtype=torch.float64)
    return [
        ("random: 6 items of 3 classes", unit(6), torch.tensor([0, 1, 2, 0, 1, 2]), True),
        ("random: 20 items of 4 classes in 3-D", unit(20, 3), torch.arange(20) % 4, False),
        ("one class: every neighbour is a positive", unit(5), torch.zeros(5, dtype=torch.long),
         True),
        ("lone queries: items 4 and 5 have no other item of their class", unit(6),
         torch.tensor([0, 0, 1, 1, 2, 3]), True),
        ("ties: items 1, 2 and 5 are copies (ties are broken by index, lowest first)", ties,
         torch.tensor([0, 1, 0, 1, 2, 0]), True),
        ("clusters: 3 tight clumps, classes mixed across them", F.normalize(clumps, dim=1),
         torch.tensor([0, 1, 0, 1, 1, 0, 2, 2, 2, 0, 1, 2]), False),
    ]


def _show(D, labels, **params):
    return format_input(D=D, labels=labels, **params)


def _recall_cases() -> list[Case]:
    cases = []
    ks = [1, 2, 1, 3, 1, 3]
    for (label, x, labels, printed), k in zip(_embedded(21), ks):
        expected = retrieval_metrics(x, labels, ks=(k,), r_metrics=False, normalize=False)
        D = distance_matrix(x)
        cases.append(Case(f"{label} (k = {k})", (D, labels, k), expected[f"recall@{k}"],
                          show=_show(D, labels, k=k) if printed else None, rtol=1e-9,
                          atol=1e-12))
    label, x, labels, _ = _embedded(22)[0]
    k = 8
    cases.append(Case("k larger than the database: 6 items, k = 8", (distance_matrix(x), labels,
                                                                       k),
                      retrieval_metrics(x, labels, ks=(k,), r_metrics=False,
                                        normalize=False)[f"recall@{k}"],
                      show=_show(distance_matrix(x), labels, k=k), rtol=1e-9, atol=1e-12))
    return cases


def _map_cases() -> list[Case]:
    cases = []
    for label, x, labels, printed in _embedded(31):
        D = distance_matrix(x)
        cases.append(Case(label, (D, labels),
                          retrieval_metrics(x, labels, ks=(1,), normalize=False)["map@r"],
                          show=_show(D, labels) if printed else None, rtol=1e-9, atol=1e-12))
    return cases


def _metric(out, case: Case) -> Problem | None:
    return compare_float(out, case.expected, case, "your metric")


# ----------------------------------------------------------------------------- wrong metrics
def _ranking(D, descending=False, keep_self=False):
    D = D.clone().double()
    if not keep_self:
        D.fill_diagonal_(-math.inf if descending else math.inf)
    order = torch.argsort(D, dim=1, descending=descending, stable=True)
    return order if keep_self else order[:, :-1]


def _recall_plain(D, labels, k, descending=False, keep_self=False, lone="exclude",
                  precision=False):
    order = _ranking(D, descending, keep_self)[:, :k]
    hits = labels[order] == labels[:, None]
    has = (labels[:, None] == labels[None, :]).sum(1) > 1
    per = hits.double().mean(1) if precision else hits.any(1).double()
    per = per[has] if lone == "exclude" else per
    return float(per.mean()) if per.numel() else float("nan")


def _map_plain(D, labels, r_self=False, keep_self=False, divide="R", lone="exclude",
               r_precision=False):
    order = _ranking(D, keep_self=keep_self)
    rel = labels[order] == labels[:, None]
    R = (labels[:, None] == labels[None, :]).sum(1) - (0 if r_self else 1)
    values = []
    for i in range(len(labels)):
        r = int(R[i])
        if r <= 0 or (not r_self and r == 0):
            if lone != "exclude":
                values.append(0.0)
            continue
        hit = rel[i, :r].double()
        prec = hit.cumsum(0) / torch.arange(1, r + 1, dtype=torch.float64)
        if r_precision:
            values.append(float(hit.sum()) / r)
        elif divide == "hits":
            values.append(float((prec * hit).sum() / hit.sum().clamp_min(1)))
        else:
            values.append(float((prec * hit).sum()) / r)
    return sum(values) / len(values) if values else float("nan")


_RECALL_MISTAKES = {
    "the query itself is in its own ranking (it is always its own nearest neighbour, at "
    "distance 0): leave it out": lambda D, labels, k: _recall_plain(D, labels, k,
                                                                    keep_self=True),
    "the ranking is by decreasing distance: the nearest neighbours have the SMALLEST "
    "distances": lambda D, labels, k: _recall_plain(D, labels, k, descending=True),
    "queries with no other item of their class count as misses; leave them out of the "
    "average": lambda D, labels, k: _recall_plain(D, labels, k, lone="miss"),
    "this is precision@k (the share of hits among the k), not Recall@K (at least one hit)":
        lambda D, labels, k: _recall_plain(D, labels, k, precision=True),
}

_MAP_MISTAKES = {
    "R counts the query itself: R is the number of OTHER items of its class":
        lambda D, labels: _map_plain(D, labels, r_self=True),
    "the query itself is in its own ranking: leave it out":
        lambda D, labels: _map_plain(D, labels, keep_self=True),
    "the sum of the precisions is divided by the number of hits in the top R, not by R":
        lambda D, labels: _map_plain(D, labels, divide="hits"),
    "this is R-precision (hits in the top R / R), not MAP@R (precision at each hit, "
    "averaged over R)": lambda D, labels: _map_plain(D, labels, r_precision=True),
    "queries with no other item of their class count as 0; leave them out of the average":
        lambda D, labels: _map_plain(D, labels, lone="zero"),
}


# ----------------------------------------------------------------------------- k-means++
def _d2(X: torch.Tensor, centres) -> torch.Tensor:
    x = X.double()
    c = x[torch.as_tensor(list(centres), dtype=torch.long)]
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1).min(1).values


def kmeanspp_reference(X: torch.Tensor, centres, u: float) -> int:
    """The D^2 draw of k-means++ (:func:`dmlkit.evaluate.kmeans_plusplus`, one trial) with the
    uniform number ``u`` given: the first point whose cumulative D^2 reaches ``u * sum D^2``."""
    d2 = _d2(X, centres)
    cum = torch.cumsum(d2, 0)
    return int(torch.searchsorted(cum, torch.tensor([u * float(cum[-1])], dtype=cum.dtype)))


def _kmeanspp_cases() -> list[Case]:
    g = torch.Generator().manual_seed(41)

    def pick_u(X, centres):
        """u at the middle of the chosen point's interval (robust to rounding)."""
        d2 = _d2(X, centres)
        target = int(torch.multinomial(d2 / d2.sum(), 1, generator=g))
        cum = torch.cumsum(d2, 0)
        lo = float(cum[target - 1]) if target else 0.0
        return round((lo + float(cum[target])) / 2 / float(cum[-1]), 6)

    small = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.5, 0.5],
                          [4.0, 4.0]], dtype=torch.float64)
    dup = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [2.0, 1.0], [1.0, 3.0],
                        [1.0, 1.0]], dtype=torch.float64)
    specs = [("first step: 6 points in 2-D, one centre so far", small, [0], True),
             ("nearest centre: 6 points in 2-D, two centres", small, [0, 5], True),
             ("random: 30 points in 4-D, three centres",
              torch.randn(30, 4, generator=g, dtype=torch.float64), [3, 17, 25], False),
             ("copies: points equal to a centre (D^2 = 0) are never drawn", dup, [0], True),
             ("random: 40 points in 3-D, five centres",
              torch.randn(40, 3, generator=g, dtype=torch.float64), [0, 9, 18, 27, 36], False)]
    cases = []
    for label, X, centres, printed in specs:
        u = pick_u(X, centres)
        cases.append(Case(label, (X, list(centres), u), kmeanspp_reference(X, centres, u),
                          show=format_input(X=X, centres=list(centres), u=u) if printed
                          else None))
    X = torch.randn(20, 3, generator=g).half()
    u = pick_u(X, [4, 11])
    cases.append(Case("float16: 20 points in half precision, two centres", (X, [4, 11], u),
                      kmeanspp_reference(X, [4, 11], u)))
    # the case "u at a point's own interval" checks the cumulative rule: u just above 0
    cases.append(Case("u close to 0: the first point with D^2 > 0", (dup, [0], 1e-6),
                      kmeanspp_reference(dup, [0], 1e-6), show=format_input(X=dup, centres=[0],
                                                                           u=1e-6)))
    return cases


def _kpp_plain(X, centres, u, power=2.0, reduce="min", first_only=False, argmax=False):
    x = X.double()
    c = x[torch.as_tensor(list(centres)[:1] if first_only else list(centres))]
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1).sqrt() ** power
    d = d.min(1).values if reduce == "min" else d.max(1).values
    if argmax:
        return int(d.argmax())
    cum = torch.cumsum(d, 0)
    return int(torch.searchsorted(cum, torch.tensor([u * float(cum[-1])], dtype=cum.dtype)))


_KMEANSPP_MISTAKES = {
    "the draw is proportional to the distance D, not to its square D^2":
        lambda X, centres, u: _kpp_plain(X, centres, u, power=1.0),
    "D is the distance to the FIRST centre only, not to the nearest chosen centre":
        lambda X, centres, u: _kpp_plain(X, centres, u, first_only=True),
    "D is the distance to the farthest centre (max), not the nearest (min)":
        lambda X, centres, u: _kpp_plain(X, centres, u, reduce="max"),
    "this is the farthest point (argmax D^2), not a draw proportional to D^2: use u and the "
    "cumulative sum": lambda X, centres, u: _kpp_plain(X, centres, u, argmax=True),
}


EXERCISES = [
    Exercise(
        name="recall_at_k", notebook="08", kind="implement", minutes=10,
        title="Recall@K from a distance matrix",
        call="recall_at_k(D, labels, k)",
        statement=(
            "D (N, N) distances between N items (float64), labels (N,). Every item is a query; "
            "its database is the N - 1 OTHER items, ranked by increasing distance, ties broken "
            "by index (lowest first). Recall@K is the share of queries with at least one item "
            "of their class among their k nearest; queries with no other item of their class "
            "are left out of the average. Return a float."),
        hints=[
            "Rank each row: torch.argsort(D, dim=1, stable=True) sorts by distance and keeps "
            "tied items in index order.",
            "The query is at distance 0 from itself: give the diagonal +inf (on a copy) so it "
            "ranks last, then keep the first min(k, N - 1) columns.",
            "labels[order] == labels[:, None] marks the hits; .any(1) per query, averaged over "
            "the queries whose class has at least 2 items.",
        ],
        cases=_recall_cases, compare=_metric, mistakes=_RECALL_MISTAKES),
    Exercise(
        name="map_at_r", notebook="08", kind="implement", minutes=15,
        title="MAP@R from a distance matrix",
        call="map_at_r(D, labels)",
        statement=(
            "D (N, N) distances, labels (N,); queries and database as in recall_at_k. For a "
            "query with R other items of its class (R > 0): MAP@R = (1/R) sum_{i <= R} P@i "
            "rel_i, rel_i = 1 when the i-th nearest item is of its class, P@i the share of "
            "hits among the first i. Return the mean over the queries with R > 0 (a float)."),
        hints=[
            "R per query: (labels[:, None] == labels[None, :]).sum(1) - 1 (the query itself "
            "is not one of its positives).",
            "Rank as in recall_at_k (diagonal to +inf, stable argsort), take each query's "
            "first R hits rel_1..rel_R, P@i = cumsum(rel)[i] / i.",
            "Sum P@i over the positions that are hits and divide by R (not by the number of "
            "hits); average over the queries with R > 0.",
        ],
        cases=_map_cases, compare=_metric, mistakes=_MAP_MISTAKES),
    Exercise(
        name="kmeanspp_step", notebook="08", kind="implement", minutes=10,
        title="One k-means++ step: draw the next centre with probability D^2",
        call="kmeanspp_step(X, centres, u)",
        statement=(
            "X (N, D) points, centres a list of the indices already chosen, u a number in "
            "(0, 1). D(x)^2 is the squared distance of point x to its NEAREST chosen centre. "
            "Draw the next centre with probability D^2 / sum D^2 by inverse transform: return "
            "the index of the first point whose cumulative D^2 (in index order) is >= "
            "u * sum D^2, as an int."),
        hints=[
            "Squared distances of every point to every chosen centre: "
            "((X[:, None, :] - X[centres][None]) ** 2).sum(-1), an (N, C) table; the min over "
            "the centres is D^2.",
            "A chosen centre (and any copy of one) has D^2 = 0, so it can never be drawn.",
            "torch.cumsum(d2, 0) and torch.searchsorted(cum, target) find the first index "
            "with cum >= target; compute in float64 (X.double()) for a float16 X.",
        ],
        cases=_kmeanspp_cases,
        compare=lambda out, case: compare_index(out, case.expected, case, "your index"),
        mistakes=_KMEANSPP_MISTAKES),
]
