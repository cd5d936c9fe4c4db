"""dmlkit.losses.npair beyond test_npair.py: the pairing (npair_pairing, pair_indices,
pairing_vectors) against the naive rule of tests/naive, N-pair-mc, N-pair-ovo and the
(N+1)-tuplet, dense and in tiles, in value and gradient against per-pair loops written here in
torch (their values checked against tests/naive's float64 loops), on degenerate batches (one
anchor, one class, rows without negatives, labels outside the references), hinge ties across
tiles, the L2 penalty (its branches, half-precision input), the defaults and the constructors'
errors."""

import inspect
import math

import pytest
import torch
from conftest import value_and_grads
import torch.nn.functional as F
from naive import naive_npair, naive_tuplet
from naive.loss_testing import LABEL_LAYOUTS, random_qref
from naive.losses import _naive_npair_pairs

from dmlkit import losses
from dmlkit.losses import npair, tiling
from dmlkit.losses.base import make_batch
from dmlkit.losses.tiles import TileContext

# =========================================================================== references
def _views(q, ql, r, rl, normalize):
    in_batch = r is None
    Q = q / q.norm(dim=1, keepdim=True) if normalize else q
    R = Q if in_batch else (r / r.norm(dim=1, keepdim=True) if normalize else r)
    qlab = ql.tolist()
    rlab = qlab if in_batch else rl.tolist()
    return Q, R, qlab, rlab, in_batch


def _graph_zero(q, r):
    return q.sum() * 0.0 + (0.0 if r is None else r.sum() * 0.0)


def _sq(v):
    return (v * v).sum()


def ref_npair(q, ql, r=None, rl=None, l2_reg=0.002, normalize=False, ovo=False):
    """Sohn's N-pair-mc / -ovo with the documented pairing, a loop over the anchors."""
    Q, R, qlab, rlab, in_batch = _views(q, ql, r, rl, normalize)
    anchors, cols = _naive_npair_pairs(qlab, rlab, in_batch)
    if not anchors or len(cols) < 2:
        return _graph_zero(q, r)
    total = 0.0
    for i, p in anchors:
        s_pos = Q[i] @ R[p]
        diffs = torch.stack([Q[i] @ R[j] - s_pos for j in cols if j != p])
        if ovo:
            total = total + F.softplus(diffs).sum()              # sum log(1 + e^z)
        else:
            total = total + F.softplus(torch.logsumexp(diffs, 0))  # log(1 + sum e^z)
    if l2_reg == 0:
        return total / len(anchors)
    raw_r = q if in_batch else r
    reg = 0.25 * l2_reg * (torch.stack([_sq(q[i]) for i, _ in anchors]).mean()
                           + torch.stack([_sq(raw_r[j]) for j in cols]).mean())
    return total / len(anchors) + reg


def ref_tuplet(q, ql, r=None, rl=None, form="softplus", margin=0.0, l2_reg=0.002,
               normalize=False):
    """The (N+1)-tuplet over every positive pair with >= 1 negative; the hinge's maximum
    shares its gradient evenly among tied negatives (amax)."""
    Q, R, qlab, rlab, in_batch = _views(q, ql, r, rl, normalize)
    terms = []
    for a in range(len(qlab)):
        negs = [n for n in range(len(rlab)) if rlab[n] != qlab[a]]
        for p in range(len(rlab)):
            if (in_batch and a == p) or rlab[p] != qlab[a] or not negs:
                continue
            s_ap = Q[a] @ R[p]
            s_n = torch.stack([Q[a] @ R[n] for n in negs])
            if form == "softplus":
                terms.append(F.softplus(torch.logsumexp(s_n - s_ap, 0)))
            else:
                terms.append(torch.relu(s_n.amax() - s_ap + margin))
    if not terms:
        return _graph_zero(q, r)
    if l2_reg == 0:
        return torch.stack(terms).mean()
    raw_r = q if in_batch else r
    reg = 0.25 * l2_reg * ((q * q).sum(1).mean() + (raw_r * raw_r).sum(1).mean())
    return torch.stack(terms).mean() + reg


