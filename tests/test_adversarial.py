"""Tests of dmlkit.adversarial: DAML (seed 000) and the synthetic-positive extension (seed 001).

Objective terms are checked against per-triple loops in float64; the loss on synthetic
negatives against naive loops and against the in-batch loss; the schedule by which parameters
move; the generator by measured distances after training.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dmlkit import adversarial as adv
from dmlkit import losses


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster and avoids oversubscribing a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _blobs(C=6, n=12, D=16, spread=1.0, seed=0, normalize=True):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, D, generator=g) * 2.0
    y = torch.arange(C).repeat_interleave(n)
    x = centers[y] + spread * torch.randn(C * n, D, generator=g)
    return (F.normalize(x, dim=1) if normalize else x), y


def _pk_labels(P=4, K=3):
    return torch.arange(P).repeat_interleave(K)


# ------------------------------------------------------------------------------- generators
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


# ------------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("alpha_sign", [-1, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_generator_objective_matches_per_triple_loop(alpha_sign, reduction):
    g = torch.Generator().manual_seed(1)
    T, D, E = 7, 5, 3
    a, p, n, s = (torch.randn(T, D, generator=g, dtype=torch.float64) for _ in range(4))
    W = torch.randn(D, E, generator=g, dtype=torch.float64)

    def embed(z):
        return F.normalize(z @ W, dim=1)

    lambda1, lambda2, alpha = 0.7, 50.0, 0.3
    out = adv.generator_objective(a, p, n, s, embed, lambda1=lambda1, lambda2=lambda2,
                                  alpha=alpha, alpha_sign=alpha_sign, reduction=reduction)
    hard = reg = advv = 0.0
    for i in range(T):
        hard += sum((s[i, k] - a[i, k]).item() ** 2 for k in range(D))
        reg += sum((s[i, k] - n[i, k]).item() ** 2 for k in range(D))
        ea, ep, es = (embed(v[i:i + 1])[0] for v in (a, p, s))
        d_syn = sum((es[k] - ea[k]).item() ** 2 for k in range(E))
        d_pos = sum((ep[k] - ea[k]).item() ** 2 for k in range(E))
        advv += max(0.0, d_syn - d_pos + alpha_sign * alpha)
    div = T if reduction == "mean" else 1
    assert out["hard"].item() == pytest.approx(hard / div, rel=1e-12)
    assert out["reg"].item() == pytest.approx(reg / div, rel=1e-12)
    assert out["adv"].item() == pytest.approx(advv / div, rel=1e-12, abs=1e-14)
    assert out["total"].item() == pytest.approx((hard + lambda1 * reg + lambda2 * advv) / div,
                                                rel=1e-12)


def test_hinge_sign_changes_which_triples_are_active():
    # anchor at 0, positive at distance^2 1, synthetic at distance^2 1.5; alpha = 1
    a = torch.zeros(1, 2, dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    s = torch.tensor([[0.0, math.sqrt(1.5)]], dtype=torch.float64)
    minus = adv.generator_objective(a, p, s, s, alpha=1.0, alpha_sign=-1)["adv"]
    plus = adv.generator_objective(a, p, s, s, alpha=1.0, alpha_sign=1)["adv"]
    assert minus.item() == 0.0            # seed 000: 1.5 - 1 - 1 < 0, already hard enough
    assert plus.item() == pytest.approx(1.5)   # seed 001: 1.5 - 1 + 1
    with pytest.raises(ValueError, match="alpha_sign"):
        adv.generator_objective(a, p, s, s, alpha_sign=0)
    with pytest.raises(ValueError, match="shape mismatch"):
        adv.generator_objective(a, p, s, torch.zeros(2, 2, dtype=torch.float64))


def test_synthetic_positive_objective_matches_formula_and_minimiser():
    g = torch.Generator().manual_seed(2)
    a, p, gp = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    out = adv.synthetic_positive_objective(a, p, gp, lambda1=2.0, reduction="sum")
    expected = sum(((gp[i] - a[i]) ** 2).sum().item() + 2.0 * ((gp[i] - p[i]) ** 2).sum().item()
                   for i in range(6))
    assert out["total"].item() == pytest.approx(expected, rel=1e-12)
    best = (a + 2.0 * p) / 3.0
    v_best = adv.synthetic_positive_objective(a, p, best, lambda1=2.0)["total"]
    for _ in range(5):
        other = best + 0.1 * torch.randn(6, 4, generator=g, dtype=torch.float64)
        assert v_best < adv.synthetic_positive_objective(a, p, other, lambda1=2.0)["total"]


# ------------------------------------------------------------------------------- triplets
def test_sample_triplets_random():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])    # sample 8 is a singleton: no anchor
    g = torch.Generator().manual_seed(0)
    a, p, n = adv.sample_triplets(y, 2, g)
    assert a.tolist() == sorted(a.tolist())
    assert 8 not in a.tolist()
    assert set(a.tolist()) == set(range(8))
    assert all(a.tolist().count(i) == 2 for i in range(8))
    assert bool((y[a] == y[p]).all()) and bool((a != p).all()) and bool((y[a] != y[n]).all())
    a, p, n = adv.sample_triplets(y, None, g)
    per_anchor = [(y != y[i]).sum().item() for i in range(8)]
    assert [a.tolist().count(i) for i in range(8)] == per_anchor
    assert len(set(zip(a.tolist(), n.tolist()))) == len(a)  # every negative once
    e = adv.sample_triplets(torch.tensor([0, 1, 2]), 1, g)
    assert all(t.numel() == 0 for t in e)


def test_sample_triplets_npair_pairing():
    y = torch.tensor([2, 0, 2, 1, 0, 1, 2, 3])   # class 3 has one sample: not a pair
    a, p, n = adv.sample_triplets(y, scheme="npair")
    firsts, seconds = {2: 0, 0: 1, 1: 3}, {2: 2, 0: 4, 1: 5}
    assert len(a) == 3 * 2
    for i, j, k in zip(a.tolist(), p.tolist(), n.tolist()):
        assert i == firsts[y[i].item()] and j == seconds[y[i].item()]
        assert k in seconds.values() and y[k] != y[i]
    with pytest.raises(ValueError, match="scheme"):
        adv.sample_triplets(y, scheme="hardest")


# ------------------------------------------------------------------------ loss on synthetics
class _NaivePairLoss(losses.PairLoss):
    """sum over positive entries of (1 - s) + sum over negative entries of [s - 0.1]_+."""

    def compute(self, batch):
        return ((1 - batch.S) * batch.pos).sum() + (F.relu(batch.S - 0.1) * batch.neg).sum()


def _synthetic_setup(seed=3, E=4):
    g = torch.Generator().manual_seed(seed)
    y = _pk_labels(3, 3)
    emb = torch.randn(len(y), E, generator=g, dtype=torch.float64)
    a, p, n = adv.sample_triplets(y, 2, g)
    syn = torch.randn(len(a), E, generator=g, dtype=torch.float64)
    return emb, y, syn, y[n], a


@pytest.mark.parametrize("keep_real", [False, True])
def test_masked_loss_on_synthetic_negatives_matches_loop(keep_real):
    emb, y, syn, syn_y, owner = _synthetic_setup()
    value = adv.metric_loss_with_synthetic(_NaivePairLoss(), emb, y, syn, syn_y, owner,
                                           keep_real_negatives=keep_real)
    e, s = F.normalize(emb, dim=1), F.normalize(syn, dim=1)
    expected = 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            if j != i and y[j] == y[i]:
                expected += 1 - float(e[i] @ e[j])
            if keep_real and y[j] != y[i]:
                expected += max(0.0, float(e[i] @ e[j]) - 0.1)
        for t in range(len(syn)):
            if owner[t] == i:
                expected += max(0.0, float(e[i] @ s[t]) - 0.1)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_triplet_on_synthetic_negatives_matches_loop():
    emb, y, syn, syn_y, owner = _synthetic_setup(seed=4)
    loss = losses.build("triplet", margin=0.3, form="similarity", reduction="sum")
    value = adv.metric_loss_with_synthetic(loss, emb, y, syn, syn_y, owner)
    e, s = F.normalize(emb, dim=1), F.normalize(syn, dim=1)
    expected = 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            if j == i or y[j] != y[i]:
                continue
            for t in range(len(syn)):
                if owner[t] == i:
                    expected += max(0.0, float(e[i] @ s[t]) - float(e[i] @ e[j]) + 0.3)
    assert value.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("name", ["triplet", "contrastive", "generalized_lifted_structure",
                                  "multi_similarity", "binomial_deviance"])
def test_copies_of_the_real_negatives_give_the_in_batch_loss(name):
    """Replacing each anchor's negatives by exact copies of them must not change the loss."""
    g = torch.Generator().manual_seed(5)
    y = _pk_labels(4, 3)
    emb = torch.randn(len(y), 6, generator=g, dtype=torch.float64)
    a, _, n = adv.sample_triplets(y, None, g)
    loss = losses.build(name)
    value = adv.metric_loss_with_synthetic(loss, emb, y, emb[n], y[n], a)
    assert value.item() == pytest.approx(loss(emb, y).item(), rel=1e-9, abs=1e-12)


