"""dmlkit.models: shapes, normalisation, frozen BN, parameter groups, weights errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from dmlkit import models


def test_available_and_unknown_name_lists_known():
    assert models.available() == ["googlenet", "resnet18", "resnet50", "small_cnn"]
    with pytest.raises(ValueError) as exc:
        models.build_model("resnet5O")
    msg = str(exc.value)
    assert "resnet5O" in msg
    for name in models.available():
        assert name in msg


def test_backbone_registry_aliases_and_feature_dims():
    assert models.BACKBONES.kind == "backbone"
    for alias, name in [("SmallCNN", "small_cnn"), ("resnet_18", "resnet18"),
                        ("ResNet-50", "resnet50"), ("inception_v1", "googlenet")]:
        assert models.canonical(alias) == name
    assert {n: models.feature_dim(n) for n in models.available()} == {
        "googlenet": 1024, "resnet18": 512, "resnet50": 2048, "small_cnn": 128}
    assert models.build_model("Small-CNN", embedding_dim=4).name == "small_cnn"
    with pytest.raises(ValueError, match="resnet18 takes 1- or 3-channel images"):
        models.build_model("resnet18", pretrained=False, in_channels=2)


@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32), (1, 8)])
def test_small_cnn_shapes_and_unit_norm(in_channels, size):
    torch.manual_seed(0)
    net = models.build_model("small_cnn", embedding_dim=24, in_channels=in_channels)
    z = net(torch.randn(5, in_channels, size, size))
    assert z.shape == (5, 24)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    raw = models.build_model("small_cnn", embedding_dim=24, in_channels=in_channels,
                             normalize=False)
    raw.load_state_dict(net.state_dict())
    net.eval()
    raw.eval()
    x = torch.randn(3, in_channels, size, size)
    u = raw(x)
    torch.testing.assert_close(net(x), u / u.norm(dim=1, keepdim=True))
    assert net.feature_dim == models.feature_dim("small_cnn")
    # the standalone SmallCNN with its own linear layer
    assert models.SmallCNN(in_channels, embedding_dim=7)(x).shape == (3, 7)


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("googlenet", 1024)])
def test_torchvision_backbones_without_weights(arch, dim):
    torch.manual_seed(0)
    net = models.build_model(arch, embedding_dim=16, pretrained=False).eval()
    assert net.feature_dim == dim == models.feature_dim(arch)
    with torch.no_grad():
        z = net(torch.randn(2, 3, 64, 64))
    assert z.shape == (2, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_grey_images_on_imagenet_backbone_equal_repeated_rgb():
    torch.manual_seed(0)
    grey = models.build_model("resnet18", embedding_dim=8, pretrained=False, in_channels=1)
    rgb = models.build_model("resnet18", embedding_dim=8, pretrained=False, in_channels=3)
    rgb.backbone.load_state_dict(grey.backbone.module.state_dict())
    rgb.head.load_state_dict(grey.head.state_dict())
    x = torch.rand(2, 1, 40, 40)
    grey.eval()
    rgb.eval()
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="in_channels"):
        models.build_model("resnet18", pretrained=False, in_channels=2)


def test_freeze_bn_keeps_running_stats_and_trains_affine():
    torch.manual_seed(0)
    x = torch.randn(6, 1, 16, 16) * 3 + 1
    frozen = models.build_model("small_cnn", embedding_dim=8, in_channels=1, freeze_bn=True)
    free = models.build_model("small_cnn", embedding_dim=8, in_channels=1, freeze_bn=False)
    free.load_state_dict(frozen.state_dict())
    frozen.train()
    free.train()
    bn_frozen = [m for m in frozen.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_free = [m for m in free.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn_frozen and all(not m.training for m in bn_frozen)
    assert all(m.training for m in bn_free)
    before = [m.running_mean.clone() for m in bn_frozen]
    frozen(x).sum().backward()
    free(x)
    for m, b in zip(bn_frozen, before):
        torch.testing.assert_close(m.running_mean, b)  # statistics not updated
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0  # affine trains
    assert not torch.allclose(bn_free[0].running_mean, before[0])
    assert frozen.head.training  # only BN layers are switched


def test_param_groups_cover_every_parameter_once():
    net = models.build_model("small_cnn", embedding_dim=8, in_channels=1)
    groups = net.param_groups(lr=1e-3, backbone_lr_mult=0.1, weight_decay=5e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(1e-4)
    assert by_name["head"]["lr"] == pytest.approx(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    frozen = net.param_groups(lr=1e-3, backbone_lr_mult=0.0)
    assert [g["name"] for g in frozen] == ["head"]


def test_failed_weight_download_says_how_to_proceed(monkeypatch):
    import torchvision.models._api as api

    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as exc:
        models.build_model("resnet50", pretrained=True)
    msg = str(exc.value)
    assert calls and calls[0].endswith("resnet50-0676ba61.pth")
    assert "pretrained=False" in msg
    assert "resnet50-0676ba61.pth" in msg
    assert torch.hub.get_dir() in msg and "checkpoints" in msg


@pytest.mark.parametrize("arch", ["resnet18", "googlenet"])
def test_weights_are_read_from_the_hub_cache(tmp_path, arch):
    """A weights file placed in torch.hub.get_dir()/checkpoints is used without network."""
    import torchvision.models as tvm

    torch.manual_seed(1)
    if arch == "resnet18":
        reference = tvm.resnet18()
        url = tvm.ResNet18_Weights.IMAGENET1K_V1.url
    else:  # the official checkpoint has the auxiliary classifiers, which are dropped
        reference = tvm.googlenet(aux_logits=True, init_weights=False)
        url = tvm.GoogLeNet_Weights.IMAGENET1K_V1.url
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        (tmp_path / "checkpoints").mkdir()
        torch.save(reference.state_dict(), tmp_path / "checkpoints" / url.rsplit("/", 1)[1])
        net = models.build_model(arch, pretrained=True, embedding_dim=4)
    finally:
        torch.hub.set_dir(old)
    got = net.backbone.state_dict()
    for k, v in reference.state_dict().items():
        if not k.startswith(("fc.", "aux1.", "aux2.")):
            torch.testing.assert_close(got[k], v)
    assert not any(k.startswith(("fc.", "aux")) for k in got)
    if arch == "googlenet":
        assert net.backbone.transform_input  # as torchvision sets for the ImageNet weights
