"""dmlkit.pairs: the tables and landscapes of one batch, against direct computations."""

import itertools
import math

import numpy as np
import pytest
import torch

from dmlkit import losses, pairs
from dmlkit.losses.triplet import triplet_counts


def _batch(n=18, d=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % classes


@pytest.mark.parametrize("form", ["distance", "similarity"])
def test_triplet_table_matches_counts_and_loop(form):
    emb, lab = _batch(n=12, classes=3, seed=1)
    table = pairs.triplet_table(emb, lab, margin=0.2, form=form)
    b = losses.make_batch(emb, lab)
    assert len(table) == int((b.pos.sum(1) * b.neg.sum(1)).sum())
    T = losses.build("triplet", form=form).scores(b)
    for mining, cats in (("all", ("semi-hard", "hard")), ("semihard", ("semi-hard",)),
                         ("hard", ("hard",))):
        kept = int(triplet_counts(T, b.pos, b.neg, 0.2, mining)[2])
        assert kept == int(table.category.isin(cats).sum())
    assert row_by_row(table, emb, lab, 0.2, form)


def row_by_row(table, emb, lab, margin, form):
    """Every row of the table against a naive loop over the triplets (anchor, positive,
    negative in lexicographic order), its scores from the unit vectors, its category by the
    docstring's rule (easy: violation <= 0; semi-hard: t_an < t_ap; hard: t_an >= t_ap)."""
    u = torch.nn.functional.normalize(emb.double(), dim=1)

    def score(i, j):
        if form == "similarity":
            return float(u[i] @ u[j])
        d2 = float(((u[i] - u[j]) ** 2).sum())
        return -d2 if form == "squared_distance" else -math.sqrt(d2)

    rows = []
    n = len(lab)
    for a, p, q in itertools.product(range(n), repeat=3):
        if p != a and lab[p] == lab[a] and lab[q] != lab[a]:
            t_ap, t_an = score(a, p), score(a, q)
            v = t_an - t_ap + margin
            rows.append((a, p, q, t_ap, t_an, v,
                         "easy" if v <= 0 else "semi-hard" if t_an < t_ap else "hard"))
    assert len(table) == len(rows)
    assert table[["anchor", "positive", "negative"]].values.tolist() == [list(r[:3]) for r in rows]
    np.testing.assert_allclose(table[["t_ap", "t_an", "violation"]].to_numpy(),
                               [r[3:6] for r in rows], rtol=0, atol=1e-6)
    assert table.category.tolist() == [r[6] for r in rows]
    return True


@pytest.mark.parametrize("form", ["distance", "squared_distance", "similarity"])
def test_triplet_table_rows_equal_the_loop(form):
    emb, lab = _batch(n=9, classes=3, seed=4)
    assert row_by_row(pairs.triplet_table(emb, lab, margin=0.3, form=form), emb, lab, 0.3, form)
    # one-hot embeddings: cosines 0 or 1, so ties on both category boundaries
    x = torch.eye(3, dtype=torch.float64)[torch.tensor([0, 0, 1, 1, 2, 0, 1, 2])]
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    table = pairs.triplet_table(x, y, margin=1.0, form="similarity")
    assert row_by_row(table, x, y, 1.0, "similarity")
    assert set(table.category) == {"easy", "hard"} and (table.violation == 0).any()


def test_mining_stats_values():
    emb, lab = _batch(n=16, classes=4)
    b = losses.make_batch(emb, lab)
    raw = pairs.mining_stats(losses.build("raw"), emb, lab)
    assert raw == {"pos_kept": 1.0, "neg_kept": 1.0}
    lam = 0.2
    con = pairs.mining_stats(losses.build("contrastive", form="similarity", lam=lam), emb, lab)
    assert con["pos_kept"] == 1.0
    assert con["neg_kept"] == pytest.approx(float((b.S[b.neg] > lam).double().mean()))
    tri = pairs.mining_stats(losses.build("triplet", mining="semihard"), emb, lab)
    table = pairs.triplet_table(emb, lab, margin=0.2)
    assert tri["triplets_kept"] == pytest.approx((table.category == "semi-hard").mean())
    vthm_pos, vthm_neg = losses.build("vthm").mine(b)
    ms = pairs.mining_stats(losses.build("multi_similarity"), emb, lab)
    assert ms["neg_kept"] == pytest.approx(float(vthm_neg.sum() / b.neg.sum()))
    assert ms["pos_kept"] == pytest.approx(float(vthm_pos.sum() / b.pos.sum()))


def test_loss_landscape_values_and_gradient():
    pts = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.3, -0.8]], dtype=torch.float64)
    lab = torch.tensor([0, 1, 1])
    loss = losses.build("contrastive", margin=1.0, reduction="sum", normalize=False)
    land = pairs.loss_landscape_2d(loss, pts, lab, moving_label=0, lim=1.0, n=5)
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
        pairs.loss_landscape_2d(loss, torch.zeros(3, 3), lab, 0)


def test_osm_caa_pair_table_and_outlier_attention():
    angles = torch.tensor([-0.2, 0.0, 0.2, 1.37, 1.57, 1.77, 1.6])
    x = torch.stack([torch.cos(angles), torch.sin(angles)], 1).double()
    lab = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    loss = losses.build("osm_caa", num_classes=2, embedding_dim=2, scale=16.0).double()
    with torch.no_grad():
        loss.centres.copy_(torch.stack([x[:3].mean(0), x[3:6].mean(0)]))
    table = pairs.osm_caa_pair_table(loss, x, lab, flags=torch.arange(7) == 6)
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
        pairs.osm_caa_pair_table(losses.build("binomial"), x, lab)
