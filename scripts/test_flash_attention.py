"""Check that fused attention (SDPA) gives the same answers as explicit attention on a checkpoint.

    python scripts/test_flash_attention.py --checkpoint checkpoints/best.pt \\
        [--dataset-path /kaggle/input/cod10k-dataset/COD10K-v3] [--num-samples 100] \\
        [--device cuda] [--dtype fp32|bf16|fp16] [--json report.json]

Runs the same images through every attention backend usable here (SDPA auto and each kernel
forced: flash, efficient, cudnn) and through explicit math attention, then reports per backend
the max/mean probability difference against math, the change in S-measure and MAE, forward
time, peak memory and the kernel that actually ran (read from the profiler). Also checks SDPA
against math on random Q/K/V at several shapes, and how many checked images (and tokens) the
router sent to the attention expert at each MoE layer. Exit codes: 0 passed, 1 a difference
exceeds the tolerance (so it can gate CI), 3 inconclusive: no checked image reached the
attention expert, so the comparison said nothing about attention (never reported as passed).
``TORCH_SDPA_BACKEND`` is honoured.
"""
from __future__ import annotations

import json
import os
import sys

import click

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cli.options import (  # noqa: E402  (needs the repository on the path)
    FiniteFloatRange, InputError, check_device_option, check_img_size_option, check_output_file,
    model_option)

#: Exit code when the router sent no checked image to the attention expert (nothing compared).
EXIT_VACUOUS = 3
# The profiler (used to read which kernel ran) is chatty on stderr by default.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")


def _load_samples(dataset_path, run_config, num_samples):
    from datasets import discover_dataset
    from engine.evaluation.evaluate import synthetic_test_root

    root = dataset_path or synthetic_test_root(run_config)
    splits = discover_dataset(root)
    samples = [s for test in splits.tests.values() for s in test if s.mask is not None]
    source = f"test images of {root}"
    if not samples:
        samples = [s for s in splits.train if s.mask is not None]
        source = f"training images of {root} (no test split found)"
    if not samples:
        raise InputError(f"No image/mask pairs found under {root}: pass a --dataset-path holding image/mask pairs.")
    return samples[:num_samples], source


