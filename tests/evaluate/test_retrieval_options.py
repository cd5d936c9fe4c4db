"""dmlkit.evaluate.retrieval's options and returned keys against the brute-force loop
(tests/naive): the exact key set, recall_at_k's pass-through of the keyword options, lone
queries and class averaging (the cases the mutation run, benchmarks/mutation.py, found without
a test)."""

from __future__ import annotations

import re
import warnings

import naive
import numpy as np
import pytest
from embedding_fixtures import clustered, one_thread  # noqa: F401

from dmlkit import evaluate as ev


def _assert_same(ours, ref):
    assert list(ours) == list(ref)  # the same keys, in the same order
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12, nan_ok=True), k


@pytest.mark.parametrize("lone", ["exclude", "miss"])
@pytest.mark.parametrize("average", ["query", "class"])
def test_recall_at_k_passes_the_options_through(lone, average):
    # 3 singleton classes: lone queries count (as misses) only with lone="miss"
    x, y = clustered(60, 4, 8, 1.5, seed=7, singletons=3)
    ks = (1, 3, 10)
    got = ev.recall_at_k(x, y, ks, lone_queries=lone, average=average, max_block=200)
    _assert_same(got, naive.brute_force_metrics(x, y, metrics=("recall",), ks=ks, lone=lone,
                                                average=average))


def test_the_keys_are_the_metrics_asked():
    x, y = clustered(40, 3, 6, 1.5, seed=8, singletons=2)
    ref = naive.brute_force_metrics(x, y, ks=(2, 1), precision_ks=(5, 1))
    _assert_same(ev.retrieval_metrics(x, y, (2, 1), precision_ks=(5, 1)), ref)
    no_r = {k: v for k, v in ref.items() if k not in ("map@r", "r_precision")}
    _assert_same(ev.retrieval_metrics(x, y, (2, 1), precision_ks=(5, 1), r_metrics=False), no_r)
    assert list(ev.retrieval_metrics(x, y)) == ["recall@1", "recall@2", "recall@4", "recall@8",
                                                "map@r", "r_precision"]
    assert list(ev.recall_at_k(x, y)) == ["recall@1", "recall@2", "recall@4", "recall@8"]
    gx, gy = x[:25], y[:25]
    _assert_same(ev.recall_at_k(x[25:], y[25:], 3, gallery=(gx, gy)),
                 naive.brute_force_metrics(x[25:], y[25:], gx, gy, metrics=("recall",), ks=(3,)))
    assert np.isfinite(list(ref.values())).all()


def test_near_tie_share_is_4_sqrt_d_ulps_of_the_top_similarity():
    # normalize=False, one-hot queries: query i's float32 similarities are column i of the
    # gallery, exactly. The rule (docstring of retrieval_metrics): a query is near-tied when
    # two neighbours of its ordered top list are within 4 sqrt(D) eps max(|top|, 1)
    eps = float(np.finfo(np.float32).eps)
    cols = [[0.5, 0.5 - 9 * eps, 0.25, 0.0, -0.25, -0.5],    # gap 9 eps > 8 eps: not near
            [0.5, 0.5 - 8 * eps, 0.25, 0.0, -0.25, -0.5],    # gap 8 eps <= 8 eps: near
            [4.0, 4.0 - 20 * eps, 2.0, 0.0, -1.0, -3.0],     # 20 eps <= 8 eps x 4: near
            [1.0, 0.5, 0.0, -0.5, -1.0, 0.25]]               # far apart
    g = np.array(cols, np.float32).T
    q = np.eye(4, dtype=np.float32)
    assert np.array_equal(g.astype(np.float64).T, np.array(cols))  # exact in float32

    def naive_near(s):
        s = np.sort(s)[::-1]
        return bool((s[:-1] - s[1:] <= 4 * np.sqrt(4) * eps * max(abs(s[0]), 1.0)).any())

    share = np.mean([naive_near(np.array(c)) for c in cols])
    assert share == 0.5
    message = (rf"^{100 * share:.1f}% of the queries have neighbours in their ranking within "
               r"float32 resolution of each other, so rounding may decide their ranking; pass "
               r"near_ties='float64' \(the default\) or float64 embeddings$")
    with pytest.warns(RuntimeWarning, match=message):
        ev.retrieval_metrics(q, [0, 1, 2, 3], (1,), gallery=(g, [0, 1, 2, 3, 0, 1]),
                             normalize=False, near_ties="warn")


