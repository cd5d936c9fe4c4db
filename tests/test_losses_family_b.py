"""Weighting x mining losses (binomial, RAW / multi-similarity and the Table-1 ablations) and
OSM + CAA: naive float64 loops, PML's MultiSimilarityLoss + MultiSimilarityMiner, closed-form
pair weights, gradcheck, degenerate batches and half precision."""

import dataclasses
import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from dmlkit import losses, miners
from dmlkit.losses.base import make_batch

TABLE1 = ["binomial", "raw", "vthm", "binomial+vthm", "raw+distance_weighted", "raw+semihard",
          "raw+vthm"]


# ----------------------------------------------------------------------------- naive helpers
def rand_batch(seed, B=14, D=6, C=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    y = torch.randint(0, C, (B,), generator=g)
    y[-1] = C          # one singleton class: an anchor without positives
    return x, y


def naive_cos(x, r):
    def unit(v):
        n = math.sqrt(sum(float(t) ** 2 for t in v))
        return [float(t) / n for t in v]
    xs, rs = [unit(v) for v in x], [unit(v) for v in r]
    return [[sum(a * b for a, b in zip(u, w)) for w in rs] for u in xs]


def naive_sets(y, ry=None):
    in_batch = ry is None
    ry = y if in_batch else ry
    P, N = [], []
    for i in range(len(y)):
        P.append([j for j in range(len(ry))
                  if int(ry[j]) == int(y[i]) and not (in_batch and i == j)])
        N.append([j for j in range(len(ry)) if int(ry[j]) != int(y[i])])
    return P, N


def naive_vthm_sets(S, P, N, eps):
    Pk, Nk = [], []
    for i in range(len(S)):
        if not P[i] or not N[i]:
            Pk.append([])
            Nk.append([])
            continue
        hp = min(S[i][j] for j in P[i])
        hn = max(S[i][j] for j in N[i])
        Pk.append([j for j in P[i] if S[i][j] < hn + eps])
        Nk.append([j for j in N[i] if S[i][j] > hp - eps])
    return Pk, Nk


def naive_semihard_sets(S, P, N, margin):
    Pk, Nk = [], []
    for i in range(len(S)):
        trip = [(p, n) for p in P[i] for n in N[i] if S[i][p] - margin < S[i][n] < S[i][p]]
        Pk.append(sorted({p for p, _ in trip}))
        Nk.append(sorted({n for _, n in trip}))
    return Pk, Nk


def softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


# an anchor counts only with a kept positive AND a kept negative (official MS code); the
# others give 0 and still count in the mean


def naive_binomial(S, Pk, Nk, alpha, beta, lam):
    out = []
    for i in range(len(S)):
        if not Pk[i] or not Nk[i]:
            out.append(0.0)
            continue
        out.append(sum(softplus(-alpha * (S[i][j] - lam)) for j in Pk[i]) / len(Pk[i])
                   + sum(softplus(beta * (S[i][j] - lam)) for j in Nk[i]) / len(Nk[i]))
    return out


def naive_raw(S, Pk, Nk, alpha, beta, lam):
    return [math.log1p(sum(math.exp(-alpha * (S[i][j] - lam)) for j in Pk[i])) / alpha
            + math.log1p(sum(math.exp(beta * (S[i][j] - lam)) for j in Nk[i])) / beta
            if Pk[i] and Nk[i] else 0.0 for i in range(len(S))]


def naive_uniform(S, Pk, Nk):
    return [sum(1 - S[i][j] for j in Pk[i]) + sum(1 + S[i][j] for j in Nk[i])
            if Pk[i] and Nk[i] else 0.0 for i in range(len(S))]


def reduce(per_anchor, reduction="mean"):
    return sum(per_anchor) / (len(per_anchor) if reduction == "mean" else 1)


def masks_to_sets(pk, nk):
    return ([torch.nonzero(r).flatten().tolist() for r in pk],
            [torch.nonzero(r).flatten().tolist() for r in nk])


# ----------------------------------------------------------------------- values vs naive loops
PARAMS = [{"alpha": 2.0, "beta": 50.0, "lam": 0.5}, {"alpha": 1.0, "beta": 10.0, "lam": 0.3},
          {"alpha": 3.0, "beta": 40.0, "lam": 0.7}]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p", PARAMS)
@pytest.mark.parametrize("query_ref", [False, True])
def test_values_match_naive_loops(seed, p, query_ref):
    x, y = rand_batch(seed, B=13 if query_ref else 15)
    if query_ref:
        r, ry = rand_batch(seed + 100, B=11)
        args, S, (P, N) = (x, y, r, ry), naive_cos(x, r), naive_sets(y, ry)
    else:
        args, S, (P, N) = (x, y), naive_cos(x, x), naive_sets(y)
    a, b, lam = p["alpha"], p["beta"], p["lam"]
    eps, margin = 0.15, 0.3
    Pv, Nv = naive_vthm_sets(S, P, N, eps)
    Ps, Ns = naive_semihard_sets(S, P, N, margin)
    expected = {
        ("binomial", ()): reduce(naive_binomial(S, P, N, a, b, lam)),
        ("binomial_deviance", (("reduction", "sum"),)):
            reduce(naive_binomial(S, P, N, a, b, lam), "sum"),
        ("raw", ()): reduce(naive_raw(S, P, N, a, b, lam)),
        ("multi_similarity", (("epsilon", eps),)): reduce(naive_raw(S, Pv, Nv, a, b, lam)),
        ("raw+vthm", (("epsilon", eps), ("reduction", "sum"))):
            reduce(naive_raw(S, Pv, Nv, a, b, lam), "sum"),
        ("binomial+vthm", (("epsilon", eps),)): reduce(naive_binomial(S, Pv, Nv, a, b, lam)),
        ("raw+semihard", (("margin", margin),)): reduce(naive_raw(S, Ps, Ns, a, b, lam)),
    }
    for (name, extra), value in expected.items():
        got = losses.build(name, **p, **dict(extra))(*args)
        assert got.dtype == torch.float64
        assert abs(float(got) - value) < 1e-10 * max(1.0, abs(value)), name
    got = losses.build("vthm", epsilon=eps)(*args)
    assert abs(float(got) - reduce(naive_uniform(S, Pv, Nv))) < 1e-10
    # the generic class with the mining's parameters
    got = losses.build("weighted_pair", weighting="binomial", mining="semihard", margin=margin,
                       **p)(*args)
    assert abs(float(got) - reduce(naive_binomial(S, Ps, Ns, a, b, lam))) < 1e-10


@pytest.mark.parametrize("seed", range(3))
def test_raw_distance_weighted_matches_naive_on_sampled_pairs(seed):
    x, y = rand_batch(seed, B=16, D=8)
    S, (P, N) = naive_cos(x, x), naive_sets(y)
    batch = make_batch(x, y)
    pk, nk = miners.distance_weighted(batch.S, batch.pos, batch.neg, dim=8, num_negatives=2,
                                      generator=torch.Generator().manual_seed(seed))
    Pk, Nk = masks_to_sets(pk, nk)
    assert Pk == P and all(len(n) == min(2, len(m)) for n, m in zip(Nk, N))
    loss = losses.build("raw+distance_weighted", seed=seed, num_negatives=2)
    got = loss(x, y)
    assert abs(float(got) - reduce(naive_raw(S, Pk, Nk, 2.0, 50.0, 0.5))) < 1e-10
    again = losses.build("raw+distance_weighted", seed=seed, num_negatives=2)(x, y)
    assert float(again) == float(got)                     # reproducible with the seed


# ----------------------------------------------------------------------- PML equality
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha,beta,lam,epsilon", [(2, 50, 0.5, 0.1), (1, 10, 0.3, 0.3),
                                                    (3, 40, 0.7, 0.05), (2, 40, 0.5, 0.2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multi_similarity_equals_pml(seed, alpha, beta, lam, epsilon, dtype):
    x, y = rand_batch(seed, B=16, D=8, dtype=dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = losses.build("multi_similarity", alpha=alpha, beta=beta, lam=lam, epsilon=epsilon)
    v1 = ours(x1, y)
    miner = pml_miners.MultiSimilarityMiner(epsilon=epsilon)
    ref = pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=lam)
    v2 = ref(x2, y, miner(x2, y))
    v1.backward()
    v2.backward()
    assert float(v1.detach()) > 0
    assert abs(v1.item() - v2.item()) < 1e-6
    assert (x1.grad - x2.grad).abs().max() < 1e-6
    if dtype == torch.float64:
        assert abs(v1.item() - v2.item()) < 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_multi_similarity_equals_pml_query_vs_reference(seed):
    x, y = rand_batch(seed, B=10, D=8)
    r, ry = rand_batch(seed + 50, B=14, D=8)
    x1, r1 = x.clone().requires_grad_(), r.clone().requires_grad_()
    x2, r2 = x.clone().requires_grad_(), r.clone().requires_grad_()
    v1 = losses.build("raw+vthm")(x1, y, r1, ry)
    miner = pml_miners.MultiSimilarityMiner(epsilon=0.1)
    v2 = pml_losses.MultiSimilarityLoss()(x2, y, miner(x2, y, r2, ry), r2, ry)
    (v1 + 0).backward()
    v2.backward()
    assert abs(v1.item() - v2.item()) < 1e-12
    assert (x1.grad - x2.grad).abs().max() < 1e-12 and (r1.grad - r2.grad).abs().max() < 1e-12


def test_multi_similarity_documented_pml_exception():
    # PML returns 0 when the miner keeps <= 1 positive and <= 1 negative pair in the batch;
    # dmlkit returns the formula's value (one query, one positive, one negative reference)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    r = torch.tensor([[0.8, 0.6], [0.75, 0.66]], dtype=torch.float64)
    y, ry = torch.tensor([0]), torch.tensor([0, 1])
    mined = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y, r, ry)
    assert [len(t) for t in mined] == [1, 1, 1, 1]
    assert float(pml_losses.MultiSimilarityLoss()(x, y, mined, r, ry)) == 0.0
    S = naive_cos(x, r)
    expected = naive_raw(S, [[0]], [[1]], 2.0, 50.0, 0.5)[0]
    assert abs(float(losses.build("multi_similarity")(x, y, r, ry)) - expected) < 1e-12
    assert expected > 0.1


# ----------------------------------------------------------------------- closed-form weights
def autograd_weights(loss, x, y):
    batch = make_batch(x, y)
    S = batch.S.detach().clone().requires_grad_()
    value = loss.compute(dataclasses.replace(batch, S=S))
    (g,) = torch.autograd.grad(value, S)
    W = torch.where(batch.pos, -g, torch.where(batch.neg, g, torch.zeros_like(g)))
    return batch, S.detach(), W


@pytest.mark.parametrize("seed", range(2))
def test_pair_weights_are_the_closed_forms(seed):
    x, y = rand_batch(seed, B=16)
    a, b, lam, m = 2.0, 50.0, 0.5, 16
    # binomial deviance, eq. 13-14 (reduction "sum": exactly; "mean": / m)
    for reduction, const in (("sum", 1.0), ("mean", 1.0 / m)):
        batch, S, W = autograd_weights(losses.build("binomial", reduction=reduction), x, y)
        npos = batch.pos.sum(1, keepdim=True).clamp_min(1)
        nneg = batch.neg.sum(1, keepdim=True).clamp_min(1)
        wp = a * torch.exp(a * (lam - S)) / (1 + torch.exp(a * (lam - S))) / npos
        wn = b * torch.exp(b * (S - lam)) / (1 + torch.exp(b * (S - lam))) / nneg
        closed = torch.where(batch.pos, wp, torch.where(batch.neg, wn, torch.zeros_like(S)))
        valid = (batch.pos.any(1) & batch.neg.any(1))[:, None]   # the singleton anchor: 0
        assert not valid.all()
        torch.testing.assert_close(W, const * closed * valid, rtol=1e-10, atol=1e-14)
    # multi-similarity, eq. 15-16 on VTHM pairs, / m
    loss = losses.build("multi_similarity")
    batch, S, W = autograd_weights(loss, x, y)
    pk, nk = miners.vthm(S, batch.pos, batch.neg, 0.1)
    Pk, Nk = masks_to_sets(pk, nk)
    s = S.tolist()
    closed = [[0.0] * m for _ in range(m)]
    for i in range(m):
        for j in Pk[i]:
            den = sum(math.exp(a * (s[i][j] - s[i][k])) for k in Pk[i])
            closed[i][j] = 1 / (den + math.exp(a * (s[i][j] - lam)))
        for j in Nk[i]:
            den = sum(math.exp(-b * (s[i][j] - s[i][k])) for k in Nk[i])
            closed[i][j] = 1 / (den + math.exp(-b * (s[i][j] - lam)))
    torch.testing.assert_close(W, torch.tensor(closed, dtype=torch.float64) / m,
                               rtol=1e-10, atol=1e-14)
    assert (W[~(pk | nk)] == 0).all()
    # VTHM alone: equal weights 1/m on the kept pairs
    batch, S, W = autograd_weights(losses.build("vthm"), x, y)
    torch.testing.assert_close(W, (pk | nk).double() / m, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("name,kw", [
    ("binomial", {}), ("raw", {}), ("multi_similarity", {"beta": 10.0}), ("vthm", {}),
    ("binomial+vthm", {"beta": 10.0}), ("raw+semihard", {"margin": 0.3}),
    ("raw+distance_weighted", {"seed": 3}),
])
def test_gradcheck(name, kw):
    x, y = rand_batch(11, B=10, D=4)
    r, ry = rand_batch(12, B=7, D=4)

    def f(xx, rr):   # a fresh loss per call: the distance-weighted draws repeat with the seed
        loss = losses.build(name, **kw)
        return loss(xx, y) + loss(xx, y, rr, ry)

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), r.requires_grad_()),
                                    fast_mode=name == "raw+distance_weighted")


