"""dmlkit.evaluate.retrieval's ranking helpers at their edges, against plain loops: an empty
chunk of queries, padded positive lists (the cases the mutation run, benchmarks/mutation.py,
found without a test)."""

from __future__ import annotations

import math

import torch

from dmlkit.evaluate import retrieval


def _naive_positives(g_lab, q_lab, rows, self_index):
    """Per query row: the database indices of its class, without itself, -1 padded to the
    largest class count among the rows (self included in that count, as the helper pads)."""
    lists = []
    for i, row in enumerate(rows.tolist()):
        same = [j for j in range(len(g_lab)) if g_lab[j] == q_lab[row]]
        lists.append([j if self_index is None or j != int(self_index[i]) else -1 for j in same])
    width = max((len(s) for s in lists), default=0)
    return torch.tensor([s + [-1] * (width - len(s)) for s in lists],
                        dtype=torch.long).reshape(len(lists), width)


def test_positives_of_no_query_is_an_empty_table():
    g = torch.tensor([2, 0, 1, 0, 2, 2])
    order, start, count, r, _ = retrieval._class_index(g, g, True)
    rows = torch.empty(0, dtype=torch.long)
    got = retrieval._positives(order, start, count, rows, None)
    assert got.shape == (0, 0) and got.dtype == torch.long


def test_positives_match_the_naive_lists():
    g = torch.tensor([2, 0, 1, 0, 2, 2, 3])
    order, start, count, r, _ = retrieval._class_index(g, g, True)
    assert r.tolist() == [2, 1, 0, 1, 2, 2, 0]
    rows = torch.tensor([0, 2, 3, 6])
    got = retrieval._positives(order, start, count, rows, rows)
    want = _naive_positives(g.tolist(), g.tolist(), rows, rows)
    assert torch.equal(got.sort(dim=1).values, want.sort(dim=1).values)


def test_positives_against_a_gallery_one_or_none_per_query():
    g = torch.tensor([2, 0, 1, 0, 2, 2, 3])
    q = torch.tensor([1, 3, 5, 0])                 # one, one, none (5 is not in the gallery), two
    order, start, count, r, _ = retrieval._class_index(q, g, False)
    assert r.tolist() == [1, 1, 0, 2]
    one = torch.tensor([0, 1])
    got = retrieval._positives(order, start, count, one, None)
    assert got.tolist() == [[2], [6]]
    none = torch.tensor([2])
    got = retrieval._positives(order, start, count, none, None)
    assert got.shape == (1, 0) and got.dtype == torch.long
    rows = torch.tensor([0, 2, 3])
    got = retrieval._positives(order, start, count, rows, None)
    want = _naive_positives(g.tolist(), q.tolist(), rows, None)
    assert torch.equal(got.sort(dim=1).values, want.sort(dim=1).values)


def test_row_count_over_more_columns_than_an_int16_holds():
    # the counts are summed in int16 over column blocks: a block must stay below 32768
    mask = torch.zeros(3, 70_001, dtype=torch.bool)
    mask[0] = True
    mask[1, ::2] = True
    mask[2, 32_767:65_535] = True
    got = retrieval._row_count(mask)
    assert got.dtype == torch.int64
    assert got.tolist() == [70_001, 35_001, 32_768] == mask.sum(dim=1).tolist()


def _naive_first_rank(row, positives):
    """0-based position of the first positive in the (similarity desc, index asc) order."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    return next(k for k, j in enumerate(order) if j in positives)


def test_first_rank_by_count_with_one_or_more_tied_items():
    S = torch.tensor([[0.5, 0.9, 0.5, 0.1, -math.inf],      # one item tied, lower index
                      [0.5, 0.9, 0.5, 0.5, 0.2],            # two tied, the positive is last
                      [0.3, 0.9, 0.5, 0.1, 0.5],            # tied item after the positive
                      [0.7, 0.9, 0.5, 0.1, 0.2]])           # no tie
    pos = torch.tensor([[2, -1], [3, 4], [2, -1], [2, 3]])
    got = retrieval._first_rank_by_count(S, pos, torch.arange(5))
    want = [_naive_first_rank(S[i].tolist(), {p for p in pos[i].tolist() if p >= 0})
            for i in range(4)]
    assert got.tolist() == want == [2, 3, 1, 2]


def test_class_index_against_a_one_class_gallery():
    g = torch.tensor([3, 3, 3])
    q = torch.tensor([5, 3, 1])                     # above, in and below the gallery's class
    order, start, count, r, _ = retrieval._class_index(q, g, False)
    assert r.tolist() == [0, 3, 0] and count.tolist() == [0, 3, 0]


def test_ordered_topk_with_a_tie_at_the_kth_position():
    # one clear first item, then 49 (row 0) or 48 (row 1) exact ties: the k-th item is the
    # lowest-index tied one, whichever tied items torch.topk returns
    S = torch.zeros(2, 50)
    S[:, 0] = 1.0
    S[1, 7] = 2.0
    for k in (2, 3, 5):
        got = retrieval._ordered_topk(S, k, 50)
        want = [sorted(range(50), key=lambda j, r=r: (-float(S[r, j]), j))[:k] for r in range(2)]
        assert got.tolist() == want
