"""dmlkit.train: resume equivalence, atomic checkpoints, learning on unseen classes, CLI,
feature cache and head training, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dmlkit import train
from dmlkit.__main__ import main
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
    real_iter = train._EpochBatches.__iter__

    def dies_in_epoch_2(self):
        for i, batch in enumerate(real_iter(self)):
            if self.epoch == 2 and i == 1:
                raise KeyboardInterrupt("killed")
            yield batch

    monkeypatch.setattr(train._EpochBatches, "__iter__", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(out_dir=tmp_path / "killed", **TINY)
    assert train.load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train._EpochBatches, "__iter__", real_iter)
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


def test_atomic_save_survives_a_crash_during_saving(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    train.atomic_save({"epoch": 1, "w": torch.arange(3.0)}, path)
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        real_save({"half": "written"}, f)  # some bytes reach the temporary file ...
        raise OSError("disk full")          # ... then the process dies

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        train.atomic_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    ck = train.load_checkpoint(path)
    assert ck["epoch"] == 1
    torch.testing.assert_close(ck["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left


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


def test_cli_train_and_help(tmp_path, capsys):
    rc = main(["train", "--dataset", "glyphs", "--loss", "multi_similarity",
               "--loss-param", "alpha=2", "--loss-param", "beta=40", "--epochs", "1",
               "--iterations-per-epoch", "2", "--P", "4", "--K", "4", "--embedding-dim", "8",
               "--dataset-param", "num_classes=8", "--dataset-param", "images_per_class=6",
               "--dataset-param", "size=16", "--no-progress", "--out-dir", str(tmp_path),
               "--device", "cpu", "--num-workers", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["loss_params"] == {"alpha": 2, "beta": 40}
    assert cfg["dataset_kwargs"]["num_classes"] == 8 and cfg["epochs"] == 1
    assert (tmp_path / "history.csv").exists() and "map@r" in out
    assert main(["train", "--loss", "nope", "--out-dir", str(tmp_path)]) == 2
    assert "Known losses" in capsys.readouterr().err
    from dmlkit.__main__ import build_parser

    args = build_parser().parse_args(["train", "--channels-last", "false", "--amp", "none",
                                      "--grad-clip", "1.5", "--no-pretrained", "--ks", "1",
                                      "10", "--iterations-per-epoch", "none"])
    assert (args.channels_last, args.amp, args.grad_clip, args.pretrained, args.ks,
            args.iterations_per_epoch) == (False, None, 1.5, False, [1, 10], None)
    done = subprocess.run([sys.executable, "-m", "dmlkit", "train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--loss-param" in done.stdout


def test_select_device_message(capsys):
    dev = train.select_device("auto")
    out = capsys.readouterr().out
    if torch.cuda.is_available():
        assert dev.type == "cuda" and out.startswith("Using CUDA")
    else:
        assert "using CPU" in out or "MPS" in out
    assert train.select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train.select_device("cuda")


def test_feature_cache_and_head_training(tmp_path):
    from dmlkit import data, models

    torch.manual_seed(0)
    net = models.build_model("small_cnn", embedding_dim=8, in_channels=1)
    ds = data.load_dataset("glyphs", "train", num_classes=6, images_per_class=5, size=16)
    f1, y1 = train.extract_features(net, ds, device="cpu", batch_size=7, cache_dir=tmp_path,
                                    key="glyphs-train-tiny", progress=False)
    assert f1.shape == (30, net.feature_dim) and y1.tolist() == ds.labels.tolist()
    net.eval()
    with torch.no_grad():
        direct = net.backbone(torch.stack([ds[i][0] for i in range(30)]))
    torch.testing.assert_close(f1, direct, rtol=1e-4, atol=1e-5)

    class Boom(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the cache was not used")

    f2, y2 = train.extract_features(Boom(), ds, cache_dir=tmp_path, key="glyphs-train-tiny")
    assert torch.equal(f1, f2) and torch.equal(y1, y2)

    # by name: the cache file names the data set, split, backbone and seed of a random init
    kw = {"split": "test", "device": "cpu", "progress": False,
          "dataset_kwargs": {"num_classes": 4, "images_per_class": 3, "size": 16}}
    a, _ = train.extract_features("small_cnn", "glyphs", cache_dir=tmp_path, **kw)
    assert len(list(tmp_path.glob("glyphs-test-small_cnn-random0-*.pt"))) == 1
    b, _ = train.extract_features("small_cnn", "glyphs", cache_dir=None, **kw)
    c, _ = train.extract_features("small_cnn", "glyphs", cache_dir=None, seed=1, **kw)
    assert a.shape == (12, 128) and torch.equal(a, b) and not torch.equal(a, c)

    # a head on features where the class signal lives in 4 of 32 dimensions, the other 28
    # being 4x larger noise: raw distances are dominated by the noise, a linear head learns
    # to drop it. Measured: val MAP@R 0.077 (untrained head) -> 0.48, R@1 0.14 -> 0.68.
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 4, generator=g) * 3

    def make(classes):
        y = classes.repeat_interleave(10)
        x = torch.randn(len(y), 32, generator=g)
        x[:, 4:] *= 4
        x[:, :4] += centres[y]
        return x, y

    x_tr, y_tr = make(torch.arange(0, 12))
    x_val, y_val = make(torch.arange(12, 20))
    res = train.fit_head(x_tr, y_tr, "multi_similarity", embedding_dim=8, epochs=20,
                         iterations_per_epoch=10, P=6, K=4, lr=3e-2, val=(x_val, y_val),
                         seed=0, eval_every=5)
    hist = res.history
    assert hist["epoch"].tolist() == list(range(21))
    assert hist["val_map@r"].iloc[0] + 0.2 < res.best_val_metrics["map@r"], hist
    assert res.best_val_metrics["map@r"] == pytest.approx(hist["val_map@r"].max())
    assert res.head(x_val[:3]).shape == (3, 8)