def test_a_single_item_has_an_empty_database():
    # without a gallery a lone item's database is empty: every query is lone; with
    # lone="miss" Recall@K counts it as a failure, precision@K divides by min(K, 0): NaN
    x = np.array([[0.6, 0.8]])
    got = ev.retrieval_metrics(x, [4], (1, 3), precision_ks=(2, 5))
    assert list(got) == ["recall@1", "recall@3", "precision@2", "precision@5", "map@r",
                         "r_precision"]
    assert all(np.isnan(v) for v in got.values())
    got = ev.retrieval_metrics(x, [4], (1, 3), precision_ks=(2,), lone_queries="miss")
    assert got["recall@1"] == 0.0 == got["recall@3"]
    assert np.isnan(got["precision@2"]) and np.isnan(got["map@r"])


def test_a_database_of_one_item():
    # two items of one class (each the other's only neighbour), or one query and a gallery of
    # one: the database holds one item, a positive or not
    x = np.array([[0.6, 0.8], [1.0, 0.0]])
    ref = naive.brute_force_metrics(x, [3, 3], ks=(1, 2), precision_ks=(1, 2))
    assert ref == {"recall@1": 1.0, "recall@2": 1.0, "precision@1": 1.0, "precision@2": 1.0,
                   "map@r": 1.0, "r_precision": 1.0}
    _assert_same(ev.retrieval_metrics(x, [3, 3], (1, 2), precision_ks=(1, 2)), ref)
    for gy, want in ((3, 1.0), (4, 0.0)):
        got = ev.retrieval_metrics(x[:1], [3], (1,), gallery=(x[1:], [gy]), lone_queries="miss")
        assert got["recall@1"] == want


