"""dmlkit.adversarial.presets: the named designs, their settings as realised in the trainer,
explicit arguments overriding them, each objective term of each preset on fixed tensors
against its formula, and the gradient routing of each preset term by term.
"""

from __future__ import annotations

import pytest
import torch
from feature_blobs import blobs, one_thread  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv
from dmlkit.adversarial import presets

SMALL = dict(P=4, K=3, embedding_dim=6, generator_hidden=(16,), batches_per_epoch=2)


def _run(preset, method="daml", loss="triplet", epochs=2, warmup_epochs=1, **kw):
    x, y = blobs()
    return adv.fit_adversarial(x, y, loss, method, preset=preset, epochs=epochs,
                               warmup_epochs=warmup_epochs, **{**SMALL, **kw})


def test_unknown_preset_lists_the_known_ones():
    x, y = blobs()
    with pytest.raises(ValueError, match="unknown preset 'paper'; known presets: dmlkit, "
                                         "official, pml"):
        adv.fit_adversarial(x, y, "triplet", "daml", preset="paper", **SMALL)


def test_default_is_dmlkit_and_sp_sign_per_preset():
    assert adv.fit_adversarial.__kwdefaults__["preset"] == "dmlkit"
    for preset, sign in (("dmlkit", -1), ("official", 1), ("pml", 1)):
        assert presets.preset_settings(preset, "daml+sp")["alpha_sign"] == sign
        assert presets.preset_settings(preset, "daml")["alpha_sign"] == -1


def test_explicit_arguments_override_the_preset():
    res = _run("official", lr=3e-3, weight_decay=0.0, lam=2.0, routing="separate",
               generator_epochs=1)
    tr = res.trainer
    assert res.config["lr"] == 3e-3 and tr.lam == 2.0 and tr.routing == "separate"
    assert [r["phase"] for r in res.history] == ["warmup", "generator", "joint"]
    assert all(g["weight_decay"] == 0.0 for opt in (tr.opt_metric, tr.opt_trunk,
                                                    tr.opt_generator) for g in opt.param_groups)
    assert tr.opt_metric.param_groups[0]["lr"] == 3e-3
    # the other official settings are kept
    assert tr.real_weight == 0.0 and tr.metric_triples == "sampled"


def test_every_preset_setting_can_be_overridden():
    """The official preset with every dmlkit value passed explicitly is the dmlkit run, bit
    for bit (losses, embeddings), so no preset value escapes the arguments."""
    x, y = blobs()
    kw = dict(epochs=3, warmup_epochs=1, seed=2, **SMALL)
    settings = {k: v for k, v in presets.PRESETS["dmlkit"].items()
                if k not in ("triplet_loss_kwargs", "generator_hidden")}
    a = adv.fit_adversarial(x, y, "contrastive", "daml+sp", **kw)
    b = adv.fit_adversarial(x, y, "contrastive", "daml+sp", preset="official", **settings,
                            **kw)
    assert a.history == b.history
    assert torch.equal(a.embed(x), b.embed(x))


def test_official_networks_optimisers_and_schedule():
    res = _run("official", epochs=1, warmup_epochs=1)      # warm-up only: head, G untouched
    tr = res.trainer
    assert [r["phase"] for r in res.history] == ["warmup"]
    assert isinstance(res.trunk, adv.LinearEmbedding) and not res.use_head
    z = torch.rand(5, 6)                                    # the head starts as the identity
    assert torch.equal(res.head(z), z)
    assert [m.weight.shape for m in res.head.net if isinstance(m, torch.nn.Linear)] == \
        [(6, 6), (6, 6)]
    lin = [m for m in res.generator.net if isinstance(m, torch.nn.Linear)]
    w = torch.cat([m.weight.flatten() for m in lin])
    assert abs(float(w.detach().std()) - 0.02) < 0.002 and all(not m.bias.any() for m in lin)
    assert res.generator.out_activation == "relu"
    assert float(res.generator(z, z, -z).detach().min()) >= 0.0
    for opt in (tr.opt_metric, tr.opt_trunk, tr.opt_generator):
        assert opt.param_groups[0]["weight_decay"] == 1.09e-3
    lr = res.config["lr"]
    assert lr == 1e-4 and tr.opt_generator.param_groups[0]["lr"] == pytest.approx(lr / 10)
    tr._set_phase("warmup")
    assert tr.opt_trunk.param_groups[0]["lr"] == lr
    tr._set_phase("joint")
    assert tr.opt_trunk.param_groups[0]["lr"] == pytest.approx(lr / 1000)
    loss = res.loss
    assert (loss.margin, loss.form, loss.reduction, loss.normalize) == \
        (1.0, "squared_distance", "mean", False)
    x, _ = blobs()                                   # test embedding: the trunk's output
    assert torch.allclose(res.embed(x), res.trunk(x).detach())