REFS = {"npair": (ref_npair, naive_npair, {}),
        "npair_ovo": (ref_npair, naive_npair, {"ovo": True}),
        "tuplet": (ref_tuplet, naive_tuplet, {})}

# =========================================================================== batches
IN_BATCH = {
    "mixed": LABEL_LAYOUTS["mixed"],
    "sohn": torch.tensor([2, 5, 9, 5, 2, 7, 5, 7]),
    "two_pairs": torch.tensor([0, 1, 0, 1]),
    "one_pair_and_a_singleton": torch.tensor([0, 0, 1]),
    "one_class": torch.zeros(4, dtype=torch.long),
    "singletons": torch.arange(4),
    "two_of_a_class": torch.tensor([3, 3]),
}

_q0, _ql0, _r0, _rl0 = random_qref(0, B=6, M=8, D=3)
QUERY_REF = {   # (query labels, reference labels)
    "random": (_ql0, _rl0),
    "one_anchor": (torch.tensor([0]), torch.tensor([0, 1, 1])),
    "one_anchor_of_three_queries": (torch.tensor([4, 0, 7]), torch.tensor([1, 0, 1, 0])),
    "rows_without_negatives": (torch.tensor([0, 1]), torch.tensor([0, 0, 0])),
    "a_single_reference": (torch.tensor([3, 5]), torch.tensor([3])),
    "no_positive": (torch.tensor([1, 2]), torch.tensor([0, 3, 0])),
    "labels_outside_the_references": (torch.tensor([5, 0, -1, 2, 2]),
                                      torch.tensor([0, 2, 2, 3])),
    "one_reference_class": (torch.tensor([5, 0, -1]), torch.tensor([0, 0])),
}


def _emb(n, seed, D=3, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, D, generator=g, dtype=torch.float64)


def _args(key, seed=0):
    if key in IN_BATCH:
        y = IN_BATCH[key]
        return (_emb(len(y), seed), y)
    ql, rl = QUERY_REF[key]
    return (_emb(len(ql), seed), ql, _emb(len(rl), seed + 50), rl)


def _value_and_grads(fn, args):
    return value_and_grads(fn, *args)


def _assert_close(got, want):
    value, grads = got
    ref_value, ref_grads = want
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-10, abs=1e-12)
    for g, h in zip(grads, ref_grads):
        torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-12)


