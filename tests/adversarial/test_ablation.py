"""dmlkit.adversarial.ablation: every run is what its name says (which parameters receive which
gradient terms), the runs and the paired table, and the saved ablation table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from feature_blobs import blobs, one_thread  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv
from dmlkit import paired
from dmlkit.adversarial import ablation, comparison

SMALL = dict(P=4, K=3, embedding_dim=6, generator_hidden=(16,), batches_per_epoch=2,
             epochs=1, warmup_epochs=0)
RUNS, SKIPPED = ablation.ablation_runs(designs=("official", "dmlkit", "pml"),
                                       sp_designs=("official",))
BY_NAME = {r.name: r for r in RUNS}


def _zero_like(params):
    return [torch.zeros_like(p) for p in params]


def _grads(obj, params):
    if not params or not (torch.is_tensor(obj) and obj.requires_grad):
        return _zero_like(params)
    got = torch.autograd.grad(obj, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, got)]


def _routed(name, **extra):
    """One joint step of run ``name`` on blobs: its terms, the gradients of the metric
    objective and of the generator objective per parameter group, and what the trainer's
    backward actually gave each group."""
    spec = BY_NAME[name]
    x, y = blobs(C=6, n=6, D=8)
    trunk = None if spec.preset == "official" else torch.nn.Linear(8, 8)
    res = adv.fit_adversarial(x, y, "triplet", spec.method, preset=spec.preset,
                              generator=spec.generator, trunk=trunk,
                              **{**SMALL, **spec.settings, **extra})
    tr = res.trainer
    tr._set_phase("joint")
    tr.zero_grad()
    idx = torch.arange(12)
    terms = tr.compute_loss(x[idx], y[idx])
    groups = {"trunk": tr.trunk_params, "head": list(res.head.parameters()),
              "generator": tr.generator_params}
    jm = tr._metric_objective(terms)
    gen = tr._triples["generator_objective"]
    want_m = {k: _grads(jm, ps) for k, ps in groups.items()}
    want_g = {k: _grads(gen, ps) for k, ps in groups.items()}
    tr.backward(terms)
    got = {k: [torch.zeros_like(p) if p.grad is None else p.grad for p in ps]
           for k, ps in groups.items()}
    return spec, tr, terms, want_m, want_g, got


def _close(a, b):
    return all(torch.allclose(u, v, atol=1e-6, rtol=1e-5) for u, v in zip(a, b))


def _nonzero(gs):
    return any(bool(g.abs().max() > 1e-8) for g in gs)


def _plus(a, b):
    return [u + v for u, v in zip(a, b)]


def test_control_has_no_generator_terms_anywhere():
    spec, tr, terms, m, g, got = _routed("control/official")
    assert "J_hard" not in terms and "J_gen" not in terms
    assert tr.generator_params == [] and not torch.is_tensor(tr._triples["generator_objective"])
    assert _close(got["trunk"], m["trunk"]) and _close(got["head"], m["head"])
    # the control's negative is the real one
    assert torch.equal(tr._triples["synthetic"], tr._triples["negative"])


def test_daml_full_routing_sends_j_hard_to_the_trunk_and_j_adv_to_the_head():
    # a hinge offset of +10 keeps J_adv active, so that it has a gradient to route
    spec, tr, terms, m, g, got = _routed("daml/official", alpha_sign=1, alpha=10.0)
    assert tr.routing == "full" and {"J_hard", "J_reg", "J_adv"} <= set(terms)
    assert float(terms["J_adv"]) > 0
    assert _nonzero(g["trunk"]) and _nonzero(g["head"])
    for k in ("trunk", "head", "generator"):
        assert _close(got[k], _plus(m[k], g[k])), k


def test_no_adv_run_drops_j_adv_only():
    spec, tr, terms, m, g, got = _routed("daml no-adv/official")
    assert tr.lambda2 == 0.0 and tr.lambda1 == 1.0
    total = terms["J_hard"] + terms["J_reg"]
    assert float(tr._triples["generator_objective"]) == pytest.approx(float(total))
    assert not _nonzero(g["head"]) and _nonzero(g["trunk"])   # J_hard / J_reg: trunk only
    for k in ("trunk", "head", "generator"):
        assert _close(got[k], _plus(m[k], g[k])), k


@pytest.mark.parametrize("name", ["daml split/official", "daml split/pml",
                                  "daml+sp split/official"])
def test_split_routing_keeps_j_gen_out_of_trunk_and_head(name):
    spec, tr, terms, m, g, got = _routed(name)
    assert tr.routing == "split" and _nonzero(g["trunk"])    # there was something to keep out
    assert _close(got["trunk"], m["trunk"]) and _close(got["head"], m["head"])
    assert _close(got["generator"], _plus(m["generator"], g["generator"]))
    if "+sp" in name:
        assert tr.positive_generator is not None and "J+_gen" in terms


@pytest.mark.parametrize("name", ["midpoint/official", "midpoint/pml", "midpoint+sp/official"])
def test_midpoint_generator_has_no_parameters_and_sends_its_terms_to_the_trunk(name):
    spec, tr, terms, m, g, got = _routed(name)
    t = tr._triples
    assert tr.generator_params == [] and list(tr.generator.parameters()) == []
    assert {"J_hard", "J_reg", "J_adv"} <= set(terms)
    positive = t["synthetic_positive"]
    if positive is not None:       # DAML+SP: the positive fixed at the midpoint too
        want_pos = (t["anchor"] + t["positive"]) / 2
        if spec.preset == "official":
            want_pos = F.relu(want_pos)
        torch.testing.assert_close(positive, want_pos)
    mid = (t["anchor"] + t["negative"]) / 2
    torch.testing.assert_close(t["synthetic"], F.relu(mid) if spec.preset == "official" else mid)
    assert _nonzero(g["trunk"])
    for k in ("trunk", "head"):
        assert _close(got[k], _plus(m[k], g[k])), k


def test_control_plus_regulariser_is_the_pull_of_anchor_and_negative():
    spec, tr, terms, m, g, got = _routed("control+reg/official")
    t = tr._triples
    assert tr.generator_params == [] and tr.lambda2 == 0.0
    assert float(terms["J_reg"]) == 0.0                       # G(a, p, n) = n
    hard = (t["negative"] - t["anchor"]).pow(2).sum(1).mean()
    assert float(terms["J_hard"]) == pytest.approx(float(hard))
    assert _nonzero(g["trunk"]) and _close(got["trunk"], _plus(m["trunk"], g["trunk"]))


@pytest.mark.parametrize("name", ["daml/dmlkit", "midpoint/dmlkit"])
def test_separate_routing_gives_the_metric_network_j_m_only(name):
    spec, tr, terms, m, g, got = _routed(name, alpha=10.0, alpha_sign=1)
    assert tr.routing == "separate" and "J_hard" in terms
    assert _nonzero(g["head"])             # J_adv depends on the head, and is withheld from it
    assert _close(got["trunk"], m["trunk"]) and _close(got["head"], m["head"])
    if tr.generator_params:
        assert _close(got["generator"], g["generator"]) and _nonzero(g["generator"])


def test_ablation_runs_names_and_what_is_left_out():
    names = [r.name for r in RUNS]
    assert names[:2] == ["control/official", "daml/official"]
    assert "daml split/dmlkit" not in names and "control+reg/dmlkit" not in names
    assert any("daml split/dmlkit" in s for s in SKIPPED)
    own = BY_NAME["daml/official @ preset trunk lr"]
    assert own.settings == {"trunk_lr_factor": 1e-3}
    assert own.control == "control/official @ preset trunk lr"
    assert all(r.control == f"control/{r.preset}" for r in RUNS
               if r.control and "@" not in r.name)
    with pytest.raises(ValueError, match="unknown design"):
        ablation.ablation_runs(designs=("paper",))


def test_ablation_table_equals_paired_differences_by_hand():
    rng = np.random.default_rng(0)
    rows = []
    for run, control in (("control/official", None), ("daml/official", "control/official"),
                         ("midpoint/official", "control/official")):
        for s in range(5):
            rows.append({"run": run, "control": control, "seed": s,
                         "recall@1": rng.uniform(0.1, 0.4)})
    frame = comparison.pd.DataFrame(rows)
    table = ablation.ablation_table(frame, ["recall@1"])
    assert list(table["run"]) == ["daml/official", "midpoint/official"]
    assert list(table["variant"]) == ["daml", "midpoint"]
    assert list(table["design"]) == ["official", "official"]
    ctrl = frame[frame.run == "control/official"]["recall@1"].to_numpy()
    d = 100 * (frame[frame.run == "daml/official"]["recall@1"].to_numpy() - ctrl)
    lo, hi = paired.interval(d)
    assert table["diff"].iloc[0] == pytest.approx(d.mean())
    assert (table["low"].iloc[0], table["high"].iloc[0]) == pytest.approx((lo, hi))


def test_run_comparison_rows_do_not_depend_on_workers():
    x, y = blobs(C=8, n=6, seed=1)
    xt, yt = blobs(C=5, n=6, seed=2)
    runs = [BY_NAME["control/official"], BY_NAME["midpoint/official"]]
    kw = dict(seeds=(0, 1), features=((x, y), (xt, yt + 100)), **{**SMALL, "epochs": 2})
    one = comparison.run_comparison(runs, workers=1, **kw)
    two = comparison.run_comparison(runs, workers=2, **kw)
    comparison.pd.testing.assert_frame_equal(one, two)


def test_saved_ablation_table_is_the_full_ablation_over_five_seeds(tmp_path):
    f = ablation.load_ablation()
    runs, _ = ablation.ablation_runs()
    assert list(dict.fromkeys(f["run"])) == [r.name for r in runs]
    assert f.groupby("run")["seed"].nunique().min() >= 5
    for r in runs:                          # each row's configuration is what its name says
        cfg = json.loads(f.loc[f.run == r.name, "config"].iloc[0])
        assert cfg["preset"] == r.preset and cfg["method"] == r.method
        assert cfg["generator"] == r.generator
        for key, value in r.settings.items():
            assert cfg[key] == value, (r.name, key)
    with pytest.raises(ValueError, match=r"benchmarks/adversarial\.py --ablation --save"):
        ablation.load_ablation(tmp_path / "missing.csv")
