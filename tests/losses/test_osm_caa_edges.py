"""dmlkit.losses.osm_caa beyond test_osm_caa.py: the tiled path (OSMCAATiles) against the naive
pair loop in value (in-batch and query-vs-reference, every attention) and in gradient (the
official detached weights: the loop with its weights frozen, differentiated numerically);
batches where a part has no weight; the settings without tiles; the constructor's checks and
the attention's dtype."""

import math

import pytest
import torch
from naive import naive_cos, naive_osm_caa, naive_sets
from naive.loss_testing import numeric_grad, rand_batch

from dmlkit import losses

DEFAULTS = {"sigma": 0.8, "alpha": 1.2, "lam": 0.5, "scale": 1.0, "classifier_weight": 1.0}
SETTINGS = [
    ("softmax", {}),
    ("gaussian", {"sigma": 0.5, "alpha": 1.0, "lam": 0.3, "scale": 8.0}),
    ("none", {"sigma": 1.1, "alpha": 1.5, "lam": 0.8, "classifier_weight": 0.0}),
    ("softmax", {"alpha": 0.9, "lam": 0.2, "scale": 4.0, "classifier_weight": 0.4}),
]


def osm(attention="softmax", num_classes=6, embedding_dim=3, **kw):
    torch.manual_seed(0)
    return losses.build("osm_caa", num_classes=num_classes, embedding_dim=embedding_dim,
                        attention=attention, **kw).double()


def naive_value(loss, x, y, r=None, ry=None, attention="softmax", **kw):
    p = DEFAULTS | kw
    return naive_osm_caa(x, y, loss.centres.detach(), p["sigma"], p["alpha"], p["lam"],
                         attention, p["scale"], r=r, ry=ry,
                         classifier_weight=p["classifier_weight"])


def naive_frozen(x0, y, r0, ry, centres, attention, **kw):
    """The loss with the OSM + CAA weights computed at (x0, r0) (constants): a function of
    (x, r) that takes the distances and the classifier term there; its gradient at (x0, r0) is
    the detached-weight gradient."""
    p = DEFAULTS | kw
    sigma, alpha, lam, scale = p["sigma"], p["alpha"], p["lam"], p["scale"]

    def prob(v, lab):
        z = [scale * c for c in naive_cos([v], centres)[0]]
        return math.exp(z[lab]) / sum(math.exp(t) for t in z)

    def att(v, lab):
        if attention == "none":
            return 1.0
        q = prob(v, lab)
        if attention == "softmax":
            return q
        return math.exp(-0.5 * ((q - 1.0) / 0.68) ** 2) / (0.68 * math.sqrt(2 * math.pi))

    in_batch = r0 is None
    S0 = naive_cos(x0, x0 if in_batch else r0)
    a = [att(v, int(lab)) for v, lab in zip(x0, y)]
    ar = a if in_batch else [att(v, int(lab)) for v, lab in zip(r0, ry)]
    P, N = naive_sets(y, None if in_batch else ry)
    wp = {(i, j): math.exp(-(2 - 2 * S0[i][j]) / sigma ** 2) * min(a[i], ar[j])
          for i in range(len(x0)) for j in P[i]}
    wn = {(i, j): max(alpha - math.sqrt(max(2 - 2 * S0[i][j], 0.0)), 0.0) * min(a[i], ar[j])
          for i in range(len(x0)) for j in N[i]}
    den_p, den_n = sum(wp.values()), sum(wn.values())

    def value(x, r=None):
        S = naive_cos(x, x if in_batch else r)
        num_p = sum(w * (2 - 2 * S[i][j]) for (i, j), w in wp.items())
        num_n = sum(w * max(alpha - math.sqrt(max(2 - 2 * S[i][j], 0.0)), 0.0) ** 2
                    for (i, j), w in wn.items())
        ce = -sum(math.log(prob(v, int(lab))) for v, lab in zip(x, y)) / len(x)
        return ((1 - lam) * (num_p / den_p if den_p > 0 else 0.0)
                + lam * (num_n / den_n if den_n > 0 else 0.0) + p["classifier_weight"] * ce)

    return value


