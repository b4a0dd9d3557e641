"""Masks for images without ground truth: files, folders and globs in, PNG masks out.

Each mask is written at its input's own size, named by the input's stem: a probability map
(8-bit, 0..255) or, with a threshold, a binary 0/255 mask. Inputs from several folders that
share a stem get distinct names (see :func:`output_names`), so no mask overwrites another.
Overlays tint the predicted object on the photo for a quick look.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import (
    ImageFolderDataset,
    build_eval_transform,
    display_path,
    expand_inputs,
    read_image,
)
from engine.inference.predictor import (
    GuardedDataset,
    Predictor,
    collate_guarded,
    default_num_workers,
    load_inference_model,
)
from engine.files import PathLike
from engine.inference.postprocess import quantize_probability
from engine.inference.writer import ImageWriter
from engine.runtime import resolve_device

__all__ = [
    "OVERLAY_COLOR",
    "PredictionSummary",
    "make_overlay",
    "output_names",
    "predict_images",
    "probability_to_mask",
]

#: RGB tint of the predicted object in overlays.
OVERLAY_COLOR: Tuple[int, int, int] = (255, 40, 40)


@dataclass
class PredictionSummary:
    """What :func:`predict_images` did.

    Attributes:
        masks: mask files written, in input order.
        overlays: overlay files written.
        failed: ``(input, reason)`` for inputs that could not be read.
    """

    masks: List[Path] = field(default_factory=list)
    overlays: List[Path] = field(default_factory=list)
    failed: List[Tuple[Path, str]] = field(default_factory=list)


def output_names(paths: Sequence[Path]) -> List[str]:
    """Unique output stems for the inputs, deterministic for a given input list.

    The first input with a stem keeps it; a later one sharing it (``a/x.jpg``, ``b/x.jpg``)
    gets ``-2``, ``-3``..., skipping any suffixed name that another input already has as its
    own stem (``c/x-2.jpg``) or that an earlier input took. Comparison ignores case, as
    case-insensitive file systems (macOS, Windows) would make ``X.png`` overwrite ``x.png``.
    """
    stems = [Path(p).stem for p in paths]
    reserved = {stem.lower() for stem in stems}
    taken: set = set()
    names = []
    for stem in stems:
        name = stem
        if stem.lower() in taken:
            n = 2
            while f"{stem}-{n}".lower() in reserved or f"{stem}-{n}".lower() in taken:
                n += 1
            name = f"{stem}-{n}"
        taken.add(name.lower())
        names.append(name)
    return names


def probability_to_mask(prob: torch.Tensor, threshold: Optional[float] = None) -> np.ndarray:
    """A probability map as the uint8 mask written to disk.

    Args:
        prob: ``(H, W)`` probabilities in [0, 1].
        threshold: None for an 8-bit probability map; else ``255`` where ``prob >= threshold``,
            ``0`` elsewhere.
    """
    if threshold is None:
        return quantize_probability(prob)
    return ((prob >= threshold).to(torch.uint8) * 255).cpu().numpy()


def make_overlay(image_rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.55,
                 color: Tuple[int, int, int] = OVERLAY_COLOR) -> np.ndarray:
    """Tint the predicted object on the image and outline it.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` uint8 mask (probabilities or 0/255), same size as the image.
        alpha: tint strength where the mask is 255.
        color: RGB tint.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    weight = (mask.astype(np.float32) / 255.0 * alpha)[..., None]  # soft masks tint softly
    tint = np.array(color, np.float32)[None, None, :]
    out = image_rgb.astype(np.float32) * (1.0 - weight) + tint * weight
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    # An outline at the 0.5 level shows where a binary cut would fall, even for faint maps.
    contours, _ = cv2.findContours((mask >= 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(mask.shape[:2]) / 250))
    cv2.drawContours(out, contours, -1, color, thickness)
    return out


def _describe(paths: Sequence[Path], index: int) -> str:
    return display_path(paths[index])


def predict_images(
    checkpoint: PathLike,
    inputs: Sequence[PathLike],
    output: PathLike,
    *,
    overlay: bool = False,
    threshold: Optional[float] = None,
    tta: bool = False,
    tta_scales: Sequence[float] = (1.0,),
    batch_size: int = 8,
    num_workers: Optional[int] = None,
    device: str = "auto",
    img_size: Optional[Any] = None,
    precision: str = "auto",
    recursive: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> PredictionSummary:
    """Predict masks for images and write them as PNGs at each image's own size.

    Args:
        checkpoint: ``best.pt``/``last.pt`` written by ``train``.
        inputs: image files, folders and glob patterns.
        output: folder for ``<stem>.png`` masks (``overlay/<stem>.jpg`` with ``overlay``).
        overlay: also write the mask tinted on the image.
        threshold: write binary 0/255 masks (``prob >= threshold``) instead of probability maps.
        tta: average over horizontal flips.
        tta_scales: input scales to average over.
        batch_size: images per forward pass.
        num_workers: DataLoader workers (None: up to 4).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        img_size: network input size; None uses the checkpoint's training size (or 384).
        precision: autocast policy (see :func:`engine.runtime.autocast_dtype`).
        recursive: also take images in sub-folders of folder inputs.
        progress: show a progress bar.
        log: where status lines go.

    Returns:
        The files written and the inputs that failed (unreadable images are skipped, the
        others still written; the caller decides how to report them).

    Raises:
        FileNotFoundError: an input matches no image (every such input is named).
        ValueError: a threshold outside [0, 1] or an invalid image size.
    """
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"--threshold {threshold}: use a probability between 0 and 1 (e.g. 0.5).")
    paths = expand_inputs(list(inputs), recursive=recursive)
    dev = resolve_device(device)
    loaded = load_inference_model(checkpoint, dev, img_size)
    predictor = Predictor(loaded.model, dev, hflip=tta, scales=tta_scales, precision=precision)
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir = out_dir / "overlay"
    if overlay:
        overlay_dir.mkdir(exist_ok=True)
    names = output_names(paths)
    for path, name in zip(paths, names):
        if name != path.stem:
            log(f"{display_path(path)}: another input has the stem {display_path(path.stem)}; "
                f"its mask is {display_path(name)}.png")
    h, w = loaded.img_size
    log(f"{len(paths)} image(s) -> {out_dir} (input {h}x{w} on {dev}"
        f"{', ' + str(predictor.num_views) + ' TTA views' if predictor.num_views > 1 else ''})")

    dataset = GuardedDataset(ImageFolderDataset(paths, build_eval_transform(loaded.img_size)),
                             describe=functools.partial(_describe, paths))
    workers = default_num_workers(dev) if num_workers is None else int(num_workers)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=dev.type == "cuda", collate_fn=collate_guarded,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    summary = PredictionSummary()
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        with ImageWriter() as writer:  # PNG/JPEG encoding off the main thread: the GPU never waits on it
            for batch in loader:
                for index, message in batch["errors"]:
                    summary.failed.append((paths[index], message))
                if batch["size"]:
                    sizes = batch["orig_size"].tolist()
                    probs = predictor.predict_sizes(batch["image"], sizes)
                    for i, prob in enumerate(probs):
                        index = int(batch["index"][i])
                        mask = probability_to_mask(prob, threshold)
                        target = out_dir / f"{names[index]}.png"
                        writer.submit(target, mask)
                        summary.masks.append(target)
                        if overlay:
                            image = read_image(paths[index])
                            ov = make_overlay(image, mask)
                            ov_path = overlay_dir / f"{names[index]}.jpg"
                            writer.submit(ov_path, cv2.cvtColor(ov, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
                            summary.overlays.append(ov_path)
                bar.update(batch["size"] + len(batch["errors"]))
    finally:
        bar.close()
    kind = "binary masks" if threshold is not None else "probability maps"
    log(f"Wrote {len(summary.masks)} {kind} to {out_dir}"
        + (f" and {len(summary.overlays)} overlays to {overlay_dir}" if overlay else ""))
    return summary
