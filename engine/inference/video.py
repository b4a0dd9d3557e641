"""Masks for videos: frames read with OpenCV, batched through the model, written as videos.

``predict --input clip.mp4`` writes ``<stem>_mask.mp4`` (the probability map, or the binary
mask with a threshold, as grey frames) and, with ``--overlay``, ``<stem>_overlay.mp4``, both at
the source's frame size and frame rate. Videos from different folders sharing a stem get
``-2``, ``-3``... as images do (:func:`predict_videos`). A video that decodes fewer frames than
its container announces is flagged (:attr:`VideoSummary.incomplete`), not passed off as whole; one
that cannot be read at all is recorded (:attr:`VideoSummary.error`) and the next one goes on.
"""
from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import cv2
import numpy as np
from tqdm import tqdm

from datasets import display_path
from engine.files import staged_path, write_error
from engine.inference.api import Segmenter
from engine.inference.predict import make_overlay, output_names

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "VideoReadError", "VideoSummary", "VideoTooLongError", "is_video_file",
           "planned_outputs", "predict_video", "predict_videos", "write_mask_videos"]

#: File suffixes handled as videos by ``predict``.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PathLike = Union[str, os.PathLike]
#: How far (a fraction, at least 2 frames) the decoded frames may fall short of the container's
#: announced count before a video counts as incomplete: for some formats (.mkv, .webm) OpenCV
#: estimates the count from duration times frame rate, which can be a few frames off, while a
#: file cut short or damaged loses far more.
FRAME_COUNT_SLACK = 0.02


class VideoError(ValueError):
    """A video that cannot be opened or written."""


class VideoReadError(VideoError):
    """An input video that cannot be read (missing, not a video, damaged before its first frame).

    A fault of that one file: :func:`predict_videos` records it and goes on with the others,
    whereas a :class:`VideoError` about writing (no encoder) would fail every video alike.
    """


class VideoTooLongError(VideoReadError):
    """An input video with more frames than the caller accepts (:func:`write_mask_videos` ``max_frames``).

    Args:
        limit: the most frames accepted.
        frames: the frame count found (the container's, or the frames decoded before the limit was passed).
    """

    def __init__(self, limit: int, frames: int) -> None:
        super().__init__(f"The video has {'more than ' if frames <= limit else ''}{max(frames, limit)} frames, "
                         f"more than the {limit}-frame limit.")
        self.limit = int(limit)
        self.frames = int(frames)


@dataclass
class VideoSummary:
    """What :func:`predict_video` wrote: files, frame count, size ``(h, w)`` and frame rate.

    ``announced`` is the frame count the container gives (None where it gives none). ``error`` says
    why the video could not be read (:func:`predict_videos` only; nothing was written for it).
    """

    outputs: List[Path] = field(default_factory=list)
    frames: int = 0
    size: tuple = (0, 0)
    fps: float = 0.0
    announced: Optional[int] = None
    error: Optional[str] = None

    @property
    def incomplete(self) -> bool:
        """Whether decoding stopped well short of the announced count (a truncated or damaged file).

        Never true for a container that announces no count: there is nothing to compare with.
        """
        if not self.announced:
            return False
        return self.frames < self.announced - max(2, int(self.announced * FRAME_COUNT_SLACK))


def is_video_file(path: PathLike) -> bool:
    """Whether the path's suffix is a video suffix (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_utf8_name(path: Path) -> bool:
    """Whether OpenCV can take the path: its Python bindings crash (segfault, no exception) on a
    name holding bytes that are not valid UTF-8, so such names are refused before they get there."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _writer(path: Path, fps: float, size_wh: tuple) -> cv2.VideoWriter:
    """An mp4v writer for ``path``, open, or a :class:`VideoError` naming the path and the cause."""
    if not _is_utf8_name(path):
        raise VideoError(f"Cannot write {display_path(path)}: OpenCV cannot open a path that is not valid UTF-8; "
                         f"pass an --output folder whose name is.")
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
    name: Optional[str] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> VideoSummary:
    """Segment every frame of a video and write the mask (and overlay) videos.

    Args:
        segmenter: the loaded model; frames go through it in batches of its ``batch_size``.
        video: the input video file.
        output: folder for ``<name>_mask.mp4`` (and ``<name>_overlay.mp4``).
        overlay: also write the mask tinted on the frames.
        threshold: binary 0/255 masks (``prob >= threshold``) instead of probability maps.
        name: stem of the output files (None: the video's stem).
        progress: show a progress bar in frames per second.
        log: where status lines go.

    Returns:
        What was written; ``incomplete`` is true (and a warning logged) when fewer frames were
        decoded than the container announced.

    Raises:
        VideoReadError: the file is missing or OpenCV cannot decode it as a video (nothing written).
        VideoError: an output video cannot be opened for writing.
        engine.files.FileWriteError: an output video did not hold every frame written (full disk);
            the earlier file of that name, if any, is kept.
    """
    video = Path(video)
    out_dir = Path(output)
    name = name or video.stem
    overlay_path = out_dir / f"{name}_overlay.mp4" if overlay else None

    def opened(summary: VideoSummary) -> None:
        (h, w), total = summary.size, summary.announced
        log(f"{video} ({w}x{h}, {summary.fps:.2f} fps{f', {total} frames' if total else ''}) -> {out_dir}")

    summary = write_mask_videos(segmenter, video, out_dir / f"{name}_mask.mp4", overlay_path, threshold=threshold,
                                progress_name=progress and video.name, opened=opened)
    total = summary.announced
    log(f"Wrote {summary.frames} frames to " + ", ".join(str(p) for p in summary.outputs))
    if summary.incomplete:
        log(f"Warning: {display_path(video)} ended after {summary.frames} of the {total} frames its container "
            f"announces (truncated or damaged file?); the output covers only the frames decoded.")
    return summary


