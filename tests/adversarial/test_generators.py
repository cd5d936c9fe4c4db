"""dmlkit.adversarial.generators: the official architecture, options, bad shapes."""

from __future__ import annotations

import pytest
import torch
from feature_blobs import one_thread  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv


def test_generator_default_architecture_is_official():
    gen = adv.HardNegativeGenerator(512)
    linears = [m for m in gen.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1536, 512), (512, 512)]
    assert isinstance(gen.net[1], torch.nn.ReLU)
    x = torch.randn(5, 512)
    assert gen(x, x, x).shape == (5, 512)


def test_generator_options():
    g = adv.HardNegativeGenerator(8, hidden=(16, 32), normalize_output=True)
    widths = [(m.in_features, m.out_features) for m in g.net if isinstance(m, torch.nn.Linear)]
    assert widths == [(24, 16), (16, 32), (32, 8)]
    x = torch.randn(7, 8)
    out = g(x, x, x)
    assert torch.allclose(out.norm(dim=1), torch.ones(7), atol=1e-6)
    r = adv.HardNegativeGenerator(8, out_activation="relu")(x, x, x)
    assert bool((r >= 0).all())
    sp = adv.SyntheticPositiveGenerator(8)
    assert sp(x, x, x).shape == (7, 8)


def test_generator_rejects_bad_shapes():
    g = adv.HardNegativeGenerator(8)
    with pytest.raises(ValueError, match=r"\(T, 8\)"):
        g(torch.randn(3, 8), torch.randn(3, 9), torch.randn(3, 8))
    with pytest.raises(ValueError, match="same number of rows"):
        g(torch.randn(3, 8), torch.randn(2, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="out_activation"):
        adv.HardNegativeGenerator(8, out_activation="tanh")
    with pytest.raises(ValueError, match="head kind"):
        adv.MetricHead(8, 4, kind="conv")
