"""``train_ultimate.py demo``: a local web page to try a checkpoint on your own images."""
from __future__ import annotations

from typing import Optional

import click

from cli.options import FiniteFloatRange, InputError, check_device_option, model_option

__all__ = ["demo", "missing_extra"]

EXTRA_HINT = 'The demo needs its optional packages: pip install -e ".[demo]"'


def missing_extra() -> Optional[str]:
    """The name of the first ``[demo]`` package that cannot be imported, else None."""
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


@click.command()
@model_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 makes the page reachable from other machines).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one (the address is printed).")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=FiniteFloatRange(min=0.01),
              help="Larger uploads are refused (HTTP 413, with a message on the page).")
@click.option("--max-megapixels", default=100.0, show_default=True, type=FiniteFloatRange(min=0.01),
              help="Images with more pixels are refused before decoding (HTTP 413, with a message on the page).")
@click.option("--max-video-frames", default=300, show_default=True, type=click.IntRange(min=1),
              help="Videos with more frames are refused (HTTP 413); each frame goes through the model.")
@click.option("--device", default="auto", show_default=True, callback=check_device_option,
              help="auto, cpu, cuda, cuda:N.")
@click.option("--img-size", default=None,
              help="Network input size (N or HxW, multiples of 32) [default: the checkpoint's training size, else 384].")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Autocast on GPU: auto picks bf16 where supported, else fp16; CPU runs fp32.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: average with the horizontally flipped image.")
def demo(checkpoint: str, host: str, port: int, max_upload_mb: float, max_megapixels: float,
         max_video_frames: int, device: str,
         img_size: Optional[str], precision: str, tta: bool) -> None:
    """Serve a page where you drop an image or a short video and see its mask, overlay and a threshold slider."""
    missing = missing_extra()
    if missing is not None:  # checked first: loading the model takes seconds
        raise InputError(f"{EXTRA_HINT} ({missing} is not installed).")
    # Imported here so the other commands never import FastAPI or the model stack for this one.
    from pathlib import Path

    from engine.checkpoint import CheckpointError
    from engine.demo.app import create_app
    from engine.demo.server import bind, serve, url_of
    from engine.inference.api import Segmenter

    try:
        segmenter = Segmenter(checkpoint, device=device, precision=precision, img_size=img_size, batch_size=1, tta=tta)
    except (CheckpointError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise InputError(str(exc)) from exc
    app = create_app(segmenter, max_upload_bytes=int(max_upload_mb * 2**20), title=Path(checkpoint).name,
                     max_pixels=int(max_megapixels * 1e6), max_video_frames=max_video_frames)
    h, w = segmenter.img_size
    click.echo(f"CamoXpert demo: {url_of(sock)}  (model {Path(checkpoint).name}, input {h}x{w} on "
               f"{segmenter.device}; uploads up to {max_upload_mb:g} MB; Ctrl+C stops)")
    serve(app, sock)
