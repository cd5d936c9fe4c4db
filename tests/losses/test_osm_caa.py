"""OSM + CAA weighted contrastive loss (dmlkit.losses.osm_caa): a naive loop over the pairs
with the attention of each sample, the closed forms of its weights, the gradient with detached
and flowing weights, gradcheck through the centres, the classifier term and its errors."""

import math

import pytest
import torch
from naive import naive_osm_caa
from naive.loss_testing import autograd_weights, rand_batch

from dmlkit import losses
from dmlkit.losses.base import make_batch


def osm(attention="softmax", **kw):
    torch.manual_seed(0)
    return losses.build("osm_caa", num_classes=6, embedding_dim=5, attention=attention,
                        **kw).double()


@pytest.mark.parametrize("attention", ["softmax", "gaussian", "none"])
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kw", [{}, {"sigma": 0.5, "alpha": 1.0, "lam": 0.3, "scale": 8.0,
                                 "classifier_weight": 0.0, "detach_weights": False}])
def test_osm_caa_matches_naive_loop(attention, seed, kw):
    loss = osm(attention, **kw)
    x, y = rand_batch(seed, B=14, D=5)
    r, ry = rand_batch(seed + 7, B=9, D=5)
    C = loss.centres.detach()
    p = {"sigma": 0.8, "alpha": 1.2, "lam": 0.5, "scale": 1.0, "classifier_weight": 1.0} | kw
    args = (x, y, C, p["sigma"], p["alpha"], p["lam"], attention, p["scale"])
    ref = naive_osm_caa(*args, classifier_weight=p["classifier_weight"])
    assert abs(loss(x, y).item() - ref) < 1e-10
    ref = naive_osm_caa(*args, r=r, ry=ry, classifier_weight=p["classifier_weight"])
    assert abs(loss(x, y, r, ry).item() - ref) < 1e-10