@pytest.mark.parametrize("attention,kw", SETTINGS, ids=range(len(SETTINGS)))
def test_tiled_equals_the_naive_loop(attention, kw):
    loss = osm(attention, chunk_size=3, **kw)
    x, y = rand_batch(1, B=9, D=3, C=4)               # labels 0..4, one singleton
    r, ry = rand_batch(2, B=7, D=3, C=5)              # labels 0..5
    assert float(loss(x, y)) == pytest.approx(naive_value(loss, x, y, None, None, attention,
                                                          **kw), rel=1e-10, abs=1e-12)
    assert float(loss(x, y, r, ry)) == pytest.approx(naive_value(loss, x, y, r, ry, attention,
                                                                 **kw), rel=1e-10, abs=1e-12)
    C = loss.centres.detach()
    # in-batch gradient
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xx, y), xx)
    expected = numeric_grad(naive_frozen(x, y, None, None, C, attention, **kw), x)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-7)
    # query-vs-reference gradient, both inputs
    xx, rr = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    gx, gr = torch.autograd.grad(loss(xx, y, rr, ry), (xx, rr))
    frozen = naive_frozen(x, y, r, ry, C, attention, **kw)
    torch.testing.assert_close(gx, numeric_grad(lambda e: frozen(e, r), x), rtol=1e-5,
                               atol=1e-7)
    torch.testing.assert_close(gr, numeric_grad(lambda e: frozen(x, e), r), rtol=1e-5,
                               atol=1e-7)
    # the tiled path equals the dense one, centres' gradient included (the classifier term)
    dense = osm(attention, **kw)
    for args in ((x, y), (x, y, r, ry)):
        loss.zero_grad()
        dense.zero_grad()
        args = (args[0].clone().requires_grad_(True), *args[1:])
        loss(*args).backward()
        dense(*args).backward()
        if kw.get("classifier_weight", 1.0) == 0.0:
            assert loss.centres.grad is None and dense.centres.grad is None
        else:
            torch.testing.assert_close(loss.centres.grad, dense.centres.grad, rtol=1e-9,
                                       atol=1e-12)


def _layouts():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g)
    # two tight clusters far apart: every negative beyond alpha (no negative weight)
    far = torch.tensor([[1.0, 0.0, 0.0]] * 3 + [[-1.0, 0.0, 0.0]] * 3, dtype=torch.float64)
    far = far + 0.01 * torch.randn(6, 3, dtype=torch.float64, generator=g)
    return [("singletons", x, torch.arange(6)),                      # no positive
            ("one_class", x, torch.zeros(6, dtype=torch.long)),      # no negative
            ("far_negatives", far, torch.tensor([0, 0, 0, 1, 1, 1])),
            ("one_sample", x[:1], torch.tensor([2]))]


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("attention", ["softmax", "gaussian"])
@pytest.mark.parametrize("key", [k for k, *_ in _layouts()])
def test_a_part_without_weight_is_zero(key, attention, chunk_size):
    x, y = next((x, y) for k, x, y in _layouts() if k == key)
    kw = {"lam": 0.3, "classifier_weight": 0.5}
    loss = osm(attention, chunk_size=chunk_size, **kw)
    C = loss.centres.detach()
    xx = x.clone().requires_grad_(True)
    value = loss(xx, y)
    assert float(value) == pytest.approx(naive_value(loss, x, y, None, None, attention, **kw),
                                         rel=1e-10, abs=1e-12)
    (g,) = torch.autograd.grad(value, xx)
    assert torch.isfinite(g).all()
    expected = numeric_grad(naive_frozen(x, y, None, None, C, attention, **kw), x)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-7)
    if key == "far_negatives":    # the negative part is 0: the value is the positive part
        no_ce = osm(attention, chunk_size=chunk_size, lam=0.3, classifier_weight=0.0)
        pos_only = naive_value(no_ce, x, y, None, None, attention, lam=0.0,
                               classifier_weight=0.0)
        assert pos_only > 0
        assert float(no_ce(x, y)) == pytest.approx(0.7 * pos_only, rel=1e-10)


def test_settings_without_tiles():
    with pytest.raises(ValueError, match="with detach_weights=False the gradient flows through "
                                         "the weights and the attention into the centres; only "
                                         "the official detached form is tiled"):
        osm(detach_weights=False, chunk_size=4)
    with pytest.raises(ValueError, match=r"on raw embeddings the distances come from the "
                                         r"embeddings, not from S \(use normalize=True\)"):
        osm(normalize=False, chunk_size=4)
    with pytest.raises(ValueError, match="with detach_weights=False"):
        osm(detach_weights=False, normalize=False, chunk_size=4)
    assert osm().tiling_unsupported() is None


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_label_range_errors_name_the_labels(chunk_size):
    loss = osm(chunk_size=chunk_size)
    x, y = rand_batch(0, B=6, D=3, C=4)
    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 6\) \(num_classes\), got "
                                         r"range \[3, 7\]$"):
        loss(x, y + 3)
    top = torch.tensor([0, 1, 2, 3, 4, 6])          # the label num_classes itself
    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 6\) \(num_classes\), got "
                                         r"range \[0, 6\]$"):
        loss(x, top)
    top = top.clamp_max(5)                           # labels up to num_classes - 1: valid
    assert float(loss(x, top)) == pytest.approx(naive_value(loss, x, top), rel=1e-10)
    # called directly, the checks name the labels "labels" by default
    for method in (loss.class_logits, loss.sample_attention):
        with pytest.raises(ValueError, match=r"^labels must lie in \[0, 6\)"):
            method(x, top + 1)
    with pytest.raises(ValueError, match=r"^ref_labels must lie in \[0, 6\) \(num_classes\), "
                                         r"got range \[-5, -1\]$"):
        loss(x, y, x, -y - 1)
    with pytest.raises(ValueError, match=r"^embeddings have dimension 4 but osm_caa was built "
                                         r"with embedding_dim=3$"):
        loss(torch.randn(6, 4, dtype=torch.float64), y)


