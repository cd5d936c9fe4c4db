"""dmlkit.adversarial.training: the schedule by which parameters move, the gradient routing,
the generator by measured distances after training, bad configurations.
"""

from __future__ import annotations

import copy

import naive
import numpy as np
import pytest
import torch
from feature_blobs import blobs, one_thread  # noqa: F401 (autouse fixture) (autouse fixture)

from dmlkit import adversarial as adv
from dmlkit import losses
from dmlkit.adversarial import training


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
    x, y = blobs()
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
    x, y = blobs()
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
    x, y = blobs()
    x, y = x[:24], y[:24]
    tr = _trainer(method="daml+sp", alpha_sign=1)
    seen = {}
    tr.generator.register_forward_hook(lambda m, inp, out: seen.update(neg_in=inp))
    tr.positive_generator.register_forward_hook(lambda m, inp, out: seen.update(pos_out=out))
    captured = {}
    original = training.generator_objective

    def spy(anchor, positive, *args, **kwargs):
        captured["positive"] = positive
        return original(anchor, positive, *args, **kwargs)

    training.generator_objective = spy
    try:
        tr.step(x, y, "joint")
    finally:
        training.generator_objective = original
    a_in, p_in, _ = seen["neg_in"]
    assert torch.equal(p_in, seen["pos_out"].detach())      # G-(x, g+, x-)
    assert torch.equal(captured["positive"], seen["pos_out"].detach())  # D(g+, x)
    assert not torch.equal(p_in, a_in)


def test_fit_warmup_only_leaves_generator_at_init():
    x, y = blobs()
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
    x, y = blobs()
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


def test_trained_generator_makes_harder_negatives():
    x, y = blobs(C=6, n=16, D=16, spread=0.6)
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


def test_bad_configurations_raise_clear_errors():
    x, y = blobs()
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
    x, y = blobs()
    xe, ye = blobs(seed=1)
    r = adv.fit_adversarial(x, y, "triplet", "daml", epochs=2, warmup_epochs=1,
                            generator_epochs=0, embedding_dim=8, head_hidden=32,
                            generator_hidden=(32,), P=4, K=3, eval_features=xe, eval_labels=ye,
                            eval_every=1)
    assert all("recall@1" in h for h in r.history)
    # the last epoch's metrics are those of the returned model on the evaluation set (a
    # naive per-query loop), the first epoch's those of an earlier model
    final = naive.brute_force_metrics(r.embed(xe).detach().numpy(), np.asarray(ye),
                                      metrics=("recall", "map@r"), ks=(1,))
    assert r.history[-1]["recall@1"] == pytest.approx(final["recall@1"], abs=1e-12)
    assert r.history[-1]["map@r"] == pytest.approx(final["map@r"], abs=1e-6)
    assert r.history[0]["map@r"] != r.history[-1]["map@r"]
    assert torch.allclose(r.embed(x).norm(dim=1), torch.ones(len(y)), atol=1e-6)
    assert copy.deepcopy(r.config)["method"] == "daml"
