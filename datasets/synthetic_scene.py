"""One synthetic camouflage scene: a textured ground with camouflaged objects, and its mask.

Scenes follow the statistics of real camouflage data (COD10K): one object in
most images, two in some, none in a tenth (NonCAM, empty mask, chosen by the
caller); object area mostly 1-20% of the image with a few tiny and some large
ones, anywhere in the frame and sometimes cut by the border; animal-like
silhouettes with many thin parts (legs, antennae, tails, fins, tentacles) in
any orientation (:mod:`datasets.synthetic_shapes`). Background and object share
a texture family and palette (:mod:`datasets.synthetic_texture`); the object
differs only subtly (hue/lightness shift, texture scale, orientation and phase,
soft body shading, a feathered edge), and unlabelled clutter (twigs, leaves)
and dappled light cover the scene. Each scene has a difficulty level
(easy/medium/hard) that sets how large those differences are.

A scene is a pure function of the ``numpy.random.Generator`` it is drawn from;
:mod:`datasets.synthetic` writes whole sets of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import cv2
import numpy as np

from ._types import SizeLike, to_hw
from .synthetic_shapes import SHAPES, build_figure, render_object
from .synthetic_texture import (
    NoiseSpec,
    TextureParams,
    background_params,
    colorize,
    draw_twigs,
    fractal_noise,
    object_texture_params,
    value_field,
)

__all__ = ["SHAPES", "DIFFICULTIES", "Scene", "draw_scene", "make_scene"]

# Difficulty levels, their shares, and how different the object is from its surround:
# (lightness shift, hue shift in degrees, log texture-scale change, orientation change in
# radians, body-shading strength, edge feather in px at 384 px).
DIFFICULTIES: Dict[str, float] = {"easy": 0.4, "medium": 0.4, "hard": 0.2}
_LOOKS = {
    "easy": dict(value=(0.12, 0.22), hue=(6.0, 14.0), scale=(0.5, 0.9), angle=1.2, shade=(0.25, 0.4), feather=0.5),
    "medium": dict(value=(0.06, 0.12), hue=(3.0, 8.0), scale=(0.25, 0.55), angle=0.7, shade=(0.12, 0.22),
                   feather=0.8),
    "hard": dict(value=(0.0, 0.05), hue=(0.0, 3.0), scale=(0.0, 0.3), angle=0.3, shade=(0.03, 0.1),
                 feather=1.2),
}


@dataclass
class Scene:
    """One synthetic scene.

    Attributes:
        image: RGB uint8 ``(H, W, 3)``.
        mask: Binary uint8 ``(H, W)``, values 0/255.
        shape: Shape name of the first object, ``"Texture"`` for NonCAM scenes.
        difficulty: ``"easy"``, ``"medium"``, ``"hard"``, or ``"none"`` for NonCAM scenes.
        n_objects: Objects in the scene.
    """

    image: np.ndarray
    mask: np.ndarray
    shape: str
    difficulty: str
    n_objects: int


def _area_fraction(rng: np.random.Generator) -> float:
    """Object area / image area, after COD10K: mostly 1-20%, a few tiny, some large."""
    u = rng.random()
    if u < 0.06:
        return float(np.exp(rng.uniform(np.log(0.002), np.log(0.01))))
    if u < 0.86:
        return float(np.exp(rng.uniform(np.log(0.015), np.log(0.22))))
    return float(rng.uniform(0.2, 0.45))


def _shading(rng: np.random.Generator, mask: np.ndarray, strength: float, ref: int) -> np.ndarray:
    """Soft body shading of an object crop, float32 around 1: a darker rim and a lit side."""
    m = mask.astype(np.float32) * (1.0 / 255.0)
    radius = max(1.0, 0.1 * float(np.sqrt(cv2.countNonZero(mask))))
    body = cv2.GaussianBlur(m, (0, 0), radius)
    a = rng.uniform(0, 2 * np.pi)
    gx = cv2.Sobel(body, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(body, cv2.CV_32F, 0, 1, ksize=3)
    lit = (gx * np.float32(np.cos(a)) + gy * np.float32(np.sin(a))) * np.float32(radius)
    rim = np.clip(1.0 - body * 2.0, 0.0, 1.0)
    return 1.0 + np.float32(strength) * (np.clip(lit, -1.0, 1.0) - 0.6 * rim)


def _add_object(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, bg_params: TextureParams, level: str,
                area: float, ref: int) -> str:
    """Draw one object into ``image`` (float32 RGB, in place) and ``mask``; returns its shape name."""
    h, w = mask.shape
    names = list(SHAPES)
    shape = names[int(rng.integers(len(names)))]
    # About a third of the objects may run off the frame, as in photographs; the rest stay inside.
    min_inside = 0.6 if rng.random() < 0.3 else 1.0
    obj_mask = render_object(rng, build_figure(rng, shape), h, w, area, min_inside=min_inside)
    look = _LOOKS[level]
    sign = 1.0 if rng.random() < 0.5 else -1.0
    params = object_texture_params(
        rng, bg_params,
        scale_jitter=float(rng.uniform(*look["scale"])),
        angle_jitter=look["angle"],
        hue=float(rng.uniform(*look["hue"]) * (1 if rng.random() < 0.5 else -1)),
        value=sign * float(rng.uniform(*look["value"])),
    )
    pad = max(3, ref // 40)
    x, y, bw, bh = cv2.boundingRect(obj_mask)
    y0, x0, y1, x1 = max(0, y - pad), max(0, x - pad), min(h, y + bh + pad), min(w, x + bw + pad)
    crop = obj_mask[y0:y1, x0:x1]
    field = value_field(rng, y1 - y0, x1 - x0, params, ref)
    if rng.random() < 0.3:  # the animal's skin a little softer than the ground
        field = cv2.GaussianBlur(field, (0, 0), 0.5 + ref / 500.0)
    alpha = cv2.GaussianBlur(crop.astype(np.float32) * (1.0 / 255.0), (0, 0), look["feather"] * max(0.5, ref / 384))
    # A faint contact shadow just outside the body.
    ring = cv2.GaussianBlur(alpha, (0, 0), max(1.0, ref / 100.0))
    shadow = 1.0 - float(rng.uniform(*look["shade"])) * 0.6 * np.clip(ring - alpha, 0.0, 1.0)
    # ground * shadow * (1 - alpha) + object * shading * alpha, in place (no full-size temporaries).
    obj = colorize(field, params.palette)
    obj *= (alpha * _shading(rng, crop, float(rng.uniform(*look["shade"])), ref))[..., None]
    patch = image[y0:y1, x0:x1]  # a view
    patch *= ((1.0 - alpha) * shadow)[..., None]
    patch += obj
    np.maximum(mask, obj_mask, out=mask)
    return shape


def draw_scene(rng: np.random.Generator, img_size: SizeLike, camouflaged: bool = True) -> Scene:
    """Draw one scene with its metadata (see :class:`Scene`); a pure function of ``rng``'s state."""
    h, w = to_hw(img_size)
    ref = max(h, w)
    bg = background_params(rng)
    field = value_field(rng, h, w, bg, ref)
    draw_twigs(rng, field, int(rng.integers(0, 5)), ref)
    image = colorize(field, bg.palette)  # (H, W, 3)
    mask = np.zeros((h, w), np.uint8)
    shape, level, n_objects = "Texture", "none", 0
    if camouflaged:
        level = list(DIFFICULTIES)[int(rng.choice(len(DIFFICULTIES), p=list(DIFFICULTIES.values())))]
        n_objects = 2 if rng.random() < 0.12 else 1
        for i in range(n_objects):
            area = _area_fraction(rng) * (0.6 if n_objects > 1 else 1.0)
            name = _add_object(rng, image, mask, bg, level, area, ref)
            shape = name if i == 0 else shape
    # Scene-wide light over object and background alike: a colour cast that drifts
    # across the frame, a brightness gradient and dappled light through leaves. All of
    # it is smooth, so it is made at a quarter of the size and upsampled once.
    sh, sw = max(2, h // 4), max(2, w // 4)
    gx, gy = (float(g) for g in rng.uniform(-0.2, 0.2, 2))
    light = (1.0 + gy * (np.arange(sh, dtype=np.float32)[:, None] / sh - 0.5)
             + gx * (np.arange(sw, dtype=np.float32)[None, :] / sw - 0.5))
    if rng.random() < 0.4:
        dapple = fractal_noise(rng, sh, sw, NoiseSpec(float(rng.uniform(3, 8)), 2, 0.5), max(sh, sw))
        light = light * (1.0 + float(rng.uniform(0.1, 0.3)) * np.clip((dapple - 0.5) * 4.0, -1.0, 1.0))
    cast = cv2.resize(rng.uniform(0.93, 1.07, (3, 3, 3)).astype(np.float32), (sw, sh), interpolation=cv2.INTER_CUBIC)
    gain = cv2.resize(cast * (255.0 * light[..., None]), (w, h), interpolation=cv2.INTER_LINEAR)  # (H, W, 3)
    image = cv2.multiply(image, gain)  # now 0..255
    if rng.random() < 0.35:  # slight defocus
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.4, 1.0)) * ref / 384)
    # Sensor noise: uniform integers with the std of 2-4 grey levels (uint8 draws are the cheapest).
    levels = int(rng.integers(7, 15))
    noise = rng.integers(0, levels, image.shape, dtype=np.uint8)
    image = cv2.add(image, (-0.5 * (levels - 1),) * 3 + (0.0,))
    image_u8 = cv2.add(image, noise, dtype=cv2.CV_8U)  # rounds and saturates
    return Scene(image_u8, mask, shape, level, n_objects)


def make_scene(rng: np.random.Generator, img_size: SizeLike, camouflaged: bool = True
               ) -> Tuple[np.ndarray, np.ndarray, str]:
    """Draw one scene.

    Args:
        rng: Random generator (the scene is a pure function of its state).
        img_size: ``int`` or ``(height, width)``.
        camouflaged: ``False`` gives an object-free NonCAM scene.

    Returns:
        ``(image, mask, shape)``: RGB uint8 ``(H, W, 3)``, binary uint8 mask
        ``(H, W)`` with values 0/255, and the shape name of the (first)
        object, or ``"Texture"`` for NonCAM scenes.
    """
    scene = draw_scene(rng, img_size, camouflaged)
    return scene.image, scene.mask, scene.shape

