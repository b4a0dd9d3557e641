"""Write a built-in synthetic camouflage set, for tests, demos and benchmarks without COD10K.

The set is written in the COD10K-v3 layout with COD10K-style names
(``COD10K-CAM-1-Synthetic-3-Lizard-00001.jpg``) so that it goes through the
same discovery, category parsing and loading code as the real data. The
scenes themselves are drawn by :mod:`datasets.synthetic_scene` (which says what
they look like); the cached copy that training and evaluation use is
:mod:`datasets.synthetic_cache`, whose names are importable from here as well.

Everything is drawn from ``numpy.random.Generator`` streams seeded by
``(seed, split, index)``: the same seed gives byte-identical files,
whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm.auto import tqdm

from ._types import PathLike, SizeLike, to_hw
from .files import atomic_write_text
from .io import write_image
from .synthetic_scene import DIFFICULTIES, SHAPES, Scene, draw_scene, make_scene

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
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
# Written last, at the root of every complete set.
MANIFEST_NAME = "synthetic.json"
# Largest side drawn. At 4096 px a scene takes about 1 GB of memory and 15 s in each worker
# process; sides far beyond that exhaust memory part-way (100000 px would need > 100 GB per scene).
MAX_IMG_SIZE = 4096
_SPLIT_CODES = {"Train": 0, "Test": 1}


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
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


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
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            break


# The cache builds on this module, so its names are looked up on first use.
_CACHE_NAMES = frozenset({"CacheFolderError", "ensure_synthetic_dataset", "default_cache_dir"})


def __getattr__(name: str) -> Any:
    """The names of :mod:`datasets.synthetic_cache`, for code that imports them from here."""
    if name in _CACHE_NAMES:
        return getattr(import_module(".synthetic_cache", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # static analysers see an ordinary import
    from .synthetic_cache import CacheFolderError, default_cache_dir, ensure_synthetic_dataset