def write_mask_videos(
    segmenter: Segmenter,
    video: PathLike,
    mask_path: PathLike,
    overlay_path: Optional[PathLike] = None,
    *,
    threshold: Optional[float] = None,
    max_frames: Optional[int] = None,
    progress_name: Union[str, bool] = False,
    opened: Optional[Callable[[VideoSummary], None]] = None,
) -> VideoSummary:
    """Segment every frame of ``video`` and write the mask video (and the overlay video) to the given paths.

    The one frame loop behind ``predict --input clip.mp4`` and the demo page, so both write the same
    frames: grey masks (8-bit probabilities, or 0/255 with ``threshold``) and the mask tinted on the
    frames, as mp4v at the source's size and frame rate.

    Args:
        segmenter: the loaded model; frames go through it in batches of its ``batch_size``.
        video: the input video file.
        mask_path: where the mask video goes (its folder is made).
        overlay_path: where the overlay video goes; None: no overlay.
        threshold: binary 0/255 masks (``prob >= threshold``) instead of probability maps.
        max_frames: refuse videos with more frames (None: no limit).
        progress_name: label of a progress bar in frames per second; False: no bar.
        opened: called with the summary (size, frame rate, announced count) once the video is open.

    Raises:
        VideoTooLongError: the container announces, or decoding finds, more than ``max_frames``
            frames (nothing is written).
        VideoReadError: the file is missing or OpenCV cannot decode it as a video (nothing written).
        VideoError: an output video cannot be opened for writing.
        engine.files.FileWriteError: an output video did not hold every frame written.
    """
    source = _open_video(Path(video))
    if max_frames is not None and source.announced and source.announced > max_frames:
        source.cap.release()  # refused from the container's count, before a frame goes through the model
        raise VideoTooLongError(max_frames, source.announced)
    outputs = [Path(mask_path)] + ([Path(overlay_path)] if overlay_path is not None else [])
    summary = VideoSummary(outputs=outputs, size=source.first.shape[:2], fps=source.fps, announced=source.announced)
    if opened is not None:
        opened(summary)
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
    _write_verified(segmenter, source, summary, threshold, progress_name, max_frames)
    return summary


@dataclass
class _Source:
    """An open video with its first frame decoded, and the frame rate and count to trust."""

    cap: cv2.VideoCapture
    first: np.ndarray
    fps: float
    announced: Optional[int]


def _open_video(video: Path) -> _Source:
    """Open ``video`` and decode its first frame: whether it is a readable video is decided here.

    Raises:
        VideoReadError: the file is missing, its name is not UTF-8, or OpenCV decodes no frame.
    """
    if not video.is_file():
        raise VideoReadError(f"Video not found: {display_path(video)} (no such file, or not a file).")
    if not _is_utf8_name(video):
        raise VideoReadError(f"Cannot read {display_path(video)}: OpenCV cannot open a file whose name is not "
                             f"valid UTF-8; rename it (e.g. with convmv) and run again.")
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise VideoReadError(f"Could not read {display_path(video)} as a video: OpenCV decoded no frame. Pass a "
                             f"video file ({', '.join(VIDEO_EXTENSIONS)}) that a player opens, or images for "
                             f"masks per image.")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0  # some containers report 0 or nonsense
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    total = total if total > 0 else None  # some backends give 0 or -1 for "unknown"
    return _Source(cap, first, fps, total)


