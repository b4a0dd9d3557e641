"""Built-in synthetic camouflage scenes, for tests, demos and benchmarks without COD10K.

Scenes follow the statistics of real camouflage data (COD10K): one object in
most images, two in some, none in a tenth (NonCAM, empty mask); object area
mostly 1-20% of the image with a few tiny and some large ones, anywhere in
the frame and sometimes cut by the border; animal-like silhouettes with many
thin parts (legs, antennae, tails, fins, tentacles) in any orientation
(:mod:`datasets.synthetic_shapes`). Background and object share a texture
family and palette (:mod:`datasets.synthetic_texture`); the object differs
only subtly (hue/lightness shift, texture scale, orientation and phase,
soft body shading, a feathered edge), and unlabelled clutter (twigs, leaves)
and dappled light cover the scene. Each scene has a difficulty level
(easy/medium/hard) that sets how large those differences are.

The set is written in the COD10K-v3 layout with COD10K-style names
(``COD10K-CAM-1-Synthetic-3-Lizard-00001.jpg``) so that it goes through the
same discovery, category parsing and loading code as the real data.
Everything is drawn from ``numpy.random.Generator`` streams seeded by
``(seed, split, index)``: the same seed gives byte-identical files,
whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm.auto import tqdm

from ._types import PathLike, SizeLike, to_hw
from .files import atomic_write_text
from .io import write_image
from .image_folders import DatasetLayoutError
from .synthetic_shapes import SHAPES, build_figure, render_object
from .synthetic_texture import (
    TextureParams,
    background_params,
    draw_twigs,
    fractal_noise,
    object_texture_params,
    colorize,
    value_field,
)

__all__ = [
    "GENERATOR_VERSION",
    "MAX_IMG_SIZE",
    "SHAPES",
    "DIFFICULTIES",
    "Scene",
    "draw_scene",
    "make_scene",
    "write_synthetic_dataset",
    "CacheFolderError",
    "ensure_synthetic_dataset",
    "default_cache_dir",
    "default_workers",
]


# Bump when the scenes change, so cached sets made by older code are not reused.
GENERATOR_VERSION = 2
_MANIFEST = "synthetic.json"
# Largest side drawn. At 4096 px a scene takes about 1 GB of memory and 15 s in each worker
# process; sides far beyond that exhaust memory part-way (100000 px would need > 100 GB per scene).
MAX_IMG_SIZE = 4096
_SPLIT_CODES = {"Train": 0, "Test": 1}
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
        dapple = fractal_noise(rng, sh, sw, float(rng.uniform(3, 8)), 2, 0.5, max(sh, sw))
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


def _scene_name(index: int, camouflaged: bool, shape: str) -> str:
    if camouflaged:
        return f"COD10K-CAM-1-Synthetic-{SHAPES[shape]}-{shape}-{index:05d}"
    return f"COD10K-NonCAM-5-Background-1-{shape}-{index:05d}"


def _scene_job(args: Tuple[str, int, int, int, Tuple[int, int], float, str]) -> Tuple[str, bool, str]:
    """Draw and write scene ``i`` of ``split``; returns ``(split, camouflaged, difficulty)``."""
    split, i, n_train, seed, hw, noncam_fraction, out = args
    # One independent stream per image: image k does not depend on how many images
    # come before it, on the other split's size, or on which process draws it.
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
    camouflaged = bool(rng.random() >= noncam_fraction)
    scene = draw_scene(rng, hw, camouflaged)
    # Global numbering across splits, so names are unique as in COD10K.
    index = (i if split == "Train" else n_train + i) + 1
    name = _scene_name(index, camouflaged, scene.shape)
    root = Path(out) / split
    write_image(root / "Image" / f"{name}.jpg", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    write_image(root / "GT_Object" / f"{name}.png", scene.mask)
    return split, camouflaged, scene.difficulty


def _scene_chunk(jobs: Sequence[Tuple[str, int, int, int, Tuple[int, int], float, str]]) -> List[Tuple[str, bool, str]]:
    return [_scene_job(job) for job in jobs]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def default_workers(n_images: int) -> int:
    """Worker processes for ``n_images`` scenes: one per 64 images, at most one per CPU core.

    Small sets are drawn in the calling process: starting a process costs more than
    drawing dozens of scenes.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, n_images // 64))


