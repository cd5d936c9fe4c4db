"""dmlkit.losses.contrastive beyond test_contrastive.py: the tiled path (its tile formulation)
of every form x reduction against the naive per-pair loop, in value and gradient, degenerate
batches in tiles, and the settings without a tile formulation."""

import pytest
import torch
from naive import naive_contrastive
from naive.loss_testing import random_batch, random_qref

from dmlkit import losses

SETTINGS = [
    {},
    {"margin": 0.8, "power": 1.0, "pos_margin": 0.2, "reduction": "sum"},
    {"margin": 1.3, "power": 3.0, "reduction": "mean_nonzero"},
    {"form": "similarity", "lam": 0.1},
    {"form": "similarity", "lam": 0.0, "pos_margin": 0.9, "reduction": "sum"},
    {"form": "similarity", "lam": 0.2, "reduction": "mean_nonzero"},
    {"margin": 0.9, "power": 2.0, "pos_margin": 0.3, "reduction": "mean"},
]


def _numeric_grad(f, x, h=1e-6):
    g = torch.zeros_like(x)
    for idx in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[idx] = h
        e = e.view_as(x)
        g.view(-1)[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("kw", SETTINGS, ids=range(len(SETTINGS)))
def test_tiled_equals_the_naive_loop(kw):
    loss = losses.build("contrastive", chunk_size=3, **kw)
    x, y = random_batch(1, B=9, D=3)
    q, ql, r, rl = random_qref(2, B=5, M=7, D=3)
    assert float(loss(x, y)) == pytest.approx(naive_contrastive(x, y, **kw), rel=1e-10,
                                              abs=1e-12)
    assert float(loss(q, ql, r, rl)) == pytest.approx(naive_contrastive(q, ql, r, rl, **kw),
                                                      rel=1e-10, abs=1e-12)
    # the gradient of the tiled path against central differences of the naive loop
    x, y = x[:7, :2].contiguous(), y[:7]
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xx, y), xx)
    expected = _numeric_grad(lambda e: naive_contrastive(e, y, **kw), x)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["distance", "similarity"])
def test_tiled_degenerate_batches_give_a_connected_zero(form):
    loss = losses.build("contrastive", form=form, chunk_size=2)
    for y in (torch.zeros(5, dtype=torch.long), torch.arange(5)):
        x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        value = loss(x, y)
        value.backward()
        assert value.item() == 0.0 and (x.grad == 0).all()


def test_distance_form_on_raw_embeddings_has_no_tiles():
    with pytest.raises(ValueError, match="reads the distances from the embeddings"):
        losses.build("contrastive", normalize=False, chunk_size=4)
    assert losses.build("contrastive", form="similarity", normalize=False).tiling_unsupported() \
        is None
    assert losses.build("contrastive").tiling_unsupported() is None
