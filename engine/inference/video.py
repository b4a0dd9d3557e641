"""Masks for videos: frames read with OpenCV, batched through the model, written as videos.

``predict --input clip.mp4`` writes ``<stem>_mask.mp4`` (the probability map, or the binary
mask with a threshold, as grey frames) and, with ``--overlay``, ``<stem>_overlay.mp4``, both at
the source's frame size and frame rate.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Union

import cv2
import numpy as np
from tqdm import tqdm

from engine.inference.api import Segmenter
from engine.inference.predict import make_overlay

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "VideoSummary", "is_video_file", "predict_video"]

#: File suffixes handled as videos by ``predict``.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PathLike = Union[str, os.PathLike]


class VideoError(ValueError):
    """A video that cannot be opened or written."""


@dataclass
class VideoSummary:
    """What :func:`predict_video` wrote: files, frame count, size ``(h, w)`` and frame rate."""

    outputs: List[Path] = field(default_factory=list)
    frames: int = 0
    size: tuple = (0, 0)
    fps: float = 0.0


def is_video_file(path: PathLike) -> bool:
    """Whether the path's suffix is a video suffix (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _writer(path: Path, fps: float, size_wh: tuple) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh, True)
    if not writer.isOpened():
        raise VideoError(f"Could not open {path} for writing (OpenCV has no mp4v encoder here?).")
    return writer


def predict_video(
    segmenter: Segmenter,
    video: PathLike,
    output: PathLike,
    *,
    overlay: bool = False,
    threshold: Optional[float] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> VideoSummary:
    """Segment every frame of a video and write the mask (and overlay) videos.

    Args:
        segmenter: the loaded model; frames go through it in batches of its ``batch_size``.
        video: the input video file.
        output: folder for ``<stem>_mask.mp4`` (and ``<stem>_overlay.mp4``).
        overlay: also write the mask tinted on the frames.
        threshold: binary 0/255 masks (``prob >= threshold``) instead of probability maps.
        progress: show a progress bar in frames per second.
        log: where status lines go.

    Raises:
        VideoError: the file is missing or OpenCV cannot decode it as a video.
    """
    video = Path(video)
    if not video.is_file():
        raise VideoError(f"Video not found: {video}.")
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise VideoError(f"Could not read {video} as a video: OpenCV decoded no frame. Pass a video file "
                         f"({', '.join(VIDEO_EXTENSIONS)}) that a player opens, or images for masks per image.")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0  # some containers report 0 or nonsense
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    h, w = first.shape[:2]
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = VideoSummary(size=(h, w), fps=fps)
    mask_path = out_dir / f"{video.stem}_mask.mp4"
    writers = [_writer(mask_path, fps, (w, h))]
    summary.outputs.append(mask_path)
    if overlay:
        overlay_path = out_dir / f"{video.stem}_overlay.mp4"
        writers.append(_writer(overlay_path, fps, (w, h)))
        summary.outputs.append(overlay_path)
    log(f"{video} ({w}x{h}, {fps:.2f} fps{f', {total} frames' if total else ''}) -> {out_dir}")
    bar = tqdm(total=total, desc=video.name, unit="frame", disable=not progress, dynamic_ncols=True)

    def flush(frames: List[np.ndarray]) -> None:
        for frame, prob in zip(frames, segmenter.predict(frames, color="bgr")):
            if threshold is None:
                mask = (np.clip(prob, 0, 1) * 255.0).round().astype(np.uint8)
            else:
                mask = np.where(prob >= threshold, 255, 0).astype(np.uint8)
            writers[0].write(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR))
            if overlay:
                rgb = make_overlay(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), mask)
                writers[1].write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        summary.frames += len(frames)
        bar.update(len(frames))

    try:
        batch = [first]
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            batch.append(frame)
            if len(batch) == segmenter.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        bar.close()
        cap.release()
        for writer in writers:
            writer.release()
    log(f"Wrote {summary.frames} frames to " + ", ".join(str(p) for p in summary.outputs))
    return summary
