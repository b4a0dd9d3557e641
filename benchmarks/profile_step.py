"""Profile one CamoXpert training step (or inference) and print the most expensive ops.

    python benchmarks/profile_step.py --device cuda --batch-size 16 --img-size 384 [--eval] [--set dim=96]
"""
from __future__ import annotations

import os
import sys

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.runtime import autocast_dtype, resolve_device  # noqa: E402
from engine.tools.benchmark import Workload  # noqa: E402
from models import build_model  # noqa: E402


@click.command()
@click.option("--device", default="auto")
@click.option("--backbone", default="edgenext_small")
@click.option("--batch-size", type=int, default=16)
@click.option("--img-size", type=int, default=384)
@click.option("--eval", "eval_mode", is_flag=True, help="Profile inference instead of a training step.")
@click.option("--rows", type=int, default=25)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Model config override, e.g. --set dim=96.")
def main(device, backbone, batch_size, img_size, eval_mode, rows, overrides):
    """Print a profiler table (by device time on GPU, CPU time otherwise) grouped by module scope."""
    from engine.config import parse_set_overrides

    try:  # a bad --device or --set (malformed, unknown key) is a usage error, not a traceback
        dev = resolve_device(device)
        model = build_model(**{"backbone": backbone, **parse_set_overrides(overrides)})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # The benchmark's workload: the product's training step (or inference) on a synthetic batch.
    workload = Workload(model, dev, batch_size, img_size, autocast_dtype(dev), channels_last=True)
    step = workload.infer if eval_mode else workload.train_step

    for _ in range(3):
        step()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=acts, with_modules=True) as prof:
        for _ in range(3):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))


if __name__ == "__main__":
    main()
