"""predict never writes over its inputs, and never reports a file whose bytes did not land."""
from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from _inference_fixtures import make_tiny_checkpoint, write_scene
from datasets.files import FileWriteError
from datasets.io import write_image
from train_ultimate import main as cli

ROOT = Path(__file__).resolve().parents[3]


def _photos(folder: Path, n: int = 3, size=(40, 56)) -> dict:
    for i in range(n):
        write_scene(folder / f"p{i}.png", None, size, i)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _predict(*args: str):
    return CliRunner().invoke(cli, ["predict", "--checkpoint", "missing.pt", "--no-progress", *args])


def test_output_that_is_the_input_folder_is_refused_before_the_model_loads(tmp_path):
    before = _photos(tmp_path / "photos")
    result = _predict("--input", str(tmp_path / "photos"), "--output", str(tmp_path / "photos"))
    assert result.exit_code == 2 and "photos_masks" in result.output  # the folder to pass instead
    assert {p.name: p.read_bytes() for p in (tmp_path / "photos").iterdir()} == before


def test_mask_that_would_replace_an_input_file_is_refused_and_named(tmp_path):
    before = _photos(tmp_path / "photos")
    result = _predict("--input", str(tmp_path / "photos" / "*.png"), "--output", str(tmp_path / "photos"))
    assert result.exit_code == 2 and "p1.png" in result.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "photos").iterdir()} == before


def test_overlay_that_would_replace_an_input_is_refused(tmp_path):
    write_scene(tmp_path / "out" / "overlay" / "p0.jpg", None, (40, 56), 0)
    result = _predict("--input", str(tmp_path / "out" / "overlay" / "p0.jpg"), "--output", str(tmp_path / "out"),
                      "--overlay")
    assert result.exit_code == 2 and "p0.jpg" in result.output


def test_output_inside_an_input_folder_is_refused_with_recursive(tmp_path):
    _photos(tmp_path / "photos")
    result = _predict("--input", str(tmp_path / "photos"), "--output", str(tmp_path / "photos" / "masks"),
                      "--recursive")
    assert result.exit_code == 2 and not (tmp_path / "photos" / "masks").exists()


def test_output_inside_an_input_folder_is_fine_without_recursive(tmp_path):
    _photos(tmp_path / "photos")
    ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
    result = CliRunner().invoke(cli, ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "photos"),
                                      "--output", str(tmp_path / "photos" / "masks"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "photos" / "masks").iterdir()) == ["p0.png", "p1.png", "p2.png"]


def test_mask_video_that_would_replace_an_input_video_is_refused(tmp_path):
    video = tmp_path / "out" / "clip_mask.mp4"
    video.parent.mkdir()
    video.write_bytes(b"not decoded: the check comes first")
    before = video.read_bytes()
    # The input clip_mask.mp4 gets clip_mask_mask.mp4; clip.mp4 beside it would write clip_mask.mp4.
    (tmp_path / "out" / "clip.mp4").write_bytes(b"x")
    result = _predict("--input", str(tmp_path / "out" / "clip.mp4"), "--input", str(video),
                      "--output", str(tmp_path / "out"))
    assert result.exit_code == 2 and "clip_mask.mp4" in result.output and video.read_bytes() == before


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Files of this process may not grow past ``limit`` bytes (EFBIG, as a full disk gives ENOSPC)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_an_image_that_does_not_fit_raises_and_leaves_the_earlier_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    target = write_image(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    before = target.read_bytes()
    with _file_size_limit(600), pytest.raises(FileWriteError, match="x.png"):
        write_image(target, noise)  # a JPEG of about 3 KB: ndarray.tofile wrote 600 bytes and raised nothing
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def _limit_files_to_4k():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_predict_names_the_outputs_that_did_not_fit_and_keeps_the_others(tmp_path):
    write_scene(tmp_path / "in" / "small.png", None, (16, 16), 0)  # mask and overlay of a few hundred bytes
    write_scene(tmp_path / "in" / "large.png", None, (160, 200), 1)  # its overlay is a JPEG of tens of KB
    ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train_ultimate.py"), "predict", "--checkpoint", str(ckpt), "--input",
         str(tmp_path / "in"), "--output", str(out), "--overlay", "--no-progress", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, preexec_fn=_limit_files_to_4k,
        env={**os.environ, "CAMOXPERT_DECODE_CACHE": "0"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "large.jpg" in proc.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "small.png" in written and "overlay/small.jpg" in written and "overlay/large.jpg" not in written
    for name in written:  # every file left is whole: it decodes
        assert cv2.imdecode(np.fromfile(str(out / name), np.uint8), cv2.IMREAD_UNCHANGED) is not None, name


def test_an_output_folder_that_cannot_be_created_is_named_with_exit_2(tmp_path):
    _photos(tmp_path / "photos")
    (tmp_path / "a_file").write_text("in the way")
    ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
    result = CliRunner().invoke(cli, ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "photos"),
                                      "--output", str(tmp_path / "a_file" / "masks"), "--no-progress"])
    assert result.exit_code == 2 and str(tmp_path / "a_file" / "masks") in result.output
    assert "Errno" not in result.output.splitlines()[-1][:12]  # a sentence naming the folder, not a bare errno


def test_a_video_missing_frames_on_disk_is_a_named_write_error(tmp_path):
    from engine.inference.video import _check_written

    short = tmp_path / "short.mp4"
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 32), True)
    for _ in range(3):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    _check_written(short, tmp_path / "clip_mask.mp4", 3)  # every frame landed: no error
    with pytest.raises(FileWriteError, match="clip_mask.mp4"):
        _check_written(short, tmp_path / "clip_mask.mp4", 5)
