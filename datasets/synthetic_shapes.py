"""Animal-like object silhouettes for the synthetic camouflage scenes.

Each shape is built in body coordinates (body length ~1 along +x, centred
at the origin) from filled outlines (bodies, wings, fins, each with an
irregular, noisy rim) and stroked polylines (legs, antennae, tails,
tentacles, branches) with a thickness in the same units. :func:`render_object`
places it: rotation, mirror, a scale chosen for a target mask area, and a
position. Thin parts never get thinner than one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np

__all__ = ["SHAPES", "Figure", "build_figure", "render_object"]

# COD10K-style sub-class names and ids (names must not contain '-').
SHAPES: Dict[str, int] = {
    "Insect": 1, "Spider": 2, "Lizard": 3, "Fish": 4, "Stick": 5, "Frog": 6, "Octopus": 7, "Moth": 8,
}
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_FIX = float(1 << _SHIFT)


@dataclass
class Figure:
    """One object in body coordinates.

    Attributes:
        fills: Closed outlines, each float ``(n, 2)``.
        strokes: ``(points (n, 2), thickness)`` polylines; thickness in body units.
    """

    fills: List[np.ndarray] = field(default_factory=list)
    strokes: List[Tuple[np.ndarray, float]] = field(default_factory=list)


def _blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0,
          rough: float = 0.12, n: int = 48) -> np.ndarray:
    """Ellipse with a noisy radius (low harmonics: lumps; high ones: a ragged rim)."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 9):
        r += rng.uniform(0, rough) / (0.5 * k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.4, None)
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _limb(rng: np.random.Generator, start: Tuple[float, float], angle: float, lengths: List[float],
          bend: float) -> np.ndarray:
    """Jointed polyline: one segment per length, each turning by about ``bend`` radians."""
    pts = [np.array(start, float)]
    for i, length in enumerate(lengths):
        if i:
            angle += bend + rng.uniform(-0.3, 0.3)
        pts.append(pts[-1] + length * np.array([np.cos(angle), np.sin(angle)]))
    return np.array(pts)


def _curve(rng: np.random.Generator, start: Tuple[float, float], angle: float, length: float,
           wiggle: float, n: int = 10) -> np.ndarray:
    """Smoothly wandering curve (antenna, tail, tentacle)."""
    turns = np.cumsum(rng.normal(0.0, wiggle, n))
    step = length / n
    xy = np.cumsum(np.stack([np.cos(angle + turns), np.sin(angle + turns)], axis=1) * step, axis=0)
    return np.vstack([np.array(start, float), np.array(start, float) + xy])


def _tapered(fig: Figure, pts: np.ndarray, thick0: float, thick1: float) -> None:
    """A stroke whose thickness goes from ``thick0`` to ``thick1`` (drawn segment by segment)."""
    n = len(pts) - 1
    for i in range(n):
        fig.strokes.append((pts[i:i + 2], thick0 + (thick1 - thick0) * i / max(1, n - 1)))


def _legs(rng: np.random.Generator, fig: Figure, anchor_x: List[float], body_w: float, length: float,
          thick: float, segments: int = 3) -> None:
    for side in (-1.0, 1.0):
        for x in anchor_x:
            a = side * (np.pi / 2 + rng.uniform(-0.6, 0.6)) + (x * 0.8)
            lengths = list(length * rng.uniform(0.25, 0.45, segments))
            bend = side * rng.uniform(-0.9, 0.9)
            fig.strokes.append((_limb(rng, (x, side * body_w * 0.5), a, lengths, bend), thick))


def _insect(rng: np.random.Generator) -> Figure:
    fig = Figure()
    fig.fills += [_blob(rng, -0.2, 0, 0.3, 0.1 * rng.uniform(0.8, 1.4)), _blob(rng, 0.15, 0, 0.1, 0.07),
                  _blob(rng, 0.3, 0, 0.06, 0.055)]
    _legs(rng, fig, [0.05, 0.15, 0.22], 0.12, rng.uniform(0.6, 1.0), rng.uniform(0.012, 0.025))
    for side in (-1.0, 1.0):
        fig.strokes.append((_curve(rng, (0.34, side * 0.02), side * rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.7),
                                   0.12), 0.01))
    return fig


def _spider(rng: np.random.Generator) -> Figure:
    fig = Figure()
    fig.fills += [_blob(rng, -0.12, 0, 0.16, 0.13, rough=0.2), _blob(rng, 0.1, 0, 0.09, 0.08)]
    _legs(rng, fig, [0.04, 0.08, 0.12, 0.16], 0.12, rng.uniform(0.9, 1.4), rng.uniform(0.01, 0.02), segments=3)
    return fig