def test_npair_per_anchor_matches_formula():
    """DAML + N-pair: anchor i's logits are f_i.f_i^+ and f_i.G(x_i, x_i^+, x_j^+), j != i."""
    g = torch.Generator().manual_seed(6)
    y = _pk_labels(4, 2)
    emb = torch.randn(len(y), 5, generator=g, dtype=torch.float64)
    a, p, n = adv.sample_triplets(y, scheme="npair")
    syn = torch.randn(len(a), 5, generator=g, dtype=torch.float64)
    loss = losses.build("npair", l2_reg=0.0)
    value = adv.metric_loss_with_synthetic(loss, emb, y, syn, y[n], a)
    per_anchor = []
    for i in a.unique().tolist():
        pi = p[a == i][0]
        s_pos = float(emb[i] @ emb[pi])
        terms = [math.exp(float(emb[i] @ syn[t]) - s_pos) for t in range(len(a)) if a[t] == i]
        per_anchor.append(math.log1p(sum(terms)))
    assert value.item() == pytest.approx(sum(per_anchor) / len(per_anchor), rel=1e-10)


def test_metric_loss_with_synthetic_rejects_bad_input():
    emb, y, syn, syn_y, owner = _synthetic_setup()
    loss = losses.build("triplet")
    with pytest.raises(ValueError, match="dimension"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn[:, :3], syn_y, owner)
    with pytest.raises(ValueError, match="label of its own anchor"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn, y[owner], owner)
    with pytest.raises(ValueError, match="owner"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn, syn_y, owner + 100)
    with pytest.raises(ValueError, match="pair-based"):
        adv.metric_loss_with_synthetic(torch.nn.MSELoss(), emb, y, syn, syn_y, owner)
    with pytest.raises(ValueError, match="mode"):
        adv.metric_loss_with_synthetic(loss, emb, y, syn, syn_y, owner, mode="dense")