def _terms(res, x, y, phase="joint"):
    """The trainer's terms on (x, y) and the triples it drew (replayed from its RNG)."""
    tr = res.trainer
    tr._set_phase(phase)
    state = tr.rng.get_state()
    terms = tr.compute_loss(x, y)
    tr.rng.set_state(state)
    a, p, n = adv.sample_triplets(y, tr.negatives_per_anchor, tr.rng, tr.triplet_scheme)
    return tr, terms, a, p, n


def _batch():
    x, y = blobs()
    idx = torch.cat([torch.nonzero(y == c)[:3, 0] for c in range(4)])
    return x[idx], y[idx]


def test_official_terms_match_the_formulas():
    res = _run("official", alpha=3.0, alpha_sign=1)       # an active J_adv hinge
    x, y = _batch()
    tr, t, a, p, n = _terms(res, x, y)
    f = res.trunk(x)
    syn = res.generator(f[a], f[p], f[n])
    h = res.head
    d2 = lambda u, v: (u - v).pow(2).sum(1)  # noqa: E731
    d_ap, d_as = d2(h(f[a]), h(f[p])), d2(h(f[a]), h(syn))
    assert torch.allclose(t["J_m"], torch.relu(d_ap - d_as + 1.0).mean(), atol=1e-6)
    assert torch.allclose(t["J_adv"], torch.relu(d_as - d_ap + 3.0).mean(), atol=1e-6)
    assert float(t["J_adv"].detach()) > 0
    assert torch.allclose(t["J_hard"], d2(syn, f[a]).mean(), atol=1e-6)
    assert torch.allclose(t["J_reg"], d2(syn, f[n]).mean(), atol=1e-6)
    assert torch.allclose(t["J_gen"], t["J_hard"] + t["J_reg"] + 0.5 * t["J_adv"])
    assert (tr.lam, tr.lambda2, len(a)) == (0.5, 0.5, len(y))   # the /2; one negative each
    # warm-up: the same triplet loss on the trunk's output and real triples
    tr, t, a, p, n = _terms(res, x, y, "warmup")
    assert torch.allclose(t["J_m"], torch.relu(d2(f[a], f[p]) - d2(f[a], f[n]) + 1).mean(),
                          atol=1e-6)


def test_pml_terms_match_the_formulas():
    res = _run("pml")
    x, y = _batch()
    tr, t, a, p, n = _terms(res, x, y)
    emb = res.head(x)
    syn = res.head(res.generator(x[a], x[p], x[n]))
    assert torch.allclose(t["J_m_real"], res.loss(emb, y))
    ref = adv.metric_loss_with_synthetic(res.loss, emb, y, syn, y[n], a, positive=p)
    assert torch.allclose(t["J_m"], ref)
    e = torch.nn.functional.normalize
    d_ap = (e(emb[a], dim=1) - e(emb[p], dim=1)).pow(2).sum(1)
    d_as = (e(emb[a], dim=1) - e(syn, dim=1)).pow(2).sum(1)
    assert torch.allclose(t["J_adv"], torch.relu(d_as - d_ap - 1.0).mean(), atol=1e-6)
    assert (tr.lam, tr.generator_weight, tr.real_weight) == (0.1, 0.1, 1.0)


