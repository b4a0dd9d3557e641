"""The cached synthetic set: generated once per parameter set, shared by every run.

:func:`ensure_synthetic_dataset` keeps each set in
``<cache root>/synthetic-<hash of the parameters>``, generates it in a temporary
sibling folder and renames it into place when complete, so an interrupted run
never leaves a half-written set behind and two processes racing to create it
both end up with a complete one. The cache root is ``$CAMOXPERT_CACHE`` or
``~/.cache/camoxpert`` (:func:`default_cache_dir`); an unwritable default falls
back to a temporary folder, an unwritable chosen one is a :class:`CacheFolderError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Tuple

from . import synthetic
from ._types import PathLike, SizeLike, to_hw
from .image_folders import DatasetLayoutError

__all__ = ["CacheFolderError", "default_cache_dir", "ensure_synthetic_dataset"]


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
    params = {"v": synthetic.GENERATOR_VERSION, "n_train": n_train, "n_test": n_test,
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
        workers: Processes drawing scenes (see :func:`datasets.synthetic.write_synthetic_dataset`).

    Returns:
        Path of the dataset root (COD10K-v3 layout).
    """
    hw = to_hw(img_size)
    name = f"synthetic-{_params_key(n_train, n_test, hw, seed, noncam_fraction)}"
    chosen = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if (chosen / name / synthetic.MANIFEST_NAME).is_file():
        return chosen / name  # already generated: a read-only cache serves it as it is
    root = _writable_cache_root(cache_dir)
    final = root / name
    if (final / synthetic.MANIFEST_NAME).is_file():
        return final
    _remove_stale_temp_dirs(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=root))
    try:
        synthetic.write_synthetic_dataset(tmp, n_train, n_test, hw, seed, progress, noncam_fraction, workers)
        if final.exists() and not (final / synthetic.MANIFEST_NAME).is_file():
            shutil.rmtree(final)  # incomplete set from code that did not rename atomically
        os.rename(tmp, final)
    except OSError:
        # Lost a race: another process renamed its complete set into place.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / synthetic.MANIFEST_NAME).is_file():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
