"""Embedding networks: a backbone, a linear embedding head, optional L2 normalisation.

>>> import torch
>>> from dmlkit import models
>>> models.available()
['googlenet', 'resnet18', 'resnet50', 'small_cnn']
>>> net = models.build_model("small_cnn", embedding_dim=64, in_channels=1)
>>> emb = net(torch.randn(8, 1, 32, 32))
>>> emb.shape, bool(torch.allclose(emb.norm(dim=1), torch.ones(8)))    # rows of unit norm
(torch.Size([8, 64]), True)
>>> models.feature_dim("ResNet-50")
2048

The common recipe of the papers (Wang et al. 2019b; docs/formulas.md#data-protocols) is an
ImageNet-pretrained backbone (BN-Inception; DAML used GoogLeNet; modern work ResNet-50), a
fully connected layer to D = 512 and L2 normalisation. ``build_model`` gives that with
torchvision's GoogLeNet, ResNet-50 and ResNet-18 and their ImageNet weights; ``small_cnn`` is a
four-block CNN for the embedded ``digits`` and ``glyphs`` data sets that trains in minutes on a CPU.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

__all__ = ["BACKBONES", "EmbeddingNet", "SmallCNN", "available", "build_model", "canonical",
           "feature_dim"]


class SmallCNN(nn.Module):
    """Four conv blocks (conv 3x3, BN, ReLU; max-pool after the first three) + global pooling.

    Works on any image size >= 8 px (global average pooling at the end); about 100k
    parameters with ``width=32``. Input ``(B, in_channels, H, W)``, output ``(B, 4 * width)``
    features, or ``(B, embedding_dim)`` when ``embedding_dim`` is given (a linear layer on top,
    as a standalone model; ``build_model`` puts its own head on the features instead).
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int | None = None, width: int = 32):
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be >= 1, got {in_channels}, {width}")
        chans = [in_channels, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.out_features = chans[-1]
        self.fc = nn.Linear(self.out_features, embedding_dim) if embedding_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x) if self.fc is not None else x


class _GrayToRGB(nn.Module):
    """Repeats a 1-channel input to 3 channels so ImageNet backbones accept grey images."""

    def __init__(self, module: nn.Module, in_channels: int):
        super().__init__()
        self.module = module
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.module(x)


