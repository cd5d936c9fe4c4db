"""dmlkit.plotting: retrieval galleries against brute force, figure layouts and colours."""

import numpy as np
import pytest
import torch

from dmlkit import evaluate, plotting

# ----------------------------------------------------------------------------- gallery


def test_retrieval_gallery_matches_brute_force_and_recall():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    x[7] = x[3]  # an exact tie: index order decides
    y = rng.integers(0, 5, 40)
    g = plotting.retrieval_gallery(x, y, queries=np.arange(40), k=4)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    for q in range(40):
        sims = [(-float(u[q] @ u[j]), j) for j in range(40) if j != q]
        expected = [j for _, j in sorted(sims)[:4]]
        assert g.neighbours[q].tolist() == expected
        assert g.correct[q].tolist() == [bool(y[j] == y[q]) for j in expected]
    assert g.neighbours[3, 0] == 7 and g.neighbours[7, 0] == 3
    # first column = Recall@1 of dmlkit.evaluate (every query has a positive here)
    counts = np.bincount(y)
    has_pos = counts[y] > 1
    r1 = evaluate.recall_at_k(x, y, ks=(1,))["recall@1"]
    assert g.correct[has_pos, 0].mean() == pytest.approx(r1)
    sub = plotting.retrieval_gallery(x, y, queries=3, k=2, seed=1)
    assert sub.query.shape == (3,) and len(set(sub.query)) == 3
    with pytest.raises(ValueError):
        plotting.retrieval_gallery(x, y, k=40)


def test_gallery_and_grid_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = torch.rand(12, 1, 8, 8)
    y = np.repeat(np.arange(4), 3)
    g = plotting.retrieval_gallery(imgs.reshape(12, -1), y, queries=2, k=3)
    fig = plotting.plot_retrieval_gallery(imgs, g)
    assert len(fig.axes) == 2 * 4
    # border colours: green for correct, red for wrong
    for r in range(2):
        for j in range(3):
            edge = fig.axes[r * 4 + 1 + j].spines["top"].get_edgecolor()
            want = plotting.POS_COLOR if g.correct[r, j] else plotting.NEG_COLOR
            assert matplotlib.colors.to_hex(edge) == want
    fig2 = plotting.plot_image_grid(imgs, y, classes=3, per_class=2)
    assert len(fig2.axes) == 6
    plt.close("all")


def test_project_2d_without_warnings_on_repeated_points():
    import warnings

    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x = np.concatenate([x, x[:20], x[:20]])  # anchors recorded in several triples
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        xy = plotting.project_2d(x, "umap", seed=0)
    assert xy.shape == (80, 2) and np.isfinite(xy).all()
    assert np.array_equal(xy, plotting.project_2d(x, "umap", seed=0))  # seeded
    assert np.allclose(plotting.project_2d(x, "pca"), PCA(2, random_state=0).fit_transform(x))
    with pytest.raises(ValueError, match="umap"):
        plotting.project_2d(x, "mds")


def test_project_2d_method_overridden_by_the_environment(monkeypatch):
    """DMLKIT_PROJECTION (the GPU check's PCA on a machine without umap-learn) wins."""
    from sklearn.decomposition import PCA

    x = np.random.default_rng(1).normal(size=(30, 5)).astype(np.float32)
    monkeypatch.setenv("DMLKIT_PROJECTION", "pca")
    assert np.allclose(plotting.project_2d(x, "umap"), PCA(2, random_state=0).fit_transform(x))
    monkeypatch.setenv("DMLKIT_PROJECTION", "mds")
    with pytest.raises(ValueError, match="unknown projection 'mds'"):
        plotting.project_2d(x, "umap")


def test_plot_comparison_bars_are_the_seed_means():
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame({"run": ["control/a"] * 3 + ["daml/a"] * 3 + ["ref"] * 3,
                          "control": [None] * 3 + ["control/a"] * 3 + [None] * 3,
                          "recall@1": [0.1, 0.2, 0.3, 0.2, 0.4, 0.6, 0.5, 0.5, 0.5]})
    ax = plotting.plot_comparison(frame, "recall@1")
    heights = [round(b.get_height(), 9) for b in ax.patches]
    assert heights == [20.0, 40.0, 50.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["control/a", "daml/a", "ref"]
    hatches = [b.get_hatch() for b in ax.patches]
    assert hatches == ["//", None, None]                 # the control is hatched
    assert ax.patches[0].get_facecolor()[:3] == ax.patches[1].get_facecolor()[:3]
    assert ax.patches[2].get_facecolor()[:3] != ax.patches[1].get_facecolor()[:3]
    plt.close(ax.figure)


def test_plot_paired_intervals_one_bar_per_run_and_metric():
    import matplotlib.pyplot as plt
    import pandas as pd

    from dmlkit import paired

    frame = pd.DataFrame({"run": ["c"] * 3 + ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 3,
                          "m1": [0.5, 0.5, 0.5, 0.6, 0.61, 0.62, 0.4, 0.6, 0.5],
                          "m2": [0.1] * 3 + [0.2] * 3 + [0.1] * 3})
    table = paired.paired_differences(frame, baseline="c", metrics=["m1", "m2"], scale=100)
    axes = plotting.plot_paired_intervals(table)
    assert len(axes) == 2
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["a", "b"]
    for ax in axes:
        assert ax.get_xlabel().startswith(("m1 difference", "m2 difference"))
        assert len(ax.containers) == 2          # one error bar per run
    # "a" is better in m1 (solid marker), "b" cannot be told apart (hollow)
    faces = [c.lines[0].get_markerfacecolor() for c in axes[0].containers]
    assert faces[0] != "white" and faces[1] == "white"
    plt.close("all")
