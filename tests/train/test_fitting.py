"""dmlkit.train.fitting: resume equivalence, history and checkpoints, learning on unseen
classes, bad input, and a corrupt checkpoint on resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from dmlkit import train
from dmlkit.train import TrainConfig, fit

# A tiny glyphs run: 12 + 12 classes of 16 px images, 2 epochs of 3 batches of 4 x 4.
TINY = {"dataset": "glyphs", "loss": "multi_similarity", "backbone": "small_cnn",
        "embedding_dim": 16, "epochs": 2, "iterations_per_epoch": 3, "P": 4, "K": 4,
        "lr": 1e-3, "val_fraction": 0.25, "num_workers": 0, "progress": False,
        "verbose": False, "dataset_kwargs": {"num_classes": 12, "images_per_class": 8,
                                             "size": 16}}


def _state(path):
    return train.load_checkpoint(path)["model"]


def test_resume_after_a_kill_gives_the_same_weights(tmp_path, monkeypatch):
    full = fit(out_dir=tmp_path / "full", **TINY)

    # a run killed in the middle of epoch 2 (after the epoch-1 checkpoint was written) ...
    real_iter = train.EpochBatches.__iter__

    def dies_in_epoch_2(self):
        for i, batch in enumerate(real_iter(self)):
            if self.epoch == 2 and i == 1:
                raise KeyboardInterrupt("killed")
            yield batch

    monkeypatch.setattr(train.EpochBatches, "__iter__", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(out_dir=tmp_path / "killed", **TINY)
    assert train.load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train.EpochBatches, "__iter__", real_iter)
    # ... and resumed: same final weights, optimiser state, history and test metrics
    resumed = fit(out_dir=tmp_path / "killed", resume=True, **TINY)

    a, b = _state(tmp_path / "full" / "last.pt"), _state(tmp_path / "killed" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # the untouched reference changed over training (the comparison is not vacuous)
    first = fit(out_dir=tmp_path / "one", **{**TINY, "epochs": 1})
    moved = max(float((a[k].float() - v.float()).abs().max())
                for k, v in _state(tmp_path / "one" / "last.pt").items())
    assert moved > 1e-4
    opt_a = train.load_checkpoint(tmp_path / "full" / "last.pt")["optimizer"]["state"]
    opt_b = train.load_checkpoint(tmp_path / "killed" / "last.pt")["optimizer"]["state"]
    for i in opt_a:
        torch.testing.assert_close(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"], rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(
        full.history.drop(columns=["epoch_time", "data_share"]),
        resumed.history.drop(columns=["epoch_time", "data_share"]), atol=1e-6)
    assert full.test_metrics == pytest.approx(resumed.test_metrics, abs=1e-6)
    assert full.best_epoch == resumed.best_epoch
    assert first.history["epoch"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="embedding_dim: 16 -> 8"):
        fit(out_dir=tmp_path / "killed", resume=True, **{**TINY, "embedding_dim": 8})


def test_history_checkpoints_and_best_model_on_validation(tmp_path):
    res = fit(out_dir=tmp_path, **TINY)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2]
    assert np.isnan(hist["loss"][0]) and (hist["loss"][1:] > 0).all()
    pd.testing.assert_frame_equal(hist, res.history, check_dtype=False, atol=1e-9)
    # the returned model is the best-on-validation one, evaluated once on the test classes
    best = int(hist["val_map@r"].idxmax())
    assert res.best_epoch == hist["epoch"][best]
    assert res.best_val_metrics["map@r"] == pytest.approx(hist["val_map@r"][best])
    best_ck = train.load_checkpoint(tmp_path / "best.pt")
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(v, best_ck["model"][k])
    assert not any(c.startswith("test_") for c in hist.columns)  # test never logged by default
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"] == pytest.approx(res.test_metrics)
    assert {"recall@1", "recall@8", "map@r", "r_precision", "nmi", "f1"} <= set(res.test_metrics)
    # validation classes are training classes the model never trained on
    assert not list(tmp_path.glob("*.part"))


def test_training_improves_map_at_r_on_unseen_classes(tmp_path):
    """40 training glyph classes (difficulty 0.3, 20 px), 40 unseen test classes, 100 steps
    of 8 x 4 on a CPU, best-on-validation model.

    Measured (seed 0): MAP@R 0.062 -> 0.267 (+0.205), R@1 0.265 -> 0.617 (+0.35); the test
    asserts margins of +0.08 MAP@R and +0.15 R@1.
    """
    res = fit(out_dir=tmp_path, **{**TINY, "epochs": 2, "iterations_per_epoch": 50, "P": 8,
                                   "embedding_dim": 32, "track_test": True, "eval_every": 2,
                                   "dataset_kwargs": {"num_classes": 40, "difficulty": 0.3,
                                                      "images_per_class": 12, "size": 20}})
    before, after = res.initial_test_metrics, res.test_metrics
    assert after["map@r"] > before["map@r"] + 0.08, (before, after)
    assert after["recall@1"] > before["recall@1"] + 0.15, (before, after)


def test_unknown_names_list_the_known_ones(tmp_path):
    for kw, known in [({"dataset": "glyfs"}, "glyphs"), ({"loss": "multi_simlarity"}, "triplet"),
                      ({"backbone": "resnet5"}, "resnet50"), ({"optimizer": "adamax"}, "adamw")]:
        with pytest.raises(ValueError) as exc:
            fit(out_dir=tmp_path, **{**TINY, **kw})
        assert known in str(exc.value), str(exc.value)
    with pytest.raises(ValueError, match="learning_rate"):
        fit(learning_rate=0.1)
    with pytest.raises(ValueError, match="select_metric"):
        fit(select_metric="recall@3", **TINY)
    with pytest.raises(ValueError, match="K"):
        fit(K=1)


def test_a_missing_dataset_root_says_what_is_missing(tmp_path):
    with pytest.raises(ValueError) as exc:
        fit(dataset="cub200", data_root=str(tmp_path), pretrained=False, out_dir=tmp_path,
            progress=False, verbose=False)
    msg = str(exc.value)
    assert "missing" in msg and "images.txt" in msg and str(tmp_path) in msg


def test_dataset_and_loss_objects_are_accepted(tmp_path):
    from dmlkit import data, losses

    ds = data.load_dataset("glyphs", "train", num_classes=12, images_per_class=8, size=16)
    test = data.load_dataset("glyphs", "test", num_classes=12, images_per_class=8, size=16)
    loss = losses.build("contrastive")
    cfg = TrainConfig(**{**TINY, "epochs": 1, "dataset": {"train": ds, "test": test},
                         "loss": loss, "out_dir": str(tmp_path)})
    res = fit(cfg)
    assert res.loss is loss and res.history["epoch"].tolist() == [0, 1]
    assert set(res.test_metrics) >= {"map@r", "nmi"}


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_from_a_corrupt_checkpoint_names_the_file_and_what_to_do(tmp_path, damage):
    fit(out_dir=tmp_path, **{**TINY, "epochs": 1})
    last = tmp_path / "last.pt"
    blob = last.read_bytes()
    last.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"\x00garbage" * 50)
    with pytest.raises(train.CheckpointError) as exc:
        fit(out_dir=tmp_path, resume=True, **{**TINY, "epochs": 2})
    msg = str(exc.value)
    assert str(last) in msg and "corrupt or truncated" in msg
    assert "delete it" in msg and "resume=False" in msg and "out_dir" in msg
    assert isinstance(exc.value, ValueError)
    # resume=False overwrites the damaged file with a good one
    fit(out_dir=tmp_path, **{**TINY, "epochs": 1})
    assert train.load_checkpoint(last)["epoch"] == 1


def _query_and_gallery(ds):
    """In-shop's protocol on a glyphs test set: each class's images alternate between a
    query and a gallery split (both hold every class, so their contiguous labels agree)."""
    from dmlkit.data.base import LabeledSubset

    lab = np.asarray(ds.labels)
    rank = np.zeros(len(lab), dtype=np.int64)
    for c in np.unique(lab):
        where = np.flatnonzero(lab == c)
        rank[where] = np.arange(where.size)
    return (LabeledSubset(ds, np.flatnonzero(rank % 2 == 0), "query"),
            LabeledSubset(ds, np.flatnonzero(rank % 2 == 1), "gallery"))


def test_a_query_split_is_scored_against_its_gallery(tmp_path):
    """With a gallery (In-shop), the final metrics are those of the query embeddings
    retrieved from the gallery's, not from the queries themselves; NMI / F1 are left out."""
    from dmlkit import data, evaluate

    kw = {"num_classes": 12, "images_per_class": 8, "size": 16}
    query, gallery = _query_and_gallery(data.load_dataset("glyphs", "test", **kw))
    res = fit(out_dir=tmp_path, **{**TINY, "epochs": 1, "dataset": {
        "train": data.load_dataset("glyphs", "train", **kw), "test": query,
        "gallery": gallery}})
    (q_emb, q_lab), (g_emb, g_lab) = (
        evaluate.embed(res.model, torch.utils.data.DataLoader(d, batch_size=32))
        for d in (query, gallery))
    assert np.array_equal(np.unique(q_lab), np.unique(g_lab))
    metrics = [m for m in res.config.final_metrics if m not in ("nmi", "f1")]
    expected = evaluate.evaluate(q_emb, q_lab, metrics=metrics, seed=res.config.seed,
                                 ks=res.config.ks, gallery=(g_emb, g_lab))
    assert set(res.test_metrics) == set(expected) and "nmi" not in res.test_metrics
    assert res.test_metrics == pytest.approx({k: float(v) for k, v in expected.items()},
                                             abs=1e-6)
    within = evaluate.evaluate(q_emb, q_lab, metrics=metrics, seed=res.config.seed,
                               ks=res.config.ks)
    assert any(abs(float(within[k]) - res.test_metrics[k]) > 1e-3 for k in expected)


