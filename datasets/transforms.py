"""Albumentations pipelines for training and evaluation.

Geometric transforms move image and mask together; colour transforms touch
the image only. Masks are interpolated bilinearly so anti-aliased ground
truths stay soft instead of being snapped to a jagged 0/1 edge.

The training pipeline crops-and-resizes first (``RandomResizedCrop`` reads the
~800 px source once and writes ``img_size`` directly), so every later op
works on ``img_size`` pixels only; this keeps one worker above 40 img/s at
384 px on one CPU core.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Mapping, Optional

# Albumentations asks PyPI for a newer version at every import, in this process and again in
# every spawned worker: a network round trip (up to its 2-s timeout, then a warning) on each.
# Off unless the user set the variable; the environment passes it on to spawned children.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from ._types import SizeLike, to_hw

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DEFAULT_TRAIN_AUG",
    "build_train_transform",
    "build_eval_transform",
    "denormalize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Every knob of the training augmentation, with its default. Probabilities are
# ``*_p``; setting a probability to 0 (or a range to ``None``) turns an op off.
DEFAULT_TRAIN_AUG: Dict[str, Any] = {
    "hflip_p": 0.5,
    "vflip_p": 0.0,  # off: most COD scenes have a gravity direction
    "crop_p": 0.5,
    "crop_scale": (0.6, 1.0),  # fraction of the image area kept by the crop
    "crop_ratio": (0.75, 1.3333),
    "rotate_p": 0.3,
    "rotate": 15.0,  # max degrees either way
    "scale": (0.9, 1.1),  # zoom drawn with the rotation
    "color_p": 0.5,
    "brightness": 0.2,
    "contrast": 0.2,
    "saturation": 0.2,
    # Small: camouflage is about colour similarity; a global hue shift keeps
    # it, but large shifts make scenes no camera produces.
    "hue": 0.02,
    "border": "reflect",  # "reflect" or "constant" fill for rotated corners
}

_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}



def _merge_aug(aug: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    cfg = copy.deepcopy(DEFAULT_TRAIN_AUG)
    if aug:
        unknown = sorted(set(aug) - set(cfg))
        if unknown:
            raise ValueError(
                f"Unknown augmentation option(s) {unknown}; valid options: {sorted(cfg)}."
            )
        cfg.update(aug)
    if cfg["border"] not in _BORDERS:
        raise ValueError(f"aug border={cfg['border']!r}; use one of {sorted(_BORDERS)}.")
    return cfg


def _normalize_and_tensor() -> list:
    return [
        A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0),
        ToTensorV2(),
    ]


def build_train_transform(img_size: SizeLike, aug: Optional[Mapping[str, Any]] = None,
                          normalize: bool = True) -> A.Compose:
    """Training augmentation: crop/resize, flips, rotation, colour jitter, normalize.

    Args:
        img_size: Output size, ``int`` for square or ``(height, width)``.
        aug: Overrides of :data:`DEFAULT_TRAIN_AUG` (unknown keys raise).
        normalize: False leaves the image uint8 ``(h, w, 3)`` and the mask a float32 array,
            for a trainer that normalises on the device (a quarter of the bytes through the
            loader; :class:`engine.inference.preprocess.DeviceNormalizer` gives the same numbers).

    Returns:
        Compose called as ``t(image=uint8 HxWx3 RGB, mask=float32 HxW)``,
        returning ``image`` float32 tensor ``(3, h, w)`` (ImageNet-normalized)
        and ``mask`` float32 tensor ``(h, w)``.

    Raises:
        ValueError: For unknown options or an unknown border mode.
    """
    cfg = _merge_aug(aug)
    height, width = to_hw(img_size)
    border = _BORDERS[cfg["border"]]
    linear = dict(interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_LINEAR)

    if cfg["crop_p"] > 0 and cfg["crop_scale"] is not None:
        # OneOf uses the p values as weights: crop with probability crop_p,
        # plain resize otherwise; either way the output is img_size.
        crop = A.RandomResizedCrop(
            size=(height, width), scale=tuple(cfg["crop_scale"]), ratio=tuple(cfg["crop_ratio"]),
            p=cfg["crop_p"], **linear,
        )
        resize = A.Resize(height, width, p=max(1e-6, 1.0 - cfg["crop_p"]), **linear)
        ops: list = [A.OneOf([crop, resize], p=1.0)]
    else:
        ops = [A.Resize(height, width, **linear)]

    if cfg["rotate_p"] > 0 and (cfg["rotate"] or cfg["scale"] not in (None, (1.0, 1.0))):
        ops.append(A.Affine(
            rotate=(-float(cfg["rotate"]), float(cfg["rotate"])),
            scale=tuple(cfg["scale"]) if cfg["scale"] is not None else (1.0, 1.0),
            border_mode=border,
            p=cfg["rotate_p"],
            **linear,
        ))
    if cfg["hflip_p"] > 0:
        ops.append(A.HorizontalFlip(p=cfg["hflip_p"]))
    if cfg["vflip_p"] > 0:
        ops.append(A.VerticalFlip(p=cfg["vflip_p"]))
    if cfg["color_p"] > 0:
        ops.append(A.ColorJitter(
            brightness=cfg["brightness"],
            contrast=cfg["contrast"],
            saturation=cfg["saturation"],
            hue=cfg["hue"],
            p=cfg["color_p"],
        ))
    return A.Compose(ops + (_normalize_and_tensor() if normalize else []))


def build_eval_transform(img_size: Optional[SizeLike]) -> A.Compose:
    """Evaluation/inference transform: resize and ImageNet-normalize.

    Args:
        img_size: Output size (``int`` or ``(height, width)``); ``None`` keeps
            the input size.

    Returns:
        Compose with the same call convention as :func:`build_train_transform`.
    """
    ops: list = []
    if img_size is not None:
        height, width = to_hw(img_size)
        ops.append(A.Resize(height, width, interpolation=cv2.INTER_LINEAR,
                            mask_interpolation=cv2.INTER_LINEAR))
    return A.Compose(ops + _normalize_and_tensor())


def denormalize(image):
    """Undo the ImageNet normalization of a ``(..., 3, H, W)`` tensor.

    Args:
        image: Normalized image tensor.

    Returns:
        Tensor in ``[0, 1]`` (clamped), same shape.
    """
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0.0, 1.0)