def test_near_ties_in_a_database_of_two_and_overflowed_similarities():
    eps = float(np.finfo(np.float32).eps)
    q = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    # a database of two items within 7 eps (<= 4 sqrt(4) eps): a near tie
    g = np.array([[0.5, 0, 0, 0], [0.5 - 7 * eps, 0, 0, 0]], np.float32)
    with pytest.warns(RuntimeWarning, match=r"^100\.0% of the queries"):
        ev.retrieval_metrics(q, [0], (1,), gallery=(g, [0, 1]), normalize=False,
                             near_ties="warn")
    # similarities that would overflow float32 to -inf (-1e40): ranked in float64, where the
    # two are equal, an exact tie (broken by index): no warning, and the ranking is item 0,
    # then 1 before 2
    q = np.array([[1e20, 0.0]], np.float32)
    g = np.array([[1.0, 0.0], [-1e20, 0.0], [-1e20, 0.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ev.retrieval_metrics(q, [0], (1, 2), gallery=(g, [1, 0, 0]), normalize=False,
                                   near_ties="warn")
    assert got == {"recall@1": 0.0, "recall@2": 1.0, "map@r": 0.25, "r_precision": 0.5}


def test_the_near_tie_scan_covers_the_top_list_that_the_metrics_read():
    """A query whose 40 positives are spread 0.02 rad apart except an exact tie at ranks 20
    and 21 (0-based): the scan looks at max(R, the deepest K, 16) items, R only with
    r_metrics, so only the calls whose metrics read ranks 20 and 21 warn."""
    angles = 0.02 * np.arange(1, 41)
    angles[21] = angles[20]
    g = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    q = np.array([[1.0, 0.0]], np.float32)
    s = (g.astype(np.float64) @ q[0]).round(12)
    assert (np.diff(s) < 0).sum() == 38 and s[20] == s[21]   # one tie, at ranks 20 and 21
    for kw, warns in ((dict(r_metrics=False), False), (dict(r_metrics=True), True),
                      (dict(r_metrics=False, precision_ks=(21,)), False),
                      (dict(r_metrics=False, precision_ks=(22,)), True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ev.retrieval_metrics(q, [0], (1,), gallery=(g, [0] * 40), near_ties="warn", **kw)
        assert [str(w.message)[:33] for w in caught] == (
            ["100.0% of the queries have neighb"] if warns else []), kw

@pytest.mark.parametrize("tie", [20, 15])
def test_each_query_scans_its_own_list_for_near_ties(tie):
    """Two queries in one block with the same similarities (the 40 items of the test above,
    tied at ranks ``tie`` and ``tie`` + 1; 15: the last item query 1 reads and the first it
    does not): query 0 has R = 40 and warns, query 1 (R = 2, two far items) scans 16 items
    only, whatever the block it shares: 50 %, one query per block or not."""
    angles = np.concatenate([0.02 * np.arange(1, 41), [3.0, 3.1]])
    angles[tie + 1] = angles[tie]
    g = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    q = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    for max_block in (2**25, g.shape[0]):
        with pytest.warns(RuntimeWarning, match=r"^50\.0% of the queries"):
            ev.retrieval_metrics(q, [0, 1], (1,), gallery=(g, [0] * 40 + [1, 1]),
                                 near_ties="warn", max_block=max_block)

def test_unnormalised_similarities_beyond_float32_are_ranked_in_float64():
    """Item 0's similarities with items 18 and 19 are -2e40 and -1e40: both -inf in float32,
    where index order would rank the negative 18 before the positive 19 and item 0's own
    masked entry (-inf) before both (a false hit in precision@18). Float64 dot products (the
    naive loop) are the reference; with a gallery, the query's first positive is at rank 19."""
    vals = [1e20] + [float(k) for k in range(1, 18)] + [-2e20, -1e20]
    lab = [0] + [1] * 18 + [0]
    x = np.array(vals, np.float32)[:, None]
    with np.errstate(over="ignore"):
        assert np.isneginf(x[0, 0] * x[18:, 0]).all()
    # item 0's first positive beyond the top list (counted) and within it (precision@19)
    for kw in (dict(ks=(1, 17, 18, 19)), dict(ks=(18,), precision_ks=(17, 18, 19))):
        got = ev.retrieval_metrics(x, lab, normalize=False, **kw)
        _assert_same(got, naive.brute_force_metrics(x, lab, normalize=False, **kw))
    q, g = x[:1], np.concatenate([x[1:], [[3e20]]]).astype(np.float32)
    got = ev.retrieval_metrics(q, [0], (18, 19), gallery=(g, [*lab[1:], 1]), normalize=False)
    assert got == {"recall@18": 0.0, "recall@19": 1.0, "map@r": 0.0, "r_precision": 0.0}


def test_similarities_beyond_float64_are_an_error():
    x = np.array([[1e160, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="^" + re.escape(
            "embeddings of norm up to 1e+160 and database embeddings of norm up to 1e+160 "
            "give similarities beyond float64's range (their product exceeds 8.99e+307); "
            "pass normalize=True or rescale them") + "$"):
        ev.retrieval_metrics(x, [0, 0], normalize=False)
    assert ev.retrieval_metrics(x, [0, 0], (1,))["recall@1"] == 1.0
    # the norms are read a block of 4096 rows at a time: the largest in the second block
    q = np.zeros((5000, 2))
    q[:, 1] = 1.0
    q[4999] = [3e150, 4e150]
    with pytest.raises(ValueError, match=r"^embeddings of norm up to 5e\+150 and database "
                                         r"embeddings of norm up to 1e\+160 give"):
        ev.retrieval_metrics(q, np.arange(5000) % 2, gallery=(x[1:] * 1e160, [0]),
                             normalize=False)


def test_option_errors_name_the_option():
    x, y = clustered(10, 3, 2, 1.0, seed=9)
    with pytest.raises(ValueError, match=r"^precision_ks must be positive integers, got \(0,\)"):
        ev.retrieval_metrics(x, y, precision_ks=(0,))
    with pytest.raises(ValueError, match=r"^unknown lone_queries 'none'; known: 'exclude', 'miss'"):
        ev.retrieval_metrics(x, y, lone_queries="none")
    with pytest.raises(ValueError, match=r"^unknown average 'mean'; known: 'query', 'class'"):
        ev.retrieval_metrics(x, y, average="mean")
    with pytest.raises(ValueError, match=r"^unknown near_ties 'often'; known: 'float64', 'warn'"):
        ev.retrieval_metrics(x, y, near_ties="often")
