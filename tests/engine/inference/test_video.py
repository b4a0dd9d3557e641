"""``predict`` on a video: mask (and overlay) videos with the source's frame count, size and rate."""
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from engine.inference.video import VideoSummary
from train_ultimate import main

H, W, FRAMES, FPS = 48, 80, 7, 12.0


def _write_clip(path, frames=FRAMES, fourcc="mp4v"):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
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


def test_same_stem_videos_get_distinct_names(ckpt, tmp_path):
    # Like images, a later video sharing a stem gets -2 instead of overwriting the first one's outputs.
    _write_clip(tmp_path / "a" / "clip.mp4", frames=3)
    _write_clip(tmp_path / "b" / "clip.mp4", frames=5)
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", tmp_path / "a" / "clip.mp4", "--input", tmp_path / "b" / "clip.mp4",
                 "--output", out, "--overlay")
    assert r.exit_code == 0, r.output
    assert "clip-2_mask.mp4" in r.output  # the rename is printed
    for name, frames in (("clip", 3), ("clip-2", 5)):
        for kind in ("mask", "overlay"):
            assert len(_props(out / f"{name}_{kind}.mp4")[0]) == frames, (name, kind)


def test_truncated_video_is_reported(ckpt, tmp_path):
    full = _write_clip(tmp_path / "full.avi", frames=12, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])  # the header still announces 12 frames
    decoded = len(_props(cut)[0])
    assert 0 < decoded < 10
    good = _write_clip(tmp_path / "good.mp4")
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", cut, "--input", good, "--output", out)
    assert r.exit_code == 1, r.output
    # The warning, when it happens, names the file, the frames decoded and the 12 the header announced.
    warning = next(line for line in r.output.splitlines() if "Warning" in line and "cut.avi" in line)
    assert re.findall(r"\d+", warning.split("cut.avi", 1)[1])[:2] == [str(decoded), "12"]
    last = r.output.strip().splitlines()[-1]
    assert "cut.avi" in last and "good.mp4" not in last and "Traceback" not in r.output
    assert len(_props(out / "cut_mask.mp4")[0]) == decoded  # what could be decoded is still written,
    assert len(_props(out / "good_mask.mp4")[0]) == FRAMES  # and so are the videos after it


def test_frame_count_slack():
    # OpenCV's announced count can be approximate: a frame or two short is no truncation, and a
    # container that announces no count is never incomplete.
    assert not VideoSummary(frames=59, announced=60).incomplete
    assert not VideoSummary(frames=3, announced=None).incomplete
    assert VideoSummary(frames=3, announced=60).incomplete


def test_video_globs_are_expanded(ckpt, tmp_path):
    _write_clip(tmp_path / "vids" / "one.avi", frames=3)
    _write_clip(tmp_path / "vids" / "two.avi", frames=4)
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", str(tmp_path / "vids" / "*.avi"), "--output", out)
    assert r.exit_code == 0, r.output
    assert len(_props(out / "one_mask.mp4")[0]) == 3 and len(_props(out / "two_mask.mp4")[0]) == 4
    pattern = str(tmp_path / "vids" / "*.mkv")
    r = _predict(ckpt, "--input", pattern, "--output", out)
    assert r.exit_code != 0 and pattern in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("scales", ["abc", "0", "1,inf"])
def test_bad_tta_scales_are_usage_errors(tmp_path, scales):
    # Checked before the checkpoint is even opened (it does not exist here), for videos and images alike.
    clip = _write_clip(tmp_path / "clip.mp4", frames=2)
    image = tmp_path / "shot.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    for item in (clip, image):
        r = _predict(tmp_path / "missing.pt", "--input", item, "--output", tmp_path / "o", "--tta-scales", scales)
        assert r.exit_code == 2, r.output
        assert "--tta-scales" in r.output and "Traceback" not in r.output and "missing.pt" not in r.output