class EmbeddingNet(nn.Module):
    """``x -> backbone -> head (linear to D) -> optional L2 normalisation``.

    Attributes: ``backbone`` (images -> ``(B, F)`` features), ``head`` (``(B, F) -> (B, D)``),
    ``normalize``, ``freeze_bn``, ``feature_dim`` (F), ``embedding_dim`` (D), ``name``.

    ``freeze_bn=True`` keeps every BatchNorm layer of the backbone in eval mode during training
    (running statistics are not updated; the affine parameters still train), as the official
    multi-similarity code does (``ret_benchmark/utils/freeze_bn.py``, which notes +2% R@1 on
    CUB and no effect elsewhere; dmlkit has not measured it). The motivation: the statistics of
    a batch of a few classes x K images can be far from ImageNet's.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int = 512,
                 normalize: bool = True, freeze_bn: bool = False, name: str = "custom"):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, embedding_dim)
        self.normalize = bool(normalize)
        self.freeze_bn = bool(freeze_bn)
        self.feature_dim = int(feature_dim)
        self.embedding_dim = int(embedding_dim)
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, H, W)`` -> embeddings ``(B, D)`` (unit rows when ``normalize``)."""
        return self.embed_features(self.backbone(x))

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, F)`` -> embeddings ``(B, D)``."""
        z = self.head(features)
        return F.normalize(z.float(), dim=1).to(z.dtype) if self.normalize else z

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def param_groups(self, lr: float, backbone_lr_mult: float = 1.0,
                     weight_decay: float = 0.0) -> list[dict]:
        """Optimiser parameter groups: the backbone at ``lr * backbone_lr_mult``, the head at
        ``lr``. A multiplier of 0 leaves the backbone out (a frozen trunk)."""
        groups = []
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        if bb and backbone_lr_mult > 0:
            groups.append({"params": bb, "lr": lr * backbone_lr_mult,
                           "weight_decay": weight_decay, "name": "backbone"})
        groups.append({"params": list(self.head.parameters()), "lr": lr,
                       "weight_decay": weight_decay, "name": "head"})
        return groups


# ---------------------------------------------------------------------------------------------
# torchvision backbones


def _weights_error(arch: str, weights, exc: BaseException) -> RuntimeError:
    url = getattr(weights, "url", "?")
    fname = os.path.basename(url)
    target = Path(torch.hub.get_dir()) / "checkpoints" / fname
    return RuntimeError(
        f"could not fetch the ImageNet weights of {arch!r} from {url} "
        f"({type(exc).__name__}: {exc}). Either build the model without them "
        f"(build_model({arch!r}, pretrained=False), or --no-pretrained on the command line), "
        f"or download the file {fname!r} on a machine with internet access and place it at "
        f"{target} (the torch hub cache, torch.hub.get_dir()/checkpoints)."
    )


def _torchvision(arch: str, in_channels: int = 3, pretrained: bool = True,
                 download_timeout: float = 20.0) -> tuple[nn.Module, int]:
    """torchvision's ``arch`` without its classifier: ``(features network, F)``; a 1-channel
    input is repeated to 3 channels."""
    import torchvision.models as tvm

    if in_channels not in (1, 3):
        raise ValueError(f"{arch} takes 1- or 3-channel images, got in_channels={in_channels}")

    ctor, weights_enum = {
        "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
        "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
        "googlenet": (tvm.googlenet, tvm.GoogLeNet_Weights),
    }[arch]
    kw = {"aux_logits": False, "init_weights": not pretrained} if arch == "googlenet" else {}
    net = ctor(weights=None, **kw)
    if pretrained:
        weights = weights_enum.IMAGENET1K_V1
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(download_timeout)  # urllib in torch.hub has no timeout
        try:
            state = weights.get_state_dict(progress=False, check_hash=False)
        except Exception as exc:  # URLError, socket.timeout, HTTPError, truncated file ...
            raise _weights_error(arch, weights, exc) from exc
        finally:
            socket.setdefaulttimeout(old)
        if arch == "googlenet":  # the checkpoint has the auxiliary classifiers we dropped
            state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
            net.transform_input = True  # as torchvision does for these weights
        net.load_state_dict(state)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return (_GrayToRGB(net, in_channels) if in_channels == 1 else net), dim


#: backbone name -> ``factory(in_channels, pretrained, download_timeout) -> (network, F)``,
#: with the fact ``feature_dim`` (F, the width of the features before the embedding head)
BACKBONES = Registry("backbone")


@BACKBONES.register("small_cnn", feature_dim=128)
def _small_cnn(in_channels: int = 3, pretrained: bool = True,
               download_timeout: float = 20.0) -> tuple[nn.Module, int]:
    """:class:`SmallCNN` features; it has no pretrained weights (``pretrained`` is ignored)."""
    net = SmallCNN(in_channels)
    return net, net.out_features


BACKBONES.add("resnet18", functools.partial(_torchvision, "resnet18"), feature_dim=512)
BACKBONES.add("resnet50", functools.partial(_torchvision, "resnet50"), feature_dim=2048)
BACKBONES.add("googlenet", functools.partial(_torchvision, "googlenet"),
              aliases=("inception_v1",), feature_dim=1024)

available = BACKBONES.available
canonical = BACKBONES.canonical


def feature_dim(backbone: str) -> int:
    """Width F of the backbone features (before the embedding head)."""
    return BACKBONES.facts(backbone)["feature_dim"]


def build_model(backbone: str = "small_cnn", embedding_dim: int = 512, pretrained: bool = True,
                normalize: bool = True, freeze_bn: bool = False, in_channels: int = 3,
                download_timeout: float = 20.0) -> EmbeddingNet:
    """Backbone + linear embedding head (+ L2 normalisation): the papers' embedding network.

    Args:
        backbone: one of :func:`available` (``small_cnn``, ``resnet18``, ``resnet50``,
            ``googlenet``). torchvision's GoogLeNet (Inception v1, DAML's trunk) is built without
            auxiliary classifiers.
        embedding_dim: D, the width of the embedding (the papers use 512).
        pretrained: load torchvision's ImageNet weights (``IMAGENET1K_V1``) for the ImageNet
            backbones; ignored for ``small_cnn``. Weights come from the torch hub cache
            (``torch.hub.get_dir()/checkpoints``) or are downloaded; a failed download raises a
            RuntimeError saying how to proceed.
        normalize: L2-normalise the embeddings (the papers' recipe).
        freeze_bn: keep the backbone's BatchNorm layers in eval mode while training (official
            MS code); see :class:`EmbeddingNet`.
        in_channels: channels of the input images. ImageNet backbones accept 1-channel images by
            repeating them to 3 channels.
        download_timeout: seconds before a stalled weight download is abandoned.

    Returns:
        EmbeddingNet mapping ``(B, C, H, W)`` images to ``(B, embedding_dim)`` embeddings.
    """
    name = canonical(backbone)
    net, dim = BACKBONES.get(name)(in_channels=in_channels, pretrained=pretrained,
                                   download_timeout=download_timeout)
    return EmbeddingNet(net, dim, embedding_dim, normalize=normalize, freeze_bn=freeze_bn,
                        name=name)
