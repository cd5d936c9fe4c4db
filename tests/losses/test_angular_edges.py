"""dmlkit.losses.angular beyond test_angular.py: the loss dense and in tiles, in value and
gradient, against a per-pair / per-negative loop written here in torch (its values checked
against tests/naive's float64 loop), with and without normalisation, in-batch and
query-vs-reference, on degenerate batches (one positive pair, rows without negatives or
positives, one class); the defaults, the angle's bounds and the dense memory count of
chunk_size="auto"."""

import inspect
import math

import pytest
import torch
from conftest import value_and_grads
import torch.nn.functional as F
from naive import naive_angular
from naive.loss_testing import LABEL_LAYOUTS, random_qref

from dmlkit import losses
from dmlkit.losses import angular, tiling


def ref_angular(q, ql, r=None, rl=None, alpha=40.0, normalize=True):
    """Wang et al.'s N-pair form: mean over every positive pair (a, p) of
    log(1 + sum_n exp(4 t (f_a + f_p)^T f_n - 2 (1 + t) f_a^T f_p)), t = tan^2(alpha)."""
    in_batch = r is None
    Q = q / q.norm(dim=1, keepdim=True) if normalize else q
    R = Q if in_batch else (r / r.norm(dim=1, keepdim=True) if normalize else r)
    qlab = ql.tolist()
    rlab = qlab if in_batch else rl.tolist()
    t = math.tan(math.radians(alpha)) ** 2
    total = q.sum() * 0.0 + (0.0 if in_batch else r.sum() * 0.0)
    n_pos = 0
    for a in range(len(qlab)):
        negs = [n for n in range(len(rlab)) if rlab[n] != qlab[a]]
        for p in range(len(rlab)):
            if (in_batch and a == p) or rlab[p] != qlab[a]:
                continue
            n_pos += 1
            if not negs:
                continue                 # log(1 + 0): counts, contributes 0
            z = torch.stack([4 * t * ((Q[a] + R[p]) @ R[n]) - 2 * (1 + t) * (Q[a] @ R[p])
                             for n in negs])
            total = total + F.softplus(torch.logsumexp(z, 0))
    return total / n_pos if n_pos else total


IN_BATCH = {
    "mixed": LABEL_LAYOUTS["mixed"],
    "one_positive_pair": torch.tensor([0, 1, 0, 2]),
    "two_pairs": torch.tensor([0, 1, 0, 1]),
    "one_class": torch.zeros(4, dtype=torch.long),
    "singletons": torch.arange(4),
}
_q0, _ql0, _r0, _rl0 = random_qref(1, B=6, M=8, D=3)
QUERY_REF = {
    "random": (_ql0, _rl0),
    "one_positive_pair": (torch.tensor([0, 5]), torch.tensor([1, 0, 2])),
    "one_negative_pair": (torch.tensor([0]), torch.tensor([0, 1])),
    "rows_without_negatives": (torch.tensor([0, 1, 0]), torch.tensor([0, 0, 0])),
    "rows_without_negatives_and_others": (torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1, 1])),
    "no_positive": (torch.tensor([1, 2]), torch.tensor([0, 3, 0])),
    "one_reference": (torch.tensor([1, 2]), torch.tensor([1])),
}


def _emb(n, seed, scale=1.0, D=3):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, D, generator=g, dtype=torch.float64)


def _batches(scale=1.0):
    for key, y in IN_BATCH.items():
        yield key, (_emb(len(y), 0, scale), y)
    for key, (ql, rl) in QUERY_REF.items():
        yield key, (_emb(len(ql), 1, scale), ql, _emb(len(rl), 2, scale), rl)


def _value_and_grads(fn, args):
    return value_and_grads(fn, *args)


SETTINGS = [
    ({}, 1.0),
    ({"alpha": 36.0}, 1.0),
    ({"alpha": 55.0}, 1.0),
    ({"alpha": 20.0, "normalize": False}, 0.6),
    ({"alpha": 45.0, "normalize": False}, 0.3),
]


