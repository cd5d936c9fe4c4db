"""Loss parameters in dmlkit.train.fit: proxies get their own optimiser group at
``lr * loss_lr_mult``, are updated by that step size, see the training classes as 0..C-1,
and the cross-batch memory's ring travels in ``last.pt`` so that resuming stays exact."""

from __future__ import annotations

import pytest
import torch

from dmlkit import memory, train
from dmlkit.train.config import resolve_config
from dmlkit.train.fitting import FitTrainer, class_index

TINY = {"dataset": "glyphs", "loss": "proxy_anchor", "backbone": "small_cnn",
        "embedding_dim": 8, "epochs": 1, "iterations_per_epoch": 1, "P": 4, "K": 2,
        "lr": 1e-3, "val_fraction": 0.25, "num_workers": 0, "progress": False,
        "verbose": False, "eval_every": 0, "save_checkpoints": False, "device": "cpu",
        "final_metrics": ("recall",), "metrics": ("recall",), "select_metric": "recall@1",
        "dataset_kwargs": {"num_classes": 8, "images_per_class": 4, "size": 16}}


def test_proxies_have_their_own_group_and_step_size():
    trainer = FitTrainer(resolve_config(None, {**TINY, "loss_lr_mult": 100.0}))
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["loss"]["lr"] == pytest.approx(0.1)
    assert groups["loss"]["params"] == [trainer.loss.proxies]
    # 6 of the 8 glyph training classes remain after the validation split: 6 proxies
    assert trainer.loss.proxies.shape == (6, 8)
    before = trainer.loss.proxies.detach().clone()
    trainer.run()
    step = (trainer.loss.proxies.detach() - before).abs()
    # Adam's first step moves every entry with a clear gradient by the group's lr
    assert step.max().item() == pytest.approx(0.1, rel=1e-3)
    assert (step > 0.05).float().mean() > 0.5


def test_class_index_maps_the_training_classes():
    index = class_index([2, 5, 7])
    assert index[torch.tensor([7, 2, 5, 5])].tolist() == [2, 0, 1, 1]
    assert index[3].item() == -1


def test_bad_multiplier_is_named():
    with pytest.raises(ValueError, match="loss_lr_mult"):
        resolve_config(None, {**TINY, "loss_lr_mult": -1.0})


def test_memory_ring_is_checkpointed_and_resume_is_exact(tmp_path):
    cfg = {**TINY, "loss": None, "epochs": 2, "iterations_per_epoch": 3, "eval_every": 1,
           "save_checkpoints": True}

    def xbm():
        from dmlkit import losses
        return memory.CrossBatchMemory(losses.build("multi_similarity"), embedding_dim=8,
                                       memory_size=20)

    full = train.fit(**{**cfg, "loss": xbm()}, out_dir=tmp_path / "full")
    one = train.fit(**{**cfg, "loss": xbm(), "epochs": 1}, out_dir=tmp_path / "part")
    saved = train.load_checkpoint(tmp_path / "part" / "last.pt")["loss"]
    assert saved["embeddings"].shape == (20, 8) and int(saved["filled"]) == 20
    assert torch.equal(saved["embeddings"], one.loss.embeddings)
    resumed = train.fit(**{**cfg, "loss": xbm()}, out_dir=tmp_path / "part", resume=True)
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=1e-6)
    torch.testing.assert_close(resumed.loss.embeddings, full.loss.embeddings, rtol=0, atol=1e-6)
