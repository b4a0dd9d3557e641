"""Shared pieces of the demo tests: a tiny model served in a thread, and predict's mask files."""
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
from click.testing import CliRunner

from _inference_fixtures import make_tiny_checkpoint, write_scene

#: (height, width) of the test image: not a multiple of 32, not square.
IMAGE_SIZE = (50, 70)
#: The servers under test refuse bodies over this many bytes.
MAX_UPLOAD = 64 * 1024
#: The servers under test refuse videos with more frames than this.
MAX_FRAMES = 6
#: (height, width) of the test clips.
CLIP_SIZE = (64, 64)


def write_clip(path: Path, frames: int = 5, fps: float = 10.0) -> Path:
    """A tiny mp4v clip of a disc moving over noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = CLIP_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        frame = rng.integers(40, 120, (h, w, 3), dtype=np.uint8)
        cv2.circle(frame, (12 + 8 * i, h // 2), 10, (60, 200, 90), -1)
        writer.write(frame)
    writer.release()
    return path


def read_frames(path: Path) -> List[np.ndarray]:
    """Every frame OpenCV decodes from a video file (BGR)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def predict_videos(ckpt: Path, clip: Path, out: Path, threshold: Optional[float] = None) -> tuple:
    """``(mask frames, overlay frames)`` of ``predict --input clip --overlay`` for ``clip``."""
    from train_ultimate import main

    args = ["predict", "--checkpoint", str(ckpt), "--input", str(clip), "--output", str(out), "--overlay",
            "--device", "cpu", "--num-workers", "0", "--no-progress"]
    if threshold is not None:
        args += ["--threshold", str(threshold)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return read_frames(out / f"{clip.stem}_mask.mp4"), read_frames(out / f"{clip.stem}_overlay.mp4")


def make_inputs(folder: Path) -> tuple:
    """``(checkpoint, image)`` in ``folder``: a tiny random model and one PNG scene."""
    ckpt = make_tiny_checkpoint(folder / "best.pt", seed=3)
    image = folder / "images" / "scene.png"
    write_scene(image, None, IMAGE_SIZE, seed=1)
    return ckpt, image


def predict_mask(ckpt: Path, image: Path, out: Path, threshold: Optional[float] = None) -> bytes:
    """The bytes of the mask ``train_ultimate.py predict`` writes for ``image``."""
    from train_ultimate import main

    args = ["predict", "--checkpoint", str(ckpt), "--input", str(image), "--output", str(out),
            "--device", "cpu", "--num-workers", "0", "--no-progress"]
    if threshold is not None:
        args += ["--threshold", str(threshold)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return (out / f"{image.stem}.png").read_bytes()


def start_server(ckpt: Path):
    """The demo app around ``ckpt`` served on a free local port (a started ``ServerThread``)."""
    from engine.demo.app import create_app
    from engine.demo.server import ServerThread
    from engine.inference.api import Segmenter

    app = create_app(Segmenter(ckpt, device="cpu", batch_size=1), max_upload_bytes=MAX_UPLOAD, title=ckpt.name,
                     max_video_frames=MAX_FRAMES)
    return ServerThread(app).start()