def test_osm_caa_weights_closed_form_fixed_tensors():
    loss = losses.build("osm_caa", num_classes=2, embedding_dim=2, attention="softmax")
    with torch.no_grad():
        loss.centres.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    th = torch.tensor([0.0, 0.5, 1.4, 2.0], dtype=torch.float64)
    x = torch.stack([th.cos(), th.sin()], 1)
    y = torch.tensor([0, 0, 1, 1])
    loss = loss.double()
    batch = make_batch(x, y)
    w_pos, w_neg = loss.pair_weights_osm_caa(batch)
    # a_i = softmax over (cos th, sin th)[y_i]
    cos, sin = x[:, 0], x[:, 1]
    a = torch.where(y == 0, cos.exp(), sin.exp()) / (cos.exp() + sin.exp())
    d = (x[:, None] - x[None]).norm(dim=2)
    A = torch.minimum(a[:, None], a[None])
    exp_pos = torch.exp(-d ** 2 / 0.64) * A * batch.pos
    exp_neg = (1.2 - d).clamp_min(0) * A * batch.neg
    torch.testing.assert_close(w_pos, exp_pos, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(w_neg, exp_neg, rtol=1e-9, atol=1e-12)
    assert w_neg[0, 3].item() == 0.0 and w_neg[0, 2].item() == 0.0   # d > 1.2: no weight
    assert w_neg[1, 2].item() > 0                                     # d(0.5, 1.4) < 1.2
    # Gaussian attention N(p; 1.0, 0.68)
    loss.attention = "gaussian"
    ga = torch.exp(-0.5 * ((a - 1.0) / 0.68) ** 2) / (0.68 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(loss.sample_attention(x, y), ga, rtol=1e-12, atol=0)
    w_pos, w_neg = loss.pair_weights_osm_caa(batch)
    GA = torch.minimum(ga[:, None], ga[None])
    torch.testing.assert_close(w_pos, torch.exp(-d ** 2 / 0.64) * GA * batch.pos,
                               rtol=1e-9, atol=1e-12)


def test_osm_caa_pair_weights_closed_form_with_detached_weights():
    loss = osm("gaussian", classifier_weight=0.0)
    x, y = rand_batch(2, B=12, D=5)
    batch, S, W = autograd_weights(loss, x, y)
    w_pos, w_neg = (w.detach() for w in loss.pair_weights_osm_caa(batch))
    d = (2 - 2 * S).clamp_min(0).add(1e-12).sqrt()
    h = (1.2 - d).clamp_min(0)
    closed = (0.5 * 2 * w_pos / w_pos.sum()) + (0.5 * 2 * w_neg * h / (d * w_neg.sum()))
    torch.testing.assert_close(W, closed, rtol=1e-10, atol=1e-14)
    assert (W >= 0).all() and (W[batch.neg] > 0).any()


@pytest.mark.parametrize("attention", ["softmax", "gaussian"])
def test_osm_caa_detach_weights_gradient(attention):
    x, y = rand_batch(3, B=12, D=5)
    loss_d = osm(attention, detach_weights=True, classifier_weight=0.0)
    loss_f = osm(attention, detach_weights=False, classifier_weight=0.0)
    w_pos, w_neg = loss_d.pair_weights_osm_caa(make_batch(x, y))
    w_pos, w_neg = w_pos.detach(), w_neg.detach()     # the weights as constants

    def const_weight_loss(xx):
        u = torch.nn.functional.normalize(xx, dim=1)
        d2 = (2 - 2 * u @ u.t()).clamp_min(0)
        h = (1.2 - (d2 + 1e-12).sqrt()).clamp_min(0)
        return (0.5 * (w_pos * d2).sum() / w_pos.sum() + 0.5 * (w_neg * h * h).sum() / w_neg.sum())

    x1, x2, x3 = (x.clone().requires_grad_() for _ in range(3))
    v1 = loss_d(x1, y)
    v2 = const_weight_loss(x2)
    v3 = loss_f(x3, y)
    assert abs(v1.item() - v2.item()) < 1e-12 and abs(v1.item() - v3.item()) < 1e-12
    v1.backward()
    v2.backward()
    v3.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-12)
    assert (x1.grad - x3.grad).abs().max() > 1e-4          # flowing weights change gradients
    assert loss_d.centres.grad is None                      # centres unused in backward
    assert loss_f.centres.grad is not None and loss_f.centres.grad.abs().sum() > 0


def test_osm_caa_gradcheck_and_classifier_term():
    loss = osm("softmax", scale=4.0, classifier_weight=0.7, detach_weights=False)
    x, y = rand_batch(5, B=8, D=5)
    r, ry = rand_batch(6, B=6, D=5)
    C = loss.centres.detach().clone()

    def f(xx, rr, cc):   # the loss with its centres replaced by cc
        return torch.func.functional_call(loss, {"centres": cc}, (xx, y, rr, ry))

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), r.requires_grad_(),
                                        C.clone().requires_grad_()), fast_mode=True)
    # regularizer = classifier_weight * cross-entropy of the logits scale * cos(f, c)
    batch = make_batch(x.detach(), y)
    logits = 4.0 * torch.nn.functional.normalize(x.detach(), dim=1) @ \
        torch.nn.functional.normalize(loss.centres.detach(), dim=1).t()
    ce = sum(-float(logits[i].log_softmax(0)[y[i]]) for i in range(8)) / 8
    assert abs(loss.regularizer(batch).item() - 0.7 * ce) < 1e-10


def test_osm_caa_errors():
    loss = osm()
    x, y = rand_batch(0, B=6, D=5)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        loss(x, y + 3)
    with pytest.raises(ValueError, match=r"ref_labels must lie in \[0, 6\)"):
        loss(x, y, x, -y - 1)
    with pytest.raises(ValueError, match="embedding_dim=5"):
        loss(torch.randn(6, 3), y)
    with pytest.raises(ValueError, match="num_classes and embedding_dim"):
        losses.build("osm_caa")
    with pytest.raises(ValueError, match="known: softmax, gaussian, none"):
        losses.build("osm_caa", num_classes=3, embedding_dim=2, attention="cosine")