def _lizard(rng: np.random.Generator) -> Figure:
    fig = Figure()
    fig.fills += [_blob(rng, 0.05, 0, 0.28, 0.07), _blob(rng, 0.38, 0, 0.09, 0.05, rough=0.05)]
    tail = _curve(rng, (-0.2, 0), np.pi + rng.uniform(-0.3, 0.3), rng.uniform(0.5, 0.9), 0.15, n=12)
    _tapered(fig, tail, 0.09, 0.012)
    for x in (-0.12, 0.22):
        for side in (-1.0, 1.0):
            leg = _limb(rng, (x, side * 0.04), side * rng.uniform(1.0, 2.0), [0.12, 0.1], -side * 0.8)
            fig.strokes.append((leg, 0.03))
            for toe in rng.uniform(-0.7, 0.7, 3):  # splayed toes
                fig.strokes.append((_limb(rng, tuple(leg[-1]), side * 1.5 + toe, [0.05], 0), 0.012))
    return fig


def _fish(rng: np.random.Generator) -> Figure:
    fig = Figure()
    x = np.linspace(-0.4, 0.45, 24)
    half = 0.16 * rng.uniform(0.6, 1.4) * np.sqrt(np.clip(1 - ((x - 0.05) / 0.45) ** 2, 0, 1))
    body = np.vstack([np.stack([x, half], 1), np.stack([x[::-1], -half[::-1]], 1)])
    fig.fills.append(body + rng.normal(0, 0.006, body.shape))
    fork = rng.uniform(0.05, 0.2)
    fig.fills.append(np.array([[-0.36, 0], [-0.6, 0.2], [-0.52 + fork, 0], [-0.6, -0.2]]))  # forked tail
    top = rng.uniform(-0.15, 0.1)
    fig.fills.append(np.array([[top - 0.15, 0.1], [top + 0.05, 0.1 + rng.uniform(0.08, 0.2)], [top + 0.15, 0.1]]))
    fig.fills.append(np.array([[0.1, -0.05], [-0.02, -0.16], [0.02, -0.04]]))  # pectoral fin
    for _ in range(int(rng.integers(0, 3))):  # barbels or spines
        fig.strokes.append((_curve(rng, (0.43, 0), rng.uniform(-1.2, 1.2), rng.uniform(0.1, 0.3), 0.2), 0.008))
    return fig


def _stick(rng: np.random.Generator) -> Figure:
    fig = Figure()
    body = _curve(rng, (-0.5, 0), 0.0, 1.0, 0.03, n=8)
    _tapered(fig, body, rng.uniform(0.03, 0.05), 0.02)
    for x in (-0.1, 0.05, 0.2):
        for side in (-1.0, 1.0):
            a = side * rng.uniform(0.5, 1.2) + (0 if x > 0 else np.pi * 0.2 * side)
            fig.strokes.append((_limb(rng, (x, 0), a, list(rng.uniform(0.15, 0.3, 2)), -side * 0.6), 0.012))
    fig.strokes.append((_curve(rng, (0.5, 0), rng.uniform(-0.3, 0.3), rng.uniform(0.2, 0.4), 0.1), 0.008))
    return fig


def _frog(rng: np.random.Generator) -> Figure:
    fig = Figure()
    fig.fills.append(_blob(rng, 0, 0, 0.3, 0.22, rough=0.25))
    for x, side in ((0.15, 1), (0.15, -1), (-0.2, 1), (-0.2, -1)):
        start = (x, side * 0.15)
        a = side * (np.pi / 2 - np.sign(x) * 0.6)
        leg = _limb(rng, start, a, [0.18, 0.16, 0.1], -side * np.sign(x) * 1.5)
        fig.strokes.append((leg, 0.05))
        for toe in (-0.5, 0.0, 0.5):
            fig.strokes.append((_limb(rng, tuple(leg[-1]), a + toe, [0.06], 0), 0.014))
    return fig


def _octopus(rng: np.random.Generator) -> Figure:
    fig = Figure()
    fig.fills.append(_blob(rng, 0.1, 0, 0.22, 0.16, rough=0.3))
    for a in np.linspace(np.pi * 0.6, np.pi * 1.4, int(rng.integers(5, 9))):
        arm = _curve(rng, (-0.05, 0), a + rng.uniform(-0.2, 0.2), rng.uniform(0.4, 0.8), 0.25, n=10)
        _tapered(fig, arm, 0.05, 0.01)
    return fig


def _moth(rng: np.random.Generator) -> Figure:
    fig = Figure()
    fig.fills.append(_blob(rng, 0, 0, 0.3, 0.06, rough=0.05))
    span = rng.uniform(0.35, 0.55)
    for side in (-1.0, 1.0):
        fig.fills.append(_blob(rng, -0.02, side * span * 0.5, 0.28, span * 0.5, angle=side * 0.3, rough=0.3, n=64))
        fig.strokes.append((_curve(rng, (0.3, side * 0.02), side * 0.5, rng.uniform(0.2, 0.4), 0.1), 0.01))
    return fig