# ----------------------------------------------------------------------- OSM + CAA
def naive_osm_caa(x, y, centres, sigma, alpha, lam, attention, scale=1.0, r=None, ry=None,
                  mu=1.0, std=0.68, classifier_weight=1.0):
    def prob(v, lab):
        z = [scale * c for c in naive_cos([v], centres)[0]]
        return math.exp(z[lab]) / sum(math.exp(t) for t in z)

    def att(v, lab):
        p = prob(v, lab)
        if attention == "softmax":
            return p
        if attention == "none":
            return 1.0
        return math.exp(-0.5 * ((p - mu) / std) ** 2) / (std * math.sqrt(2 * math.pi))

    in_batch = r is None
    r, ry = (x, y) if in_batch else (r, ry)
    S = naive_cos(x, r)
    a = [att(v, int(lab)) for v, lab in zip(x, y)]
    ar = a if in_batch else [att(v, int(lab)) for v, lab in zip(r, ry)]
    P, N = naive_sets(y, None if in_batch else ry)
    num_p = den_p = num_n = den_n = 0.0
    for i in range(len(x)):
        for j in P[i]:
            d2 = 2 - 2 * S[i][j]
            w = math.exp(-d2 / sigma ** 2) * min(a[i], ar[j])
            num_p += w * d2
            den_p += w
        for j in N[i]:
            h = max(alpha - math.sqrt(max(2 - 2 * S[i][j], 0.0)), 0.0)
            w = h * min(a[i], ar[j])
            num_n += w * h * h
            den_n += w
    ce = -sum(math.log(prob(v, int(lab))) for v, lab in zip(x, y)) / len(x)
    return ((1 - lam) * (num_p / den_p if den_p > 0 else 0.0)
            + lam * (num_n / den_n if den_n > 0 else 0.0) + classifier_weight * ce)


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