# ------------------------------------------------------------------------------- schedule
def _trainer(lam=1.0, generator_metric_grad=False, method="daml", seed=0, **kw):
    torch.manual_seed(seed)
    head = adv.MetricHead(16, 8, hidden=32)
    gen = adv.HardNegativeGenerator(16, hidden=(32,))
    pgen = adv.SyntheticPositiveGenerator(16, hidden=(32,)) if method == "daml+sp" else None
    return adv.AdversarialTrainer(losses.build("triplet"), head, gen, pgen, lam=lam,
                                  generator_metric_grad=generator_metric_grad, seed=seed, **kw)


def _state(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def test_phases_update_the_right_parameters():
    x, y = _blobs()
    x, y = x[:24], y[:24]
    for phase, head_moves, gen_moves in [("metric", True, False), ("generator", False, True),
                                         ("joint", True, True)]:
        tr = _trainer(method="daml+sp")
        h0, g0, p0 = _state(tr.head), _state(tr.generator), _state(tr.positive_generator)
        out = tr.step(x, y, phase)
        assert _changed(h0, tr.head) == head_moves, phase
        assert _changed(g0, tr.generator) == gen_moves, phase
        assert _changed(p0, tr.positive_generator) == gen_moves, phase
        assert ("J_gen" in out) == (phase != "metric") and "J_m" in out


def test_metric_never_minimises_j_adv_and_generator_ignores_lam():
    x, y = _blobs()
    x, y = x[:24], y[:24]
    # lam = 0: the metric gets no gradient at all (J_adv does not reach it) -> Adam leaves it.
    # alpha_sign = +1 keeps the hinge of J_adv active, so a leak would move the head.
    tr = _trainer(lam=0.0, alpha_sign=1, alpha=1.0)
    h0, g0 = _state(tr.head), _state(tr.generator)
    out = tr.step(x, y, "joint")
    assert out["J_adv"] > 0
    assert not _changed(h0, tr.head) and _changed(g0, tr.generator)
    # the generator's step is J_gen's: the same for any lam, unless generator_metric_grad
    gens = []
    for lam, flag in [(1.0, False), (100.0, False), (100.0, True)]:
        tr = _trainer(lam=lam, generator_metric_grad=flag)
        tr.step(x, y, "joint")
        gens.append(_state(tr.generator))
    assert all(torch.equal(u, v) for u, v in zip(gens[0], gens[1]))
    assert any(not torch.equal(u, v) for u, v in zip(gens[0], gens[2]))


def test_negative_generator_reads_the_synthetic_positive():
    x, y = _blobs()
    x, y = x[:24], y[:24]
    tr = _trainer(method="daml+sp", alpha_sign=1)
    seen = {}
    tr.generator.register_forward_hook(lambda m, inp, out: seen.update(neg_in=inp))
    tr.positive_generator.register_forward_hook(lambda m, inp, out: seen.update(pos_out=out))
    captured = {}
    original = adv.generator_objective

    def spy(anchor, positive, *args, **kwargs):
        captured["positive"] = positive
        return original(anchor, positive, *args, **kwargs)

    adv.generator_objective = spy
    try:
        tr.step(x, y, "joint")
    finally:
        adv.generator_objective = original
    a_in, p_in, _ = seen["neg_in"]
    assert torch.equal(p_in, seen["pos_out"].detach())      # G-(x, g+, x-)
    assert torch.equal(captured["positive"], seen["pos_out"].detach())  # D(g+, x)
    assert not torch.equal(p_in, a_in)


def test_fit_warmup_only_leaves_generator_at_init():
    x, y = _blobs()
    res = adv.fit_adversarial(x, y, "triplet", "daml", epochs=2, warmup_epochs=2,
                              generator_epochs=0, embedding_dim=8, head_hidden=32,
                              generator_hidden=(32,), P=4, K=3, seed=7)
    torch.manual_seed(7)
    head_init = adv.MetricHead(16, 8, hidden=32)
    gen_init = adv.HardNegativeGenerator(16, hidden=(32,))
    assert all(torch.equal(a, b) for a, b in zip(gen_init.parameters(),
                                                 res.generator.parameters()))
    assert _changed(_state(head_init), res.head)
    assert [h["phase"] for h in res.history] == ["metric", "metric"]
    assert all("J_gen" not in h for h in res.history)


def test_fit_schedule_phases_and_methods():
    x, y = _blobs()
    kw = dict(epochs=4, warmup_epochs=1, generator_epochs=1, embedding_dim=8, head_hidden=32,
              generator_hidden=(32,), P=4, K=3, batches_per_epoch=2)
    r = adv.fit_adversarial(x, y, "contrastive", "daml+sp", **kw)
    assert [h["phase"] for h in r.history] == ["metric", "generator", "joint", "joint", "joint"]
    assert "J+_gen" in r.history[-1] and r.positive_generator is not None
    r = adv.fit_adversarial(x, y, "lifted_structure", "metric", **kw)
    assert r.generator is None and [h["phase"] for h in r.history] == ["metric"] * 4
    r = adv.fit_adversarial(x, y, "npair", "daml", space="embedding", **kw)
    assert r.generator.dim == 8 and r.config["negatives_per_anchor"] is None
    emb = r.embed(x)
    assert emb.shape == (len(y), 8)


# ------------------------------------------------------------------------------- hardness
def test_trained_generator_makes_harder_negatives():
    x, y = _blobs(C=6, n=16, D=16, spread=0.6)
    rec = adv.NegativeRecorder(max_per_epoch=128)
    adv.fit_adversarial(x, y, "triplet", "daml", epochs=14, warmup_epochs=4, generator_epochs=4,
                        embedding_dim=8, head_hidden=64, generator_hidden=(64,), lr=3e-3,
                        generator_lr_factor=1.0, P=6, K=4, seed=0, recorder=rec)
    frame = rec.hardness_frame()
    last = frame[frame.epoch == frame.epoch.max()]
    first = frame[frame.epoch == frame.epoch.min()]
    # measured in the learned metric and in feature space: synthetic negatives are closer
    assert last.d_asyn.mean() < 0.75 * last.d_an.mean()
    assert last.f_d_asyn.mean() < 0.75 * last.f_d_an.mean()
    # and the generator got better at it over training
    assert last.d_asyn.mean() < first.d_asyn.mean()


def test_recorder_contents():
    x, y = _blobs()
    rec = adv.NegativeRecorder(max_per_epoch=10, every=2)
    adv.fit_adversarial(x, y, "triplet", "daml+sp", epochs=5, warmup_epochs=1,
                        generator_epochs=0, embedding_dim=8, head_hidden=32,
                        generator_hidden=(32,), P=4, K=3, recorder=rec)
    arr = rec.arrays()
    assert sorted(set(arr["epoch"].tolist())) == [2, 4]        # joint epochs, every 2nd
    assert len(rec) == 20 and "synthetic_positive" in arr
    assert (arr["label"] != arr["negative_label"]).all()
    frame = rec.hardness_frame()
    import numpy as np
    d = np.linalg.norm(arr["anchor_emb"] - arr["synthetic_emb"], axis=1)
    np.testing.assert_allclose(frame.d_asyn, d, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(arr["anchor_emb"], axis=1), 1.0, rtol=1e-5)
    assert frame.margin.iloc[0] == pytest.approx(losses.build("triplet").margin)
    X, meta = rec.points("embedding", epoch=2)
    assert X.shape == (40, 8) and list(meta.kind.unique()) == list(rec.KINDS)
    with pytest.raises(ValueError, match="nothing recorded"):
        adv.NegativeRecorder().arrays()


# ------------------------------------------------------------------------------- bad config
def test_bad_configurations_raise_clear_errors():
    x, y = _blobs()
    kw = dict(epochs=1, warmup_epochs=1, P=4, K=3)
    with pytest.raises(ValueError, match=r"unknown loss.*Known losses"):
        adv.fit_adversarial(x, y, "tripplet", "daml", **kw)
    with pytest.raises(ValueError, match=r"unknown method.*daml\+sp"):
        adv.fit_adversarial(x, y, "triplet", "gan", **kw)
    with pytest.raises(ValueError, match="eval_features have dimension 5"):
        adv.fit_adversarial(x, y, "triplet", "daml", eval_features=torch.randn(4, 5),
                            eval_labels=torch.arange(4), **kw)
    with pytest.raises(ValueError, match="only 6 classes"):
        adv.fit_adversarial(x, y, "triplet", "daml", epochs=1, warmup_epochs=1, P=10, K=3)
    with pytest.raises(ValueError, match="labels has length"):
        adv.fit_adversarial(x, y[:-1], "triplet", "daml", **kw)
    with pytest.raises(ValueError, match="alpha_sign"):
        adv.fit_adversarial(x, y, "triplet", "daml", alpha_sign=2, **kw)
    with pytest.raises(ValueError, match="warmup_epochs"):
        adv.fit_adversarial(x, y, "triplet", "daml", epochs=1, warmup_epochs=3)
    head = adv.MetricHead(16, 8)
    with pytest.raises(ValueError, match="generator works on 12-d"):
        adv.AdversarialTrainer(losses.build("triplet"), head, adv.HardNegativeGenerator(12))
    with pytest.raises(ValueError, match="needs a generator"):
        adv.AdversarialTrainer(losses.build("triplet"), head, None).step(x, y, "joint")
    with pytest.raises(ValueError, match="expects features of shape"):
        head(torch.randn(3, 5))


def test_fit_with_evaluation_records_metrics():
    pytest.importorskip("dmlkit.evaluate")
    x, y = _blobs()
    xe, ye = _blobs(seed=1)
    r = adv.fit_adversarial(x, y, "triplet", "daml", epochs=2, warmup_epochs=1,
                            generator_epochs=0, embedding_dim=8, head_hidden=32,
                            generator_hidden=(32,), P=4, K=3, eval_features=xe, eval_labels=ye,
                            eval_every=1)
    assert all("recall@1" in h for h in r.history)
    assert 0.0 <= r.history[-1]["recall@1"] <= 1.0
    assert torch.allclose(r.embed(x).norm(dim=1), torch.ones(len(y)), atol=1e-6)
    assert copy.deepcopy(r.config)["method"] == "daml"
