"""Proxy losses (dmlkit.losses.proxy): Proxy-Anchor and ProxyNCA against naive loops over the
proxies / samples and against PML with the same proxies (value, gradient of the embeddings
and of the proxies), the sample-proxy weights of the unified view, the initialisation and
the errors."""

import math

import pytest
import torch
from naive.loss_testing import random_batch
from optional_pml import pml_losses

from dmlkit import losses, weights
from dmlkit.losses.base import make_batch

C, D = 6, 5


def build(name, **kw):
    torch.manual_seed(0)
    return losses.build(name, num_classes=C, embedding_dim=D, **kw).double()


def unit(v):
    return v / v.norm()


# ----------------------------------------------------------------------------- naive loops
def naive_proxy_anchor(x, y, P, alpha, delta):
    """Kim et al. 2020, eq. 4: a loop over the proxies, then over the samples."""
    pos_sum, neg_sum, with_pos = 0.0, 0.0, 0
    for c in range(len(P)):
        sp, sn = 0.0, 0.0
        for i in range(len(x)):
            s = float(unit(x[i]) @ unit(P[c]))
            if int(y[i]) == c:
                sp += math.exp(-alpha * (s - delta))
            else:
                sn += math.exp(alpha * (s + delta))
        with_pos += any(int(v) == c for v in y)
        pos_sum += math.log(1 + sp)
        neg_sum += math.log(1 + sn)
    return pos_sum / with_pos + neg_sum / len(P)


def naive_proxy_nca(x, y, P, scale, denominator, normalize=True):
    """Movshovitz-Attias et al. 2017: -log(e^{-d(x, p_y)} / sum_{c in D(x)} e^{-d(x, p_c)})."""
    total = 0.0
    for i in range(len(x)):
        xi = unit(x[i]) if normalize else x[i]
        d = [float(((xi - (unit(p) if normalize else p)) ** 2).sum()) for p in P]
        den = [c for c in range(len(P)) if denominator == "all" or c != int(y[i])]
        total += scale * d[int(y[i])] + math.log(sum(math.exp(-scale * d[c]) for c in den))
    return total / len(x)


CASES = [
    ("proxy_anchor", {}, lambda x, y, P: naive_proxy_anchor(x, y, P, 32.0, 0.1)),
    ("proxy_anchor", {"alpha": 8.0, "delta": 0.3},
     lambda x, y, P: naive_proxy_anchor(x, y, P, 8.0, 0.3)),
    ("proxy_nca", {}, lambda x, y, P: naive_proxy_nca(x, y, P, 1.0, "negatives")),
    ("proxy_nca", {"scale": 4.0, "denominator": "all"},
     lambda x, y, P: naive_proxy_nca(x, y, P, 4.0, "all")),
    ("proxy_nca", {"scale": 0.5, "normalize": False},
     lambda x, y, P: naive_proxy_nca(x, y, P, 0.5, "negatives", normalize=False)),
]


@pytest.mark.parametrize("name,kw,naive", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_equals_naive_loop_and_gradcheck(name, kw, naive):
    loss = build(name, **kw)
    for seed in range(3):
        x, y = random_batch(seed, B=10, D=D, n_classes=4)   # classes 4, 5 have no sample
        assert loss(x, y).item() == pytest.approx(naive(x, y, loss.proxies.detach()),
                                                  abs=1e-10, rel=1e-10)
    # gradcheck of the embeddings and the proxies together (S against the given proxies)
    x, y = random_batch(5, B=6, D=D, n_classes=3)
    proxy_labels = torch.arange(C)
    fn = lambda e, p: loss.compute(make_batch(e, y, p, proxy_labels,  # noqa: E731
                                              normalize=loss.normalize))
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True),
                                         loss.proxies.detach().clone().requires_grad_(True)),
                                    eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- PML
PML_CASES = [
    ("anchor-default", "proxy_anchor", {},
     lambda: pml_losses.ProxyAnchorLoss(C, D, margin=0.1, alpha=32)),
    ("anchor-a8-d0.3", "proxy_anchor", {"alpha": 8.0, "delta": 0.3},
     lambda: pml_losses.ProxyAnchorLoss(C, D, margin=0.3, alpha=8)),
    ("nca-all-s1", "proxy_nca", {"denominator": "all"}, lambda: pml_losses.ProxyNCALoss(C, D)),
    ("nca-all-s8", "proxy_nca", {"denominator": "all", "scale": 8.0},
     lambda: pml_losses.ProxyNCALoss(C, D, softmax_scale=8)),
]


