"""``predict`` on a video: mask (and overlay) videos with the source's frame count, size and rate."""
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from _inference_fixtures import make_tiny_checkpoint
from train_ultimate import main

H, W, FRAMES, FPS = 48, 80, 7, 12.0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


def _write_clip(path):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(FRAMES):
        frame = rng.integers(40, 120, (H, W, 3), dtype=np.uint8)
        cv2.circle(frame, (10 + 8 * i, H // 2), 9, (60, 200, 90), -1)  # a moving object
        writer.write(frame)
    writer.release()
    return path


def _props(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def _predict(ckpt, *args):
    return CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--device", "cpu", "--no-progress",
                                     "--batch-size", "3", *map(str, args)])


def test_video_in_video_out(ckpt, tmp_path):
    clip = _write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", clip, "--output", out, "--overlay")
    assert r.exit_code == 0, r.output
    for name in ("clip_mask.mp4", "clip_overlay.mp4"):
        frames, fps = _props(out / name)
        assert len(frames) == FRAMES, name
        assert frames[0].shape == (H, W, 3) and fps == pytest.approx(FPS), name
    masks, _ = _props(out / "clip_mask.mp4")
    assert all(np.abs(m[..., 0].astype(int) - m[..., 2]).max() <= 8 for m in masks)  # grey frames


def test_video_errors(ckpt, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    r = _predict(ckpt, "--input", fake, "--output", tmp_path / "o")
    assert r.exit_code != 0 and "notes.mp4" in r.output and "as a video" in r.output
    clip = _write_clip(tmp_path / "c.mp4")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00" * 64)
    r = _predict(broken, "--input", clip, "--output", tmp_path / "o")
    assert r.exit_code != 0 and "broken.pt" in r.output and "Traceback" not in r.output
