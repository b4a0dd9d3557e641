"""What the demo page shows for an uploaded video: the mask and overlay videos ``predict`` writes.

The frames go through :func:`engine.inference.video.write_mask_videos`, the loop behind
``predict --input clip.mp4 --overlay``, so the mask video offered for download holds the frames
``predict`` writes for the same file, checkpoint and threshold. Whether the upload is a video is
decided by OpenCV decoding a frame, not by its name.

Browsers do not play the MPEG-4 Part 2 (mp4v) files OpenCV writes, so the page plays VP8 WebM
copies of the three videos (:func:`webm_preview`); the download stays the file ``predict`` writes.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import cv2

from engine.demo.results import DemoError, safe_name
from engine.inference.video import VIDEO_EXTENSIONS, VideoReadError, VideoTooLongError, write_mask_videos

__all__ = ["DemoVideo", "segment_video_upload", "webm_preview"]


@dataclass
class DemoVideo:
    """One segmented video upload; its files live as long as this object (the result store's bound).

    Attributes:
        stem: the upload's file name without its suffix (the mask downloads as ``<stem>_mask.mp4``).
        folder: the temporary folder holding the three files (removed when the object is collected).
        original: the uploaded file as sent.
        mask: the mask video, as ``predict`` writes ``<stem>_mask.mp4``.
        overlay: the overlay video, as ``predict --overlay`` writes ``<stem>_overlay.mp4``.
        size: ``(height, width)`` of the frames.
        frames: frames written.
        fps: the frame rate of the source and of both outputs.
        threshold: the threshold the masks were made with (None: probability maps).
        previews: ``original``, ``mask`` and ``overlay`` as WebM files a browser plays (empty
            where this OpenCV build has no VP8 encoder: the page then offers the downloads only).
    """

    stem: str
    folder: tempfile.TemporaryDirectory
    original: Path
    mask: Path
    overlay: Path
    size: tuple
    frames: int
    fps: float
    threshold: Optional[float]
    previews: Dict[str, Path] = field(default_factory=dict)


def _video_suffix(suffix: str) -> str:
    """The upload's suffix where it is a video one; else ``.mp4`` (FFmpeg probes the bytes anyway)."""
    return suffix if suffix in VIDEO_EXTENSIONS else ".mp4"


def segment_video_upload(segmenter: Any, data: bytes, filename: str, threshold: Optional[float],
                         max_frames: Optional[int] = None) -> Optional[DemoVideo]:
    """Segment an uploaded video frame by frame; None when the bytes are not a video OpenCV decodes.

    Args:
        segmenter: a :class:`engine.inference.api.Segmenter`.
        data: the file's bytes.
        filename: its name as the browser sent it (only the stem and suffix are used).
        threshold: binary masks at this probability (None: probability maps).
        max_frames: refuse videos with more frames (None: no limit).

    Raises:
        DemoError: 413 when the video has more than ``max_frames`` frames.
    """
    stem, suffix = safe_name(filename)
    folder = tempfile.TemporaryDirectory(prefix="camoxpert-demo-video-")
    root = Path(folder.name)
    original = root / f"original{_video_suffix(suffix)}"
    original.write_bytes(data)
    try:
        summary = write_mask_videos(segmenter, original, root / "mask.mp4", root / "overlay.mp4",
                                    threshold=threshold, max_frames=max_frames)
    except VideoTooLongError as exc:
        folder.cleanup()
        raise DemoError(413, f"{exc} Pick a shorter clip (or start the demo with a larger "
                             f"--max-video-frames).") from None
    except VideoReadError:
        folder.cleanup()
        return None
    except BaseException:
        folder.cleanup()
        raise
    video = DemoVideo(stem=stem, folder=folder, original=original, mask=summary.outputs[0],
                      overlay=summary.outputs[1], size=tuple(summary.size), frames=summary.frames, fps=summary.fps,
                      threshold=threshold)
    for part in ("original", "mask", "overlay"):
        preview = webm_preview(getattr(video, part), root / f"{part}.webm", summary.fps)
        if preview is None:
            video.previews.clear()  # all or none: the page shows one kind of player
            break
        video.previews[part] = preview
    return video


def webm_preview(source: Path, target: Path, fps: float) -> Optional[Path]:
    """``source`` re-encoded as VP8 WebM for the browser; None where OpenCV cannot write VP8.

    VP8 rather than VP9: about seven times faster to encode here, and every browser plays both.
    """
    cap = cv2.VideoCapture(str(source))
    writer = None
    try:
        ok, frame = cap.read()
        while ok:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"VP80"), fps, (width, height), True)
                if not writer.isOpened():
                    return None
            writer.write(frame)
            ok, frame = cap.read()
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return target if writer is not None and target.is_file() else None
