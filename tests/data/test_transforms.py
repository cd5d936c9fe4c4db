"""Benchmark image transforms: shapes, determinism, ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from dmlkit import data


def test_get_transforms_shapes_and_determinism():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))
    train = data.get_transforms(True, image_size=227, resize=256)
    test = data.get_transforms(False)
    assert train(img).shape == (3, 227, 227)
    a, b = test(img), test(img)
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    # centre crop of the 256-resized image, normalised with the ImageNet statistics
    resized = T.Resize(256)(img)
    ref = T.ToTensor()(T.CenterCrop(224)(resized))
    mean = torch.tensor(data.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(data.IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(a, (ref - mean) / std)
    with pytest.raises(ValueError, match="image_size"):
        data.get_transforms(True, image_size=300, resize=256)