def _batches(samples, img_size, batch_size):
    import numpy as np
    import torch

    from datasets import CODDataset, build_eval_transform, read_mask

    dataset = CODDataset(samples, build_eval_transform(img_size))
    images = [dataset[i]["image"] for i in range(len(dataset))]
    batches = [torch.stack(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    gts = [(read_mask(s.mask) * 255).round().astype(np.uint8) for s in samples]
    return batches, gts


def _print_report(report: dict, unit: list) -> None:
    click.echo(f"\nAttention check on {report['num_samples']} images, {report['dtype']}, tolerance {report['tolerance']:g}")
    ref = report["reference"]
    sm = "-" if ref["Sm"] is None else f"{ref['Sm']:.4f}"
    click.echo(f"  reference explicit math: S-measure {sm}, {ref['ms']:.1f} ms/batch, kernel {ref['kernel']}")
    header = f"  {'backend':<10}{'kernel':<11}{'max diff':>10}{'mean diff':>11}{'dSm':>10}{'dMAE':>10}{'ms':>8}{'x math':>8}{'peak MB':>9}"
    click.echo(header)
    for name, b in report["backends"].items():
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        mark = "✓" if b["passed"] else "✗"
        click.echo(
            f"{mark} {name:<10}{b['kernel']:<11}{b['max_abs_diff']:>10.2e}{b['mean_abs_diff']:>11.2e}"
            f"{fmt(b['delta_Sm'], '+.1e'):>10}{fmt(b['delta_MAE'], '+.1e'):>10}{b['ms']:>8.1f}"
            f"{fmt(b['speedup_vs_math'], '.2f'):>8}{fmt(b['peak_mem_mb'], '.0f'):>9}"
        )
    for name, why in report["skipped"].items():
        click.echo(f"- {name:<10}skipped: {why}")
    worst = {}
    for row in unit:
        key = row["backend"]
        worst[key] = max(worst.get(key, 0.0), row["max_abs_diff"])
    if unit:
        shapes = list(dict.fromkeys(tuple(r["shape"]) for r in unit))  # in UNIT_SHAPES order
        click.echo(f"  unit check, random Q/K/V at {len(shapes)} shapes incl. {shapes[0]}: "
                   + ", ".join(f"{k} max diff {v:.1e}" for k, v in worst.items()))
    routing = report.get("attention_routing", {})
    for layer, r in routing.items():
        gate = "-" if r["mean_gate"] is None else f"{r['mean_gate']:.3f}"
        click.echo(f"  attention expert at {layer}: {r['samples']} of {report['num_samples']} images routed to it, "
                   f"{100 * r['token_share']:.1f}% of tokens, mean gate {gate}")
    if report.get("vacuous"):
        click.echo("⚠️  INCONCLUSIVE: the router sent no checked image to the attention expert, so the backends "
                   "were never compared on attention output; check more or other images (--num-samples, "
                   f"--dataset-path). Exit code {EXIT_VACUOUS}.")
        return
    if not report["backends"]:
        verdict = "PASSED: nothing to compare, no fused backend runs under this policy"
    elif report["passed"]:
        verdict = "PASSED: fused attention matches explicit attention"
    else:
        verdict = "FAILED: a backend exceeds the tolerance (or never ran its fused kernel)"
    click.echo(("✅ " if report["passed"] else "❌ ") + verdict)


@click.command()
@model_option
@click.option("--dataset-path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Dataset whose test images are used (default: the built-in synthetic test set).")
@click.option("--num-samples", type=click.IntRange(min=1), default=32, show_default=True, help="Test images checked.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="auto", show_default=True, callback=check_device_option, help="auto, cpu, cuda, cuda:N.")
@click.option("--dtype", "dtype_name", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--tolerance", type=FiniteFloatRange(min=0), default=None,
              help="Max abs probability difference (default: 1e-4 fp32, 2e-2 bf16, 5e-3 fp16).")
@click.option("--img-size", type=int, default=None, callback=check_img_size_option,
              help="Network input size, a multiple of 32 (default: the checkpoint's).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, callback=check_output_file,
              help="Write the report here.")
def main(checkpoint, dataset_path, num_samples, batch_size, device, dtype_name, tolerance, img_size, json_out):
    """Compare every usable SDPA backend with explicit math attention on a trained checkpoint."""
    import torch

    from engine.tools.attention_check import DTYPES, attention_routing, compare_backends, unit_check
    from engine.checkpoint import CheckpointError
    from engine.inference.predictor import load_inference_model
    from engine.files import atomic_write_text
    from engine.runtime import resolve_device
    from models.attention import attention_backend_from_env

    try:
        attention_backend_from_env()
        dev = resolve_device(device)
        loaded = load_inference_model(checkpoint, dev, img_size=img_size)
    except (CheckpointError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    if dtype_name == "fp16" and dev.type == "cpu":
        raise click.UsageError("--dtype fp16 needs a GPU; use fp32 or bf16 on the CPU.")
    samples, source = _load_samples(dataset_path, loaded.run_config, num_samples)
    click.echo(f"Checkpoint {checkpoint} (epoch {loaded.epoch}), {len(samples)} {source}, input {loaded.img_size}, device {dev}")
    batches, gts = _batches(samples, loaded.img_size, batch_size)
    torch.manual_seed(0)
    report = compare_backends(loaded.model, batches, gts, device=dev, dtype_name=dtype_name, tolerance=tolerance)
    routing = attention_routing(loaded.model, batches, dev, DTYPES[dtype_name])
    report["attention_routing"] = routing
    report["vacuous"] = sum(r["samples"] for r in routing.values()) == 0
    unit = unit_check(dev, dtype_name)
    report["unit_check"] = unit
    report["passed"] = bool(report["passed"] and all(r["passed"] for r in unit) and not report["vacuous"])
    report["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    _print_report(report, unit)
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {json_out}")
    if report["vacuous"] and all(b["passed"] for b in report["backends"].values()):
        sys.exit(EXIT_VACUOUS)
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
