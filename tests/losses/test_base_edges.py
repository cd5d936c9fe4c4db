"""dmlkit.losses.base beyond the every-loss contract of test_base.py: the PairBatch's distances
against per-pair loops, empty masks, a PairLoss subclass defined here (so that the subclass
hook runs under test: the chunk_size keyword and the precision policy) and the dispatch of
``forward`` between the dense and the tiled path."""

import math

import pytest
import torch

from dmlkit import losses
from dmlkit.losses import base, tiling
from dmlkit.losses.base import PairLoss, make_batch, positive_slots
from dmlkit.precision import full_precision_forward


def _batch_inputs(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 4, generator=g, dtype=dtype) * 2
    x[1] = x[0] + 0.01          # a near-duplicate pair: distance well below 1
    r = torch.randn(5, 4, generator=g, dtype=dtype) * 2
    r[2] = x[3] * 1.001
    return x, torch.tensor([0, 0, 1, 1, 2, 2, 0]), r, torch.tensor([0, 1, 1, 2, 3])


def _loop_sq(a, b, unit):
    """Squared Euclidean distances by a loop over the pairs (unit: of the normalised rows)."""
    a, b = a.tolist(), b.tolist()
    if unit:
        a = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in a]
        b = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in b]
    return torch.tensor([[sum((u - v) ** 2 for u, v in zip(p, q)) for q in b] for p in a],
                        dtype=torch.float64)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("query_ref", [False, True])