@pytest.mark.parametrize("kw,scale", SETTINGS, ids=range(len(SETTINGS)))
def test_dense_and_tiled_equal_the_loop(kw, scale):
    for key, args in _batches(scale):
        want_v, want_g = _value_and_grads(lambda *a: ref_angular(*a, **kw), args)
        assert want_v.item() == pytest.approx(naive_angular(*args, **kw), rel=1e-10,
                                              abs=1e-12)
        for chunk in (None, 2, 3):
            loss = losses.build("angular", chunk_size=chunk, **kw)
            v, g = _value_and_grads(loss, args)
            assert torch.isfinite(v)
            assert v.item() == pytest.approx(want_v.item(), rel=1e-10, abs=1e-12), (key, chunk)
            for a, b in zip(g, want_g):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_rows_of_very_different_norms_get_their_own_shift():
    """Un-normalised queries of norms 300 and 1 against unit-scale references: each row's
    log-sum-exp is shifted by its own maximum, so the small row does not underflow."""
    g = torch.Generator().manual_seed(9)
    q = torch.randn(3, 3, generator=g, dtype=torch.float64)
    q[0] *= 300.0 / q[0].norm()
    r = torch.randn(6, 3, generator=g, dtype=torch.float64)
    r = r / r.norm(dim=1, keepdim=True)
    ql, rl = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 2])
    args = (q, ql, r, rl)
    want_v, want_g = _value_and_grads(lambda *a: ref_angular(*a, normalize=False), args)
    for chunk in (None, 2):
        loss = losses.build("angular", normalize=False, chunk_size=chunk)
        v, g = _value_and_grads(loss, args)
        assert v.item() == pytest.approx(want_v.item(), rel=1e-10)
        for a, b in zip(g, want_g):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_float32_queries_against_float64_references():
    """The reference-reference similarities are computed in S's dtype (the queries')."""
    g = torch.Generator().manual_seed(10)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64)
    r = torch.randn(7, 4, generator=g, dtype=torch.float64)
    ql, rl = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 1, 2, 0, 1, 2, 3])
    for normalize in (True, False):
        want = ref_angular(q.float().double(), ql, r.float().double(), rl,
                           normalize=normalize).item()
        got = losses.build("angular", normalize=normalize)(q.float(), ql, r, rl)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(want, rel=1e-5)


def test_defaults_are_the_documented_ones():
    x, y = _emb(8, 6, scale=2.0), torch.tensor([0, 1, 0, 1, 2, 2, 3, 0])
    default = losses.build("angular")
    explicit = losses.build("angular", alpha=40.0, normalize=True)
    assert (default.alpha, default.normalize) == (explicit.alpha, explicit.normalize)
    assert default(x, y).item() == explicit(x, y).item()
    assert isinstance(losses.build("angular", alpha=36).alpha, float)


def test_hyperparameters_are_the_constructor_arguments():
    params = set(inspect.signature(angular.AngularLoss.__init__).parameters)
    assert set(angular.AngularLoss.hyperparameters) == params - {"self", "normalize"}
    assert "alpha=36.5" in angular.AngularLoss(alpha=36.5).extra_repr()


@pytest.mark.parametrize("alpha", [0, 90, -10.0, 95.0, 180])
def test_alpha_outside_0_90_is_refused(alpha):
    with pytest.raises(ValueError, match=r"^alpha must be an angle in degrees in \(0, 90\), "
                                         rf"got {alpha}$"):
        losses.build("angular", alpha=alpha)


@pytest.mark.parametrize("alpha", [1e-6, 0.5, 1.0, 89.0, 89.99])
def test_alpha_inside_0_90_is_taken(alpha):
    x, y = _emb(6, 7), torch.tensor([0, 0, 1, 1, 2, 2])
    loss = losses.build("angular", alpha=alpha, chunk_size=3)   # (dense: exact below ~75)
    assert loss.alpha == alpha
    assert loss(x, y).item() == pytest.approx(ref_angular(x, y, alpha=alpha).item(), rel=1e-9)


def test_auto_chunk_size_counts_the_dense_buffers_and_three_m_by_m():
    """The dense path holds DENSE_BUFFERS (B, M) buffers and 3 (M, M) ones (R or S, V, E):
    "auto" stays dense at exactly that many bytes, and tiles one byte below."""
    loss = losses.build("angular", chunk_size="auto")
    budget = tiling.auto_budget()
    try:
        for B, M in ((5, 7), (7, 5), (4, 4)):
            need = 8 * (tiling.DENSE_BUFFERS * B * M + 3 * M * M)     # float64 bytes
            tiling.set_auto_budget(need)
            assert loss.tiled_chunk(B, M, torch.float64) is None
            tiling.set_auto_budget(need - 1)
            assert loss.tiled_chunk(B, M, torch.float64) is not None
    finally:
        tiling.set_auto_budget(budget)
