"""dmlkit.evaluate.embedding: a model over a loader, in eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmlkit import evaluate as ev


def test_embed_runs_the_model_in_eval_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Dropout(0.5))
    model.train()
    data = torch.randn(23, 5)
    labels = torch.arange(23) % 4
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, labels),
                                         batch_size=8)
    emb, lab = ev.embed(model, loader, "cpu")
    assert model.training
    assert emb.dtype == np.float32 and lab.dtype == np.int64 and emb.shape == (23, 4)
    with torch.no_grad():
        expected = model[0](data).numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-6)
    np.testing.assert_array_equal(lab, labels.numpy())


def test_embed_defaults_to_the_models_device_and_names_a_bad_loader():
    # no device given: the model's (a model without parameters runs on the CPU)
    emb, lab = ev.embed(torch.nn.Flatten(), [(torch.ones(2, 1, 3), [1, 0])])
    np.testing.assert_array_equal(emb, np.ones((2, 3), dtype=np.float32))
    assert lab.tolist() == [1, 0] and lab.dtype == np.int64
    for loader, says in [([torch.ones(2, 3)], r"\(images, labels\) batches"),
                         ([], "no batches")]:
        with pytest.raises(ValueError, match=says):
            ev.embed(torch.nn.Linear(3, 2), loader)