@pytest.mark.parametrize("case,name,kw,theirs", PML_CASES, ids=[c[0] for c in PML_CASES])
def test_matches_pml_with_the_same_proxies(case, name, kw, theirs):
    ours, pml = build(name, **kw), theirs().double()
    with torch.no_grad():
        pml.proxies.copy_(ours.proxies)
    for seed in range(3):
        x, y = random_batch(seed, B=12, D=D, n_classes=5)
        va, gxa, gpa = _value_grads(ours, x, y)
        vb, gxb, gpb = _value_grads(pml, x, y)
        assert va > 0 and va == pytest.approx(vb, abs=1e-10, rel=1e-10)
        torch.testing.assert_close(gxa, gxb, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(gpa, gpb, atol=1e-10, rtol=1e-9)
        assert gpa.abs().max() > 0


def _value_grads(loss, x, y):
    x = x.clone().requires_grad_(True)
    value = loss(x, y)
    gx, gp = torch.autograd.grad(value, [x, loss.proxies])
    return value.item(), gx, gp


def test_nca_paper_and_pml_denominators_differ_by_the_positive_term():
    x, y = random_batch(1, B=10, D=D, n_classes=4)
    paper, pml = build("proxy_nca", scale=2.0), build("proxy_nca", scale=2.0, denominator="all")
    # L_all - L_paper = mean_i log(1 + e^{-d_y} / sum_{c != y} e^{-d_c})  > 0
    S, _ = weights.pair_weights(paper, x, y)
    logits = 4.0 * S
    lp = logits.gather(1, y[:, None])[:, 0]
    rest = torch.logsumexp(logits.scatter(1, y[:, None], float("-inf")), dim=1)
    expected = torch.log1p(torch.exp(lp - rest)).mean()
    assert (pml(x, y) - paper(x, y)).item() == pytest.approx(expected.item(), rel=1e-10)


# ----------------------------------------------------------------------------- weight view
@pytest.mark.parametrize("name,kw", [("proxy_anchor", {}), ("proxy_nca", {}),
                                     ("proxy_nca", {"denominator": "all"})])
def test_sample_proxy_weights(name, kw):
    loss = build(name, **kw)
    x, y = random_batch(2, B=10, D=D, n_classes=4)
    S, W = weights.pair_weights(loss, x, y)
    assert S.shape == W.shape == (10, C)
    assert (W >= 0).all() and (W > 0).sum() > 0.9 * W.numel()
    g_loss, _, diff = weights.theorem_3_1_check(loss, x, y)
    assert g_loss.abs().max() > 0 and diff < 1e-12
    if name == "proxy_anchor":
        _, Wc = weights.closed_form_weights(loss, x, y)
        torch.testing.assert_close(W, Wc, atol=1e-14, rtol=1e-10)


def test_weight_curves_have_their_closed_forms():
    loss = build("proxy_anchor", alpha=16.0, delta=0.1)
    grid = [-0.5, 0.0, 0.3, 0.8]
    # one query: a positive pair alone in its proxy column is a sigmoid of alpha (s - delta)
    curve = weights.weight_curve(loss, "positive", grid=grid)
    n_pos = len(curve.context_pos) + 1       # every positive column is its own proxy
    expected = [16.0 / n_pos / (1 + math.exp(16.0 * (s - 0.1))) for s in grid]
    assert curve.weight == pytest.approx(expected, rel=1e-10)
    curve = weights.weight_curve(loss, "negative", grid=grid)
    m = len(curve.context_pos) + len(curve.context_neg) + 1
    expected = [16.0 / m / (1 + math.exp(-16.0 * (s + 0.1))) for s in grid]
    assert curve.weight == pytest.approx(expected, rel=1e-10)
    nca = build("proxy_nca", scale=1.0, denominator="all")
    curve = weights.weight_curve(nca, "negative", grid=grid)
    ctx = [*curve.context_pos, *curve.context_neg]
    expected = [2 * math.exp(2 * s) / (sum(math.exp(2 * c) for c in ctx) + math.exp(2 * s))
                for s in grid]
    assert curve.weight == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------- setup, errors
def test_proxies_are_a_parameter_initialised_as_the_official_code():
    loss = losses.build("proxy_anchor", num_classes=40, embedding_dim=300)
    assert isinstance(loss.proxies, torch.nn.Parameter) and loss.proxies.shape == (40, 300)
    assert [n for n, _ in loss.named_parameters()] == ["proxies"]
    torch.manual_seed(3)
    built = losses.build("proxy_nca", num_classes=40, embedding_dim=300).proxies.detach()
    torch.manual_seed(3)
    official = torch.nn.init.kaiming_normal_(torch.empty(40, 300), mode="fan_out")
    assert torch.equal(built, official)
    assert built.std().item() == pytest.approx(math.sqrt(2 / 40), rel=0.05)


def test_half_precision_and_float32_proxies_with_float64_input():
    loss = losses.build("proxy_anchor", num_classes=C, embedding_dim=D)   # float32 proxies
    x, y = random_batch(0, B=8, D=D, n_classes=4)
    assert loss(x, y).dtype == torch.float64
    xh = x.half().requires_grad_(True)
    value = loss(xh, y)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(xh.grad.float()).all()
    assert loss.proxies.grad is not None and loss.proxies.grad.dtype == torch.float32


@pytest.mark.parametrize("name", ["proxy_anchor", "proxy_nca"])
def test_bad_input_is_named(name):
    loss = build(name)
    x, y = random_batch(0, B=8, D=D, n_classes=4)
    with pytest.raises(ValueError, match="num_classes"):
        loss(x, y + 3)
    with pytest.raises(ValueError, match="embedding_dim=5"):
        loss(x[:, :4], y)
    with pytest.raises(ValueError, match="references are its proxies"):
        loss(x, y, x, y)
    with pytest.raises(ValueError, match="num_classes and embedding_dim"):
        losses.build(name)
    with pytest.raises(ValueError, match=">= 1"):
        losses.build(name, num_classes=0, embedding_dim=3)
    with pytest.raises(ValueError, match=r"denominator|alpha"):
        losses.build(name, num_classes=3, embedding_dim=3,
                     **({"alpha": 0} if name == "proxy_anchor" else {"denominator": "x"}))
