"""Masks for images without ground truth: files, folders and globs in, PNG masks out.

Each mask is written at its input's own size, named by the input's stem: a probability map
(8-bit, 0..255) or, with a threshold, a binary 0/255 mask. Inputs from several folders that
share a stem get distinct names (see :func:`output_names`), so no mask overwrites another.
Overlays tint the predicted object on the photo for a quick look.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from datasets import IMAGE_EXTENSIONS, display_path, expand_inputs, non_image_files, read_image, write_image
from engine.inference.predictor import (
    GuardedDataset,
    InferenceModel,
    Predictor,
    collate_guarded,
    default_num_workers,
    load_inference_model,
)
from engine.files import PathLike, write_error
from engine.inference.input_guard import check_outputs_spare_inputs
from engine.inference.options import MaskOptions, PredictOptions, with_keywords
from engine.inference.postprocess import quantize_probability
from engine.inference.preprocess import ResizedImages, inference_loader
from engine.inference.writer import ImageWriter
from engine.runtime import resolve_device

__all__ = [
    "OVERLAY_COLOR",
    "MaskOptions",
    "PredictOptions",
    "PredictionSummary",
    "make_overlay",
    "output_names",
    "predict_images",
    "probability_to_mask",
    "write_masks",
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
        write_failed: ``(output, reason)`` for masks and overlays that could not be written
            (full disk, read-only folder); the other files are written.
        seconds: wall time of ``load`` (checkpoint and model), ``warm_up`` (cuDNN autotuning,
            CUDA-graph capture) and ``predict`` (first file read to last mask written).
    """

    masks: List[Path] = field(default_factory=list)
    overlays: List[Path] = field(default_factory=list)
    failed: List[Tuple[Path, str]] = field(default_factory=list)
    write_failed: List[Tuple[Path, str]] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)


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


