"""dmlkit.adversarial.fitting: end-to-end training of a CNN trunk on images through the
engine (loss finite, trunk parameters move, metrics returned, deterministic given a seed),
the total epoch count, and a trainable trunk on features.
"""

from __future__ import annotations

import math

import pytest
import torch
from feature_blobs import blobs, one_thread  # noqa: F401 (autouse fixture)

from dmlkit import adversarial as adv
from dmlkit import models

GLYPHS = {"num_classes": 6, "images_per_class": 6, "size": 16}
TINY = dict(epochs=2, warmup_epochs=1, P=3, K=3, embedding_dim=8, batches_per_epoch=2,
            generator_hidden=(16,), dataset_kwargs=GLYPHS)


def _initial_trunk(seed=0):
    torch.manual_seed(seed)
    return models.build_model("small_cnn", 8, pretrained=False, normalize=True, in_channels=1)


@pytest.mark.parametrize("preset", ["official", "pml", "dmlkit"])
def test_end_to_end_on_glyphs_trains_and_is_deterministic(preset):
    lr = {"trunk_lr_factor": 1.0} if preset != "official" else {}
    run = [adv.fit_adversarial_images("glyphs", "triplet", "daml", preset=preset, seed=3,
                                      diagnostics=True, **TINY, **lr) for _ in range(2)]
    res = run[0]
    assert all(math.isfinite(r.get("J_m", r.get("J_m_real"))) for r in res.history)
    assert [r["phase"] for r in res.history][-1] == "joint"
    assert "recall@1" in res.history[-1] and 0 <= res.history[-1]["recall@1"] <= 1
    start = _initial_trunk(3)
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(),
                                                      res.trunk.parameters()))
    assert run[0].history == run[1].history
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(run[0].embed(x), run[1].embed(x)) and run[0].embed(x).shape == (4, 8)
    assert res.config["backbone"] == "small_cnn" and res.config["preset"] == preset


def test_total_epochs_are_epochs_plus_generator_epochs():
    x, y = blobs()
    res = adv.fit_adversarial(x, y, "triplet", "daml", epochs=3, warmup_epochs=1,
                              generator_epochs=2, P=4, K=3, embedding_dim=4,
                              batches_per_epoch=1)
    assert [r["phase"] for r in res.history] == ["metric", "generator", "generator", "joint",
                                                 "joint"]
    assert "epochs + generator_epochs" in adv.fit_adversarial.__doc__


def test_images_need_a_trunk():
    with pytest.raises(ValueError, match="features"):
        adv.fit_adversarial(torch.rand(12, 1, 4, 4), torch.arange(12) % 4, "triplet", "daml")


def test_the_trunk_compared_against_is_the_run_s_initial_trunk():
    """lr = 0: nothing moves, so the trunk built from the seed is the one the run started
    from (the check above compares the trained trunk with it)."""
    res = adv.fit_adversarial_images("glyphs", "triplet", "daml", seed=3, lr=0.0, **TINY)
    start = _initial_trunk(3)
    assert all(torch.equal(a, b) for a, b in zip(start.parameters(),
                                                  res.trunk.parameters()))
