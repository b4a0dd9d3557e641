"""Natural-looking procedural textures for the synthetic camouflage scenes.

A texture is a scalar *value field* in ``[0, 1]`` (multi-octave noise plus a
pattern layer: spots, stripes, leaf litter, pebbles or grass blades) mapped
through a *palette* (a few HSV stops from dark to light). Background and
object use the same family and palette; the object's field is a different
sample with a shifted scale and orientation, and its palette is shifted a
little in hue and lightness. That is what makes the object hard to find.

Noise is built on a small grid (octaves summed by repeated upsampling,
rotation and stretch applied on the grid) and upsampled to full size once,
so a 384 px field costs well under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import cv2
import numpy as np

__all__ = [
    "FAMILIES",
    "TextureParams",
    "NoiseSpec",
    "fractal_noise",
    "value_field",
    "palette_lut",
    "colorize",
    "random_palette",
    "shift_palette",
    "background_params",
    "object_texture_params",
    "draw_twigs",
]

FAMILIES = ("mottled", "spotted", "striped", "leaves", "pebbles", "grass")
# Hue centres (degrees) of natural surroundings: bark, sand, foliage, olive,
# grey rock, reddish soil, blue-grey water.
_HUES = (28.0, 40.0, 100.0, 70.0, 210.0, 15.0, 190.0)


@dataclass(frozen=True)
class NoiseSpec:
    """What fractal noise looks like, whatever the size it is drawn at.

    Attributes:
        cells: Cells across the reference size at the coarsest octave.
        octaves: Number of octaves.
        persistence: Amplitude ratio between octaves.
        angle: Orientation of the stretch (radians).
        anisotropy: Stretch factor along ``angle`` (1 = isotropic).
    """

    cells: float
    octaves: int
    persistence: float
    angle: float = 0.0
    anisotropy: float = 1.0


@dataclass(frozen=True)
class TextureParams:
    """Parameters of one texture (background or object).

    Attributes:
        family: One of :data:`FAMILIES`.
        cells: Noise cells across the reference size at the coarsest octave.
        octaves: Noise octaves (each twice the frequency of the previous one).
        persistence: Amplitude ratio between successive octaves.
        angle: Orientation of stretched noise, stripes and blades (radians).
        anisotropy: ``>= 1``; elongation of the noise along ``angle``.
        element: Size of leaves, pebbles, spots or blades as a fraction of the reference size.
        density: Pattern elements per ``element``-sized square (leaves, pebbles, grass).
        mix: Weight of the pattern layer against the noise.
        palette: HSV stops, float32 ``(n, 3)``: hue in degrees, saturation and value in ``[0, 1]``.
    """

    family: str
    cells: float
    octaves: int
    persistence: float
    angle: float
    anisotropy: float
    element: float
    density: float
    mix: float
    palette: np.ndarray

    @property
    def noise(self) -> NoiseSpec:
        """The noise layer of this texture."""
        return NoiseSpec(self.cells, self.octaves, self.persistence, self.angle, self.anisotropy)


def fractal_noise(rng: np.random.Generator, h: int, w: int, spec: NoiseSpec, ref: int) -> np.ndarray:
    """Fractal value noise, float32 ``(h, w)``, mean ~0.5 and std ~0.2 (not clipped).

    Args:
        rng: Random generator.
        h: Output height.
        w: Output width.
        spec: Scale, octaves and orientation of the noise.
        ref: Reference size in pixels, so a crop is textured at the scene's scale.
    """
    octaves = spec.octaves
    fine = spec.cells * (2 ** (octaves - 1)) / ref  # grid cells per pixel at the finest octave
    gh, gw = max(2, int(np.ceil(h * fine)) + 1), max(2, int(np.ceil(w * fine)) + 1)
    # Source grid large enough for the rotated, stretched view of the output grid.
    side = int(np.ceil(np.hypot(gh, gw))) + 4
    size = max(2, int(np.ceil(side / 2 ** (octaves - 1))))
    grid = rng.random((size, size), dtype=np.float32)
    amp = 1.0
    for _ in range(octaves - 1):
        size *= 2
        amp *= spec.persistence
        grid = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        grid += amp * rng.random((size, size), dtype=np.float32)
    if spec.anisotropy != 1.0 or spec.angle != 0.0:
        # Output grid point p maps to source c + R(angle) diag(1/anisotropy, 1) (p - c_out):
        # features come out stretched along `angle`.
        c, s = np.cos(spec.angle), np.sin(spec.angle)
        rot = np.array([[c, s], [-s, c]], np.float32)
        lin = np.diag([1.0 / spec.anisotropy, 1.0]).astype(np.float32) @ rot
        centre = np.array([size / 2.0, size / 2.0], np.float32)
        offset = centre - lin @ np.array([gw / 2.0, gh / 2.0], np.float32)
        matrix = np.concatenate([lin, offset[:, None]], axis=1)
        grid = cv2.warpAffine(grid, matrix, (gw, gh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    else:
        grid = grid[:gh, :gw]
    mean, std = cv2.meanStdDev(grid)
    grid = (grid - float(mean[0, 0])) * (0.2 / max(float(std[0, 0]), 1e-6)) + 0.5
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _soft_threshold(x: np.ndarray, t: float, sharpness: float) -> np.ndarray:
    return np.clip((x - t) * sharpness + 0.5, 0.0, 1.0)


def _scatter(rng: np.random.Generator, canvas: np.ndarray, p: TextureParams, ref: int, kind: str) -> None:
    """Draw leaves, pebbles or blades in place on a float32 value canvas."""
    h, w = canvas.shape
    unit = max(2.0, p.element * ref)
    n = min(400, int(p.density * h * w / unit ** 2))
    margin = unit
    xs = rng.uniform(-margin, w + margin, n)
    ys = rng.uniform(-margin, h + margin, n)
    sizes = unit * rng.uniform(0.5, 1.3, n)
    values = rng.uniform(0.2, 1.0, n)
    spread = {"leaves": np.pi, "pebbles": np.pi, "grass": 0.35}[kind]
    angles = p.angle + rng.uniform(-spread, spread, n)
    thin = max(1, int(round(ref / 300)))
    for x, y, size, v, a in zip(xs, ys, sizes, values, angles):
        v = float(v)
        if kind == "leaves":
            axes = (int(size), max(1, int(size * rng.uniform(0.25, 0.5))))
            cv2.ellipse(canvas, (int(x), int(y)), axes, float(np.degrees(a)), 0, 360, v, -1)
        elif kind == "pebbles":
            axes = (max(1, int(size * 0.5)), max(1, int(size * rng.uniform(0.3, 0.5))))
            cv2.ellipse(canvas, (int(x), int(y)), axes, float(np.degrees(a)), 0, 360, v, -1)
        else:  # grass blades: long thin strokes
            length = size * 2.5
            dx, dy = np.cos(a) * length, np.sin(a) * length
            cv2.line(canvas, (int(x), int(y)), (int(x + dx), int(y + dy)), v, thin + int(rng.integers(0, 2)))


def draw_twigs(rng: np.random.Generator, canvas: np.ndarray, count: int, ref: int) -> None:
    """Unlabelled clutter: branching thin twigs drawn in place on a value canvas.

    Their thin limbs look like the legs and antennae of the objects, so thin
    structure alone does not reveal an object.
    """
    h, w = canvas.shape
    for _ in range(count):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a = rng.uniform(0, 2 * np.pi)
        v = float(rng.choice([rng.uniform(0.05, 0.3), rng.uniform(0.7, 1.0)]))
        stack = [(x, y, a, ref * rng.uniform(0.1, 0.3), max(1.0, ref / rng.uniform(120, 250)), 0)]
        while stack:
            x, y, a, length, thick, depth = stack.pop()
            x1, y1 = x + np.cos(a) * length, y + np.sin(a) * length
            cv2.line(canvas, (int(x), int(y)), (int(x1), int(y1)), v, max(1, int(round(thick))))
            if depth < 2:
                for _ in range(int(rng.integers(1, 3))):
                    t = rng.uniform(0.4, 1.0)
                    stack.append((x + (x1 - x) * t, y + (y1 - y) * t, a + rng.uniform(-0.9, 0.9),
                                  length * rng.uniform(0.35, 0.6), thick * 0.7, depth + 1))


def value_field(rng: np.random.Generator, h: int, w: int, p: TextureParams, ref: int) -> np.ndarray:
    """Scalar texture in about ``[0, 1]``, float32 ``(h, w)`` (clip before use as a palette index)."""
    base = fractal_noise(rng, h, w, p.noise, ref)
    if p.family == "mottled":
        return base
    if p.family == "spotted":
        cells = 1.0 / max(p.element, 1e-3)
        spots = fractal_noise(rng, h, w, NoiseSpec(cells, 2, 0.4, p.angle, 1.0), ref)
        return (1.0 - p.mix) * base + p.mix * _soft_threshold(spots, 0.5 + 0.3 * p.density, 6.0)
    if p.family == "striped":
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        warp = fractal_noise(rng, h, w, NoiseSpec(p.cells * 0.5, 2, 0.5), ref) * 8.0
        k = np.float32(2 * np.pi / max(2.0, p.element * ref))
        phase = xx * (k * np.float32(-np.sin(p.angle))) + yy * (k * np.float32(np.cos(p.angle)))
        return (1.0 - p.mix) * base + (0.5 * p.mix) * (1.0 + np.sin(phase + warp + rng.uniform(0, 2 * np.pi)))
    canvas = base * 0.45  # the dark floor between leaves, pebbles and blades
    _scatter(rng, canvas, p, ref, p.family)
    if p.family == "pebbles":
        canvas = cv2.GaussianBlur(canvas, (0, 0), max(0.6, ref / 400))
    return (1.0 - p.mix) * base + p.mix * canvas


def palette_lut(palette: np.ndarray) -> np.ndarray:
    """256-entry RGB lookup table for ``cv2.LUT``, float32 ``(256, 1, 3)`` in ``[0, 1]``, from HSV stops."""
    hsv = np.array(palette, np.float32).copy()
    hsv[:, 0] %= 360.0
    hsv[:, 1:] = np.clip(hsv[:, 1:], 0.0, 1.0)
    rgb = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]  # (n, 3)
    levels = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    stops = np.linspace(0.0, 1.0, len(rgb), dtype=np.float32)
    lut = np.stack([np.interp(levels, stops, rgb[:, c]) for c in range(3)], axis=1)
    return lut.astype(np.float32)[:, None, :]


def colorize(field: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Value field ``(h, w)`` through a palette: float32 RGB ``(h, w, 3)`` in ``[0, 1]``."""
    # Clip negatives first: convertScaleAbs takes |x| before saturating to uint8.
    index = cv2.convertScaleAbs(cv2.max(field, 0.0), alpha=255.0)
    return cv2.LUT(cv2.merge([index, index, index]), palette_lut(palette))