SETTINGS = [
    ("npair", {}),
    ("npair", {"normalize": True, "l2_reg": 0.0}),
    ("npair", {"l2_reg": 1.0}),
    ("npair_ovo", {}),
    ("npair_ovo", {"normalize": True, "l2_reg": 1.0}),
    ("npair_ovo", {"l2_reg": 0.0}),
    ("tuplet", {}),
    ("tuplet", {"form": "hinge"}),
    ("tuplet", {"form": "hinge", "margin": 0.3, "l2_reg": 0.0, "normalize": True}),
    ("tuplet", {"normalize": True, "l2_reg": 1.0}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(SETTINGS)]


# =========================================================================== the pairing
def _ctx(y, ry=None):
    in_batch = ry is None
    ry = y if in_batch else ry
    x, r = _emb(len(y), 0), _emb(len(ry), 1)
    return TileContext(B=len(y), M=len(ry), in_batch=in_batch, labels=y, ref_labels=ry,
                       dtype=torch.float64, device=torch.device("cpu"), normalized=False,
                       embeddings=x, ref_embeddings=x if in_batch else r)


def _expected_pairing(y, ry=None):
    in_batch = ry is None
    qlab = y.tolist()
    rlab = qlab if in_batch else ry.tolist()
    pairs, cols = _naive_npair_pairs(qlab, rlab, in_batch)
    anchors = torch.zeros(len(qlab), dtype=torch.bool)
    columns = torch.zeros(len(rlab), dtype=torch.bool)
    target = torch.zeros(len(qlab), len(rlab), dtype=torch.bool)
    for i, p in pairs:
        anchors[i] = True
        target[i, p] = True
    columns[cols] = True
    return pairs, anchors, columns, target


def _random_labels(seed, n, classes):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


# (100 and 300 labels of few classes: where an unstable sort reorders equal labels)
PAIRING_IN_BATCH = [*IN_BATCH.values(), torch.tensor([7]),
                    *[_random_labels(s, 3 + s, 1 + s % 4) for s in range(8)],
                    _random_labels(40, 100, 3), _random_labels(41, 300, 5)]
PAIRING_QUERY_REF = [*QUERY_REF.values(),
                     *[(_random_labels(s, 2 + s % 5, 4), _random_labels(20 + s, 1 + s, 3))
                       for s in range(8)],
                     (_random_labels(42, 20, 4), _random_labels(43, 100, 3)),
                     (_random_labels(44, 20, 6), _random_labels(45, 300, 5))]


def test_npair_pairing_is_the_documented_rule():
    for y in PAIRING_IN_BATCH:
        _, anchors, cols, target = _expected_pairing(y)
        got = npair.npair_pairing(make_batch(_emb(len(y), 0), y))
        for a, b in zip(got, (anchors, cols, target)):
            assert torch.equal(a, b), y
    for ql, rl in PAIRING_QUERY_REF:
        _, anchors, cols, target = _expected_pairing(ql, rl)
        got = npair.npair_pairing(make_batch(_emb(len(ql), 0), ql, _emb(len(rl), 1), rl))
        for a, b in zip(got, (anchors, cols, target)):
            assert torch.equal(a, b), (ql, rl)


def test_pair_indices_are_the_first_two_samples_of_each_class():
    for y in PAIRING_IN_BATCH:
        pairs, *_ = _expected_pairing(y)
        first, second = npair.pair_indices(y)
        assert first.shape == second.shape
        assert sorted(zip(first.tolist(), second.tolist())) == sorted(pairs), y


def test_pairing_vectors_equal_the_pairing_of_the_masks():
    for args in [(y,) for y in PAIRING_IN_BATCH] + list(PAIRING_QUERY_REF):
        _, anchors, cols, target = _expected_pairing(*args)
        got_anchors, got_cols, got_target = npair.pairing_vectors(_ctx(*args))
        assert torch.equal(got_anchors, anchors), args
        assert torch.equal(got_cols, cols), args
        assert got_target.dtype == torch.long and got_target.shape == anchors.shape
        assert torch.equal(got_target[anchors], target[anchors].long().argmax(1)), args


# =========================================================================== values and grads
@pytest.mark.parametrize("name,kw", SETTINGS, ids=IDS)
def test_dense_and_tiled_equal_the_loops(name, kw):
    """Every batch, dense and in tiles of 2 and 3 (through forward, and in-batch through
    tiling.tiled_forward, which tiles the whole batch), in value and in the gradient with
    respect to the queries and the references."""
    ref, naive, extra = REFS[name]
    for key in [*IN_BATCH, *QUERY_REF]:
        args = _args(key)
        want = _value_and_grads(lambda *a: ref(*a, **kw, **extra), args)
        assert want[0].item() == pytest.approx(naive(*args, **kw, **extra), rel=1e-10,
                                               abs=1e-12)
        _assert_close(_value_and_grads(losses.build(name, **kw), args), want)
        for chunk in (2, 3):
            loss = losses.build(name, chunk_size=chunk, **kw)
            _assert_close(_value_and_grads(loss, args), want)
            if len(args) == 2:
                _assert_close(_value_and_grads(
                    lambda *a, loss=loss, chunk=chunk: tiling.tiled_forward(loss, *a,
                                                                            chunk=chunk),
                    args), want)


def test_hinge_ties_across_tiles_share_the_gradient():
    """Tied hardest negatives (duplicated integer embeddings: exact products) in different
    column tiles: the tuplet's hinge is their common value, and the gradient is shared evenly
    (as amax), in tiles as dense."""
    base = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [2.0, 1.0, 0.0], [1.0, 1.0, 1.0]],
                        dtype=torch.float64)
    x = torch.cat([base, base[[2, 3]], base[[2]]])
    y = torch.tensor([0, 0, 1, 2, 1, 2, 1])
    r = torch.cat([base[[2, 0, 1, 2]], base[[2, 3]]])
    ry = torch.tensor([1, 0, 0, 1, 1, 2])
    for kw in ({"form": "hinge", "margin": 10.0}, {"form": "hinge", "margin": 10.0,
                                                    "l2_reg": 0.0}):
        for args in ((x, y), (x, y, r, ry)):
            want = _value_and_grads(lambda *a, kw=kw: ref_tuplet(*a, **kw), args)
            assert want[0].item() == pytest.approx(naive_tuplet(*args, **kw), rel=1e-12)
            for chunk in (None, 1, 2, 3, 4):
                _assert_close(_value_and_grads(losses.build("tuplet", chunk_size=chunk, **kw),
                                               args), want)


