"""``train_ultimate.py predict``: masks for your own images (no ground truth needed)."""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import click

from cli.options import FiniteFloatRange, InputError, inference_options, model_option, resolve_batch_size

if TYPE_CHECKING:  # imported in the command only, so that --help stays fast
    from engine.inference.options import PredictOptions

__all__ = ["predict"]


@click.command()
@model_option
@click.option("--input", "inputs", required=True, multiple=True,
              help="Image file, folder or glob pattern (quote it: 'shots/*.jpg'), or video files or patterns "
                   "(.mp4, .avi, .mov...: OUTPUT/<stem>_mask.mp4). Repeat for several.")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Folder for <stem>.png masks at each input's own size.")
@click.option("--overlay", is_flag=True, help="Also write the mask tinted on the image to OUTPUT/overlay/<stem>.jpg.")
@click.option("--threshold", type=FiniteFloatRange(0.0, 1.0), default=None,
              help="Write binary 0/255 masks (probability >= T) instead of 8-bit probability maps.")
@inference_options
@click.option("--recursive", is_flag=True, help="Also take images in sub-folders of folder inputs.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def predict(checkpoint: str, inputs: Tuple[str, ...], output: str, overlay: bool, threshold: Optional[float],
            tta: bool, tta_scales: Tuple[float, ...], batch_size: int, num_workers: Optional[int], device: str,
            img_size: Optional[str], precision: str, recursive: bool, no_progress: bool) -> None:
    """Predict camouflaged-object masks for images, folders and globs."""
    # Imported here so `train_ultimate.py --help` and other commands stay fast and do not need
    # the data stack.
    from engine.checkpoint import CheckpointError
    from engine.files import FileWriteError
    from engine.inference.input_guard import OutputOverlapError
    from engine.inference.options import PredictOptions
    from engine.inference.predict import predict_images

    # Option and input mistakes surface before the model loads, whatever the input kind
    # (--tta-scales arrives parsed and checked by its option's callback).
    images, videos = _route_inputs(inputs)
    if images and videos:
        raise click.UsageError("Give either videos or images as --input, not both in one call.")
    options = PredictOptions(overlay=overlay, threshold=threshold, tta=tta, tta_scales=tta_scales,
                             batch_size=resolve_batch_size(batch_size, device), num_workers=num_workers,
                             device=device, img_size=img_size, precision=precision, recursive=recursive,
                             progress=not no_progress)
    if videos:
        _predict_videos(checkpoint, inputs, videos, output, options)
        return
    try:
        summary = predict_images(checkpoint, images, output, options, log=click.echo)
    except OutputOverlapError as exc:
        raise click.UsageError(str(exc)) from exc
    except (CheckpointError, ValueError, FileNotFoundError, FileWriteError) as exc:
        raise InputError(str(exc)) from exc  # all raised before the first mask is written
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    problems = []
    if summary.failed:
        lines = "\n  ".join(msg for _, msg in summary.failed)
        problems.append(f"{len(summary.failed)} image(s) could not be read and got no mask:\n  {lines}")
    if summary.write_failed:
        problems.append(_write_failures(summary.write_failed))
    if problems:
        raise click.ClickException("\n".join(problems))


def _write_failures(failed: Sequence[Tuple[Path, str]]) -> str:
    """The end-of-run report of outputs whose bytes did not land: the files, then the first reason."""
    from datasets import display_path

    names = "\n  ".join(display_path(path) for path, _ in failed[:20])
    more = f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""
    return (f"{len(failed)} output file(s) could not be written (the others are complete):\n  {names}{more}\n"
            f"First reason: {failed[0][1]}")


def _route_inputs(inputs: Sequence[str]) -> Tuple[List[Path], List[Path]]:
    """``--input`` values split into image inputs and video files, glob patterns expanded first.

    Patterns are expanded here, not in the image path, so that the videos they match reach the
    video path: each match goes by its suffix (others, e.g. ``notes.txt``, are left out). An
    existing path is taken as given, even with ``*`` or ``[`` in its name; folders go to the image
    path. Inputs that name nothing (no such path, a pattern matching no image or video) are one
    error naming them all.
    """
    from datasets.layouts import is_image_file
    from engine.inference.video import is_video_file

    images: List[Path] = []
    videos: List[Path] = []
    missing: List[str] = []
    for item in inputs:
        path = os.path.expanduser(item)
        if os.path.lexists(path):  # lexists: a broken link is named by the image reader, not here
            matches = [path]
        elif any(c in item for c in "*?["):
            matches = [m for m in sorted(glob.glob(path, recursive=True))
                       if not os.path.isdir(m) and (is_video_file(m) or is_image_file(m))]
            if not matches:
                missing.append(f"{item} (no image or video matches this pattern)")
        else:
            matches = []
            missing.append(f"{item} (no such file or folder)")
        for match in matches:
            (videos if is_video_file(match) else images).append(Path(match))
    if missing:
        raise InputError("These inputs matched no image or video:\n  " + "\n  ".join(missing))
    # A file matched by two patterns (or by a pattern and its own name) is predicted once.
    return list(dict.fromkeys(images)), list(dict.fromkeys(videos))


def _predict_videos(checkpoint: str, inputs: Sequence[str], videos: List[Path], output: str,
                    options: PredictOptions) -> None:
    """Load the model once and write mask videos for every video.

    Unreadable and truncated videos end the command with exit code 1, named after every other
    video is written; checkpoint and option problems stop it before any video. Of ``options``,
    ``num_workers`` and ``recursive`` do not apply to videos.
    """
    from engine.checkpoint import CheckpointError
    from engine.inference.api import Segmenter
    from engine.inference.input_guard import OutputOverlapError, check_outputs_spare_inputs
    from engine.inference.video import planned_outputs, predict_videos

    try:  # before the model loads: a mask video must not replace an input video
        check_outputs_spare_inputs(inputs, videos, planned_outputs(videos, output, options.overlay), Path(output),
                                   False)
    except OutputOverlapError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        segmenter = Segmenter(checkpoint, device=options.device, precision=options.precision,
                              img_size=options.img_size, batch_size=options.batch_size, tta=options.tta,
                              tta_scales=options.tta_scales)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from exc
    try:
        summaries = predict_videos(segmenter, videos, output, overlay=options.overlay, threshold=options.threshold,
                                   progress=options.progress, log=click.echo)
    except (CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    # Reported last, after every video is written, so one damaged file does not hide the others.
    problems = _video_problems(videos, summaries)
    if problems:
        raise click.ClickException("\n".join(problems))


def _video_problems(videos, summaries) -> List[str]:
    """The end-of-run report: unreadable videos (each with its reason), then truncated ones.

    Empty when every video was read whole. The truncated ones come last, on one line, so that the
    last line names them as before.
    """
    from datasets import display_path

    problems = []
    failed = [s.error for s in summaries if s.error]
    if failed:
        problems.append(f"{len(failed)} of {len(videos)} video(s) could not be read and got no output:\n  "
                        + "\n  ".join(failed))
    incomplete = [f"{display_path(video)} ({s.frames} of {s.announced} frames)"
                  for video, s in zip(videos, summaries) if s.incomplete]
    if incomplete:
        problems.append(f"{len(incomplete)} video(s) ended before the frame count their container announces "
                        f"(truncated or damaged?); their outputs cover only the frames decoded: "
                        f"{', '.join(incomplete)}")
    return problems