def write_synthetic_dataset(
    out_dir: PathLike,
    n_train: int = 240,
    n_test: int = 40,
    img_size: SizeLike = 160,
    seed: int = 0,
    progress: bool = True,
    noncam_fraction: float = 0.1,
    workers: Optional[int] = None,
) -> Path:
    """Write a synthetic COD set in the COD10K-v3 layout.

    Writes ``Train/Image/*.jpg``, ``Train/GT_Object/*.png``, the same under
    ``Test/``, and a ``synthetic.json`` manifest (parameters and counts), last
    and atomically: a folder with the manifest holds a complete set.
    The defaults are those of ``data.synthetic`` in ``configs/default.yaml``.
    If anything fails (or is interrupted), what this call created is removed
    again (a folder that existed before is kept), so the call can be repeated.

    Args:
        out_dir: Target folder; created if missing, must be empty.
        n_train: Number of training scenes.
        n_test: Number of test scenes.
        img_size: ``int`` or ``(height, width)``.
        seed: Seed; the same seed gives byte-identical files.
        progress: Show a tqdm progress bar.
        noncam_fraction: Share of object-free scenes with empty masks.
        workers: Processes drawing scenes; ``None`` picks :func:`default_workers`,
            1 draws in this process. The files do not depend on it.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        FileExistsError: If ``out_dir`` exists and is not empty.
        ValueError: For negative counts, a fraction outside ``[0, 1)``, an
            image size under 16 px or over :data:`MAX_IMG_SIZE`, or ``workers < 1``.
        OSError: A file could not be written.
    """
    out = Path(out_dir)
    h, w = to_hw(img_size)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train={n_train}, n_test={n_test}: counts must be >= 0.")
    if not 0.0 <= noncam_fraction < 1.0:
        raise ValueError(f"noncam_fraction={noncam_fraction}: expected 0 <= fraction < 1.")
    if min(h, w) < 16 or max(h, w) > MAX_IMG_SIZE:
        raise ValueError(f"img_size={img_size}: use 16 to {MAX_IMG_SIZE} px per side.")
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers}: use 1 or more (or None for one per 64 images).")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: folder is not empty; choose a new or empty folder.")

    made = _missing_folders(out)
    try:
        _write_scenes(out, n_train, n_test, (h, w), seed, progress, noncam_fraction, workers)
    except BaseException:
        _remove_created(out, made)
        raise
    return out