def test_constructor_checks():
    with pytest.raises(ValueError, match=r"osm_caa owns its class centres: pass num_classes and "
                                         r"embedding_dim, e.g. build\('osm_caa', "
                                         r"num_classes=100, embedding_dim=512\)"):
        losses.build("osm_caa", num_classes=4)
    with pytest.raises(ValueError, match="osm_caa owns its class centres"):
        losses.build("osm_caa", embedding_dim=4)
    for nc, dim in ((0, 3), (3, 0)):
        with pytest.raises(ValueError, match=rf"num_classes and embedding_dim must be >= 1, "
                                             rf"got {nc}, {dim}"):
            losses.build("osm_caa", num_classes=nc, embedding_dim=dim)
    with pytest.raises(ValueError, match=r"unknown attention 'cosine'; known: softmax, "
                                         r"gaussian, none"):
        losses.build("osm_caa", num_classes=3, embedding_dim=2, attention="cosine")
    for sigma, std in ((0.0, 0.68), (0.8, 0.0), (-1.0, 0.68)):
        with pytest.raises(ValueError, match=rf"sigma and gaussian_std must be > 0, got "
                                             rf"{sigma}, {std}"):
            losses.build("osm_caa", num_classes=3, embedding_dim=2, sigma=sigma,
                         gaussian_std=std)
    # the smallest valid sizes: one class (every pair positive), one dimension
    loss = osm(num_classes=1, embedding_dim=1)
    assert loss.centres.shape == (1, 1)
    x, y = torch.tensor([[1.0], [-2.0], [3.0]], dtype=torch.float64), torch.zeros(3).long()
    assert float(loss(x, y)) == pytest.approx(naive_value(loss, x, y), abs=1e-12)


def test_defaults_are_the_official_values():
    torch.manual_seed(0)
    loss = losses.build("osm_caa", num_classes=6, embedding_dim=3)
    assert (loss.sigma, loss.alpha, loss.lam, loss.attention, loss.detach_weights, loss.scale,
            loss.classifier_weight, loss.gaussian_mean, loss.gaussian_std, loss.normalize) == \
        (0.8, 1.2, 0.5, "softmax", True, 1.0, 1.0, 1.0, 0.68, True)
    assert loss.centres.shape == (6, 3)


def test_gaussian_mean_and_std_are_used():
    loss = osm("gaussian", gaussian_mean=0.4, gaussian_std=0.3)
    x, y = rand_batch(3, B=7, D=3, C=4)
    logits = torch.nn.functional.normalize(x, dim=1) @ \
        torch.nn.functional.normalize(loss.centres.detach(), dim=1).t()
    p = logits.softmax(1)[torch.arange(7), y]
    expected = torch.exp(-0.5 * ((p - 0.4) / 0.3) ** 2) / (0.3 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(loss.sample_attention(x, y), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("attention", ["softmax", "gaussian", "none"])
def test_attention_dtype_and_half_inputs(attention):
    loss = osm(attention)
    x, y = rand_batch(5, B=6, D=3, C=4)
    for dtype in (torch.float64, torch.float32):
        a = loss.sample_attention(x.to(dtype), y)
        assert a.dtype == dtype and a.shape == (6,)
    # half inputs: the logits in float32 from the rounded input (not in half)
    for half in (torch.float16, torch.bfloat16):
        xh = x.to(half)
        logits = loss.class_logits(xh, y)
        assert logits.dtype == torch.float32
        ref = torch.nn.functional.normalize(xh.double(), dim=1) @ \
            torch.nn.functional.normalize(loss.centres.detach(), dim=1).t()
        torch.testing.assert_close(logits.double(), ref, rtol=1e-6, atol=1e-6)


def test_centres_start_near_unit_norm():
    """randn / sqrt(embedding_dim): every centre has squared norm 1 in expectation."""
    torch.manual_seed(0)
    loss = losses.build("osm_caa", num_classes=64, embedding_dim=256)
    sq = loss.centres.detach().double().pow(2).sum(1)
    assert abs(float(sq.mean()) - 1.0) < 0.05          # std of the mean: sqrt(2/256)/8 = 0.011
    assert float(sq.min()) > 0.6 and float(sq.max()) < 1.4


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("attention", ["softmax", "gaussian"])
def test_float32_queries_with_float64_references(attention, chunk_size):
    """S takes the queries' dtype (the references are cast to it), and so does the loss: the
    attention of the float64 references is cast to float32 too."""
    loss = osm(attention, chunk_size=chunk_size).float()
    x, y = rand_batch(1, B=9, D=3, C=4)
    r, ry = rand_batch(2, B=7, D=3, C=5)
    value = loss(x.float(), y, r, ry)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(naive_value(loss, x.float(), y, r, ry, attention),
                                         rel=1e-5)