def random_palette(rng: np.random.Generator) -> np.ndarray:
    """HSV stops from dark to light around one natural hue, float32 ``(4, 3)``."""
    hue = float(_HUES[rng.integers(len(_HUES))] + rng.uniform(-10, 10))
    sat = float(rng.uniform(0.15, 0.6))
    lo = float(rng.uniform(0.1, 0.35))
    hi = float(rng.uniform(0.6, 0.95))
    drift = float(rng.uniform(-15, 15))  # shadows and highlights of another tint
    stops = [(hue + drift * (t - 0.5) * 2, sat * (1.15 - 0.3 * t), lo + (hi - lo) * t)
             for t in np.linspace(0.0, 1.0, 4)]
    return np.array(stops, np.float32)


def shift_palette(palette: np.ndarray, hue: float, value: float, saturation: float) -> np.ndarray:
    """The palette with hue shifted by ``hue`` degrees, value by ``value`` and saturation scaled."""
    out = np.array(palette, np.float32).copy()
    out[:, 0] += hue
    out[:, 1] *= 1.0 + saturation
    out[:, 2] += value
    return out


def background_params(rng: np.random.Generator, family: Optional[str] = None) -> TextureParams:
    """Random background texture parameters (the family drawn unless given)."""
    family = family or FAMILIES[int(rng.integers(len(FAMILIES)))]
    return TextureParams(
        family=family,
        cells=float(rng.uniform(2.5, 6.0)),
        octaves=5,
        persistence=float(rng.uniform(0.45, 0.7)),
        angle=float(rng.uniform(0, np.pi)),
        anisotropy=float(rng.uniform(2.0, 5.0) if family in ("striped", "grass") else rng.uniform(1.0, 1.8)),
        element=float(rng.uniform(0.03, 0.08)),
        density=float(rng.uniform(0.4, 1.0)),
        mix=float(rng.uniform(0.45, 0.75)),
        palette=random_palette(rng),
    )


def object_texture_params(rng: np.random.Generator, bg: TextureParams, scale_jitter: float,
                          angle_jitter: float, hue: float, value: float) -> TextureParams:
    """The background's texture family with a shifted scale, orientation and palette.

    Args:
        rng: Random generator.
        bg: Background parameters.
        scale_jitter: Max ``|log|`` of the pattern scale ratio object/background.
        angle_jitter: Max orientation change (radians).
        hue: Hue shift (degrees).
        value: Lightness shift (value units, ``[0, 1]`` scale).
    """
    scale = float(np.exp(rng.uniform(-1.0, 1.0) * scale_jitter))
    return replace(
        bg,
        cells=bg.cells * scale,
        element=bg.element / scale,
        angle=bg.angle + float(rng.uniform(-1.0, 1.0) * angle_jitter),
        persistence=float(np.clip(bg.persistence + rng.uniform(-0.08, 0.08), 0.35, 0.8)),
        palette=shift_palette(bg.palette, hue, value, float(rng.uniform(-0.15, 0.15))),
    )