def test_batch_distances_equal_loops(normalize, query_ref):
    x, y, r, ry = _batch_inputs()
    batch = make_batch(x, y, r, ry, normalize=normalize) if query_ref else \
        make_batch(x, y, normalize=normalize)
    expected = _loop_sq(x, r if query_ref else x, normalize)
    assert expected.min() < 0.01 and (expected.max() > 4 or normalize)
    sq = batch.squared_distances()
    torch.testing.assert_close(sq, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(batch.distances(), (expected + 1e-12).sqrt(), rtol=1e-6,
                               atol=1e-6)


def test_positive_slots_of_masks_without_elements():
    for shape in ((3, 0), (0, 4), (0, 0)):
        index, valid = positive_slots(torch.zeros(shape, dtype=torch.bool))
        assert index.shape == valid.shape == (shape[0], 0)
        assert index.dtype == torch.long and valid.dtype == torch.bool


# --------------------------------------------------------------------------- a new subclass
def _sum_of_positives():
    """A toy loss class, created when called (the subclass hook runs then, under test):
    ``scale`` x the sum of the positive similarities (a function of S)."""

    class SumOfPositives(PairLoss):
        def __init__(self, scale=1.0, normalize=True):
            super().__init__(normalize=normalize)
            self.scale = scale

        def compute(self, batch):
            return self.scale * torch.where(batch.pos, batch.S, 0.0).sum()

    return SumOfPositives


def _loop_positive_sum(x, y, r=None, ry=None):
    ref, rlab = (x, y) if r is None else (r, ry)
    xs, rs = x.double().tolist(), ref.double().tolist()
    total = 0.0
    for i, (p, a) in enumerate(zip(xs, y.tolist())):
        for j, (q, b) in enumerate(zip(rs, rlab.tolist())):
            if a == b and (r is not None or i != j):
                total += sum(u * v for u, v in zip(p, q)) / math.sqrt(
                    sum(u * u for u in p) * sum(v * v for v in q))
    return total


def test_a_subclass_defined_here_takes_chunk_size_and_computes_its_loss():
    x, y, r, ry = _batch_inputs()
    SumOfPositives = _sum_of_positives()
    loss = SumOfPositives(2.0, chunk_size=None)         # the keyword every loss takes
    assert loss.chunk_size is None and loss.scale == 2.0
    assert float(loss(x, y)) == pytest.approx(2 * _loop_positive_sum(x, y), abs=1e-12)
    assert float(loss(x, y, r, ry)) == pytest.approx(2 * _loop_positive_sum(x, y, r, ry),
                                                     abs=1e-12)
    with pytest.raises(ValueError, match=r"^SumOfPositives cannot be computed in tiles "
                                         r"\(chunk_size=4\): it has no tile formulation "
                                         r"\(use chunk_size=None\)$"):
        SumOfPositives(chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size must be"):
        SumOfPositives(chunk_size=0)


def test_a_subclass_forward_follows_the_precision_policy():
    SumOfPositives = _sum_of_positives()

    seen = []

    class OwnForward(SumOfPositives):
        def forward(self, embeddings, labels):      # wrapped by the subclass hook
            seen.append((embeddings.dtype, torch.is_autocast_enabled("cpu")))
            return self.compute(make_batch(embeddings, labels))

    x, y, _, _ = _batch_inputs()
    xh = x.to(torch.float16)
    expected = _loop_positive_sum(xh.double(), y)   # float32 from the rounded input
    for cls in (SumOfPositives, OwnForward):
        value = cls()(xh, y)
        assert value.dtype == torch.float32, cls
        assert float(value) == pytest.approx(expected, rel=1e-5), cls
        # under autocast too: disabled inside the loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert cls()(x.float(), y).dtype == torch.float32
    # what the subclass's own forward received: float32, autocast off
    assert seen == [(torch.float32, False), (torch.float32, False)]

    marked = full_precision_forward(lambda self, e, lab: e.sum())

    class Marked(SumOfPositives):
        forward = marked

    assert Marked.__dict__["forward"] is marked     # already under the policy: kept as is


# --------------------------------------------------------------------------- dense vs tiled
def test_forward_tiles_exactly_when_chunk_size_asks(monkeypatch):
    calls = []
    real = tiling.tiled_forward

    def spy(loss, *args):
        calls.append(args[-1])
        return real(loss, *args)

    monkeypatch.setattr(tiling, "tiled_forward", spy)
    x, y, r, ry = _batch_inputs()
    loss = losses.build("contrastive")
    dense = float(loss(x, y))
    loss.chunk_size = 3
    assert float(loss(x, y)) == pytest.approx(dense, abs=1e-12)
    assert calls == [3]
    # "auto": dense while DENSE_BUFFERS x B x M elements fit the budget, tiled beyond it
    assert base.PairLoss.dense_elements(loss, 7, 5) == tiling.DENSE_BUFFERS * 7 * 5
    loss.chunk_size = "auto"
    budget = tiling.auto_budget()
    try:
        per_elem = 8                                 # float64
        tiling.set_auto_budget(tiling.DENSE_BUFFERS * 7 * 5 * per_elem)
        loss(x, y, r, ry)                            # B x M = 7 x 5 fits exactly: dense
        assert calls == [3]
        loss(x, y)                                   # 7 x 7 does not: tiled
        assert len(calls) == 2
        tiling.set_auto_budget(tiling.DENSE_BUFFERS * 7 * 7 * per_elem)
        loss(x, y)
        assert len(calls) == 2
    finally:
        tiling.set_auto_budget(budget)
    assert loss.extra_repr() == ("margin=1.0, lam=0.5, form='distance', pos_margin=None, "
                                 "power=2.0, reduction='mean', normalize=True, "
                                 "chunk_size='auto'")
    loss.chunk_size = None
    assert "chunk_size" not in repr(loss)


# --------------------------------------------------------------------------- slots, errors
@pytest.mark.parametrize("query_ref", [False, True])
def test_slots_of_a_large_class_are_the_ascending_positive_columns(query_ref):
    # 20 samples of one class: rows wider than 16 slots, where an unstable sort reorders
    y = torch.tensor([0] * 20 + [1, 2, 1, 0, 3])
    ry = torch.tensor([1, 0] * 12 + [0] * 6) if query_ref else y
    x = torch.randn(len(y), 3, dtype=torch.float64)
    batch = make_batch(x, y, torch.randn(len(ry), 3, dtype=torch.float64), ry) if query_ref \
        else make_batch(x, y)
    index, valid = batch.pos_slots
    for i, a in enumerate(y.tolist()):
        cols = [j for j, b in enumerate(ry.tolist()) if a == b and (query_ref or i != j)]
        assert index[i][valid[i]].tolist() == cols
        assert valid[i].tolist() == [True] * len(cols) + [False] * (valid.shape[1] - len(cols))
    assert valid.shape[1] == max(len([b for b in ry.tolist() if b == a]) - (not query_ref)
                                 for a in y.tolist())


def test_no_closed_form_errors_name_the_loss_and_the_supported_settings():
    batch = make_batch(torch.randn(6, 3, dtype=torch.float64), torch.arange(6) % 2)
    with pytest.raises(ValueError, match=r"^no closed form for DDMLLoss: its pair weights "
                                         r"come from autograd only \(dmlkit\.weights"):
        losses.build("ddml").closed_form_weights(batch)
    with pytest.raises(ValueError, match=r"^no closed form for RAWDistanceWeightedLoss with "
                                         r"these settings; supported: a deterministic mining"):
        losses.build("raw+distance_weighted", seed=0).closed_form_weights(batch)


def test_a_batch_of_arbitrary_masks_reads_its_masks():
    # masks that are not those of the labels (e.g. generated negatives): label_masks False
    g = torch.Generator().manual_seed(3)
    S = torch.rand(5, 6, generator=g, dtype=torch.float64)
    pos = torch.rand(5, 6, generator=g) < 0.3
    neg = ~pos & (torch.rand(5, 6, generator=g) < 0.5)
    labels = torch.zeros(5, dtype=torch.long)             # would make every pair positive
    batch = base.PairBatch(S=S, pos=pos, neg=neg, labels=labels, ref_labels=labels[:1].repeat(6),
                           embeddings=torch.randn(5, 2, generator=g, dtype=torch.float64),
                           ref_embeddings=torch.randn(6, 2, generator=g, dtype=torch.float64),
                           in_batch=False, normalized=True)
    assert not batch.label_masks
    index, valid = batch.pos_slots
    for i in range(5):
        assert index[i][valid[i]].tolist() == [j for j in range(6) if pos[i, j]]
    assert batch.neg_per_row.tolist() == [int(sum(neg[i].tolist())) for i in range(5)]
    for value in (0.0, float("inf"), float("-inf")):
        got = batch.fill_non_negatives_(S.clone(), value)
        for i in range(5):
            for j in range(6):
                assert got[i, j] == (S[i, j] if neg[i, j] else value)
    with pytest.raises(ValueError, match=r"takes 0 or \+-inf, got 0\.5"):   # label masks
        make_batch(S[:, :2], labels).fill_non_negatives_(S[:, :5].clone(), 0.5)


def test_slots_against_a_single_reference():
    # one reference: the queries of a larger label search past its end
    x, r = torch.randn(4, 3, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
    for ref_label in (0, 1, 2):
        batch = make_batch(x, torch.tensor([0, 1, 2, 1]), r, torch.tensor([ref_label]))
        index, valid = batch.pos_slots
        assert valid.tolist() == [[a == ref_label] for a in (0, 1, 2, 1)]
        assert index.tolist() == [[0]] * 4


def test_references_need_their_labels():
    x, y, r, ry = _batch_inputs()
    for args in ((r, None), (None, ry)):
        with pytest.raises(ValueError, match=r"^ref_embeddings and ref_labels must be given "
                                             r"together$"):
            make_batch(x, y, *args)


def test_reference_errors_name_the_references():
    x, y, r, ry = _batch_inputs()
    bad = r.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^ref_embeddings contain NaN or inf"):
        make_batch(x, y, bad, ry)
    with pytest.raises(ValueError, match=r"^ref_labels has length 4 but the batch has 5 "):
        make_batch(x, y, r, ry[:4])
    with pytest.raises(ValueError, match=r"^ref_embeddings have dimension 3 but embeddings "
                                         r"have 4$"):
        make_batch(x, y, r[:, :3], ry)


def test_make_batch_normalises_by_default():
    x, y, r, ry = _batch_inputs()
    batch = make_batch(x, y)
    assert batch.normalized
    torch.testing.assert_close(batch.squared_distances(), _loop_sq(x, x, True), rtol=1e-9,
                               atol=1e-9)
    unit = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in x.tolist()]
    cos = [[sum(a * b for a, b in zip(u, v)) for v in unit] for u in unit]
    torch.testing.assert_close(batch.S, torch.tensor(cos, dtype=torch.float64), rtol=1e-12,
                               atol=1e-12)


def test_a_subclass_without_its_own_constructor_normalises():
    class Bare(PairLoss):
        def compute(self, batch):
            return torch.where(batch.pos, batch.S, 0.0).sum()

    x, y, _, _ = _batch_inputs()
    loss = Bare()
    assert loss.normalize is True and loss.chunk_size is None
    assert loss.extra_repr() == "normalize=True"
    assert float(loss(x, y)) == pytest.approx(_loop_positive_sum(x, y), abs=1e-12)


def test_auto_chunk_size_counts_the_dense_buffers_of_the_loss():
    # angular's dense path also holds 3 (M, M) buffers: its "auto" tiles where another
    # loss of the same (B, M) would stay dense
    x, y, _, _ = _batch_inputs()
    budget = tiling.auto_budget()
    try:
        tiling.set_auto_budget(8 * (tiling.DENSE_BUFFERS * 7 * 7 + 1))
        assert losses.build("angular", chunk_size="auto").tiled_chunk(7, 7, torch.float64) \
            is not None
        assert losses.build("contrastive", chunk_size="auto").tiled_chunk(7, 7, torch.float64) \
            is None
    finally:
        tiling.set_auto_budget(budget)
