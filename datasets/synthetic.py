"""Built-in synthetic camouflage scenes, for smoke tests and demos without COD10K.

Each scene is a procedural texture (mottled, spotted or striped value noise
mapped through a natural colour palette) with one or two objects cut from a
*second* texture of the same family: same palette shifted by a few grey
levels, slightly different scale and pattern parameters, and a different
noise sample. What gives an object away is what gives real camouflaged
animals away: a subtle change of texture statistics and a faint boundary,
not colour. The masks are binary; about a tenth of the images are NonCAM
(texture only, empty mask), as in COD10K.

The set is written in the COD10K-v3 layout with COD10K-style names
(``COD10K-CAM-1-Synthetic-2-Blob-00001.jpg``) so that it goes through the
same discovery, category parsing and loading code as the real data.
Everything is drawn from ``numpy.random.Generator`` streams seeded by
``(seed, split, index)``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from tqdm.auto import tqdm

from ._types import PathLike, SizeLike, to_hw

__all__ = [
    "GENERATOR_VERSION",
    "SHAPES",
    "make_scene",
    "write_synthetic_dataset",
    "ensure_synthetic_dataset",
    "default_cache_dir",
]


# Bump when the scenes change, so cached sets made by older code are not reused.
GENERATOR_VERSION = 1
# COD10K-style sub-class names and ids of the object shapes.
SHAPES: Dict[str, int] = {"Ellipse": 1, "Blob": 2, "Polygon": 3}
_FAMILIES = ("mottled", "spotted", "striped")
# Hue centres (degrees) of natural camouflage palettes: bark/sand, foliage,
# rock/water, reddish soil.
_HUES = (30.0, 95.0, 205.0, 15.0)
_MANIFEST = "synthetic.json"
_SPLIT_CODES = {"Train": 0, "Test": 1}


@dataclass(frozen=True)
class _TextureParams:
    family: str
    cells: float  # noise cells across the image at the coarsest octave
    octaves: int
    persistence: float
    stretch: float  # >1 elongates the pattern horizontally
    palette: Tuple[Tuple[float, float, float], ...]  # 3 RGB stops in [0, 1]
    spot_threshold: float
    stripe_angle: float
    stripe_freq: float



# --------------------------------------------------------------------------- #
# Textures
# --------------------------------------------------------------------------- #


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int,
                 persistence: float, stretch: float = 1.0, ref: Optional[int] = None) -> np.ndarray:
    """Fractal value noise in [0, 1], shape (h, w): upsampled random grids summed over octaves.

    ``cells`` counts noise cells per ``ref`` pixels (default ``max(h, w)``), so
    a crop of a scene can be textured at the scene's scale.
    """
    ref = ref or max(h, w)
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(octaves):
        c = cells * (2 ** octave) / ref
        gh = max(2, int(round(c * h)))
        gw = max(2, int(round(c * stretch * w)))
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    # Stretch contrast to ~[0, 1] by mean and spread (a percentile would need
    # a sort of every pixel and costs more than the noise itself).
    mean, std = cv2.meanStdDev(out)
    lo = float(mean[0, 0]) - 2.0 * float(std[0, 0])
    scale = 1.0 / max(4.0 * float(std[0, 0]), 1e-6)
    return np.clip((out - lo) * scale, 0.0, 1.0)


def _texture(rng: np.random.Generator, h: int, w: int, p: _TextureParams,
             ref: Optional[int] = None, origin: Tuple[int, int] = (0, 0)) -> np.ndarray:
    """Colour texture, float32 (h, w, 3) in [0, 1].

    ``ref`` is the scene size the parameters refer to and ``origin`` the
    (y, x) offset of this patch in the scene, for texturing a crop.
    """
    ref = ref or max(h, w)
    v = _value_noise(rng, h, w, p.cells, p.octaves, p.persistence, p.stretch, ref)
    if p.family == "spotted":
        spots = _value_noise(rng, h, w, p.cells * 2.5, 2, 0.4, 1.0, ref)
        # Smooth step instead of a hard threshold: spots with soft rims.
        s = np.clip((spots - p.spot_threshold) * 8.0 + 0.5, 0.0, 1.0)
        v = 0.55 * v + 0.45 * s
    elif p.family == "striped":
        yy = np.arange(origin[0], origin[0] + h, dtype=np.float32)[:, None]
        xx = np.arange(origin[1], origin[1] + w, dtype=np.float32)[None, :]
        warp = _value_noise(rng, h, w, p.cells, 2, 0.5, 1.0, ref) * 6.0
        k = 2 * np.pi * p.stripe_freq / ref
        phase = xx * (k * np.cos(p.stripe_angle)) + yy * (k * np.sin(p.stripe_angle))
        v = 0.5 * v + 0.25 * (1.0 + np.sin(phase + warp))
    # Palette lookup through a 256-entry table: one gather instead of three
    # np.interp calls over every pixel.
    stops = np.array(p.palette, np.float32)  # (3 stops, RGB)
    levels = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    lut = np.stack([np.interp(levels, [0.0, 0.5, 1.0], stops[:, c]) for c in range(3)], axis=1)
    return lut.astype(np.float32)[(v * 255.0 + 0.5).astype(np.uint8)]


def _palette(rng: np.random.Generator) -> Tuple[Tuple[float, float, float], ...]:
    hue = float(_HUES[rng.integers(len(_HUES))] + rng.uniform(-12, 12)) % 360.0
    sat = float(rng.uniform(0.2, 0.6))
    val = float(rng.uniform(0.35, 0.7))
    spread = float(rng.uniform(0.15, 0.3))
    hsv = np.array([[[hue + rng.uniform(-8, 8), min(1.0, sat * k), np.clip(val + d, 0.05, 0.95)]
                     for k, d in ((1.1, -spread), (1.0, 0.0), (0.9, spread))]], np.float32)
    hsv[..., 0] %= 360.0
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    return tuple(tuple(float(x) for x in stop) for stop in rgb)


def _background_params(rng: np.random.Generator) -> _TextureParams:
    return _TextureParams(
        family=_FAMILIES[rng.integers(len(_FAMILIES))],
        cells=float(rng.uniform(3.0, 7.0)),
        octaves=4,
        persistence=float(rng.uniform(0.45, 0.65)),
        stretch=float(rng.uniform(0.7, 1.5)),
        palette=_palette(rng),
        spot_threshold=float(rng.uniform(0.45, 0.65)),
        stripe_angle=float(rng.uniform(0, np.pi)),
        stripe_freq=float(rng.uniform(4.0, 10.0)),
    )


def _object_params(rng: np.random.Generator, bg: _TextureParams, difficulty: float) -> _TextureParams:
    """Same family as the background, parameters shifted less the harder the scene."""
    ease = 1.0 - difficulty
    # Mostly a brightness shift plus a little chroma: a per-channel shift of
    # the same size turns green into grey and makes the object pop out.
    shift = (rng.normal() * (1.0 + 6.0 * ease) + rng.normal(0.0, 1.0, 3) * (0.5 + 2.5 * ease)) / 255.0
    palette = tuple(tuple(float(np.clip(c + s, 0, 1)) for c, s in zip(stop, shift)) for stop in bg.palette)
    scale = float(np.exp(rng.uniform(-1, 1) * (0.1 + 0.35 * ease)))
    return replace(
        bg,
        cells=bg.cells * scale,
        persistence=float(np.clip(bg.persistence + rng.uniform(-0.1, 0.1) * ease, 0.3, 0.8)),
        stretch=bg.stretch * float(np.exp(rng.uniform(-0.3, 0.3) * ease)),
        palette=palette,
        spot_threshold=float(np.clip(bg.spot_threshold + rng.uniform(-0.08, 0.08), 0.3, 0.8)),
        stripe_angle=bg.stripe_angle + float(rng.uniform(-0.6, 0.6) * ease),
        stripe_freq=bg.stripe_freq * scale,
    )


# --------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------- #


def _shape_mask(rng: np.random.Generator, h: int, w: int, shape: str) -> np.ndarray:
    """Binary uint8 mask (0/255) of one object, (h, w)."""
    mask = np.zeros((h, w), np.uint8)
    side = min(h, w)
    cx = float(rng.uniform(0.3, 0.7) * w)
    cy = float(rng.uniform(0.3, 0.7) * h)
    radius = float(rng.uniform(0.14, 0.3) * side)
    if shape == "Ellipse":
        axes = (max(2, int(radius * rng.uniform(0.8, 1.3))), max(2, int(radius * rng.uniform(0.45, 0.9))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif shape == "Blob":
        # Radius as a low-order Fourier series of the angle: smooth, star-free outline.
        theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        r = np.ones_like(theta)
        for k in range(2, 6):
            r += rng.uniform(0.0, 0.3) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r = radius * np.clip(r, 0.35, None)
        pts = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    elif shape == "Polygon":
        n = int(rng.integers(5, 10))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = radius * rng.uniform(0.6, 1.2, n)
        pts = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
        # Round the corners: blur, then threshold back to a binary mask.
        sigma = max(1.0, side / 40.0)
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
        mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    else:
        raise ValueError(f"Unknown shape {shape!r}; choose from {sorted(SHAPES)}.")
    if not mask.any():  # tiny images: make sure a CAM mask is never empty
        cv2.circle(mask, (int(cx), int(cy)), max(2, side // 8), 255, -1)
    return mask


# --------------------------------------------------------------------------- #
# Scenes
# --------------------------------------------------------------------------- #


def make_scene(rng: np.random.Generator, img_size: SizeLike, camouflaged: bool = True
               ) -> Tuple[np.ndarray, np.ndarray, str]:
    """Draw one scene.

    Args:
        rng: Random generator (the scene is a pure function of its state).
        img_size: ``int`` or ``(height, width)``.
        camouflaged: ``False`` gives a texture-only NonCAM scene.

    Returns:
        ``(image, mask, shape)``: RGB uint8 ``(H, W, 3)``, binary uint8 mask
        ``(H, W)`` with values 0/255, and the shape name of the (first)
        object, or ``"Texture"`` for NonCAM scenes.
    """
    h, w = to_hw(img_size)
    bg_params = _background_params(rng)
    image = _texture(rng, h, w, bg_params)
    mask = np.zeros((h, w), np.uint8)
    shape_name = "Texture"
    if camouflaged:
        difficulty = float(rng.uniform(0.2, 0.9))
        names = list(SHAPES)
        n_objects = 2 if rng.random() < 0.2 else 1
        ref = max(h, w)
        pad = max(4, ref // 20)  # room for the feathered edge and the shadow
        for i in range(n_objects):
            shape = names[int(rng.integers(len(names)))]
            shape_name = shape if i == 0 else shape_name
            obj_mask = _shape_mask(rng, h, w, shape)
            # Work on the object's bounding box only: objects cover 5-30% of
            # the scene, so this is several times less texture to make.
            x, y, bw, bh = cv2.boundingRect(obj_mask)
            y0, x0 = max(0, y - pad), max(0, x - pad)
            y1, x1 = min(h, y + bh + pad), min(w, x + bw + pad)
            crop_mask = obj_mask[y0:y1, x0:x1]
            obj = _texture(rng, y1 - y0, x1 - x0, _object_params(rng, bg_params, difficulty),
                           ref=ref, origin=(y0, x0))
            # Feathered edge: the boundary is a faint blend, not a cut-out line.
            alpha = cv2.GaussianBlur(crop_mask.astype(np.float32) * (1.0 / 255.0), (0, 0), 0.8)
            # A faint contact shadow around the object, stronger in easy scenes.
            ring = cv2.GaussianBlur(alpha, (0, 0), max(1.0, ref / 60.0))
            shade = 1.0 - 0.12 * (1.0 - difficulty) * np.clip(ring - alpha, 0.0, 1.0)
            patch = image[y0:y1, x0:x1] * shade[..., None]
            a = alpha[..., None]
            image[y0:y1, x0:x1] = patch + (obj - patch) * a
            mask = np.maximum(mask, obj_mask)
    # Scene-wide lighting and sensor noise hit object and background alike.
    gx, gy = (float(g) for g in rng.uniform(-0.15, 0.15, 2))  # python floats keep float32 math
    light = (1.0 + gy * (np.arange(h, dtype=np.float32)[:, None] / h - 0.5)
             + gx * (np.arange(w, dtype=np.float32)[None, :] / w - 0.5))
    # Uniform noise with the std of 2 grey levels: cheaper to draw than Gaussian.
    noise = rng.random(image.shape, dtype=np.float32) - 0.5
    image = image * light[..., None] + noise * (2.0 * np.sqrt(12.0) / 255.0)
    image_u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image_u8, mask, shape_name


def _scene_name(index: int, camouflaged: bool, shape: str) -> str:
    if camouflaged:
        return f"COD10K-CAM-1-Synthetic-{SHAPES[shape]}-{shape}-{index:05d}"
    return f"COD10K-NonCAM-5-Background-1-{shape}-{index:05d}"


def write_synthetic_dataset(
    out_dir: PathLike,
    n_train: int = 240,
    n_test: int = 60,
    img_size: SizeLike = 192,
    seed: int = 0,
    progress: bool = True,
    noncam_fraction: float = 0.1,
) -> Path:
    """Write a synthetic COD set in the COD10K-v3 layout.

    Writes ``Train/Image/*.jpg``, ``Train/GT_Object/*.png``, the same under
    ``Test/``, and a ``synthetic.json`` manifest (parameters and counts).

    Args:
        out_dir: Target folder; created if missing, must be empty.
        n_train: Number of training scenes.
        n_test: Number of test scenes.
        img_size: ``int`` or ``(height, width)``.
        seed: Seed; the same seed gives byte-identical files.
        progress: Show a tqdm progress bar.
        noncam_fraction: Share of texture-only scenes with empty masks.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        FileExistsError: If ``out_dir`` exists and is not empty.
        ValueError: For negative counts, a fraction outside ``[0, 1)`` or an
            image size under 16 px.
    """
    out = Path(out_dir)
    h, w = to_hw(img_size)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train={n_train}, n_test={n_test}: counts must be >= 0.")
    if not 0.0 <= noncam_fraction < 1.0:
        raise ValueError(f"noncam_fraction={noncam_fraction}: expected 0 <= fraction < 1.")
    if min(h, w) < 16:
        raise ValueError(f"img_size={img_size}: use at least 16 px per side.")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: folder is not empty; choose a new or empty folder.")

    counts: Dict[str, Dict[str, int]] = {}
    jobs: List[Tuple[str, int]] = [("Train", i) for i in range(n_train)] + [("Test", i) for i in range(n_test)]
    for split in ("Train", "Test"):
        (out / split / "Image").mkdir(parents=True, exist_ok=True)
        (out / split / "GT_Object").mkdir(parents=True, exist_ok=True)
        counts[split] = {"cam": 0, "noncam": 0}
    for split, i in tqdm(jobs, desc="Synthetic scenes", disable=not progress, unit="img"):
        # One independent stream per image: image k does not depend on how
        # many images come before it or on the other split's size.
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
        camouflaged = bool(rng.random() >= noncam_fraction)
        image, mask, shape = make_scene(rng, (h, w), camouflaged)
        # Global numbering across splits, so names are unique as in COD10K.
        index = (i if split == "Train" else n_train + i) + 1
        name = _scene_name(index, camouflaged, shape)
        cv2.imwrite(str(out / split / "Image" / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        cv2.imwrite(str(out / split / "GT_Object" / f"{name}.png"), mask)
        counts[split]["cam" if camouflaged else "noncam"] += 1

    manifest = {
        "generator": "camoxpert.synthetic",
        "version": GENERATOR_VERSION,
        "layout": "COD10K-v3",
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "img_size": [h, w],
        "noncam_fraction": noncam_fraction,
        "counts": counts,
    }
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def default_cache_dir() -> Path:
    """Cache root: ``$CAMOXPERT_CACHE`` if set, else ``~/.cache/camoxpert``."""
    env = os.environ.get("CAMOXPERT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "camoxpert"


def _params_key(n_train: int, n_test: int, img_size: Tuple[int, int], seed: int, noncam_fraction: float) -> str:
    params = {"v": GENERATOR_VERSION, "n_train": n_train, "n_test": n_test,
              "img_size": list(img_size), "seed": seed, "noncam_fraction": noncam_fraction}
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def _remove_stale_temp_dirs(root: Path, max_age_s: float = 3600.0) -> None:
    # Left behind by generations that were killed; a younger one may still be
    # in progress in another process, so leave it alone.
    now = time.time()
    for tmp in root.glob(".synthetic-*.tmp*"):
        try:
            if now - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def ensure_synthetic_dataset(
    cache_dir: Optional[PathLike] = None,
    n_train: int = 240,
    n_test: int = 60,
    img_size: SizeLike = 192,
    seed: int = 0,
    progress: bool = True,
    noncam_fraction: float = 0.1,
) -> Path:
    """Return a cached synthetic set, generating it on first use.

    The set lives in ``<cache_dir>/synthetic-<hash of the parameters>``. It is
    generated in a temporary sibling folder and renamed into place when
    complete, so an interrupted run never leaves a half-written set behind and
    two processes racing to create it both end up with a complete one.

    Args:
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.
        n_train: Number of training scenes.
        n_test: Number of test scenes.
        img_size: ``int`` or ``(height, width)``.
        seed: Seed.
        progress: Show a progress bar while generating.
        noncam_fraction: Share of texture-only scenes.

    Returns:
        Path of the dataset root (COD10K-v3 layout).
    """
    hw = to_hw(img_size)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / f"synthetic-{_params_key(n_train, n_test, hw, seed, noncam_fraction)}"
    if (final / _MANIFEST).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=root))
    try:
        write_synthetic_dataset(tmp, n_train, n_test, hw, seed, progress, noncam_fraction)
        if final.exists() and not (final / _MANIFEST).is_file():
            shutil.rmtree(final)  # incomplete set from code that did not rename atomically
        os.rename(tmp, final)
    except OSError:
        # Lost a race: another process renamed its complete set into place.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / _MANIFEST).is_file():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