def test_dmlkit_terms_match_the_formulas():
    res = _run("dmlkit")
    x, y = _batch()
    tr, t, a, p, n = _terms(res, x, y)
    emb = res.head(x)
    syn = res.generator(x[a], x[p], x[n])
    ref = adv.metric_loss_with_synthetic(res.loss, emb, y, res.head(syn), y[n], a)
    assert torch.allclose(t["J_m"], ref) and "J_m_real" not in t
    assert torch.allclose(t["J_hard"], (syn - x[a]).pow(2).sum(1).mean(), atol=1e-6)


def _grads(total, params):
    gs = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(q) if g is None else g for q, g in zip(params, gs)]


def _applied(params):
    return [torch.zeros_like(q) if q.grad is None else q.grad for q in params]


def _close(xs, ys):
    return all(torch.allclose(u, v, atol=1e-6, rtol=1e-5) for u, v in zip(xs, ys))


def _nonzero(gs):
    return any(bool(g.abs().sum() > 0) for g in gs)


@pytest.mark.parametrize("preset", ["official", "pml", "dmlkit"])
@pytest.mark.parametrize("method", ["daml", "daml+sp"])
def test_gradient_routing_term_by_term(preset, method):
    """Each term's gradient computed alone with autograd, then compared with what the trainer
    applies to the generator(s) G, the head H and the trunk T."""
    torch.manual_seed(1)
    trunk = torch.nn.Linear(16, 16) if preset != "official" else None
    kw = {} if preset == "official" else {"loss_kwargs": {"margin": 2.5}}  # active hinges
    res = _run(preset, method, alpha=3.0, alpha_sign=1, trunk=trunk, **kw)
    x, y = _batch()
    tr, t, *_ = _terms(res, x, y)
    G, H, T = tr.generator_params, list(res.head.parameters()), tr.trunk_params
    params = G + H + T
    gen_obj = t["J_gen"] + t.get("J+_gen", 0.0)
    per = {name: _grads(v, params) for name, v in
           (("gen", gen_obj), ("adv", t["J_adv"]), ("m", t["J_m"]),
            ("real", t.get("J_m_real", 0.0 * t["J_m"])))}
    tr.zero_grad()
    tr.backward(t)
    got = _applied(params)
    nG, nH = len(G), len(H)

    def part(gs, which):
        return {"G": gs[:nG], "H": gs[nG:nG + nH], "T": gs[nG + nH:]}[which]

    w = tr.generator_weight
    expect_full = [w * g + tr.lam * m + tr.real_weight * r
                   for g, m, r in zip(per["gen"], per["m"], per["real"])]
    if preset in ("official", "pml"):          # nothing detached: every part gets every term
        assert _close(got, expect_full)
        assert _nonzero(part(per["m"], "G"))    # G receives lam J_m
        assert _nonzero(part(per["adv"], "H"))  # the head receives J_adv
        assert _nonzero(part(per["gen"], "T"))  # the trunk receives J_gen
    else:                                       # separated
        assert _close(part(got, "G"), part(per["gen"], "G"))
        assert not _nonzero(part(per["m"], "G"))          # synthetic negatives detached
        expect_m = [tr.lam * m for m in per["m"]]
        assert _close(part(got, "H"), part(expect_m, "H"))
        assert _close(part(got, "T"), part(expect_m, "T"))
        assert _nonzero(part(per["adv"], "H"))            # J_adv would reach H, but is not
        assert not _nonzero(part(per["gen"], "T"))        # generator inputs detached


def test_pml_warmup_and_metric_alone_train_on_the_real_batch():
    # PML's metric_alone_epochs train metric_loss on the real batch: so does the pml warm-up,
    # and the pml metric-only run is the dmlkit one (official: sampled real triples)
    pml, dml = _run("pml", method="metric", epochs=3), _run("dmlkit", method="metric", epochs=3)
    assert [h["J_m_real"] for h in pml.history] == [h["J_m"] for h in dml.history]
    d_pml, d_dml = _run("pml", epochs=3), _run("dmlkit", epochs=3)
    assert d_pml.history[0]["phase"] == "metric"
    assert d_pml.history[0]["J_m_real"] == d_dml.history[0]["J_m"]   # weight 1, as PML's
    assert d_pml.trainer.warmup_triples == "batch" and d_pml.trainer.metric_triples == "sampled"
    off = _run("official", method="metric", epochs=3)
    assert off.trainer.warmup_triples == "sampled"
