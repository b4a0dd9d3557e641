"""The picture a finished run leaves in its folder: its best and worst validation images.

At the end of ``train``, ``best.pt`` is scored on (an evenly spread subset of) the validation
images held out of the training data, and :func:`~engine.evaluation.figure.write_figure` draws
the best and worst few by S-measure as ``predictions.png``: the image, its mask, the prediction
and the overlay, the same grid ``evaluate --figure`` draws for a test set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from engine.evaluation.figure import Extremes, write_figure
from engine.evaluation.scoring import ScoringOptions, evaluate_samples
from engine.files import PathLike
from engine.inference.predictor import Predictor, load_inference_model

__all__ = ["RUN_FIGURE", "draw_run_figure", "write_run_figure"]

#: The figure's file name in the run folder.
RUN_FIGURE = "predictions.png"


def _spread(samples: Sequence[Any], count: int) -> list:
    """At most ``count`` of ``samples``, evenly spread (the same ones for the same split)."""
    step = max(1, -(-len(samples) // count))
    return list(samples[::step])[:count]


def write_run_figure(out_dir: PathLike, samples: Optional[Sequence[Any]], device: torch.device,
                     rows: int = 6, max_images: int = 64) -> Optional[Path]:
    """Draw ``best.pt``'s best and worst validation images into ``out_dir/predictions.png``.

    Args:
        out_dir: the run folder (holding ``best.pt``).
        samples: the validation samples (image and mask files); None or empty draws nothing
            (a run trained on datasets given as objects has no files to show).
        device: where to run the model.
        rows: images in the figure, half the best and half the worst.
        max_images: validation images scored at most (a few seconds at the end of a run).

    Returns:
        The figure written, or None when there was nothing to draw.

    Raises:
        engine.files.FileWriteError: the figure could not be written.
    """
    best = Path(out_dir) / "best.pt"
    chosen = _spread([s for s in samples or [] if getattr(s, "mask", None) is not None], max_images)
    if not best.is_file() or not chosen:
        return None
    loaded = load_inference_model(best, device, None)
    # A few dozen images: not worth capturing a CUDA graph for them.
    predictor = Predictor(loaded.model, device, cuda_graphs=False)
    extremes = Extremes(rows)
    evaluate_samples(predictor, chosen, loaded.img_size, "validation",
                     ScoringOptions(batch_size=8, num_workers=0, progress=False, skip_bad=True),
                     sink=extremes.sink("validation"))
    kept = extremes.rows()
    return write_figure(kept, Path(out_dir) / RUN_FIGURE) if kept else None


def draw_run_figure(out_dir: PathLike, samples: Optional[Sequence[Any]], device: torch.device,
                    log: Callable[[str], None]) -> None:
    """:func:`write_run_figure`, where a failure is a warning: the picture is a convenience, the
    checkpoints and records of the run are written already."""
    try:
        written = write_run_figure(out_dir, samples, device)
    except Exception as exc:  # noqa: BLE001 - any failure: never worth the end of a finished run
        log(f"Warning: could not draw {Path(out_dir) / RUN_FIGURE} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); the run is complete without it.")
        return
    if written is not None:
        log(f"Best and worst validation images drawn in {written}")
