"""Property tests of the tiled path (dmlkit.losses.tiling) with hypothesis: random batch
sizes, reference sets, dimensions, label patterns, chunk sizes and loss parameters; the tiled
loss equals the dense one in value and gradient, is finite, and its backward pass runs.
(D >= 2: with D = 1 every unit vector is +-1, the distance of a duplicate is sqrt(1e-12) and
its 1/d = 1e6 amplifies rounding in both paths; exact ties are tested in test_tiling.py.)"""

import pytest
import torch
from conftest import value_and_grads

from dmlkit import losses

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

unit = st.floats(0.0, 1.0)
LOSSES = {
    "multi_similarity": dict(alpha=st.floats(0.5, 4.0), beta=st.floats(1.0, 60.0),
                             lam=st.floats(-0.5, 0.9), epsilon=st.floats(0.0, 0.5)),
    "triplet": dict(margin=unit, mining=st.sampled_from(["all", "semihard", "hard",
                                                         "batch_hard"]),
                    form=st.sampled_from(["distance", "squared_distance", "similarity"]),
                    reduction=st.sampled_from(["mean_nonzero", "mean", "sum"])),
    "contrastive": dict(margin=st.floats(0.1, 2.0), form=st.sampled_from(["distance",
                                                                          "similarity"]),
                        power=st.sampled_from([1.0, 2.0]), lam=st.floats(-0.5, 0.9),
                        reduction=st.sampled_from(["mean", "sum", "mean_nonzero"])),
    "binomial_deviance": dict(alpha=st.floats(0.5, 4.0), beta=st.floats(1.0, 60.0),
                              lam=st.floats(-0.5, 0.9)),
    "lifted_structure": dict(margin=st.floats(0.0, 2.0)),
    "generalized_lifted_structure": dict(lam=st.floats(0.0, 2.0),
                                         form=st.sampled_from(["similarity", "distance"])),
    "raw+semihard": dict(margin=unit),
    "vthm": dict(epsilon=unit),
    "binomial+vthm": dict(epsilon=unit),
    "raw": dict(lam=st.floats(-0.5, 0.9)),
    "ddml": dict(tau=st.floats(0.5, 3.0), beta=st.floats(0.5, 10.0)),
    "tuplet": dict(form=st.sampled_from(["softplus", "hinge"]), margin=unit),
    "npair": dict(normalize=st.booleans(), l2_reg=st.floats(0.0, 0.1)),
    "npair_ovo": dict(normalize=st.booleans(), l2_reg=st.floats(0.0, 0.1)),
    "angular": dict(alpha=st.floats(10.0, 50.0)),
}


@st.composite
def problems(draw):
    name = draw(st.sampled_from(sorted(LOSSES)))
    params = {k: draw(v) for k, v in LOSSES[name].items()}
    B = draw(st.integers(1, 12))
    M = draw(st.one_of(st.none(), st.integers(1, 12)))
    D = draw(st.integers(2, 5))
    classes = draw(st.integers(1, 12))
    chunk = draw(st.integers(1, 13))
    seed = draw(st.integers(0, 2 ** 16))
    return name, params, B, M, D, classes, chunk, seed


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(problems())
def test_tiled_equals_dense(problem):
    name, params, B, M, D, classes, chunk, seed = problem
    g = torch.Generator().manual_seed(seed)
    args = [torch.randn(B, D, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (B,), generator=g)]
    if M is not None:
        args += [torch.randn(M, D, generator=g, dtype=torch.float64),
                 torch.randint(0, classes, (M,), generator=g)]
    v_dense, g_dense = value_and_grads(losses.build(name, **params), *args)
    v, grads = value_and_grads(losses.build(name, chunk_size=chunk, **params), *args)
    assert torch.isfinite(v) and all(torch.isfinite(x).all() for x in grads)
    scale = max(1.0, float(v_dense.abs()))
    assert abs(float(v - v_dense)) <= 1e-9 * scale
    for a, b in zip(grads, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, float(b.abs().max())))