def test_the_l2_penalty_of_half_precision_embeddings_is_computed_in_float32():
    """regularizer() of a batch of float16 embeddings whose squared norms overflow float16:
    Sohn's penalty is still finite and equals the float64 value of the rounded input."""
    x = (300 * _emb(6, 3)).to(torch.float16)
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    x64 = x.double()
    for name, kw in [("npair", {}), ("npair_ovo", {"l2_reg": 0.01}), ("tuplet", {})]:
        loss = losses.build(name, **kw)
        got = loss.regularizer(make_batch(x, y, normalize=False))
        ref, _, extra = REFS[name]
        want = (ref(x64, y, **kw, **extra)
                - ref(x64, y, **{**kw, "l2_reg": 0.0}, **extra)).item()
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(want, rel=1e-5)
    xb = (3 * _emb(6, 4)).to(torch.bfloat16)
    got = losses.build("tuplet", l2_reg=1.0).regularizer(make_batch(xb, y, normalize=False))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(0.5 * float((xb.double() ** 2).sum(1).mean()), rel=1e-6)


def _huge_on_private_axes():
    """Queries / anchors with a 1e155 component on an axis of their own (their squared norms
    overflow float64 to inf) and positives / references without it: every similarity that
    the losses use is finite."""
    g = torch.Generator().manual_seed(12)
    shared = torch.randn(4, 3, generator=g, dtype=torch.float64)
    private = torch.diag(torch.full((4,), 1e155, dtype=torch.float64))
    q = torch.cat([shared, private], 1)
    r = torch.cat([torch.randn(6, 3, generator=g, dtype=torch.float64),
                   torch.zeros(6, 4, dtype=torch.float64)], 1)
    return q, torch.tensor([0, 1, 2, 9]), r, torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("name,extra", [("npair", {}), ("npair_ovo", {"ovo": True}),
                                        ("tuplet", {})])
def test_l2_reg_zero_adds_no_penalty_term_at_all(name, extra):
    """l2_reg = 0: not even 0 x (squared norms) (inf there), dense and in tiles; in-batch the
    N-pair anchors are the huge rows and the positives the small ones."""
    q, ql, r, rl = _huge_on_private_axes()
    batches = [(q, ql, r, rl)]
    if name != "tuplet":
        x = torch.stack([q[0], q[1], r[0], r[1]])           # anchors first: (0, 2), (1, 3)
        batches.append((x, torch.tensor([0, 1, 0, 1])))
    ref = REFS[name][0]
    for args in batches:
        want = ref(*args, l2_reg=0.0, **extra)
        assert torch.isfinite(want)
        for chunk in (None, 3):
            if chunk and len(args) == 2:
                continue         # the full in-batch S holds the huge rows' own products
            got = losses.build(name, l2_reg=0.0, chunk_size=chunk)(*args)
            assert got.item() == pytest.approx(want.item(), rel=1e-12), (chunk, len(args))


# =========================================================================== defaults, errors
def _batch_with_everything():
    return _emb(8, 9, D=4, scale=2.0), torch.tensor([0, 1, 0, 1, 2, 2, 3, 0])