def _write_verified(segmenter: Segmenter, source: _Source, summary: VideoSummary, threshold: Optional[float],
                    progress_name: Union[str, bool], max_frames: Optional[int] = None) -> None:
    """Write every frame of ``source`` to ``summary.outputs``, each replaced only once it holds them all."""
    h, w = summary.size
    with contextlib.ExitStack() as staged:
        # Each video is written to a temporary file next to its target and renamed only once its
        # frames are verified: a full disk leaves the earlier output (or none), never a stub.
        temporary = [staged.enter_context(staged_path(path, suffix=".mp4")) for path in summary.outputs]
        _write_frames(segmenter, source.cap, source.first, [_writer(tmp, source.fps, (w, h)) for tmp in temporary],
                      summary, threshold, progress_name, max_frames)
        for tmp, path in zip(temporary, summary.outputs):
            _check_written(tmp, path, summary.frames)


def _check_written(tmp: Path, target: Path, frames: int) -> None:
    """Raise a :class:`~engine.files.FileWriteError` naming ``target`` unless ``tmp`` holds ``frames`` frames.

    OpenCV's video writer reports no write error (a full disk gives a short or empty file), so the
    file is opened again and its frame count compared with what was written.
    """
    cap = cv2.VideoCapture(str(tmp))
    try:
        found = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    if found < frames:
        raise write_error(target, OSError(errno.EIO, f"the video holds {found} of the {frames} frames written "
                                                     f"(disk full, or the folder went away)"))


def _write_frames(segmenter: Segmenter, cap: cv2.VideoCapture, first: np.ndarray, writers: List[cv2.VideoWriter],
                  summary: VideoSummary, threshold: Optional[float], progress_name,
                  max_frames: Optional[int] = None) -> None:
    """Read every frame of ``cap`` (``first`` already read), segment them in batches and write the
    mask (and overlay) frames; releases the capture and the writers however it ends.

    Raises:
        VideoTooLongError: more than ``max_frames`` frames decode (a container may announce none,
            or fewer than it holds).
    """
    overlay = len(writers) > 1
    bar = tqdm(total=summary.announced, desc=progress_name or "", unit="frame", disable=not progress_name,
               dynamic_ncols=True)

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
            if not ok:  # the end, or a file cut short: the count check below tells them apart
                break
            batch.append(frame)
            if max_frames is not None and summary.frames + len(batch) > max_frames:
                raise VideoTooLongError(max_frames, summary.frames + len(batch))
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


def planned_outputs(videos: Sequence[PathLike], output: PathLike, overlay: bool = False) -> List[Path]:
    """The files :func:`predict_videos` would write for ``videos`` into ``output``."""
    out = Path(output)
    names = output_names([Path(v) for v in videos])
    suffixes = ("_mask", "_overlay") if overlay else ("_mask",)
    return [out / f"{name}{suffix}.mp4" for name in names for suffix in suffixes]


def predict_videos(
    segmenter: Segmenter,
    videos: Sequence[PathLike],
    output: PathLike,
    *,
    overlay: bool = False,
    threshold: Optional[float] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> List[VideoSummary]:
    """:func:`predict_video` for each video, with output names that do not overwrite each other.

    Names come from :func:`engine.inference.predict.output_names`, as for images: videos from
    different folders sharing a stem (``a/clip.mp4``, ``b/clip.mp4``) give ``clip`` and
    ``clip-2``; each rename is logged. A video that cannot be read is logged and skipped, as an
    unreadable image is: the videos after it are still written.

    Returns:
        One summary per video, in order (check ``error`` and ``incomplete``).

    Raises:
        VideoError: an output video cannot be opened for writing (the videos before it are written).
    """
    videos = [Path(v) for v in videos]
    summaries = []
    for video, name in zip(videos, output_names(videos)):
        if name != video.stem:
            log(f"{display_path(video)}: another input has the stem {display_path(video.stem)}; its output is "
                f"{display_path(name)}_mask.mp4{f' and {display_path(name)}_overlay.mp4' if overlay else ''}")
        try:
            summary = predict_video(segmenter, video, output, overlay=overlay, threshold=threshold, name=name,
                                    progress=progress, log=log)
        except VideoReadError as exc:
            # Raised before any output is opened, so nothing half-written is left behind. The reason
            # goes in the summary, for the caller's end-of-run report (the CLI prints it there).
            log(f"Skipped {display_path(video)}: it could not be read as a video.")
            summary = VideoSummary(error=str(exc))
        summaries.append(summary)
    return summaries
