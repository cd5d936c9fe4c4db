"""Image transforms of the DML papers (the recipe of Wang et al. 2019b).

Training: resize the shorter side to 256, random crop 227 (BN-Inception papers) or 224
(ResNet-50 / GoogLeNet re-implementations), random horizontal flip. Test: resize 256, centre
crop. Then ``ToTensor`` and ImageNet mean / std normalisation.

Where implementations differ: many PyTorch ports use ``RandomResizedCrop(image_size)``
instead of resize + random crop for training (pass ``random_resized_crop=True``), and the
Caffe BN-Inception weights expect BGR 0-255 input (not handled here: use the torchvision
ImageNet statistics of your backbone).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "get_transforms"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_transforms(train: bool, image_size: int = 224, resize: int = 256,
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   random_resized_crop: bool = False) -> T.Compose:
    """PIL image -> normalised float tensor ``(3, image_size, image_size)``.

    Args:
        train: random crop + horizontal flip if True, centre crop otherwise.
        image_size: crop side (227 in the BN-Inception papers, 224 for ResNet-50).
        resize: shorter side after resizing (256 in the papers).
        mean, std: per-channel normalisation (ImageNet by default).
        random_resized_crop: training crop ``RandomResizedCrop(image_size)`` instead of
            ``Resize(resize) + RandomCrop(image_size)``.
    """
    if image_size > resize:
        raise ValueError(f"image_size ({image_size}) must not exceed resize ({resize})")
    if train:
        crop = ([T.RandomResizedCrop(image_size)] if random_resized_crop
                else [T.Resize(resize), T.RandomCrop(image_size)])
        steps = [*crop, T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(resize), T.CenterCrop(image_size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
