"""Contrastive, lifted structure, N-pair / tuplet, angular and DDML losses.

Every loss is checked against a naive per-pair / per-triplet loop written independently in
float64 (numpy), by gradcheck, against pytorch-metric-learning (PML) under the parameter
mapping stated in each docstring, on degenerate batches and in half precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmlkit import losses
from dmlkit.losses.base import make_batch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")

SEEDS = [0, 1, 2, 3]


# --------------------------------------------------------------------------- data
def random_batch(seed: int, B: int = 12, D: int = 5, n_classes: int | None = None,
                 min_per_class: int = 1):
    g = torch.Generator().manual_seed(seed)
    n_classes = n_classes or (3 + seed % 2)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    if min_per_class > 1:
        base = torch.arange(n_classes).repeat_interleave(min_per_class)
        rest = torch.randint(0, n_classes, (B - len(base),), generator=g)
        y = torch.cat([base, rest])[torch.randperm(B, generator=g)]
    else:
        y = torch.randint(0, n_classes, (B,), generator=g)
    return x, y


def random_qref(seed: int, B: int = 7, M: int = 10, D: int = 5):
    g = torch.Generator().manual_seed(100 + seed)
    q = torch.randn(B, D, generator=g, dtype=torch.float64)
    r = torch.randn(M, D, generator=g, dtype=torch.float64)
    ql = torch.randint(0, 4, (B,), generator=g)
    rl = torch.randint(0, 4, (M,), generator=g)
    return q, ql, r, rl


def _np(x, normalize):
    a = x.detach().numpy().astype(np.float64)
    if normalize:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return a


def _setup(q, ql, r, rl, normalize):
    """Naive-side views: (queries, query labels, refs, ref labels, in_batch)."""
    in_batch = r is None
    Q = _np(q, normalize)
    R = Q if in_batch else _np(r, normalize)
    qlab = ql.tolist()
    rlab = qlab if in_batch else rl.tolist()
    return Q, qlab, R, rlab, in_batch


def _pairs(qlab, rlab, in_batch):
    """Ordered (i, j, is_positive) over the pairs of the (B, M) matrix, diagonal excluded."""
    for i in range(len(qlab)):
        for j in range(len(rlab)):
            if in_batch and i == j:
                continue
            yield i, j, qlab[i] == rlab[j]


def _dist(a, b):
    return float(np.sqrt(np.sum((a - b) ** 2)))


def _lse(vals):
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def _softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


# --------------------------------------------------------------------------- naive losses
def naive_contrastive(q, ql, r=None, rl=None, margin=1.0, lam=0.5, form="distance",
                      pos_margin=None, power=2.0, reduction="mean", normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    pos_terms, neg_terms = [], []
    for i, j, same in _pairs(qlab, rlab, in_batch):
        if form == "distance":
            d = _dist(Q[i], R[j])
            if same:
                pos_terms.append(max(d - (pos_margin or 0.0), 0.0) ** power)
            else:
                neg_terms.append(max(margin - d, 0.0) ** power)
        else:
            s = float(Q[i] @ R[j])
            if same:
                pos_terms.append(-s if pos_margin is None else max(pos_margin - s, 0.0))
            else:
                neg_terms.append(max(s - lam, 0.0))
    if not pos_terms or not neg_terms:          # degenerate batch: the package's 0
        return 0.0
    if reduction == "sum":
        return sum(pos_terms) + sum(neg_terms)
    if reduction == "mean":
        n = len(pos_terms) + len(neg_terms)
        return (sum(pos_terms) + sum(neg_terms)) / max(n, 1)
    nz_p = [t for t in pos_terms if t != 0]
    nz_n = [t for t in neg_terms if t != 0]
    return (sum(nz_p) / len(nz_p) if nz_p else 0.0) + (sum(nz_n) / len(nz_n) if nz_n else 0.0)


def naive_lifted(q, ql, r=None, rl=None, margin=1.0, normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    total, n_pos = 0.0, 0
    for i, j, same in _pairs(qlab, rlab, in_batch):
        if not same:
            continue
        n_pos += 1
        terms = [margin - _dist(Q[i], R[k]) for k in range(len(rlab)) if rlab[k] != qlab[i]]
        if in_batch:
            terms += [margin - _dist(Q[j], Q[k]) for k in range(len(qlab)) if qlab[k] != qlab[j]]
        if not terms:
            continue
        J = math.log(sum(math.exp(t) for t in terms)) + _dist(Q[i], R[j])
        total += max(J, 0.0) ** 2
    return total / (2 * n_pos) if n_pos else 0.0


def naive_generalized_lifted(q, ql, r=None, rl=None, lam=1.0, margin=1.0, form="similarity",
                             normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    total = 0.0
    for i in range(len(qlab)):
        P = [j for j in range(len(rlab)) if rlab[j] == qlab[i] and not (in_batch and j == i)]
        N = [j for j in range(len(rlab)) if rlab[j] != qlab[i]]
        if not P or not N:
            continue
        if form == "similarity":
            h = (math.log(sum(math.exp(-float(Q[i] @ R[k])) for k in P))
                 + math.log(sum(math.exp(float(Q[i] @ R[k])) for k in N)) + lam)
        else:
            h = (math.log(sum(math.exp(_dist(Q[i], R[k])) for k in P))
                 + math.log(sum(math.exp(margin - _dist(Q[i], R[k])) for k in N)))
        total += max(h, 0.0)
    return total / len(qlab)


def _naive_npair_pairs(qlab, rlab, in_batch):
    """[(anchor, positive column)], [candidate columns] by the documented pairing rule."""
    if in_batch:
        anchors, cols = [], []
        for c in dict.fromkeys(qlab):                 # classes in order of first appearance
            members = [k for k, lab in enumerate(qlab) if lab == c]
            if len(members) >= 2:
                anchors.append((members[0], members[1]))
                cols.append(members[1])
        return anchors, cols
    first_ref = {}
    for k, lab in enumerate(rlab):
        first_ref.setdefault(lab, k)
    cols = sorted(first_ref.values())
    anchors = [(i, first_ref[lab]) for i, lab in enumerate(qlab) if lab in first_ref]
    return anchors, cols


def naive_npair(q, ql, r=None, rl=None, l2_reg=0.002, normalize=False, ovo=False):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    anchors, cols = _naive_npair_pairs(qlab, rlab, in_batch)
    if not anchors or len(cols) < 2:
        return 0.0
    total = 0.0
    for i, p in anchors:
        s_pos = float(Q[i] @ R[p])
        diffs = [float(Q[i] @ R[j]) - s_pos for j in cols if j != p]
        if ovo:
            total += sum(math.log1p(math.exp(z)) for z in diffs)
        else:
            total += math.log1p(sum(math.exp(z) for z in diffs))
    loss = total / len(anchors)
    Qraw = q.detach().numpy()
    Rraw = Qraw if in_batch else r.detach().numpy()
    reg_a = np.mean([np.sum(Qraw[i] ** 2) for i, _ in anchors])
    reg_p = np.mean([np.sum(Rraw[j] ** 2) for j in cols])
    return loss + 0.25 * l2_reg * (reg_a + reg_p)


def naive_tuplet(q, ql, r=None, rl=None, form="softplus", margin=0.0, l2_reg=0.002,
                 normalize=False):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    terms = []
    for a, p, same in _pairs(qlab, rlab, in_batch):
        if not same:
            continue
        negs = [float(Q[a] @ R[n]) for n in range(len(rlab)) if rlab[n] != qlab[a]]
        if not negs:
            continue
        s_ap = float(Q[a] @ R[p])
        if form == "softplus":
            terms.append(math.log1p(sum(math.exp(s - s_ap) for s in negs)))
        else:
            terms.append(max(max(negs) - s_ap + margin, 0.0))
    if not terms:
        return 0.0
    Qraw = q.detach().numpy()
    Rraw = Qraw if in_batch else r.detach().numpy()
    reg = 0.25 * l2_reg * (np.mean(np.sum(Qraw ** 2, 1)) + np.mean(np.sum(Rraw ** 2, 1)))
    return sum(terms) / len(terms) + reg


def naive_angular(q, ql, r=None, rl=None, alpha=40.0, normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    t = math.tan(math.radians(alpha)) ** 2
    total, n_pos = 0.0, 0
    for a, p, same in _pairs(qlab, rlab, in_batch):
        if not same:
            continue
        n_pos += 1
        acc = 0.0
        for n in range(len(rlab)):
            if rlab[n] == qlab[a]:
                continue
            acc += math.exp(4 * t * float((Q[a] + R[p]) @ R[n]) - 2 * (1 + t) * float(Q[a] @ R[p]))
        total += math.log1p(acc)
    return total / n_pos if n_pos else 0.0


def naive_ddml(q, ql, r=None, rl=None, tau=2.0, beta=2.0, reduction="mean", normalize=True):
    Q, qlab, R, rlab, in_batch = _setup(q, ql, r, rl, normalize)
    gs, kinds = [], set()
    for i, j, same in _pairs(qlab, rlab, in_batch):
        d2 = float(np.sum((Q[i] - R[j]) ** 2))
        lij = 1.0 if same else -1.0
        kinds.add(same)
        gs.append(_softplus(beta * (1.0 - lij * (tau - d2))) / beta)
    if kinds != {True, False}:                  # degenerate batch: the package's 0
        return 0.0
    return 0.5 * sum(gs) if reduction == "sum" else sum(gs) / len(gs)


# name, kwargs, naive function, naive kwargs
CASES = [
    ("contrastive", {}, naive_contrastive, {}),
    ("contrastive", {"margin": 0.8, "power": 1, "pos_margin": 0.2, "reduction": "sum"},
     naive_contrastive, {"margin": 0.8, "power": 1, "pos_margin": 0.2, "reduction": "sum"}),
    ("contrastive", {"margin": 1.2, "reduction": "mean_nonzero", "normalize": False},
     naive_contrastive, {"margin": 1.2, "reduction": "mean_nonzero", "normalize": False}),
    ("contrastive", {"form": "similarity", "lam": 0.1}, naive_contrastive,
     {"form": "similarity", "lam": 0.1}),
    ("contrastive", {"form": "similarity", "lam": 0.0, "pos_margin": 0.9, "reduction": "sum"},
     naive_contrastive, {"form": "similarity", "lam": 0.0, "pos_margin": 0.9, "reduction": "sum"}),
    ("lifted_structure", {}, naive_lifted, {}),
    ("lifted_structure", {"margin": 0.5, "normalize": False}, naive_lifted,
     {"margin": 0.5, "normalize": False}),
    ("generalized_lifted_structure", {}, naive_generalized_lifted, {}),
    ("generalized_lifted_structure", {"lam": 0.2}, naive_generalized_lifted, {"lam": 0.2}),
    ("generalized_lifted_structure", {"form": "distance", "margin": 0.7},
     naive_generalized_lifted, {"form": "distance", "margin": 0.7}),
    ("npair", {}, naive_npair, {}),
    ("npair", {"normalize": True, "l2_reg": 0.0}, naive_npair, {"normalize": True, "l2_reg": 0.0}),
    ("npair_ovo", {"l2_reg": 0.01}, naive_npair, {"l2_reg": 0.01, "ovo": True}),
    ("tuplet", {}, naive_tuplet, {}),
    ("tuplet", {"form": "hinge", "margin": 0.3, "normalize": True}, naive_tuplet,
     {"form": "hinge", "margin": 0.3, "normalize": True}),
    ("angular", {}, naive_angular, {}),
    ("angular", {"alpha": 36}, naive_angular, {"alpha": 36}),
    ("ddml", {}, naive_ddml, {}),
    ("ddml", {"tau": 1.0, "beta": 5.0, "reduction": "sum", "normalize": False}, naive_ddml,
     {"tau": 1.0, "beta": 5.0, "reduction": "sum", "normalize": False}),
]
CASE_IDS = [f"{n}-{i}" for i, (n, *_rest) in enumerate(CASES)]


# --------------------------------------------------------------------------- 1. naive loops
@pytest.mark.parametrize("name,kw,naive,nkw", CASES, ids=CASE_IDS)
def test_equals_naive_loop_in_batch(name, kw, naive, nkw):
    loss = losses.build(name, **kw)
    for seed in SEEDS:
        x, y = random_batch(seed)
        got = loss(x, y)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(naive(x, y, **nkw), abs=1e-10, rel=1e-10)


@pytest.mark.parametrize("name,kw,naive,nkw", CASES, ids=CASE_IDS)
def test_equals_naive_loop_query_vs_reference(name, kw, naive, nkw):
    loss = losses.build(name, **kw)
    for seed in SEEDS:
        q, ql, r, rl = random_qref(seed)
        got = loss(q, ql, r, rl).item()
        assert got == pytest.approx(naive(q, ql, r, rl, **nkw), abs=1e-10, rel=1e-10)


def test_npair_pairing_uses_first_two_of_each_class():
    # class 5: samples 1, 3, 6 -> pair (1, 3); class 2: (0, 4); class 9 is a singleton
    y = torch.tensor([2, 5, 9, 5, 2, 7, 5, 7])
    x = torch.randn(8, 4, dtype=torch.float64)
    got = losses.build("npair", l2_reg=0.0)(x, y).item()
    anchors, cols = [(0, 4), (1, 3), (5, 7)], [4, 3, 7]
    ref = np.mean([math.log(sum(math.exp(float(x[i] @ x[j])) for j in cols))
                   - float(x[i] @ x[p]) for i, p in anchors])
    assert got == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------------------- 2. gradcheck
@pytest.mark.parametrize("name,kw,naive,nkw", CASES, ids=CASE_IDS)
def test_gradcheck(name, kw, naive, nkw):
    loss = losses.build(name, **kw)
    x, y = random_batch(7, B=8, D=4, n_classes=3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-6)
    q, ql, r, rl = random_qref(7, B=5, M=6, D=4)
    q.requires_grad_(True)
    r.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, ql, b, rl), (q, r), eps=1e-6,
                                    atol=1e-6)


# --------------------------------------------------------------------------- 3. PML
def _prep(e, unit):
    return F.normalize(e, dim=1) if unit else e


def _value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    v = fn(x)
    (g,) = torch.autograd.grad(v, x)
    return v.detach(), g


PML_CASES = [
    ("contrastive-distance", lambda: losses.build("contrastive", margin=0.9, power=1,
                                                  reduction="mean_nonzero"),
     lambda: pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=0.9), 1),
    ("contrastive-distance-posmargin",
     lambda: losses.build("contrastive", margin=1.1, pos_margin=0.3, power=1,
                          reduction="mean_nonzero"),
     lambda: pml_losses.ContrastiveLoss(pos_margin=0.3, neg_margin=1.1), 1),
    ("contrastive-similarity",
     lambda: losses.build("contrastive", form="similarity", lam=0.1, pos_margin=1.0,
                          reduction="mean_nonzero"),
     lambda: pml_losses.ContrastiveLoss(distance=pml_distances.CosineSimilarity(),
                                        pos_margin=1.0, neg_margin=0.1), 1),
    ("lifted", lambda: losses.build("lifted_structure", margin=1.0),
     lambda: pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0), 1),
    ("lifted-m0.5", lambda: losses.build("lifted_structure", margin=0.5),
     lambda: pml_losses.LiftedStructureLoss(neg_margin=0.5, pos_margin=0), 1),
    ("generalized-lifted-distance",
     lambda: losses.build("generalized_lifted_structure", form="distance", margin=1.0),
     lambda: pml_losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0), 2),
    ("generalized-lifted-similarity",
     lambda: losses.build("generalized_lifted_structure", lam=0.4),
     lambda: pml_losses.GeneralizedLiftedStructureLoss(
         distance=pml_distances.CosineSimilarity(), pos_margin=0.4, neg_margin=0), 2),
    ("npair-normalized", lambda: losses.build("npair", normalize=True, l2_reg=0.0),
     lambda: pml_losses.NPairsLoss(), 1),
    ("npair-raw", lambda: losses.build("npair", normalize=False, l2_reg=0.0),
     lambda: pml_losses.NPairsLoss(
         distance=pml_distances.DotProductSimilarity(normalize_embeddings=False)), 1),
    ("angular", lambda: losses.build("angular", alpha=40), lambda: pml_losses.AngularLoss(
        alpha=40), 1),
    ("angular-45", lambda: losses.build("angular", alpha=45), lambda: pml_losses.AngularLoss(
        alpha=45), 1),
]


@pytest.mark.parametrize("case,ours,theirs,min_per_class", PML_CASES,
                         ids=[c[0] for c in PML_CASES])
def test_matches_pml(case, ours, theirs, min_per_class):
    ours, theirs = ours(), theirs()
    # angular: gradients w.r.t. the input of a normalisation layer, since PML's angular loss
    # multiplies by un-normalised negatives, which only agrees for unit inputs (docstring)
    unit = case.startswith("angular")
    for seed in SEEDS[:3]:
        z, y = random_batch(seed, B=12, D=5, min_per_class=min_per_class)
        va, ga = _value_and_grad(lambda e, y=y: ours(_prep(e, unit), y), z)
        vb, gb = _value_and_grad(lambda e, y=y: theirs(_prep(e, unit), y), z)
        assert va.item() > 0
        assert va.item() == pytest.approx(vb.item(), abs=1e-6)
        torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-5)


def test_pml_contrastive_squared_hinge_differs():
    """PML never squares the hinge: the paper's power=2 is not PML's default (documented)."""
    x, y = random_batch(0)
    ours = losses.build("contrastive", margin=1.0, reduction="mean_nonzero")(x, y).item()
    pml = pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=1.0)(x, y).item()
    assert abs(ours - pml) > 1e-3


# --------------------------------------------------------------------------- weights via S
def _leaf_batch(x, y):
    batch = make_batch(x, y)
    batch.S = batch.S.detach().requires_grad_(True)
    return batch


def test_contrastive_similarity_weights_are_seed004_eq6():
    x, y = random_batch(1)
    lam = 0.1
    batch = _leaf_batch(x, y)
    loss = losses.build("contrastive", form="similarity", lam=lam, reduction="sum")
    (gS,) = torch.autograd.grad(loss.compute(batch), batch.S)
    above = batch.neg & (batch.S.detach() > lam)
    w_expected = torch.where(batch.pos, 1.0, torch.where(above, 1.0, 0.0))
    w = torch.where(batch.pos, -gS, gS)
    torch.testing.assert_close(w, w_expected.to(w.dtype))
    assert bool(above.any()) and bool((batch.neg & ~above).any())


def test_generalized_lifted_weights_are_seed004_eq10_11():
    x, y = random_batch(2)
    batch = _leaf_batch(x, y)
    lam = 1.0
    loss = losses.build("generalized_lifted_structure", lam=lam)
    (gS,) = torch.autograd.grad(loss.compute(batch), batch.S)
    S = batch.S.detach()
    m = S.shape[0]
    for i in range(m):
        P = batch.pos[i].nonzero().flatten().tolist()
        N = batch.neg[i].nonzero().flatten().tolist()
        if not P or not N:
            assert torch.all(gS[i] == 0)
            continue
        zp = sum(math.exp(-S[i, k].item()) for k in P)
        zn = sum(math.exp(S[i, k].item()) for k in N)
        active = math.log(zp) + math.log(zn) + lam > 0
        for j in P:
            want = math.exp(-S[i, j].item()) / zp / m if active else 0.0
            assert -gS[i, j].item() == pytest.approx(want, abs=1e-12)
        for j in N:
            want = math.exp(S[i, j].item()) / zn / m if active else 0.0
            assert gS[i, j].item() == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------- 4. degenerate
DEFAULT_NAMES = ["contrastive", "lifted_structure", "generalized_lifted_structure", "npair",
                 "npair_ovo", "tuplet", "angular", "ddml"]
DEGENERATE = {
    "one_class": torch.zeros(6, dtype=torch.long),
    "singletons": torch.arange(6),
}


@pytest.mark.parametrize("name", DEFAULT_NAMES)
@pytest.mark.parametrize("kind", list(DEGENERATE))
def test_degenerate_batches_give_finite_zero(name, kind):
    y = DEGENERATE[kind]
    x = torch.randn(6, 4, requires_grad=True)
    loss = losses.build(name)
    value = loss(x, y)
    value.backward()
    assert torch.isfinite(x.grad).all()
    assert value.item() == 0.0
    assert torch.all(x.grad == 0)


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_no_shared_labels_with_references_is_zero(name):
    q = torch.randn(4, 3, requires_grad=True)
    r = torch.randn(5, 3, requires_grad=True)
    ql, rl = torch.zeros(4, dtype=torch.long), torch.ones(5, dtype=torch.long)
    value = losses.build(name)(q, ql, r, rl)
    value.backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(r.grad).all()
    assert value.item() == 0.0


# --------------------------------------------------------------------------- 5. half precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,kw,naive,nkw", CASES, ids=CASE_IDS)
def test_half_precision_is_finite(name, kw, naive, nkw, dtype):
    x, y = random_batch(3, B=16, D=8)
    xh = (5 * x).to(dtype).requires_grad_(True)
    value = losses.build(name, **kw)(xh, y)
    value.backward()
    assert torch.isfinite(value)
    if kw.get("normalize", True) or name in ("npair", "npair_ovo", "tuplet"):
        assert value.dtype == torch.float32     # S is promoted to float32
    assert torch.isfinite(xh.grad.float()).all()
    ref = naive((5 * x).to(dtype).double(), y, **nkw)
    assert value.item() == pytest.approx(ref, rel=2e-2, abs=2e-2)


def test_bad_options_raise():
    for name, kw in [("contrastive", {"form": "cosine"}), ("contrastive", {"reduction": "avg"}),
                     ("generalized_lifted_structure", {"form": "x"}), ("tuplet", {"form": "y"}),
                     ("angular", {"alpha": 95}), ("ddml", {"beta": 0}),
                     ("npair", {"l2_reg": -1})]:
        with pytest.raises(ValueError):
            losses.build(name, **kw)
