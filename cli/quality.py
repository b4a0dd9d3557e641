"""``train_ultimate.py quality-benchmark``: model variants trained for the same GPU time, then scored."""
from __future__ import annotations

import json
from typing import Optional, Tuple

import click

from cli.options import check_output_file


def _int_list(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers such as 0,1; got {text!r}") from exc


@click.command("quality-benchmark")
@click.option("--dataset-path", "dataset_paths", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset with a train and a test split (repeatable). Default: the built-in synthetic set.")
@click.option("--variants", default="camoxpert,fpn,no-attention", show_default=True,
              help="Comma-separated variants, slowest first (the first one sets the equal-steps point). "
                   "Valid: camoxpert, fpn, no-attention, no-moe, image-routing, no-deep-supervision.")
@click.option("--seconds", type=float, default=240.0, show_default=True,
              help="Device seconds of training per variant and seed (0: steps only).")
@click.option("--steps", "max_steps", type=int, default=0, show_default=True, help="Also stop at this many steps (0: none).")
@click.option("--equal-steps", type=int, default=None,
              help="Also score every variant at this step count (default: the first variant's steps).")
@click.option("--seeds", default="0,1", show_default=True, help="Comma-separated seeds; each runs every variant.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run config whose model and loss sections the variants start from.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="Config override, e.g. --set model.dim=96 (repeatable).")
@click.option("--backbone", default=None, help="Backbone (default: the config's).")
@click.option("--img-size", type=int, default=384, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=2.5e-4, show_default=True, help="AdamW learning rate (constant after warm-up).")
@click.option("--warmup-steps", type=int, default=100, show_default=True)
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--cuda-graphs/--eager", default=True, show_default=True,
              help="On CUDA, replay each variant's whole training step as one captured CUDA graph.")
@click.option("--n-train", type=int, default=600, show_default=True, help="Synthetic training images.")
@click.option("--n-test", type=int, default=150, show_default=True, help="Synthetic test images.")
@click.option("--synthetic-size", type=int, default=None, help="Resolution of the synthetic images (default: --img-size).")
@click.option("--max-train", type=int, default=None, help="Use only the first N training images.")
@click.option("--max-test", type=int, default=None, help="Use only the first N test images.")
@click.option("--reference", default="fpn", show_default=True,
              help="Variant the others are compared with, seed by seed (seeds ahead on each measure).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, callback=check_output_file, help="Write the full result here.")
def quality_benchmark(dataset_paths, variants, seconds, max_steps, equal_steps, seeds, config_file, set_items, backbone, img_size,
                      batch_size, lr, warmup_steps, precision, device, cuda_graphs, n_train, n_test, synthetic_size, max_train,
                      max_test, reference: str, json_path: Optional[str]) -> None:
    """Train model variants from scratch for the same device time; score them with PySODMetrics.

    Every variant is the configured model with a few overrides (camoxpert: as configured; fpn:
    plain FPN on the same backbone, no experts; no-attention: six experts without the attention
    expert; ...), trained by one loop (data on the device, flips only, structure loss, AdamW),
    then scored on the test split: S-measure, mean E-measure, weighted F, MAE, at equal time and
    at the first variant's number of steps. Prints a table (means, spread over seeds, seeds ahead
    of --reference); --json writes every run. `quality-report` merges the files of several calls.
    """
    from engine.config import ConfigError, resolve_config
    from engine.runtime import autocast_dtype, resolve_device
    from engine.tools.quality import VARIANTS, QualitySettings, format_quality_table, run_quality_benchmark
    from engine.files import atomic_write_text
    from engine.tools.quality_data import load_quality_data

    names = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise click.BadParameter(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}", param_hint="--variants")
    if seconds <= 0 and max_steps <= 0:
        raise click.BadParameter("give --seconds > 0, --steps > 0, or both", param_hint="--seconds")
    try:
        config = resolve_config(config_file, {"model.backbone": backbone}, set_items)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    dev = resolve_device(device)
    settings = QualitySettings(
        seconds=seconds, max_steps=max_steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
        weight_decay=float(config["train"]["weight_decay"]), grad_clip=float(config["train"]["grad_clip"]),
        dtype=autocast_dtype(dev, precision), cuda_graphs=cuda_graphs,
    )
    try:
        data = load_quality_data(list(dataset_paths), img_size, dev, n_train=n_train, n_test=n_test,
                                 synthetic_size=synthetic_size, max_train=max_train, max_test=max_test)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"data: {data.name}: train {data.train_images.shape[0]}, test {data.test_images.shape[0]} "
               f"at {img_size}px on {dev}")
    result = run_quality_benchmark(data, config["model"], names, _int_list(seeds), settings,
                                   loss_section=config["loss"], log=click.echo, equal_steps=equal_steps,
                                   reference=reference)
    click.echo(format_quality_table(result))
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
