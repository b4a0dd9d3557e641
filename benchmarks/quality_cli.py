"""``python benchmarks/lab.py quality-benchmark``: model variants trained for the same GPU time, then scored."""
from __future__ import annotations

import json
from typing import Optional, Tuple

import click

from benchmarks.quality_report import VARIANT_NAMES
from benchmarks.quality_report_cli import check_reference
from cli.options import FiniteFloatRange, check_device_option, check_img_size_option, check_output_file

# Counts that make no sense below 1 (an empty batch or split fails deep in the model or the loader).
_POSITIVE = click.IntRange(min=1)


def _seed_list(ctx: click.Context, param: click.Parameter, text: str) -> Tuple[int, ...]:
    """--seeds: a non-empty list of distinct integers, as a usage error naming the option otherwise
    (no seed would run nothing; a repeated one trains the same run twice and fakes a spread)."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 0,1; got {text!r}.", ctx, param) from None
    if not seeds:
        raise click.BadParameter("give at least one seed, e.g. 0 or 0,1.", ctx, param)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise click.BadParameter(
            f"seed(s) {', '.join(map(str, repeated))} given twice in {text!r}: give each seed once.", ctx, param)
    return seeds


@click.command("quality-benchmark")
@click.option("--dataset-path", "dataset_paths", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset with a train and a test split (repeatable). Default: the built-in synthetic set.")
@click.option("--variants", default="camoxpert,fpn,no-attention", show_default=True,
              help="Comma-separated variants, slowest first (the first one sets the equal-steps point). "
                   f"Valid: {', '.join(VARIANT_NAMES)}.")
@click.option("--seconds", type=FiniteFloatRange(min=0), default=240.0, show_default=True,
              help="Device seconds of training per variant and seed (0: steps only).")
@click.option("--steps", "max_steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also stop at this many steps (0: none).")
@click.option("--equal-steps", type=_POSITIVE, default=None,
              help="Also score every variant at this step count (default: the first variant's steps).")
@click.option("--seeds", default="0,1", show_default=True, callback=_seed_list,
              help="Comma-separated distinct seeds; each runs every variant.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run config whose model and loss sections the variants start from.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="Config override, e.g. --set model.dim=96 (repeatable).")
@click.option("--backbone", default=None, help="Backbone (default: the config's).")
@click.option("--img-size", type=int, default=384, show_default=True, callback=check_img_size_option, help="A multiple of 32.")
@click.option("--batch-size", type=_POSITIVE, default=16, show_default=True)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=2.5e-4, show_default=True,
              help="AdamW learning rate (constant after warm-up).")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True, callback=check_device_option, help="auto, cpu, cuda, cuda:N.")
@click.option("--cuda-graphs/--eager", default=True, show_default=True,
              help="On CUDA, replay each variant's whole training step as one captured CUDA graph.")
@click.option("--n-train", type=_POSITIVE, default=600, show_default=True, help="Synthetic training images.")
@click.option("--n-test", type=_POSITIVE, default=150, show_default=True, help="Synthetic test images.")
@click.option("--synthetic-size", type=click.IntRange(min=16), default=None,
              help="Resolution of the synthetic images (default: --img-size).")
@click.option("--max-train", type=_POSITIVE, default=None, help="Use only the first N training images.")
@click.option("--max-test", type=_POSITIVE, default=None, help="Use only the first N test images.")
@click.option("--reference", default="fpn", show_default=True,
              help="Variant the others are compared with, seed by seed (seeds ahead on each measure); "
                   "one of --variants (the default is skipped when fpn is not run).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, callback=check_output_file, help="Write the full result here.")
@click.pass_context
def quality_benchmark(ctx: click.Context, dataset_paths, variants, seconds, max_steps, equal_steps, seeds, config_file,
                      set_items, backbone, img_size, batch_size, lr, warmup_steps, precision, device, cuda_graphs, n_train,
                      n_test, synthetic_size, max_train, max_test, reference: str, json_path: Optional[str]) -> None:
    """Train model variants from scratch for the same device time; score them with PySODMetrics.

    Every variant is the configured model with a few overrides (camoxpert: as configured; fpn:
    plain FPN on the same backbone, no experts; no-attention: six experts without the attention
    expert; ...), trained by one loop (data on the device, flips only, structure loss, AdamW),
    then scored on the test split: S-measure, mean E-measure, weighted F, MAE, at equal time and
    at the first variant's number of steps. Prints a table (means, spread over seeds, seeds ahead
    of --reference); --json writes every run. `quality-report` merges the files of several calls.
    """
    names = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANT_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANT_NAMES)}",
                                 param_hint="--variants")
    if seconds <= 0 and max_steps <= 0:
        raise click.BadParameter("give --seconds > 0, --steps > 0, or both", param_hint="--seconds")
    check_reference(ctx, reference, names, "given to --variants")

    from engine.config import ConfigError, resolve_config
    from engine.files import atomic_write_text
    from engine.runtime import autocast_dtype, resolve_device
    from benchmarks.quality import QualityPlan, QualitySettings, format_quality_table, run_quality_benchmark
    from benchmarks.quality_data import SplitSizes, load_quality_data

    try:
        config = resolve_config(config_file, {"model.backbone": backbone}, set_items)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        dev = resolve_device(device)
    except ValueError as exc:  # --device cuda without CUDA: the message names the fix
        raise click.UsageError(str(exc)) from exc
    settings = QualitySettings(
        seconds=seconds, max_steps=max_steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
        weight_decay=float(config["train"]["weight_decay"]), grad_clip=float(config["train"]["grad_clip"]),
        dtype=autocast_dtype(dev, precision), cuda_graphs=cuda_graphs,
    )
    try:
        sizes = SplitSizes(n_train=n_train, n_test=n_test, synthetic_size=synthetic_size, max_train=max_train,
                           max_test=max_test)
        data = load_quality_data(list(dataset_paths), img_size, dev, sizes)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"data: {data.name}: train {data.train_images.shape[0]}, test {data.test_images.shape[0]} "
               f"at {img_size}px on {dev}")
    plan = QualityPlan(config["model"], names, seeds, loss_section=config["loss"], equal_steps=equal_steps,
                       reference=reference)
    result = run_quality_benchmark(data, plan, settings, log=click.echo)
    click.echo(format_quality_table(result))
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
