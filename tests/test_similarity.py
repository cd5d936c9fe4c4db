"""Similarity matrices, pair masks and distances (dmlkit.similarity): the exact unit diagonal
and its gradient, the one-buffer distance, the byte-view ``mask_any``, against plain torch."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dmlkit.similarity import (
    distances_from_similarity,
    mask_any,
    pair_masks,
    similarity_matrix,
    squared_distances,
)


def test_mask_any():
    m = torch.zeros(4, 6, dtype=torch.bool)
    assert not mask_any(m) and not mask_any(m[:, :0])
    m[3, 5] = True
    assert mask_any(m) and mask_any(m.t()) and not mask_any(m[:3])


def test_distance_from_similarity_values_and_gradient():
    S = torch.tensor([[0.3, -0.9, 0.999], [1.0, 1.0 + 1e-12, -1.0]], dtype=torch.float64,
                     requires_grad=True)
    d = distances_from_similarity(S)
    plain = (2.0 - 2.0 * S).clamp_min(0.0).add(1e-12).sqrt()
    assert torch.equal(d, plain)
    w = torch.arange(1.0, 7.0, dtype=torch.float64).view(2, 3)
    (g,) = torch.autograd.grad((d * w).sum(), S)
    (g_plain,) = torch.autograd.grad((plain * w).sum(), S)
    assert g[1, 1] == 0.0                          # s > 1: the clamp's zero gradient
    assert torch.allclose(g[0], g_plain[0], rtol=1e-12)
    inner = torch.tensor([[0.2, -0.7], [0.5, 0.95]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(distances_from_similarity, (inner,))


def test_unit_diagonal_is_exact_and_keeps_the_gradient():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, 5, dtype=torch.float64, generator=g, requires_grad=True)
    S = similarity_matrix(x)
    assert torch.equal(torch.diagonal(S), torch.ones(9, dtype=torch.float64))
    w = torch.randn(9, 9, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((S * w).sum(), x)
    q = F.normalize(x, dim=1)
    (plain,) = torch.autograd.grad((q @ q.t() * w).sum(), x)
    assert torch.allclose(grad, plain, atol=1e-12)
    assert not torch.equal(torch.diagonal(similarity_matrix(x, normalize=False)),
                           torch.ones(9, dtype=torch.float64))


def test_similarity_matrix_query_vs_reference_and_half_precision():
    g = torch.Generator().manual_seed(2)
    q, r = torch.randn(4, 3, generator=g), torch.randn(6, 3, generator=g)
    S = similarity_matrix(q, r)
    assert S.shape == (4, 6)
    torch.testing.assert_close(S, F.normalize(q, dim=1) @ F.normalize(r, dim=1).t())
    torch.testing.assert_close(similarity_matrix(q, r, normalize=False), q @ r.t())
    for dtype in (torch.float16, torch.bfloat16):    # float32 on the rounded input
        qh, rh = q.to(dtype), r.to(dtype)
        assert torch.equal(similarity_matrix(qh, rh), similarity_matrix(qh.float(), rh.float()))
        assert torch.equal(similarity_matrix(qh), similarity_matrix(qh.float()))


def test_autocast_leaves_the_gram_matrix_in_float32():
    """The precision policy (docs/precision.md): under autocast the similarity matrix is
    still the float32 product, value and gradient bit for bit (its backward, outside the
    autocast block as with a GradScaler, once failed on the dtypes of a half Gram)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 6, generator=g)
    r = torch.randn(5, 6, generator=g)
    w = torch.randn(12, 12, generator=g)
    x32 = x.clone().requires_grad_(True)
    S32 = similarity_matrix(x32)
    (S32 * w).sum().backward()
    for dtype in (torch.bfloat16, torch.float16):
        xh = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=dtype):
            S = similarity_matrix(xh)
            Sr = similarity_matrix(x, r)
            D2 = squared_distances(x, r)
        assert S.dtype == Sr.dtype == D2.dtype == torch.float32
        assert torch.equal(S, S32.detach()) and torch.equal(Sr, similarity_matrix(x, r))
        assert torch.equal(D2, squared_distances(x, r))
        (S * w).sum().backward()
        assert xh.grad.dtype == torch.float32 and torch.equal(xh.grad, x32.grad)


def test_pair_masks_in_batch_and_query_vs_reference():
    pos, neg = pair_masks(torch.tensor([0, 1, 0]))
    assert pos.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
    assert neg.tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    pos, neg = pair_masks(torch.tensor([0, 1]), torch.tensor([1, 1, 0]))
    assert pos.tolist() == [[False, False, True], [True, True, False]]
    assert torch.equal(neg, ~pos)


def test_pair_masks_equal_the_loop():
    # positive: same label, not the item itself (in-batch); negative: another label; the
    # diagonal of the in-batch form is neither
    g = torch.Generator().manual_seed(2)
    y, ry = torch.randint(0, 4, (11,), generator=g), torch.randint(0, 4, (7,), generator=g)
    for lab, ref in ((y, None), (y, ry)):
        pos, neg = pair_masks(lab, ref)
        r = lab if ref is None else ref
        for i in range(len(lab)):
            for j in range(len(r)):
                self_pair = ref is None and i == j
                assert bool(pos[i, j]) == (lab[i] == r[j] and not self_pair)
                assert bool(neg[i, j]) == (lab[i] != r[j])


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(0, 3), min_size=1, max_size=9), data=st.data())
def test_pair_masks_properties(labels, data):
    y = torch.tensor(labels)
    pos, neg = pair_masks(y)
    eye = torch.eye(len(y), dtype=torch.bool)
    # a partition of the pairs: positive, negative or the item itself, never two of them
    assert not (pos & neg).any() and not (pos & eye).any() and not (neg & eye).any()
    assert (pos | neg | eye).all()
    assert torch.equal(pos, pos.T) and torch.equal(neg, neg.T)
    # relabelling by any injective map or reordering the items moves the masks along
    perm = torch.tensor(data.draw(st.permutations(range(len(y)))))
    p2, n2 = pair_masks(7 * y[perm] + 3)
    assert torch.equal(p2, pos[perm][:, perm]) and torch.equal(n2, neg[perm][:, perm])
    # the query-vs-reference form against itself is the in-batch form plus the diagonal
    pr, nr = pair_masks(y, y.clone())
    assert torch.equal(pr, pos | eye) and torch.equal(nr, neg)


def test_squared_distances_equal_the_loop():
    g = torch.Generator().manual_seed(3)
    q, r = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g,
                                                                           dtype=torch.float64)
    expected = torch.tensor([[float(((a - b) ** 2).sum()) for b in r] for a in q],
                            dtype=torch.float64)
    torch.testing.assert_close(squared_distances(q, r), expected, rtol=1e-12, atol=1e-12)
    assert (squared_distances(q).diagonal().abs() < 1e-12).all()
