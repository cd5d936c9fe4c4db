"""The tie rule of the retrieval metrics (dmlkit.evaluate.retrieval) as a property: exact ties
are broken by database index, ascending, so the metrics of tied embeddings equal those of the
same embeddings with every tie broken explicitly in that order.

Query and gallery embeddings on a small integer grid (normalize=False, float64: every
similarity is an integer, ties everywhere) get one more coordinate, 1 for the queries and
``-(j + 1) / 2**10`` for gallery item j, which lowers similarity to item j by (j + 1) / 2**10
(exactly, and less than the 1 between two similarity levels): no tie is left, and the order
is the tie rule's order. Checked for Recall@K and precision@K (the k nearest neighbours),
MAP@R and R-precision, through the top list and through the first-hit count (a top list of
one). The naive loops on heavy ties are in test_retrieval.py.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmlkit.evaluate import retrieval

KS = (1, 2, 3, 5)


@st.composite
def tied_sets(draw):
    nq, ng, d = draw(st.integers(1, 6)), draw(st.integers(2, 9)), draw(st.integers(1, 3))

    def grid(n):
        return np.array(draw(st.lists(st.lists(st.integers(0, 2), min_size=d, max_size=d),
                                      min_size=n, max_size=n)), dtype=np.float64)

    def labels(n):
        return np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))

    return grid(nq), labels(nq), grid(ng), labels(ng)


def _metrics(q, ql, g, gl, lone):
    return retrieval.retrieval_metrics(q, ql, KS, gallery=(g, gl), precision_ks=(1, 2, 4),
                                       normalize=False, lone_queries=lone)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-12), k


@settings(max_examples=50, deadline=None)
@given(data=tied_sets(), lone=st.sampled_from(["exclude", "miss"]))
def test_ties_are_broken_by_database_index(data, lone):
    q, ql, g, gl = data
    q1 = np.hstack([q, np.ones((len(q), 1))])
    g1 = np.hstack([g, -(np.arange(len(g))[:, None] + 1.0) / 2**10])
    for depth in (None, 1):      # the top list, then the first-hit count past one item
        with pytest.MonkeyPatch.context() as mp:
            if depth is not None:
                mp.setattr(retrieval, "_FIRST_HIT_DEPTH", depth)
            _same(_metrics(q, ql, g, gl, lone), _metrics(q1, ql, g1, gl, lone))