# ----------------------------------------------------------------------- degenerate & precision
ALL_DEFAULT = [*TABLE1, "multi_similarity"]


def all_losses():
    out = [(n, losses.build(n)) for n in ALL_DEFAULT]
    out.append(("osm_caa", osm(classifier_weight=0.0)))
    return out


@pytest.mark.parametrize("case", ["one_class", "singletons", "single_sample", "pair_diff"])
def test_degenerate_batches_finite(case):
    g = torch.Generator().manual_seed(0)
    labels = {"one_class": [1] * 6, "singletons": [0, 1, 2, 3, 4, 5], "single_sample": [2],
              "pair_diff": [0, 1]}[case]
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 5, generator=g, dtype=torch.float64)
    for name, loss in all_losses():
        xx = x.clone().requires_grad_()
        v = loss(xx, y)
        v.backward()
        assert v.dim() == 0 and torch.isfinite(v), (name, case)
        assert torch.isfinite(xx.grad).all(), (name, case)
        # no anchor has both a positive and a negative: every weighting x mining loss is 0
        if name != "osm_caa" or case == "single_sample":
            assert v.item() == 0.0 and (xx.grad == 0).all(), (name, case)
        elif case != "pair_diff":        # (the pair's distance may exceed alpha: then 0)
            assert v.item() > 0, (name, case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("beta", [50.0, 100.0])
def test_half_precision_finite(dtype, beta):
    x, y = rand_batch(1, B=16, D=8, dtype=torch.float32)
    x[1] = x[0] * 1.01       # a near-duplicate pair: s ~ 1, exp(beta * 0.5) would overflow fp16
    y[1] = (y[0] + 1) % 4
    xh = x.to(dtype)
    for name in ["binomial", "raw", "multi_similarity", "binomial+vthm", "raw+semihard"]:
        loss = losses.build(name, beta=beta, lam=0.0)
        xx = xh.clone().requires_grad_()
        v = loss(xx, y)
        v.backward()
        assert v.dtype == torch.float32 and torch.isfinite(v), name
        assert torch.isfinite(xx.grad).all() and xx.grad.abs().sum() > 0, name
        ref = loss(xh.float(), y)        # same rounded inputs in float32
        assert abs(v.item() - ref.item()) < 1e-4 * max(1.0, ref.item()), name
    loss = losses.build("osm_caa", num_classes=5, embedding_dim=8)
    xx = xh.clone().requires_grad_()
    v = loss(xx, y)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(xx.grad).all()


# ----------------------------------------------------------------------- registry
def test_table1_names_build_and_are_finite():
    x, y = rand_batch(0, B=16, D=8, dtype=torch.float32)
    values = {}
    for name in TABLE1:
        values[name] = float(losses.build(name)(x, y))
        assert math.isfinite(values[name]) and values[name] > 0, name
    assert isinstance(losses.build("RAW+VTHM"), losses.get("multi_similarity"))
    assert isinstance(losses.build("raw + vthm"), losses.get("ms"))
    assert values["raw+vthm"] == float(losses.build("multi_similarity")(x, y))
    assert losses.get("binomial") is losses.get("binomial_deviance")
    assert losses.get("Raw+Distance-Weighted") is losses.get("raw+distance_weighted")
    with pytest.raises(ValueError, match="Known losses"):
        losses.build("raw+vthm2")
    with pytest.raises(ValueError, match="no parameter"):
        losses.build("multi_similarity", margin=0.1)
    with pytest.raises(ValueError, match="known weightings"):
        losses.build("weighted_pair", weighting="lifted")
    with pytest.raises(ValueError, match="Known miners"):
        losses.build("weighted_pair", mining="hardest")
    with pytest.raises(ValueError, match="no parameter"):
        losses.build("weighted_pair", mining="vthm", margin=0.2)
    with pytest.raises(ValueError, match="reduction"):
        losses.build("raw", reduction="max")
