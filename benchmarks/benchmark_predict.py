"""End-to-end speed of ``predict`` and batch-1 latency of the Python API, as JSON.

    python benchmarks/benchmark_predict.py --checkpoint checkpoints/best.pt --json predict_bench.json
    python benchmarks/benchmark_predict.py --folder photos/ --device cuda --batch-size 32

Prints a few readable lines on stderr and the JSON on stdout; see
:func:`benchmarks.predict_speed.run_predict_benchmark` for what each figure means.
Without ``--folder`` it writes ``--num-images`` JPEGs of ``--image-px`` pixels to a temporary
folder. Without ``--checkpoint`` it saves a randomly initialised model of the default
configuration (speed does not depend on the weights).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.options import check_device_option, check_output_file  # noqa: E402  (needs the repository on the path)

_POSITIVE = click.IntRange(min=1)


@click.command(help=__doc__.split("\n")[0])
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Images to predict (default: generated JPEGs).")
@click.option("--num-images", type=_POSITIVE, default=1000, show_default=True)
@click.option("--image-px", type=_POSITIVE, default=800, show_default=True)
@click.option("--img-size", type=int, default=384, show_default=True, help="Network input size, a multiple of 32.")
@click.option("--batch-size", type=_POSITIVE, default=32, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=None)
@click.option("--device", default="auto", show_default=True, callback=check_device_option,
              help="auto, cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--repeats", type=_POSITIVE, default=3, show_default=True, help="Timed in-process runs (median kept).")
@click.option("--latency-iters", type=_POSITIVE, default=50, show_default=True)
@click.option("--no-fresh-process", is_flag=True, help="Skip timing predict as a new process.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Model config override for the random checkpoint, e.g. --set backbone=edgenext_xx_small.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), callback=check_output_file)
def main(checkpoint, folder, num_images, image_px, img_size, batch_size, num_workers, device, precision, repeats,
         latency_iters, no_fresh_process, overrides, json_out) -> None:
    """Run :func:`run_predict_benchmark` and print (and optionally write) its JSON."""
    from engine.config import parse_set_overrides
    from engine.files import atomic_write_text
    from engine.inference.predictor import parse_img_size
    from engine.runtime import resolve_device
    from benchmarks.predict_speed import PredictBenchSettings, format_predict_report, run_predict_benchmark

    try:  # bad values are usage errors (exit 2), found before any work
        parse_img_size(img_size)
        dev = resolve_device(device)
        model_overrides = parse_set_overrides(overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        settings = PredictBenchSettings(
            checkpoint=checkpoint, folder=folder, num_images=num_images, image_px=image_px, img_size=img_size,
            batch_size=batch_size, num_workers=num_workers, precision=precision, repeats=repeats,
            latency_iters=latency_iters, fresh_process=not no_fresh_process, model_overrides=model_overrides)
        result = run_predict_benchmark(dev, settings, progress=lambda msg: click.echo(f"... {msg}", err=True))
    except (OSError, RuntimeError, ValueError) as exc:  # e.g. an unknown --set key, a failing `predict` process
        raise click.ClickException(str(exc)) from exc
    click.echo(format_predict_report(result), err=True)
    text = json.dumps(result, indent=2)
    click.echo(text)
    if json_out:
        atomic_write_text(json_out, text + "\n")


if __name__ == "__main__":
    main()