def _write_overlay(image_path: Path, mask: np.ndarray, target: Path) -> Path:
    # Runs in a writer thread: reading the photo and tinting it stay off the main thread.
    overlay = make_overlay(read_image(image_path), mask)
    return write_image(target, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


class _OnHost:
    """A batch's masks on their way to host memory: copies queued, an event to wait on."""

    def __init__(self, masks: List[torch.Tensor], indices: List[int]) -> None:
        self.indices = indices
        self.event = None
        if masks and masks[0].is_cuda:
            # Queued behind the forward pass; the main thread meanwhile fetches and launches the
            # next batch, so the GPU does not wait on the host between batches.
            self.masks = [m.to("cpu", non_blocking=True) for m in masks]
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.masks = masks

    def arrays(self) -> List[np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return [m.numpy() for m in self.masks]


def write_masks(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: Path,
    img_size: Tuple[int, int],
    options: Optional[MaskOptions] = None,
    *,
    names: Optional[Sequence[str]] = None,
    **keywords: Any,
) -> PredictionSummary:
    """Masks for ``paths`` written to ``out_dir``: the timed part of ``predict``.

    Workers decode and resize each image to ``img_size`` (uint8); the device normalises, runs
    the model, resizes each map to its image's size and quantises it; threads encode the PNGs
    (and overlays) while the next batch runs. Output is equal to
    :meth:`Predictor.predict_sizes` on the evaluation transform followed by
    :func:`probability_to_mask`.

    Args:
        predictor: the model wrapped for inference.
        paths: image files.
        out_dir: existing folder for ``<name>.png`` (and ``overlay/<name>.jpg``).
        img_size: network ``(height, width)``.
        options: overlay, threshold, batch size, workers, writer threads, progress bar
            (None: the defaults of :class:`MaskOptions`).
        names: output stems (None: :func:`output_names` of ``paths``).
        **keywords: fields of :class:`MaskOptions` (``batch_size=4, progress=False``...),
            replacing those of ``options``.

    Returns:
        The files written, the inputs that failed to read and the outputs that failed to write.
    """
    options = with_keywords(options or MaskOptions(), keywords)
    paths = [Path(p) for p in paths]
    names = list(names) if names is not None else output_names(paths)
    dataset = GuardedDataset(ResizedImages(paths, img_size), describe=functools.partial(_describe, paths))
    loader = inference_loader(dataset, options.batch_size, options.num_workers, predictor.device, collate_guarded)
    summary = PredictionSummary()
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not options.progress, dynamic_ncols=True)
    try:
        with ImageWriter(options.writer_threads) as writer:  # PNG/JPEG encoding off the main thread
            files = _MaskFiles(writer, out_dir, paths, names, options.overlay, summary)
            _predict_batches(predictor, loader, options.threshold, files, bar)
    finally:
        bar.close()
    _keep_written(summary, writer.failed)
    return summary


class _MaskFiles:
    """Where each finished mask goes: its PNG (and overlay) queued on the writer, and the summary."""

    def __init__(self, writer: ImageWriter, out_dir: Path, paths: List[Path], names: List[str], overlay: bool,
                 summary: PredictionSummary) -> None:
        self.writer, self.out_dir, self.paths, self.names = writer, out_dir, paths, names
        self.overlay, self.summary = overlay, summary

    def unread(self, index: int, message: str) -> None:
        """Record an input that could not be read: it gets no mask."""
        self.summary.failed.append((self.paths[index], message))

    def hand_over(self, done: _OnHost) -> None:
        """Queue a batch's masks (and overlays) for encoding, in input order."""
        for index, mask in zip(done.indices, done.arrays()):
            target = self.out_dir / f"{self.names[index]}.png"
            self.writer.submit(target, mask)
            self.summary.masks.append(target)
            if self.overlay:
                ov_path = self.out_dir / "overlay" / f"{self.names[index]}.jpg"
                self.writer.call(ov_path, _write_overlay, self.paths[index], mask, ov_path)
                self.summary.overlays.append(ov_path)


def _predict_batches(predictor: Predictor, loader: Iterable[Dict[str, Any]], threshold: Optional[float],
                     files: _MaskFiles, bar: tqdm) -> None:
    """Run the model over every batch, handing each batch's masks over one batch late.

    A batch's masks are handed to the writer only once the next batch is launched: on a GPU their
    copy to the host then overlaps the next forward pass instead of stalling it.
    """
    in_flight: Optional[_OnHost] = None
    for batch in loader:
        for index, message in batch["errors"]:
            files.unread(index, message)
        current = None
        if batch["size"]:
            masks = predictor.masks(batch["image"], batch["orig_size"].tolist(), threshold)
            current = _OnHost(masks, [int(i) for i in batch["index"]])
        if in_flight is not None:
            files.hand_over(in_flight)
        in_flight = current
        bar.update(batch["size"] + len(batch["errors"]))
    if in_flight is not None:
        files.hand_over(in_flight)


def _keep_written(summary: PredictionSummary, failed: Sequence[Tuple[Path, str]]) -> None:
    """Drop from ``summary`` the files whose writing failed, and name them in ``write_failed``."""
    # Only the files whose bytes landed count as written; the others are named to the caller.
    summary.write_failed = list(failed)
    lost = {path for path, _ in failed}
    summary.masks = [m for m in summary.masks if m not in lost]
    summary.overlays = [o for o in summary.overlays if o not in lost]


def predict_images(
    checkpoint: PathLike,
    inputs: Sequence[PathLike],
    output: PathLike,
    options: Optional[PredictOptions] = None,
    *,
    log: Callable[[str], None] = print,
    **keywords: Any,
) -> PredictionSummary:
    """Predict masks for images and write them as PNGs at each image's own size.

    Args:
        checkpoint: ``best.pt``/``last.pt`` written by ``train``.
        inputs: image files, folders and glob patterns.
        output: folder for ``<stem>.png`` masks (``overlay/<stem>.jpg`` with ``overlay``).
        options: overlay, threshold, TTA, batch size, workers, device, input size, precision,
            recursion and progress bar (None: the defaults of :class:`PredictOptions`).
        log: where status lines go.
        **keywords: fields of :class:`PredictOptions` (``overlay=True, threshold=0.5``...),
            replacing those of ``options``.

    Returns:
        The files written and the inputs that failed (unreadable images are skipped, the
        others still written; the caller decides how to report them), with the seconds spent
        loading, warming up and predicting in ``seconds``.

    Raises:
        FileNotFoundError: an input matches no image (every such input is named).
        OutputOverlapError: an output would overwrite an input (checked before the model loads).
        ValueError: a threshold outside [0, 1] or an invalid image size.
    """
    options = with_keywords(options or PredictOptions(), keywords)
    paths = _find_images(inputs, options.recursive, log)
    out_dir = Path(output)
    names = output_names(paths)
    targets = [out_dir / f"{name}.png" for name in names]
    targets += [out_dir / "overlay" / f"{name}.jpg" for name in names] if options.overlay else []
    check_outputs_spare_inputs(inputs, paths, targets, out_dir, options.recursive)  # before the model loads
    t0 = time.perf_counter()
    loaded, predictor = _load_predictor(checkpoint, options)
    t_load = time.perf_counter()
    _make_folders(out_dir, options.overlay)
    _log_renames(paths, names, log)
    h, w = loaded.img_size
    log(f"{len(paths)} image file(s) -> {out_dir} (input {h}x{w} on {predictor.device}"
        f"{', ' + str(predictor.num_views) + ' TTA views' if predictor.num_views > 1 else ''})")
    predictor.warm_up(min(options.batch_size, len(paths)), loaded.img_size)
    t_warm = time.perf_counter()
    summary = write_masks(predictor, paths, out_dir, loaded.img_size,
                          options.mask_options(default_num_workers(predictor.device)), names=names)
    t_done = time.perf_counter()
    summary.seconds = {"load": t_load - t0, "warm_up": t_warm - t_load, "predict": t_done - t_warm}
    _log_done(summary, out_dir, options, log)
    return summary


def _find_images(inputs: Sequence[PathLike], recursive: bool, log: Callable[[str], None]) -> List[Path]:
    """The image files the inputs name; the other files found in input folders are logged as skipped.

    Raises:
        FileNotFoundError: an input matches no image (every such input is named).
    """
    paths = expand_inputs(list(inputs), recursive=recursive)
    skipped = non_image_files(list(inputs), recursive=recursive)
    if skipped:
        shown = ", ".join(display_path(p) for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        log(f"Skipped {len(skipped)} file(s) in the input folder(s) that are not images ({shown}); "
            f"images are {'/'.join(IMAGE_EXTENSIONS)} files.")
    return paths


def _load_predictor(checkpoint: PathLike, options: PredictOptions) -> Tuple[InferenceModel, Predictor]:
    """The checkpoint's model on the chosen device, wrapped with the chosen TTA views and precision."""
    dev = resolve_device(options.device)
    loaded = load_inference_model(checkpoint, dev, options.img_size)
    predictor = Predictor(loaded.model, dev, hflip=options.tta, scales=options.tta_scales,
                          precision=options.precision)
    return loaded, predictor


def _make_folders(out_dir: Path, overlay: bool) -> None:
    """Create the output folder (and ``overlay/``); a failure is a :class:`~engine.files.FileWriteError`."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if overlay:
            (out_dir / "overlay").mkdir(exist_ok=True)
    except OSError as exc:
        raise write_error(out_dir, exc) from exc


def _log_renames(paths: Sequence[Path], names: Sequence[str], log: Callable[[str], None]) -> None:
    """Name each input whose mask does not carry its own stem (another input has it)."""
    for path, name in zip(paths, names):
        if name != path.stem:
            log(f"{display_path(path)}: another input has the stem {display_path(path.stem)}; "
                f"its mask is {display_path(name)}.png")


def _log_done(summary: PredictionSummary, out_dir: Path, options: PredictOptions, log: Callable[[str], None]) -> None:
    """The closing lines: what was written where, how fast, and how to read a probability map."""
    kind = "binary masks" if options.threshold is not None else "probability maps"
    rate = len(summary.masks) / summary.seconds["predict"] if summary.seconds["predict"] > 0 else 0.0
    unread = f" ({len(summary.failed)} file(s) could not be read as images)" if summary.failed else ""
    log(f"Wrote {len(summary.masks)} {kind}{unread} to {out_dir}"
        + (f" and {len(summary.overlays)} overlays to {out_dir / 'overlay'}" if options.overlay else "")
        + f" in {summary.seconds['predict']:.1f} s ({rate:.0f} img/s; model load {summary.seconds['load']:.1f} s, "
          f"warm-up {summary.seconds['warm_up']:.1f} s)")
    if options.threshold is None and not options.overlay and summary.masks:
        # A probability map is grey where the model is unsure, which reads as "almost black" at first.
        log("The maps hold the probability of the object (0 black = background, 255 white = object). For a "
            "quick look add --overlay (the mask tinted on each photo); for black/white masks add --threshold 0.5.")