@pytest.mark.parametrize("name", ["npair", "npair_ovo"])
def test_npair_defaults_are_sohns_settings(name):
    """l2_reg = 0.002 (TF npairs_loss) and un-normalised embeddings, as documented."""
    x, y = _batch_with_everything()
    default = losses.build(name)
    explicit = losses.build(name, l2_reg=0.002, normalize=False)
    assert default.l2_reg == explicit.l2_reg and default.normalize is False
    assert default(x, y).item() == explicit(x, y).item()
    assert default(x, y).item() != losses.build(name, l2_reg=0.0)(x, y).item()


def test_tuplet_defaults_are_the_documented_ones():
    x, y = _batch_with_everything()
    default = losses.build("tuplet")
    explicit = losses.build("tuplet", form="softplus", margin=0.0, l2_reg=0.002,
                            normalize=False)
    assert (default.form, default.margin, default.l2_reg, default.normalize) == \
        (explicit.form, explicit.margin, explicit.l2_reg, explicit.normalize)
    assert default(x, y).item() == explicit(x, y).item()
    hinge = losses.build("tuplet", form="hinge")
    assert hinge(x, y).item() == losses.build("tuplet", form="hinge", margin=0.0, l2_reg=0.002,
                                              normalize=False)(x, y).item()
    assert isinstance(default.margin, float) and isinstance(default.l2_reg, float)


@pytest.mark.parametrize("cls", [npair.NPairLoss, npair.NPairOVOLoss, npair.TupletLoss])
def test_hyperparameters_are_the_constructor_arguments(cls):
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "normalize"}
    assert set(cls.hyperparameters) == params
    loss = cls(l2_reg=0.25)
    for h in cls.hyperparameters:
        assert f"{h}={getattr(loss, h)!r}" in loss.extra_repr()


@pytest.mark.parametrize("name", ["npair", "npair_ovo", "tuplet"])
def test_l2_reg_must_not_be_negative(name):
    with pytest.raises(ValueError, match=r"^l2_reg must be >= 0, got -0\.5$"):
        losses.build(name, l2_reg=-0.5)
    assert losses.build(name, l2_reg=0).l2_reg == 0.0
    assert isinstance(losses.build(name, l2_reg=1).l2_reg, float)


def test_tuplet_form_must_be_known():
    with pytest.raises(ValueError,
                       match=r"^unknown form 'square'; choose one of \('softplus', 'hinge'\)$"):
        losses.build("tuplet", form="square")
    for form in ("softplus", "hinge"):
        assert losses.build("tuplet", form=form).form == form


def test_npair_in_batch_shortcut_handles_every_pair_count():
    """forward's in-batch shortcut with 0, 1, 2 and more pairs equals the loop (the pairs
    selected by pair_indices, the rest of the batch unused)."""
    for y in [torch.arange(5), torch.tensor([1, 1, 2]), torch.tensor([4, 2, 4, 2]),
              torch.tensor([0, 1, 2, 0, 1, 2, 0])]:
        x = _emb(len(y), 11)
        for name, extra in (("npair", {}), ("npair_ovo", {"ovo": True})):
            for l2 in (0.0, 0.01):
                got = losses.build(name, l2_reg=l2)(x, y).item()
                assert got == pytest.approx(ref_npair(x, y, l2_reg=l2, **extra).item(),
                                            rel=1e-12, abs=1e-15)
    assert math.isfinite(losses.build("npair")(_emb(1, 0), torch.tensor([0])).item())


@pytest.mark.parametrize("name", ["npair", "npair_ovo", "tuplet"])
@pytest.mark.parametrize("chunk", [None, 3])
def test_references_need_embeddings_and_labels(name, chunk):
    """A half-given reference batch is an error, not an in-batch loss (the in-batch shortcut
    of forward must not swallow it)."""
    x, y = _batch_with_everything()
    loss = losses.build(name, chunk_size=chunk)
    message = r"^ref_embeddings and ref_labels must be given together$"
    with pytest.raises(ValueError, match=message):
        loss(x, y, ref_labels=y)
    with pytest.raises(ValueError, match=message):
        loss(x, y, ref_embeddings=x)
