"""PyTorch datasets for COD training, evaluation and prediction.

Samples come back as dicts of tensors plus the sample name, which the
default ``collate_fn`` batches (names become a list of ``str``). Paths and
categories stay on the dataset: ``dataset.samples[batch["index"][i]]``.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._types import PathLike
from .io import ImageReadError, read_image, read_mask
from .image_folders import IMAGE_EXTENSIONS, is_image_file, scan_image_folder
from .splits import SampleRef
from .transforms import build_eval_transform

__all__ = [
    "CODDataset",
    "ImageFolderDataset",
    "expand_inputs",
    "non_image_files",
    "split_train_val",
]

Transform = Callable[..., Dict[str, object]]


def _apply(transform: Transform, image: np.ndarray, mask: Optional[np.ndarray] = None) -> Dict:
    if mask is None:
        return transform(image=image)
    return transform(image=image, mask=mask)


def _u8_to_unit(mask: np.ndarray) -> np.ndarray:
    return np.multiply(mask, np.float32(1.0 / 255.0), dtype=np.float32)


def _shrink(image: np.ndarray, short_side: int, interpolation: int) -> np.ndarray:
    """Resize so the shorter side is ``short_side`` (never enlarges)."""
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


class CODDataset(Dataset):
    """Images with ground-truth masks.

    Each item is a dict:

    * ``"image"``: float32 ``(3, H, W)``, ImageNet-normalized (uint8 ``(H, W, 3)`` with a
      transform that does not normalise, as ``train``'s loader uses).
    * ``"mask"``: float32 ``(1, H, W)`` in ``[0, 1]`` (soft masks stay soft).
    * ``"orig_size"``: int64 ``(2,)``, ``[h, w]`` of the ground-truth file;
      metrics must be computed at this size (resize the prediction, never the
      GT: read the GT with :func:`datasets.read_mask` from
      ``dataset.samples[index].mask``).
    * ``"index"``: int, position in ``dataset.samples``.
    * ``"name"``: str, the sample's file stem (for naming predictions).

    Args:
        samples: Samples with masks (run :func:`datasets.validate_samples` first).
        transform: Albumentations-style callable ``t(image=, mask=) -> dict``
            returning tensors; ``None`` normalizes at the original size.
        cache_size: If set, keep decoded samples in memory as uint8, shrunk so
            the shorter side is at most ``cache_size`` (use the training image
            size). Meant for small datasets: COD10K+CAMO train (4040 samples)
            at 384 px takes about 2.4 GB. Call :meth:`preload` before creating
            DataLoader workers so they share one copy instead of each filling
            its own.
        skip_unreadable: When a sample fails to load (a file damaged or
            changed after the check, image and mask sizes differ), report it
            on stderr once per process and return the next loadable sample
            in its place instead of raising (``--skip-bad-samples``).

    Raises:
        ValueError: If a sample has no mask.
    """

    def __init__(
        self,
        samples: Sequence[SampleRef],
        transform: Optional[Transform] = None,
        cache_size: Optional[int] = None,
        skip_unreadable: bool = False,
    ) -> None:
        self.samples: List[SampleRef] = list(samples)
        missing = [s.image for s in self.samples if s.mask is None]
        if missing:
            raise ValueError(
                f"{len(missing)} sample(s) have no mask, e.g. {missing[0]}. Validate the dataset "
                f"(datasets.validate_samples) and drop them (report.filter / --skip-bad-samples)."
            )
        self.transform = transform if transform is not None else build_eval_transform(None)
        self.cache_size = cache_size
        self.skip_unreadable = skip_unreadable
        #: Indices found unloadable in this process (with ``skip_unreadable``).
        self.skipped: Dict[int, str] = {}
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray, Tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
        """Decode one sample without transforming it.

        Args:
            index: Sample index.

        Returns:
            ``(image, mask, (h, w))``: image uint8 ``(H, W, 3)`` RGB, mask
            float32 ``(H, W)`` in ``[0, 1]``, and the GT file's size. With a
            cache the arrays are the shrunk cached copies.

        Raises:
            ImageReadError: If a file cannot be decoded.
            ValueError: If image and mask sizes differ.
        """
        cached = self._cache.get(index)
        if cached is not None:
            image, mask_u8, orig = cached
            return image, _u8_to_unit(mask_u8), orig

        sample = self.samples[index]
        image = read_image(sample.image)
        mask = read_mask(sample.mask)
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(
                f"{sample.image}: image is {image.shape[1]}x{image.shape[0]} but mask "
                f"{sample.mask} is {mask.shape[1]}x{mask.shape[0]}. Validate the dataset and "
                f"skip bad samples (--skip-bad-samples) or re-export the mask."
            )
        orig = (int(mask.shape[0]), int(mask.shape[1]))
        if self.cache_size is not None:
            image = _shrink(image, self.cache_size, cv2.INTER_AREA)
            mask = _shrink(mask, self.cache_size, cv2.INTER_AREA)
            # uint8 quarters the memory of float32; 1/255 steps are finer
            # than any anti-aliasing a mask carries.
            mask_u8 = (np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            self._cache[index] = (image, mask_u8, orig)
            mask = _u8_to_unit(mask_u8)
        return image, mask, orig

    def preload(self, progress: bool = True) -> None:
        """Fill the cache with every sample (only when ``cache_size`` is set).

        Args:
            progress: Show a tqdm progress bar.
        """
        if self.cache_size is None:
            return
        for index in tqdm(range(len(self)), desc="Caching images", disable=not progress, unit="img"):
            if index not in self._cache:
                self._load_or_skip(index)

    def _load_or_skip(self, index: int) -> Optional[Tuple[np.ndarray, np.ndarray, Tuple[int, int]]]:
        """``load(index)``, or None (reported once) when it fails and ``skip_unreadable`` is set."""
        if index in self.skipped:
            return None
        try:
            return self.load(index)
        except (ImageReadError, ValueError) as exc:
            if not self.skip_unreadable:
                raise
            self.skipped[index] = str(exc)
            sys.stderr.write(f"Skipping sample {index} (--skip-bad-samples): {exc}\n")
            return None

    def __getitem__(self, index: int) -> Dict[str, object]:
        for attempt in range(len(self)):
            # The next sample stands in for a failing one, so batches keep their size.
            loaded = self._load_or_skip((index + attempt) % len(self))
            if loaded is not None:
                index = (index + attempt) % len(self)
                break
        else:
            raise ImageReadError(f"No sample of this dataset can be loaded ({len(self.skipped)} failed); "
                                 f"first failure: {next(iter(self.skipped.values()), '')}")
        image, mask, orig = loaded
        out = _apply(self.transform, image, mask)
        image_t = out["image"]
        if not isinstance(image_t, torch.Tensor):  # a transform without normalisation: (H, W, 3) uint8
            image_t = torch.from_numpy(np.ascontiguousarray(image_t))
        mask_t = out["mask"]
        if not isinstance(mask_t, torch.Tensor):
            mask_t = torch.from_numpy(np.ascontiguousarray(mask_t))
        if mask_t.ndim == 2:
            mask_t = mask_t.unsqueeze(0)  # (H, W) -> (1, H, W)
        return {
            "image": image_t,
            "mask": mask_t.float(),
            "orig_size": torch.tensor(orig, dtype=torch.long),
            "index": index,
            "name": self.samples[index].name,
        }


class ImageFolderDataset(Dataset):
    """Plain images for prediction (no masks).

    Each item: ``"image"`` float32 ``(3, H, W)``, ``"orig_size"`` int64
    ``[h, w]`` of the file, ``"index"`` int and ``"name"`` str (file stem).
    Full paths are in ``dataset.paths``.

    Args:
        paths: Image files (see :func:`expand_inputs`).
        transform: Albumentations-style callable ``t(image=) -> dict``;
            ``None`` normalizes at the original size.
    """

    def __init__(self, paths: Sequence[PathLike], transform: Optional[Transform] = None) -> None:
        self.paths: List[Path] = [Path(p) for p in paths]
        self.transform = transform if transform is not None else build_eval_transform(None)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Dict[str, object]:
        path = self.paths[index]
        image = read_image(path)
        out = _apply(self.transform, image)
        return {
            "image": out["image"],
            "orig_size": torch.tensor(image.shape[:2], dtype=torch.long),
            "index": index,
            "name": path.stem,
        }


def non_image_files(inputs: Union[PathLike, Iterable[PathLike]], recursive: bool = False) -> List[Path]:
    """Files inside the folder inputs that :func:`expand_inputs` leaves out (not image files).

    Hidden files are not counted. Lets a caller say what a folder held besides its images,
    instead of skipping, say, ``.heic`` photos without a word.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    skipped: List[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.is_dir():
            continue
        entries = path.rglob("*") if recursive else path.iterdir()
        skipped.extend(sorted(p for p in entries if not p.name.startswith(".") and p.is_file() and not is_image_file(p)))
    return skipped


def expand_inputs(inputs: Union[PathLike, Iterable[PathLike]], recursive: bool = False) -> List[Path]:
    """Turn image files, folders and glob patterns into a list of image files.

    Args:
        inputs: One input or several. A folder gives its image files (sorted);
            a pattern such as ``"shots/*.png"`` or ``"data/**/*.jpg"`` gives
            the image files it matches.
        recursive: Also list images in sub-folders of folder inputs.

    Returns:
        Image paths, in input order, without duplicates. Names with an image
        extension that are no readable file (broken or looping symbolic
        links, folders named ``x.jpg``) are included, so that reading them
        fails and they are reported by name rather than silently left out.

    Raises:
        FileNotFoundError: Naming every input that matched no image file.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: List[Path] = []
    failed: List[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            if recursive:
                # rglob does not descend into linked folders, so a link loop cannot trap it.
                files = sorted(p for p in path.rglob("*") if is_image_file(p) and not p.name.startswith("."))
            else:
                readable, unusable = scan_image_folder(path)
                files = sorted(readable + [u.path for u in unusable], key=lambda p: p.name)
            if not files:
                failed.append(f"{item} (folder holds no {'/'.join(IMAGE_EXTENSIONS)} files)")
        elif path.is_file():
            files = [path] if is_image_file(path) else []
            if not files:
                failed.append(f"{item} (not an image file: expected {'/'.join(IMAGE_EXTENSIONS)})")
        else:
            matches = sorted(glob.glob(os.path.expanduser(str(item)), recursive=True))
            files = [Path(m) for m in matches if is_image_file(m) and (os.path.isfile(m) or os.path.islink(m))]
            if not files:
                failed.append(f"{item} (no such file or folder, and no image matches it as a pattern)")
        found.extend(files)
    if failed:
        raise FileNotFoundError("These inputs matched no image:\n  " + "\n  ".join(failed))
    return list(dict.fromkeys(found))


def split_train_val(
    samples: Sequence[SampleRef], val_fraction: float = 0.1, seed: int = 0
) -> Tuple[List[SampleRef], List[SampleRef]]:
    """Hold out a validation part of the training samples.

    The split depends only on ``seed`` and the set of samples (they are
    ordered by path before shuffling), not on the order they are given in.

    Args:
        samples: Training samples (never test sets: validation is held out
            from training data so test scores stay unseen).
        val_fraction: Fraction in ``[0, 1)`` to hold out; at least one sample
            when positive and there are two or more samples.
        seed: Shuffle seed.

    Returns:
        ``(train, val)``, disjoint, each in input order.

    Raises:
        ValueError: If ``val_fraction`` is outside ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}; expected 0 <= val_fraction < 1.")
    samples = list(samples)
    n_val = int(round(len(samples) * val_fraction))
    if val_fraction > 0 and len(samples) >= 2:
        n_val = min(max(n_val, 1), len(samples) - 1)
    ordered = sorted(range(len(samples)), key=lambda i: str(samples[i].image))
    rng = np.random.default_rng(seed)
    val_idx = {ordered[i] for i in rng.permutation(len(samples))[:n_val]}
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val