_BUILDERS: Dict[str, Callable[[np.random.Generator], Figure]] = {
    "Insect": _insect, "Spider": _spider, "Lizard": _lizard, "Fish": _fish,
    "Stick": _stick, "Frog": _frog, "Octopus": _octopus, "Moth": _moth,
}


def build_figure(rng: np.random.Generator, shape: str) -> Figure:
    """A random instance of ``shape`` (one of :data:`SHAPES`) in body coordinates."""
    try:
        return _BUILDERS[shape](rng)
    except KeyError:
        raise ValueError(f"Unknown shape {shape!r}; choose from {sorted(SHAPES)}.") from None


def _draw(fig: Figure, canvas: np.ndarray, matrix: np.ndarray, scale: float) -> None:
    """Draw ``fig`` onto a uint8 canvas (255 inside) through a 2x3 body->pixel matrix."""
    parts = fig.fills + [pts for pts, _ in fig.strokes]
    # One transform for every point of the figure, then split back into parts.
    xy = np.concatenate(parts) @ matrix[:, :2].T + matrix[:, 2]
    px = np.split(np.round(xy * _FIX).astype(np.int32), np.cumsum([len(p) for p in parts])[:-1])
    for outline in px[:len(fig.fills)]:  # one call each: overlapping outlines in one call would cancel out
        cv2.fillPoly(canvas, [outline], 255, cv2.LINE_8, _SHIFT)
    for line, (_, thick) in zip(px[len(fig.fills):], fig.strokes):
        cv2.polylines(canvas, [line], False, 255, max(1, int(round(thick * scale))), cv2.LINE_8, _SHIFT)


def render_object(rng: np.random.Generator, fig: Figure, h: int, w: int, area_fraction: float,
                  min_inside: float = 0.6, tries: int = 6) -> np.ndarray:
    """Place ``fig`` in an ``(h, w)`` scene; binary uint8 mask (0/255).

    Args:
        rng: Random generator.
        fig: The object in body coordinates.
        h: Scene height.
        w: Scene width.
        area_fraction: Target mask area as a fraction of the scene.
        min_inside: Least share of the object that must lie inside the scene;
            objects may run off the border, as in photographs.
        tries: Positions tried before falling back to the centre.

    Returns:
        The mask, never empty.
    """
    angle = rng.uniform(0, 2 * np.pi)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    aspect = rng.uniform(0.85, 1.15)
    c, s = np.cos(angle), np.sin(angle)
    lin = np.array([[c, -s * mirror], [s, c * mirror]]) @ np.diag([aspect, 1.0 / aspect])
    # Area at a probe scale tells the scale that gives the target area.
    probe = 100.0
    canvas = np.zeros((400, 400), np.uint8)
    _draw(fig, canvas, np.concatenate([lin * probe, [[200.0], [200.0]]], axis=1), probe)
    probe_area = max(1, cv2.countNonZero(canvas))
    bx, by, bw, bh = cv2.boundingRect(canvas)
    # Thin figures (a stick insect) reach the target area only at a huge size: keep their
    # extent within about the frame, they just cover less area.
    scale = probe * min(float(np.sqrt(area_fraction * h * w / probe_area)), 1.3 * max(h, w) / max(bw, bh, 1))
    # Extent of the figure around its origin at this scale, in pixels.
    k = scale / probe
    left, top, right, bottom = (bx - 200) * k, (by - 200) * k, (bx + bw - 200) * k, (by + bh - 200) * k
    whole = min_inside >= 0.99 and right - left < w - 2 and bottom - top < h - 2
    best, best_inside = None, -1.0
    for attempt in range(tries + 1):
        if attempt < tries and whole:  # a position that keeps the whole figure in the frame
            cx, cy = rng.uniform(1 - left, w - 1 - right), rng.uniform(1 - top, h - 1 - bottom)
        elif attempt < tries:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        else:
            cx, cy = w / 2.0, h / 2.0
        mask = np.zeros((h, w), np.uint8)
        _draw(fig, mask, np.concatenate([lin * scale, [[cx], [cy]]], axis=1), scale)
        inside = cv2.countNonZero(mask) / (probe_area * (scale / probe) ** 2)
        if inside >= min_inside:
            return mask
        if inside > best_inside:
            best, best_inside = mask, inside
    if not best.any():  # tiny scenes: a CAM mask is never empty
        cv2.circle(best, (w // 2, h // 2), max(1, min(h, w) // 8), 255, -1)
    return best
