"""``train_ultimate.py evaluate``: COD metrics of a checkpoint on every test set found."""
from __future__ import annotations

from typing import Any, Tuple

import click

from cli.options import InputError, check_output_file, inference_options, model_option, resolve_batch_size

__all__ = ["evaluate"]


@click.command()
@model_option
@click.option("--dataset-path", "dataset_paths", multiple=True, type=click.Path(),
              help="Dataset folder (COD10K-v3, SINet-V2 TestDataset, Image+GT pairs...). Repeat for several; "
                   "every test set found is evaluated. Default: the built-in synthetic test set.")
@click.option("--output-json", type=click.Path(dir_okay=False), callback=check_output_file, help="Write the scores here as JSON.")
@click.option("--save-predictions", type=click.Path(file_okay=False),
              help="Write 8-bit PNG probability maps at GT size to DIR/<test set>/<stem>.png.")
@click.option("--curves", "curves_path", type=click.Path(dir_okay=False),
              help="PNG of PR and F-threshold curves (default: next to --output-json, else in --save-predictions).")
@click.option("--figure", type=click.Path(dir_okay=False), callback=check_output_file,
              help="PNG of the best and worst test images by S-measure: image, ground truth, prediction, overlay.")
@click.option("--figure-rows", default=6, show_default=True, type=click.IntRange(min=1),
              help="Images in --figure: half the best, half the worst.")
@inference_options
@click.option("--metric-workers", default=None, type=click.IntRange(min=0),
              help="Processes computing the metrics (0: in the main process) [default: several for sets of 100+ images].")
@click.option("--skip-bad-samples", is_flag=True,
              help="Score the readable samples when some files are unreadable (default: fail, naming them).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def evaluate(checkpoint: str, dataset_paths: Tuple[str, ...], no_progress: bool, **options: Any) -> None:
    """Score a checkpoint with PySODMetrics (S, E, weighted F, F, MAE) on every test set found.

    Each prediction is resized to its ground truth's size; COD10K images are also scored per
    super- and sub-class.

    \b
    Examples:
      python train_ultimate.py evaluate --checkpoint checkpoints/best.pt --figure predictions.png
      python train_ultimate.py evaluate --checkpoint best.pt --dataset-path data/COD10K-v3 --output-json scores.json
    """
    # Imported here so `train_ultimate.py --help` and other commands stay fast and do not need
    # the data and metric stack.
    from engine.checkpoint import CheckpointError
    from engine.evaluation.evaluate import EvaluateOptions, EvaluationError, evaluate_checkpoint
    from datasets import DatasetLayoutError

    options["batch_size"] = resolve_batch_size(options["batch_size"], options["device"])
    try:
        evaluate_checkpoint(checkpoint, dataset_paths, EvaluateOptions(progress=not no_progress, **options),
                            log=click.echo)
    except (CheckpointError, DatasetLayoutError, ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from exc
    except (EvaluationError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