def test_unreadable_videos_do_not_stop_the_others(ckpt, tmp_path):
    # Like unreadable images: each bad video is named with its reason, every readable one after it
    # is still written, and the command ends with a summary and exit code 1, not a traceback.
    first = _write_clip(tmp_path / "first.mp4", frames=3)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    whole = _write_clip(tmp_path / "whole.mp4", frames=4)
    headless = tmp_path / "headless.mp4"  # cut before the index OpenCV's mp4 writer puts at the end
    headless.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    full = _write_clip(tmp_path / "full.avi", frames=12, fourcc="MJPG")
    cut = tmp_path / "cut.avi"  # readable but truncated: written, and named on the last line
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    last = _write_clip(tmp_path / "last.mp4", frames=5)
    out = tmp_path / "out"
    r = _predict(ckpt, *[a for v in (first, text, headless, cut, last) for a in ("--input", v)], "--output", out,
                 "--overlay")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    for name, frames in (("first", 3), ("last", 5), ("cut", len(_props(cut)[0]))):
        for kind in ("mask", "overlay"):
            assert len(_props(out / f"{name}_{kind}.mp4")[0]) == frames, (name, kind)
    assert not list(out.glob("notes*")) and not list(out.glob("headless*"))  # no empty outputs for them
    summary = r.output[r.output.index("2 of 5 video(s) could not be read"):]
    assert "notes.mp4 as a video" in summary and "headless.mp4 as a video" in summary
    assert "first.mp4" not in summary and "last.mp4" not in summary
    assert "cut.avi (" in r.output.strip().splitlines()[-1]


def test_missing_video_is_refused_before_any_work(ckpt, tmp_path):
    # A missing file is an input mistake, refused before the model loads: nothing is written.
    good = _write_clip(tmp_path / "good.mp4", frames=2)
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", good, "--input", tmp_path / "gone.mp4", "--output", out)
    assert r.exit_code == 2 and "gone.mp4 (no such file" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_video_name_not_utf8_is_skipped_not_a_crash(ckpt, tmp_path):
    # OpenCV's bindings segfault on such a name: it is refused by name and the next video goes on.
    odd = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xffodd.mp4"))
    try:
        _write_clip(tmp_path / "odd.mp4", frames=2).rename(odd)
    except OSError:
        pytest.skip("this file system refuses names that are not valid UTF-8")
    good = _write_clip(tmp_path / "good.mp4", frames=2)
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", odd, "--input", good, "--output", out)
    assert r.exit_code == 1 and "\\xffodd.mp4" in r.output and "UTF-8" in r.output, r.output
    assert len(_props(out / "good_mask.mp4")[0]) == 2


def test_write_mask_videos_writes_what_predict_writes_to_the_paths_given(ckpt, tmp_path):
    from engine.inference.api import Segmenter
    from engine.inference.video import write_mask_videos

    clip = _write_clip(tmp_path / "clip.mp4")
    assert _predict(ckpt, "--input", clip, "--output", tmp_path / "out", "--overlay").exit_code == 0
    summary = write_mask_videos(Segmenter(ckpt, device="cpu", batch_size=3), clip, tmp_path / "m" / "a.mp4",
                                tmp_path / "o" / "b.mp4")
    assert summary.frames == FRAMES and summary.outputs == [tmp_path / "m" / "a.mp4", tmp_path / "o" / "b.mp4"]
    for mine, theirs in zip(summary.outputs, ("clip_mask.mp4", "clip_overlay.mp4")):
        assert mine.read_bytes() == (tmp_path / "out" / theirs).read_bytes()


@pytest.mark.parametrize("announced", [True, False])
def test_write_mask_videos_refuses_more_frames_than_the_limit_and_writes_nothing(ckpt, tmp_path, monkeypatch,
                                                                               announced):
    import engine.inference.video as video
    from engine.inference.api import Segmenter

    clip = _write_clip(tmp_path / "clip.mp4")
    if not announced:  # a container without a frame count: the limit is found while decoding
        opened = video._open_video
        monkeypatch.setattr(video, "_open_video",
                            lambda path: video._Source(**{**vars(opened(path)), "announced": None}))
    with pytest.raises(video.VideoTooLongError, match=f"{FRAMES - 2}-frame limit"):
        video.write_mask_videos(Segmenter(ckpt, device="cpu", batch_size=2), clip, tmp_path / "out" / "m.mp4",
                                max_frames=FRAMES - 2)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
