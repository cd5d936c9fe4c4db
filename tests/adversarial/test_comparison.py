"""dmlkit.adversarial.comparison and the identity generator: the control changes nothing but
the generator, the runs and summaries of a fair comparison, the saved benchmark table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from feature_blobs import blobs, one_thread  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv
from dmlkit.adversarial import comparison
from dmlkit.adversarial.generators import IdentityGenerator

SMALL = dict(P=4, K=3, embedding_dim=6, generator_hidden=(16,), batches_per_epoch=3,
             epochs=3, warmup_epochs=1)


def test_identity_generator_returns_the_real_sample_and_has_no_parameters():
    a, p, n = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    assert IdentityGenerator(4)(a, p, n) is n
    assert IdentityGenerator(4, role="positive")(a, p, n) is p
    assert list(IdentityGenerator(4).parameters()) == []
    with pytest.raises(ValueError, match="role must be"):
        IdentityGenerator(4, role="anchor")


def test_identity_control_of_official_is_the_official_metric_only_run():
    # the official metric-only protocol (random triplets, real negatives) IS the control
    x, y = blobs()
    a = adv.fit_adversarial(x, y, "triplet", "daml", preset="official", generator="identity",
                            **SMALL)
    b = adv.fit_adversarial(x, y, "triplet", "metric", preset="official", **SMALL)
    np.testing.assert_allclose([h["J_m"] for h in a.history], [h["J_m"] for h in b.history],
                               rtol=1e-5)
    torch.testing.assert_close(a.embed(x), b.embed(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("preset", ["dmlkit", "official", "pml"])
@pytest.mark.parametrize("method", ["daml", "daml+sp"])
def test_identity_control_runs_the_method_schedule_without_a_generator_objective(preset,
                                                                                 method):
    x, y = blobs()
    res = adv.fit_adversarial(x, y, "triplet", method, preset=preset, generator="identity",
                              **SMALL)
    ref = adv.fit_adversarial(x, y, "triplet", method, preset=preset, **SMALL)
    assert [h["phase"] for h in res.history] == [h["phase"] for h in ref.history]
    assert res.config["steps"] == ref.config["steps"]
    assert res.config["negatives_per_anchor"] == ref.config["negatives_per_anchor"] == 1
    assert all("J_gen" not in h and "J_adv" not in h for h in res.history)
    assert all("J_gen" in h for h in ref.history if h["phase"] == "joint")
    assert res.trainer.generator_params == [] and res.trainer.opt_generator is None


def test_identity_control_metric_loss_uses_the_real_negative_in_place_of_the_synthetic():
    # a joint step of the dmlkit control: J_m is the loss on the same triples with the real
    # negative where DAML puts the synthetic one
    x, y = blobs(spread=5.0)    # overlapping classes: the loss is not 0
    tr = adv.fit_adversarial(x, y, "triplet", "daml", generator="identity", **SMALL).trainer
    xb, yb = x[::6], y[::6]
    tr._set_phase("joint")
    state = tr.rng.get_state()
    with torch.no_grad():
        got = tr.compute_loss(xb, yb)
        tr.rng.set_state(state)
        a, p, n = tr._sampled_triples(yb)
        expected = adv.metric_loss_with_synthetic(tr.loss, tr.head(xb), yb, tr.head(xb[n]),
                                                  yb[n], a, False)
    assert a.numel() > 0 and set(got) == {"J_m"}
    assert float(got["J_m"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(got["J_m"]) > 0


def test_generator_argument_errors():
    x, y = blobs()
    with pytest.raises(ValueError, match="unknown generator 'zero'; known: 'mlp', 'identity', "
                                         "'interpolate'"):
        adv.fit_adversarial(x, y, "triplet", "daml", generator="zero", **SMALL)
    for gen in ("identity", "interpolate"):
        with pytest.raises(ValueError, match="belongs to 'daml' / 'daml\\+sp'"):
            adv.fit_adversarial(x, y, "triplet", "metric", generator=gen, **SMALL)
    with pytest.raises(ValueError, match="generator_terms=True gives the identity generator"):
        adv.fit_adversarial(x, y, "triplet", "daml", generator_terms=True, **SMALL)


def test_fair_runs_pairs_every_method_with_its_preset_control():
    runs = comparison.fair_runs(methods=("daml", "daml+sp"), reference=True)
    names = [r.name for r in runs]
    assert names[0] == "metric/every negative" and runs[0].control is None
    for preset in ("dmlkit", "official", "pml"):
        ctrl = next(r for r in runs if r.name == f"control/{preset}")
        assert ctrl.generator == "identity" and ctrl.preset == preset and ctrl.control is None
        for m in ("daml", "daml+sp"):
            run = next(r for r in runs if r.name == f"{m}/{preset}")
            assert run.control == ctrl.name and run.generator == "mlp" and run.method == m
    with pytest.raises(ValueError, match="unknown preset"):
        comparison.fair_runs(presets=("paper",))
    with pytest.raises(ValueError, match="methods must be"):
        comparison.fair_runs(methods=("metric",))


def test_negatives_in_metric_loss_per_preset():
    x, y = blobs()
    cfg = {r.name: adv.fit_adversarial(x, y, "triplet", r.method, preset=r.preset,
                                       generator=r.generator, **SMALL).config
           for r in comparison.fair_runs(reference=True)}
    got = {k: comparison.negatives_in_metric_loss(c) for k, c in cfg.items()}
    assert got == {"metric/every negative": "every batch negative",
                   "control/dmlkit": "1 real", "daml/dmlkit": "1 synthetic",
                   "control/official": "1 real", "daml/official": "1 synthetic",
                   "control/pml": "batch + 1 real", "daml/pml": "batch + 1 synthetic"}


@pytest.fixture(scope="module")
def small_frame():
    x, y = blobs(C=8, n=6, seed=1)
    xt, yt = blobs(C=5, n=6, seed=2)
    runs = comparison.fair_runs(presets=("dmlkit", "pml"), reference=True)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        return comparison.run_comparison(runs, seeds=(0, 1), loss="triplet",
                                         features=((x, y), (xt, yt + 100)), **SMALL)


def test_run_comparison_rows_and_columns(small_frame):
    f = small_frame
    assert len(f) == 5 * 2 and list(dict.fromkeys(f["run"])) == [
        "metric/every negative", "control/dmlkit", "daml/dmlkit", "control/pml", "daml/pml"]
    for col in (*comparison.DIAGNOSTIC_COLUMNS, *comparison.CONFIG_COLUMNS, "recall@1",
                "map@r", "nmi", "config"):
        assert col in f.columns
    cfg = json.loads(f["config"].iloc[2])
    assert cfg["method"] == "daml" and cfg["preset"] == "dmlkit" and cfg["seed"] == 0
    assert f["steps"].tolist() == [3 * 3] * 2 + [4 * 3] * 8   # + the generator-only epoch
    assert f[["recall@1", "map@r", "nmi"]].apply(lambda c: c.between(0, 1)).all().all()
    # DAML runs have a probe accuracy; the reference run has no adversarial steps
    assert f.loc[f.run == "daml/pml", "probe_accuracy"].notna().all()
    assert f.loc[f.run == "metric/every negative", "probe_accuracy"].isna().all()


def test_run_comparison_is_seeded(small_frame):
    x, y = blobs(C=8, n=6, seed=1)
    xt, yt = blobs(C=5, n=6, seed=2)
    pml = comparison.fair_runs(presets=("pml",))
    again = comparison.run_comparison(pml, seeds=(1,), features=((x, y), (xt, yt + 100)),
                                      **SMALL).set_index("run")
    mine = small_frame[small_frame.seed == 1].set_index("run")
    for run in ("control/pml", "daml/pml"):
        assert again.loc[run, "recall@1"] == mine.loc[run, "recall@1"]
        assert again.loc[run, "config"] == mine.loc[run, "config"]


def test_summarize_paired_difference_by_seed(small_frame):
    s = comparison.summarize(small_frame, ["recall@1"]).set_index("run")
    f = small_frame
    d = (f[f.run == "daml/pml"].set_index("seed")["recall@1"]
         - f[f.run == "control/pml"].set_index("seed")["recall@1"])
    assert s.loc["daml/pml", "recall@1 vs control"] == pytest.approx(100 * d.mean())
    v = 100 * f[f.run == "daml/pml"]["recall@1"].to_numpy()
    assert s.loc["daml/pml", "recall@1"] == pytest.approx(v.mean())
    assert s.loc["daml/pml", "recall@1 sd"] == pytest.approx(v.std(ddof=1))
    assert math.isnan(s.loc["control/pml", "recall@1 vs control"])
    assert s.loc["daml/pml", "seeds"] == 2 and s.loc["daml/pml", "negatives"] == \
        "batch + 1 synthetic"


def test_run_comparison_bad_input():
    x, y = blobs()
    with pytest.raises(ValueError, match="not among the runs"):
        comparison.run_comparison(comparison.fair_runs()[1:2], features=((x, y), (x, y)))
    with pytest.raises(ValueError, match="at least one seed"):
        comparison.run_comparison(comparison.fair_runs()[:1], seeds=(),
                                  features=((x, y), (x, y)))
    with pytest.raises(ValueError, match="empty"):
        comparison.summarize(comparison.pd.DataFrame())


def test_summarize_verdict_comes_from_the_paired_t_interval(small_frame):
    from scipy import stats

    s = comparison.summarize(small_frame, ["recall@1", "nmi"]).set_index("run")
    f = small_frame.set_index(["run", "seed"])
    for run, ctrl in (("daml/dmlkit", "control/dmlkit"), ("daml/pml", "control/pml")):
        for m in ("recall@1", "nmi"):
            d = 100 * np.array([f.loc[(run, k), m] - f.loc[(ctrl, k), m] for k in (0, 1)])
            half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
            assert s.loc[run, f"{m} low"] == pytest.approx(d.mean() - half)
            assert s.loc[run, f"{m} high"] == pytest.approx(d.mean() + half)
            want = ("identical" if (d == 0).all() else "better" if d.mean() - half > 0 else
                    "worse" if d.mean() + half < 0 else "cannot tell with n = 2")
            assert s.loc[run, f"{m} verdict"] == want
            assert s.loc[run, f"{m} vs control sd"] == pytest.approx(d.std(ddof=1))
    assert s.loc["control/pml", "recall@1 verdict"] == ""


def test_run_comparison_collects_every_epoch_of_every_run():
    x, y = blobs(C=8, n=6, seed=1)
    xt, yt = blobs(C=5, n=6, seed=2)
    hist: list = []
    comparison.run_comparison(comparison.fair_runs(presets=("official",)), seeds=(0, 1),
                              features=((x, y), (xt, yt + 100)), history=hist, **SMALL)
    rows = {(h["run"], h["seed"], h["epoch"]) for h in hist}
    assert rows == {(r, s, e) for r in ("control/official", "daml/official") for s in (0, 1)
                    for e in range(3)}
    joint = [h for h in hist if h["phase"] == "joint"]
    assert joint and all("collapse_same" in h and "probe_accuracy" in h for h in joint)


def test_verdict_lines_one_per_compared_run(small_frame):
    s = comparison.summarize(small_frame, ["recall@1", "map@r"])
    lines = comparison.verdict_lines(s, "here")
    compared = s[s["recall@1 verdict"] != ""]
    assert len(lines) == len(compared) == 2
    for line, row in zip(lines, compared.to_dict(orient="records")):
        assert line.startswith(f"here: {row['run']} vs its control, n = 2 seeds: ")
        for m in ("recall@1", "map@r"):
            assert (f"{m} {row[f'{m} vs control']:+.1f} (CI {row[f'{m} low']:+.1f} to "
                    f"{row[f'{m} high']:+.1f}): {row[f'{m} verdict']}") in line
        assert "every seed" not in line