def test_channels_last_trains_as_the_default_memory_format(tmp_path):
    """channels-last (fit's default on CUDA for the ImageNet backbones) runs on a CPU too: the
    model is in that format and computes what the default format computes. Adam turns the
    rounding differences of the two formats' kernels into different weights after a few steps
    (its first steps are about lr x the gradient's sign), so runs are compared over epoch 1,
    not to the end: measured, the epoch-1 mean losses agree to 6e-7 relative."""
    from dmlkit import data

    one = {**TINY, "epochs": 1}
    ref = fit(out_dir=tmp_path / "default", **one)
    cl = fit(out_dir=tmp_path / "channels_last", channels_last=True, **one)
    conv = next(m for m in cl.model.modules()
                if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    # the untrained network's validation metrics (embedded channels-last) are the same, and
    # so are the training losses of epoch 1
    assert ref.history.filter(like="val_").iloc[0].to_dict() == pytest.approx(
        cl.history.filter(like="val_").iloc[0].to_dict(), abs=1e-9)
    np.testing.assert_allclose(ref.history["loss"][1:], cl.history["loss"][1:], rtol=1e-5)
    # the channels-last model's embeddings equal its own weights' in the default format
    test = data.load_dataset("glyphs", "test", **TINY["dataset_kwargs"])
    x = torch.stack([torch.as_tensor(test[i][0]) for i in range(16)])
    plain = copy.deepcopy(cl.model).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        torch.testing.assert_close(cl.model(x.contiguous(memory_format=torch.channels_last)),
                                   plain(x), rtol=1e-5, atol=1e-6)


def test_a_non_finite_loss_stops_the_run_with_what_to_do(tmp_path):
    class Diverged(torch.nn.Module):
        def forward(self, embeddings, labels):
            return embeddings.sum() * float("nan")

    with pytest.raises(FloatingPointError) as exc:
        fit(out_dir=tmp_path, **{**TINY, "loss": Diverged()})
    msg = str(exc.value)
    assert "nan" in msg and "epoch 1, step 0" in msg and "lower lr" in msg
