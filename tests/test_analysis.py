"""dmlkit.analysis: value checks against direct computations (small sizes, fast)."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from dmlkit import analysis, losses, weights
from dmlkit.losses.triplet import triplet_counts


def _batch(n=18, d=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % classes


CLOSED = {
    "contrastive-sim-mean": ("contrastive", {"form": "similarity", "lam": 0.1}),
    "contrastive-sim-sum": ("contrastive", {"form": "similarity", "reduction": "sum"}),
    "contrastive-sim-nonzero": ("contrastive", {"form": "similarity",
                                                "reduction": "mean_nonzero", "lam": 0.0}),
    "triplet-sim": ("triplet", {"form": "similarity", "margin": 0.3}),
    "triplet-sim-mean": ("triplet", {"form": "similarity", "reduction": "mean"}),
    "gen-lifted": ("generalized_lifted_structure", {"lam": 0.5}),
    "binomial": ("binomial", {}),
    "binomial-sum": ("binomial", {"reduction": "sum", "alpha": 3.0, "beta": 20.0}),
    "ms": ("multi_similarity", {}),
    "raw": ("raw", {"beta": 10.0}),
    "vthm": ("vthm", {}),
    "binomial+vthm": ("binomial+vthm", {}),
    "raw+semihard": ("raw+semihard", {"margin": 0.3}),
}


@pytest.mark.parametrize("key", list(CLOSED))
def test_closed_form_weights_equal_autograd(key):
    name, params = CLOSED[key]
    emb, lab = _batch()
    loss = losses.build(name, **params)
    S, W = weights.pair_weights(loss, emb, lab)
    S2, Wc = analysis.closed_form_weights(loss, emb, lab)
    assert torch.allclose(S, S2)
    assert float(W.abs().max()) > 0
    assert torch.allclose(W, Wc, atol=1e-12, rtol=1e-9), float((W - Wc).abs().max())


def test_closed_form_triplet_counts_by_loop():
    emb, lab = _batch(n=10, classes=3)
    loss = losses.build("triplet", form="similarity", margin=0.2, reduction="sum")
    S, W = analysis.closed_form_weights(loss, emb, lab)
    expected = np.zeros((10, 10))
    for a, p, n in itertools.product(range(10), repeat=3):
        if a != p and lab[a] == lab[p] and lab[n] != lab[a] and S[a, n] - S[a, p] + 0.2 > 0:
            expected[a, p] += 1
            expected[a, n] += 1
    np.testing.assert_allclose(W.numpy(), expected)


def test_closed_form_unsupported_raises():
    emb, lab = _batch()
    with pytest.raises(ValueError, match="no closed form"):
        analysis.closed_form_weights(losses.build("ddml"), emb, lab)


def test_theorem_table_values():
    emb, lab = _batch()
    table = analysis.theorem_table(["binomial", "multi_similarity", "ddml", "npair"], emb, lab)
    assert list(table["loss"]) == ["binomial", "multi_similarity", "ddml", "npair"]
    assert (table["max_grad_diff"] < 1e-10).all()
    assert (table["max_grad"] > 1e-4).all()
    assert (table["min_weight"] >= 0).all()
    assert table["closed_form_err"].iloc[:2].max() < 1e-12
    assert table["closed_form_err"].iloc[2:].isna().all()
    # binomial weights every pair; npair only anchor-vs-positive columns
    assert table["active_pairs"].iloc[0] == 1.0
    assert table["active_pairs"].iloc[3] < 0.5


def test_inject_label_noise():
    labels = torch.arange(40) % 7
    noisy, flipped = analysis.inject_label_noise(labels, 0.25, seed=3)
    assert int(flipped.sum()) == 10
    assert (noisy[flipped] != labels[flipped]).all()
    assert (noisy[~flipped] == labels[~flipped]).all()
    assert set(noisy.tolist()) <= set(labels.tolist())
    again, flipped2 = analysis.inject_label_noise(labels, 0.25, seed=3)
    assert torch.equal(again, noisy) and torch.equal(flipped, flipped2)
    same, none = analysis.inject_label_noise(labels, 0.0)
    assert torch.equal(same, labels) and not none.any()
    with pytest.raises(ValueError, match="fraction"):
        analysis.inject_label_noise(labels, 1.5)


@pytest.mark.parametrize("form", ["distance", "similarity"])
def test_triplet_table_matches_counts_and_loop(form):
    emb, lab = _batch(n=12, classes=3, seed=1)
    table = analysis.triplet_table(emb, lab, margin=0.2, form=form)
    b = losses.make_batch(emb, lab)
    assert len(table) == int((b.pos.sum(1) * b.neg.sum(1)).sum())
    T = losses.build("triplet", form=form).scores(b)
    for mining, cats in (("all", ("semi-hard", "hard")), ("semihard", ("semi-hard",)),
                         ("hard", ("hard",))):
        kept = int(triplet_counts(T, b.pos, b.neg, 0.2, mining)[2])
        assert kept == int(table.category.isin(cats).sum())
    row = table.iloc[5]
    a, p, n = int(row.anchor), int(row.positive), int(row.negative)
    if form == "distance":
        ea, ep, en = (torch.nn.functional.normalize(emb[k], dim=0) for k in (a, p, n))
        assert row.t_ap == pytest.approx(-float((ea - ep).norm()), abs=1e-7)
        assert row.t_an == pytest.approx(-float((ea - en).norm()), abs=1e-7)
    assert row.violation == pytest.approx(row.t_an - row.t_ap + 0.2)


def test_mining_stats_values():
    emb, lab = _batch(n=16, classes=4)
    b = losses.make_batch(emb, lab)
    raw = analysis.mining_stats(losses.build("raw"), emb, lab)
    assert raw == {"pos_kept": 1.0, "neg_kept": 1.0}
    lam = 0.2
    con = analysis.mining_stats(losses.build("contrastive", form="similarity", lam=lam), emb, lab)
    assert con["pos_kept"] == 1.0
    assert con["neg_kept"] == pytest.approx(float((b.S[b.neg] > lam).double().mean()))
    tri = analysis.mining_stats(losses.build("triplet", mining="semihard"), emb, lab)
    table = analysis.triplet_table(emb, lab, margin=0.2)
    assert tri["triplets_kept"] == pytest.approx((table.category == "semi-hard").mean())
    vthm_pos, vthm_neg = losses.build("vthm").mine(b)
    ms = analysis.mining_stats(losses.build("multi_similarity"), emb, lab)
    assert ms["neg_kept"] == pytest.approx(float(vthm_neg.sum() / b.neg.sum()))
    assert ms["pos_kept"] == pytest.approx(float(vthm_pos.sum() / b.pos.sum()))


def test_summarize_mean_std():
    df = pd.DataFrame({"loss": ["b", "b", "a", "a", "a"], "x": [1.0, 3.0, 2.0, 4.0, 9.0]})
    out = analysis.summarize(df, metrics=("x",))
    assert list(out.index) == ["b", "a"]
    assert out.loc["b", "x_mean"] == 2.0 and out.loc["a", "x_mean"] == 5.0
    assert out.loc["a", "x_std"] == pytest.approx(np.std([2.0, 4.0, 9.0], ddof=1))
    assert list(out["n"]) == [2, 3]
    with pytest.raises(ValueError, match="columns"):
        analysis.summarize(df, metrics=("y",))


def test_loss_landscape_values_and_gradient():
    pts = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.3, -0.8]], dtype=torch.float64)
    lab = torch.tensor([0, 1, 1])
    loss = losses.build("contrastive", margin=1.0, reduction="sum", normalize=False)
    land = analysis.loss_landscape_2d(loss, pts, lab, moving_label=0, lim=1.0, n=5)
    r, c = 1, 3
    x, y = land["x"][c], land["y"][r]

    def direct(px, py):
        return float(loss(torch.cat([pts, torch.tensor([[px, py]], dtype=torch.float64)]),
                          torch.tensor([0, 1, 1, 0])))

    # naive loop over the ordered pairs of the 4 points (fixed ones + the moving one)
    allp = np.vstack([pts.numpy(), [x, y]])
    alll = [0, 1, 1, 0]
    expected = 0.0
    for i, j in itertools.permutations(range(4), 2):
        dist = np.linalg.norm(allp[i] - allp[j])
        expected += dist ** 2 if alll[i] == alll[j] else max(0.0, 1.0 - dist) ** 2
    assert land["loss"][r, c] == pytest.approx(expected, rel=1e-9)
    assert land["loss"][r, c] == pytest.approx(direct(x, y), rel=1e-12)
    h = 1e-6
    assert land["grad_x"][r, c] == pytest.approx((direct(x + h, y) - direct(x - h, y)) / (2 * h),
                                                 abs=1e-5)
    assert land["grad_y"][r, c] == pytest.approx((direct(x, y + h) - direct(x, y - h)) / (2 * h),
                                                 abs=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        analysis.loss_landscape_2d(loss, torch.zeros(3, 3), lab, 0)


def test_osm_caa_pair_table_and_outlier_attention():
    angles = torch.tensor([-0.2, 0.0, 0.2, 1.37, 1.57, 1.77, 1.6])
    x = torch.stack([torch.cos(angles), torch.sin(angles)], 1).double()
    lab = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    loss = losses.build("osm_caa", num_classes=2, embedding_dim=2, scale=16.0).double()
    with torch.no_grad():
        loss.centres.copy_(torch.stack([x[:3].mean(0), x[3:6].mean(0)]))
    table = analysis.osm_caa_pair_table(loss, x, lab, flags=torch.arange(7) == 6)
    assert len(table) == 7 * 6
    np.testing.assert_allclose(table.attention, np.minimum(table.a_i, table.a_j))
    np.testing.assert_allclose(table.weight, table.osm * table.attention, rtol=1e-6)
    d = table.distance.to_numpy()
    pos = (table.pair == "positive").to_numpy()
    np.testing.assert_allclose(table.osm[pos], np.exp(-d[pos] ** 2 / 0.8 ** 2), rtol=1e-6)
    np.testing.assert_allclose(table.osm[~pos], np.maximum(1.2 - d[~pos], 0), rtol=1e-6,
                               atol=1e-7)
    a = loss.sample_attention(x, lab).detach()
    assert float(a[6]) < 0.01 < float(a[:6].min())
    assert table[table.flagged].attention.max() < table[~table.flagged].attention.min()
    with pytest.raises(ValueError, match="osm_caa"):
        analysis.osm_caa_pair_table(losses.build("binomial"), x, lab)


def test_published_results_resource():
    df = analysis.published_results()
    t1 = df[df.note.fillna("").str.contains("Table 1") & (df.dataset == "CUB-200-2011")]
    assert len(t1) == 7
    assert float(t1[t1.method == "RAW+VTHM"].value.iloc[0]) == pytest.approx(66.85)


@pytest.fixture(scope="module")
def tiny_task():
    return analysis.image_task("glyphs", num_classes=6, num_test_classes=4, images_per_class=6,
                               size=12, difficulty=0.2)


def test_image_task(tiny_task):
    assert tiny_task.X.shape == (36, 1, 12, 12) and tiny_task.X_test.shape == (24, 1, 12, 12)
    assert tiny_task.num_classes == 6
    assert set(tiny_task.y_test.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="glyphs"):
        analysis.image_task("cub200")


def test_train_embedding_deterministic_and_logged(tiny_task):
    kw = dict(steps=6, P=3, K=2, log_every=2, track_mining=True, snapshot_steps=(0, 6))
    run = analysis.train_embedding(tiny_task, "multi_similarity", **kw)
    again = analysis.train_embedding(tiny_task, "multi_similarity", **kw)
    assert run.scores == again.scores
    assert list(run.history.step) == [0, 2, 4, 5]
    assert run.history[["pos_kept", "neg_kept"]].stack().between(0, 1).all()
    assert set(run.snapshots) == {0, 6}
    S, W, pos, neg = run.snapshots[6]
    assert S.shape == W.shape == pos.shape == (6, 6) and (W[~(pos | neg)] == 0).all()
    for v in (*run.scores.values(), *run.initial_scores.values()):
        assert 0.0 <= v <= 1.0
    # the untrained scores are those of build_net(seed) embeddings
    z = analysis.embed(analysis.build_net(seed=0), tiny_task.X_test)
    assert run.initial_scores == analysis.retrieval_scores(z, tiny_task.y_test)
    with pytest.raises(ValueError, match="labels"):
        analysis.train_embedding(tiny_task, "binomial", steps=1, labels=torch.zeros(3))


def test_run_ablation_rows(tiny_task):
    hist, runs = {}, {}
    df = analysis.run_ablation(tiny_task, {"ms": "multi_similarity", "c": ("contrastive", {})},
                               seeds=(0, 1), steps=2, P=3, K=2, track_mining=True,
                               progress=False, histories=hist, runs=runs)
    assert list(df.loss) == ["ms", "ms", "c", "c"] and list(df.seed) == [0, 1, 0, 1]
    assert {"recall@1", "map@r", "untrained_map@r", "pos_kept", "neg_kept"} <= set(df.columns)
    assert set(hist) == set(runs) == {("ms", 0), ("ms", 1), ("c", 0), ("c", 1)}
    assert df.loc[0, "map@r"] == runs[("ms", 0)].scores["map@r"]


def test_batch_losses_match_direct(tiny_task):
    from dmlkit import data

    net = analysis.build_net(seed=1)
    loss = losses.build("npair")
    sampler = data.PKSampler(tiny_task.y.numpy(), P=3, K=2, seed=0)
    values = analysis.batch_losses(net, tiny_task, loss, sampler, n_batches=3)
    assert values.shape == (3,)
    sampler.set_epoch(0)
    first = torch.as_tensor(next(iter(sampler)))
    net.eval()
    with torch.no_grad():
        direct = float(loss(net(tiny_task.X[first]), tiny_task.y[first]))
    assert values[0] == pytest.approx(direct, rel=1e-6)
