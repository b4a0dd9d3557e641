"""Shared pieces of the demo tests: a tiny model served in a thread, and predict's mask files."""
from pathlib import Path
from typing import Optional

from click.testing import CliRunner

from _inference_fixtures import make_tiny_checkpoint, write_scene

#: (height, width) of the test image: not a multiple of 32, not square.
IMAGE_SIZE = (50, 70)
#: The servers under test refuse bodies over this many bytes.
MAX_UPLOAD = 64 * 1024


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

    app = create_app(Segmenter(ckpt, device="cpu", batch_size=1), max_upload_bytes=MAX_UPLOAD, title=ckpt.name)
    return ServerThread(app).start()
