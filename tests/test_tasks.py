"""dmlkit.tasks: in-memory tasks, tiny nets, ablations, label noise, features, sweeps."""

import numpy as np
import pandas as pd
import pytest
import torch

from dmlkit import evaluate, losses, tasks


@pytest.fixture(scope="module")
def tiny_task():
    return tasks.image_task("glyphs", num_classes=6, num_test_classes=4, images_per_class=6,
                            size=12, difficulty=0.2)


def test_image_task(tiny_task):
    assert tiny_task.X.shape == (36, 1, 12, 12) and tiny_task.X_test.shape == (24, 1, 12, 12)
    assert tiny_task.num_classes == 6
    assert set(tiny_task.y_test.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="glyphs"):
        tasks.image_task("cub200")


def test_embed_and_retrieval_scores(tiny_task):
    net = tasks.build_net(seed=0)
    z = tasks.embed(net, tiny_task.X_test, batch_size=5)
    assert z.shape == (24, 32) and net.training  # the mode is restored
    net.eval()
    with torch.no_grad():
        assert torch.allclose(z, net(tiny_task.X_test), atol=1e-6)
    scores = tasks.retrieval_scores(z, tiny_task.y_test)
    direct = evaluate.retrieval_metrics(z, tiny_task.y_test, ks=(1,))
    assert scores == {"recall@1": float(direct["recall@1"]), "map@r": float(direct["map@r"])}


def test_endless_batches_calls_set_epoch_and_rejects_empty():
    class Sampler:
        def __init__(self):
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __iter__(self):
            return iter([[self.epochs[-1]]])

    batches = tasks.endless_batches(Sampler())
    assert [next(batches) for _ in range(3)] == [[0], [1], [2]]
    with pytest.raises(ValueError, match="no batch"):
        next(tasks.endless_batches([]))


def test_run_ablation_rows(tiny_task):
    hist, runs = {}, {}
    df = tasks.run_ablation(tiny_task, {"ms": "multi_similarity", "c": ("contrastive", {})},
                            seeds=(0, 1), steps=2, P=3, K=2, track_mining=True,
                            progress=False, histories=hist, runs=runs)
    assert list(df.loss) == ["ms", "ms", "c", "c"] and list(df.seed) == [0, 1, 0, 1]
    assert {"recall@1", "map@r", "untrained_map@r", "pos_kept", "neg_kept"} <= set(df.columns)
    assert set(hist) == set(runs) == {("ms", 0), ("ms", 1), ("c", 0), ("c", 1)}
    assert df.loc[0, "map@r"] == runs[("ms", 0)].scores["map@r"]


def test_batch_losses_match_direct(tiny_task):
    from dmlkit import data

    net = tasks.build_net(seed=1)
    loss = losses.build("npair")
    sampler = data.PKSampler(tiny_task.y.numpy(), P=3, K=2, seed=0)
    values = tasks.batch_losses(net, tiny_task, loss, sampler, n_batches=3)
    assert values.shape == (3,)
    sampler.set_epoch(0)
    first = torch.as_tensor(next(iter(sampler)))
    net.eval()
    with torch.no_grad():
        direct = float(loss(net(tiny_task.X[first]), tiny_task.y[first]))
    assert values[0] == pytest.approx(direct, rel=1e-6)


def test_summarize_mean_std():
    df = pd.DataFrame({"loss": ["b", "b", "a", "a", "a"], "x": [1.0, 3.0, 2.0, 4.0, 9.0]})
    out = tasks.summarize(df, metrics=("x",))
    assert list(out.index) == ["b", "a"]
    assert out.loc["b", "x_mean"] == 2.0 and out.loc["a", "x_mean"] == 5.0
    assert out.loc["a", "x_std"] == pytest.approx(np.std([2.0, 4.0, 9.0], ddof=1))
    assert list(out["n"]) == [2, 3]
    with pytest.raises(ValueError, match="columns"):
        tasks.summarize(df, metrics=("y",))


def test_inject_label_noise():
    labels = torch.arange(40) % 7
    noisy, flipped = tasks.inject_label_noise(labels, 0.25, seed=3)
    assert int(flipped.sum()) == 10
    assert (noisy[flipped] != labels[flipped]).all()
    assert (noisy[~flipped] == labels[~flipped]).all()
    assert set(noisy.tolist()) <= set(labels.tolist())
    again, flipped2 = tasks.inject_label_noise(labels, 0.25, seed=3)
    assert torch.equal(again, noisy) and torch.equal(flipped, flipped2)
    same, none = tasks.inject_label_noise(labels, 0.0)
    assert torch.equal(same, labels) and not none.any()
    with pytest.raises(ValueError, match="fraction"):
        tasks.inject_label_noise(labels, 1.5)


def test_load_features_pixels_standardised():
    (xtr, ytr), (xte, yte) = tasks.load_features("digits", "pixels")
    assert xtr.shape[1] == 64 and xte.shape[1] == 64
    assert len(ytr) == xtr.shape[0] and len(yte) == xte.shape[0]
    assert torch.allclose(xtr.norm(dim=1), torch.ones(len(xtr)), atol=1e-5)
    raw = tasks.load_features("digits", "pixels", standardize=False)
    assert raw[0][0].max() <= 1.0 and raw[0][0].min() >= 0.0
    with pytest.raises(ValueError, match="pixels"):
        tasks.load_features("digits", "sift")


def test_multimodal_clusters_and_sweep():
    x, y = tasks.multimodal_clusters(5, 6, 8, modes=2, mode_spread=0.0, noise=0.0, seed=3)
    assert x.shape == (30, 8) and x.dtype == np.float32 and np.bincount(y).tolist() == [6] * 5
    # no spread, no noise: every point of a class is its centre
    for c in range(5):
        assert np.allclose(x[y == c], x[y == c][0])
    x2, _ = tasks.multimodal_clusters(5, 6, 8, modes=2, mode_spread=0.0, noise=0.0, seed=3)
    assert np.array_equal(x, x2)
    df = tasks.metric_sweep([0.0, 3.0], lambda s: tasks.multimodal_clusters(
        10, 9, 16, modes=3, mode_spread=s, noise=0.05, seed=0), ks=(1, 2), name="spread")
    assert df["spread"].tolist() == [0.0, 3.0]
    assert (df["recall@1"] <= df["recall@2"]).all()
    # the saturation the notebook shows: R@1 stays ~1 while MAP@R drops
    assert df["recall@1"].min() > 0.95
    assert df["map@r"].iloc[0] > 0.99 and df["map@r"].iloc[1] < 0.6
    x3, y3 = tasks.multimodal_clusters(10, 9, 16, modes=3, mode_spread=3.0, noise=0.05)
    direct = evaluate.evaluate(x3, y3, metrics=["map@r"], ks=(1,))["map@r"]
    assert df["map@r"].iloc[1] == pytest.approx(direct)
