"""``train_ultimate.py predict``: masks for your own images (no ground truth needed)."""
from __future__ import annotations

from typing import Optional, Tuple

import click

from cli.options import inference_options, resolve_batch_size

__all__ = ["predict"]


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="best.pt / last.pt written by `train`.")
@click.option("--input", "inputs", required=True, multiple=True,
              help="Image file, folder or glob pattern (quote it: 'shots/*.jpg'), or video files "
                   "(.mp4, .avi, .mov...: OUTPUT/<stem>_mask.mp4). Repeat for several.")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Folder for <stem>.png masks at each input's own size.")
@click.option("--overlay", is_flag=True, help="Also write the mask tinted on the image to OUTPUT/overlay/<stem>.jpg.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Write binary 0/255 masks (probability >= T) instead of 8-bit probability maps.")
@inference_options
@click.option("--recursive", is_flag=True, help="Also take images in sub-folders of folder inputs.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def predict(checkpoint: str, inputs: Tuple[str, ...], output: str, overlay: bool, threshold: Optional[float],
            tta: bool, tta_scales: str, batch_size: int, num_workers: Optional[int], device: str,
            img_size: Optional[str], precision: str, recursive: bool, no_progress: bool) -> None:
    """Predict camouflaged-object masks for images, folders and globs."""
    # Imported here so `train_ultimate.py --help` and other commands stay fast and do not need
    # the data stack.
    from engine.checkpoint import CheckpointError
    from engine.inference.predictor import parse_tta_scales
    from engine.inference.predict import predict_images

    from engine.inference.video import is_video_file

    batch_size = resolve_batch_size(batch_size, device)
    videos = [i for i in inputs if is_video_file(i)]
    if videos:
        if len(videos) != len(inputs):
            raise click.UsageError("Give either videos or images as --input, not both in one call.")
        _predict_videos(checkpoint, videos, output, overlay, threshold, tta, parse_tta_scales(tta_scales),
                        batch_size, device, img_size, precision, not no_progress)
        return
    try:
        summary = predict_images(
            checkpoint, inputs, output, overlay=overlay, threshold=threshold, tta=tta,
            tta_scales=parse_tta_scales(tta_scales), batch_size=batch_size, num_workers=num_workers,
            device=device, img_size=img_size, precision=precision, recursive=recursive,
            progress=not no_progress, log=click.echo,
        )
    except (CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if summary.failed:
        lines = "\n  ".join(msg for _, msg in summary.failed)
        raise click.ClickException(
            f"{len(summary.failed)} image(s) could not be read and got no mask:\n  {lines}"
        )


def _predict_videos(checkpoint, videos, output, overlay, threshold, tta, scales, batch_size, device, img_size,
                    precision, progress) -> None:
    from engine.checkpoint import CheckpointError
    from engine.inference.api import Segmenter
    from engine.inference.video import predict_video

    try:
        segmenter = Segmenter(checkpoint, device=device, precision=precision, img_size=img_size,
                              batch_size=batch_size, tta=tta, tta_scales=scales)
        for video in videos:
            predict_video(segmenter, video, output, overlay=overlay, threshold=threshold, progress=progress,
                          log=click.echo)
    except (CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