def _write_scenes(out: Path, n_train: int, n_test: int, hw: Tuple[int, int], seed: int, progress: bool,
                  noncam_fraction: float, workers: Optional[int]) -> None:
    """The body of :func:`write_synthetic_dataset` once its arguments are checked."""
    counts: Dict[str, Dict[str, int]] = {}
    levels: Dict[str, Dict[str, int]] = {}
    for split in _SPLIT_CODES:
        (out / split / "Image").mkdir(parents=True, exist_ok=True)
        (out / split / "GT_Object").mkdir(parents=True, exist_ok=True)
        counts[split] = {"cam": 0, "noncam": 0}
        levels[split] = {level: 0 for level in DIFFICULTIES}
    jobs = [(split, i, n_train, seed, hw, noncam_fraction, str(out))
            for split, n in (("Train", n_train), ("Test", n_test)) for i in range(n)]
    workers = default_workers(len(jobs)) if workers is None else workers
    bar = tqdm(total=len(jobs), desc="Synthetic scenes", disable=not progress, unit="img")

    def tally(results: List[Tuple[str, bool, str]]) -> None:
        for split, camouflaged, level in results:
            counts[split]["cam" if camouflaged else "noncam"] += 1
            if camouflaged:
                levels[split][level] += 1
        bar.update(len(results))

    try:
        if workers == 1:
            for job in jobs:
                tally([_scene_job(job)])
        else:
            chunk = 16
            chunks = [jobs[k:k + chunk] for k in range(0, len(jobs), chunk)]
            # "spawn": a fresh interpreter per worker, safe in a process that holds torch or CUDA threads.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker) as pool:  # leaving it stops the workers
                for results in pool.imap_unordered(_scene_chunk, chunks):
                    tally(results)
    finally:
        bar.close()

    manifest = {
        "generator": "camoxpert.synthetic",
        "version": GENERATOR_VERSION,
        "layout": "COD10K-v3",
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "img_size": list(hw),
        "noncam_fraction": noncam_fraction,
        "counts": counts,
        "difficulty": levels,
    }
    atomic_write_text(out / _MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _missing_folders(path: Path) -> List[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first: what creating it makes."""
    missing = []
    path = path.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_created(out: Path, made: Sequence[Path]) -> None:
    """Undo a failed :func:`write_synthetic_dataset`: its splits and manifest, then the folders in ``made``.

    ``out`` was empty when the call began, so these names are the call's own. A folder that
    existed before is kept, and a made folder that is not empty now (someone else's files)
    is left alone with its parents.
    """
    for split in _SPLIT_CODES:
        shutil.rmtree(out / split, ignore_errors=True)
    (out / _MANIFEST).unlink(missing_ok=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            break


def default_cache_dir() -> Path:
    """Cache root: ``$CAMOXPERT_CACHE`` if set, else ``~/.cache/camoxpert``."""
    env = os.environ.get("CAMOXPERT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "camoxpert"


class CacheFolderError(DatasetLayoutError):
    """The folder the synthetic set is cached in cannot be created or written; names the setting to change."""


def _writable_cache_root(cache_dir: Optional[PathLike]) -> Path:
    """The cache root to generate into: created and checked writable.

    The default (``~/.cache/camoxpert``) falls back to a folder under the system's temporary
    folder, with a notice, when it cannot be written (a read-only home in a container); a root
    the caller or ``CAMOXPERT_CACHE`` chose is never replaced silently.

    Raises:
        CacheFolderError: a chosen root that is a file or cannot be written, naming the setting.
    """
    env = os.environ.get("CAMOXPERT_CACHE")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
        return root
    except OSError as exc:
        reason = "it is a file, not a folder" if root.exists() and not root.is_dir() else (exc.strerror or str(exc))
        if cache_dir is None and not env:
            fallback = Path(tempfile.gettempdir()) / f"camoxpert-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"
            sys.stderr.write(f"Note: the synthetic-set cache {root} cannot be written ({reason}); using {fallback} "
                             f"this time. Set CAMOXPERT_CACHE to a writable folder to keep the set between runs.\n")
            fallback.mkdir(parents=True, exist_ok=True)
            return fallback
        setting = f"cache_dir {cache_dir}" if cache_dir is not None else f"CAMOXPERT_CACHE={env}"
        raise CacheFolderError(
            f"{setting}: cannot keep the synthetic set in {root} ({reason}). Point "
            f"{'it' if cache_dir is not None else 'CAMOXPERT_CACHE'} at a folder you can write, "
            f"{'' if cache_dir is not None else 'or unset it to use ~/.cache/camoxpert, '}then run again."
        ) from exc


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
    n_test: int = 40,
    img_size: SizeLike = 160,
    seed: int = 0,
    progress: bool = True,
    noncam_fraction: float = 0.1,
    workers: Optional[int] = None,
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
        noncam_fraction: Share of object-free scenes.
        workers: Processes drawing scenes (see :func:`write_synthetic_dataset`).

    Returns:
        Path of the dataset root (COD10K-v3 layout).
    """
    hw = to_hw(img_size)
    name = f"synthetic-{_params_key(n_train, n_test, hw, seed, noncam_fraction)}"
    chosen = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if (chosen / name / _MANIFEST).is_file():
        return chosen / name  # already generated: a read-only cache serves it as it is
    root = _writable_cache_root(cache_dir)
    final = root / name
    if (final / _MANIFEST).is_file():
        return final
    _remove_stale_temp_dirs(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=root))
    try:
        write_synthetic_dataset(tmp, n_train, n_test, hw, seed, progress, noncam_fraction, workers)
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
