"""``train_ultimate.py benchmark``: full model vs backbone alone, attention backends, data loading."""
from __future__ import annotations

import json
import time
from typing import Optional

import click

from cli.options import check_device_option, check_img_size_option, check_output_file
from models.config import CamoXpertConfig
from models.names import SUPPORTED_BACKBONES

# Counts that must be at least 1 (0 or less would divide by zero or take the median of nothing).
_POSITIVE = click.IntRange(min=1)


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def format_report(r: dict) -> str:
    """A short human-readable table of a :func:`engine.tools.benchmark.run_benchmark` result."""
    where = r["gpu"] or r["device"]
    lines = [
        f"CamoXpert benchmark on {where}: {r['backbone']}, batch {r['batch_size']}, "
        f"{r['img_size']}x{r['img_size']}, {r['dtype']}{', compiled (' + r['compile'] + ')' if r['compile'] else ''}",
        f"{'':<16}{'train img/s':>12}{'infer img/s':>12}{'b1 latency ms':>15}{'b1 graph ms':>13}{'peak train MB':>15}",
    ]
    for key, label in (("backbone_alone", "backbone alone"), ("model", "CamoXpert")):
        m = r[key]
        lines.append(
            f"{label:<16}{_fmt(m['train_img_per_s']):>12}{_fmt(m['infer_img_per_s']):>12}"
            f"{_fmt(m.get('latency_b1_ms'), '.2f'):>15}{_fmt(m.get('latency_b1_cuda_graph_ms'), '.2f'):>13}"
            f"{_fmt(m['peak_train_mem_mb'], '.0f'):>15}"
        )
    ratio = r["ratio_to_backbone"]
    line = f"ratio to backbone: train {ratio['train']:.2f}, inference {ratio['inference']:.2f}"
    for key, what in (("train_cuda_graph", "train"), ("infer_cuda_graph", "inference")):
        name = key.replace("infer_", "inference_")
        if name in ratio:
            line += (f", {what} replayed from a CUDA graph {ratio[name]:.2f} ({_fmt(r['model'][key + '_img_per_s'])} "
                     f"against {_fmt(r['backbone_alone'][key + '_img_per_s'])} img/s)")
    lines.append(line)
    spread = r.get("ratio_to_backbone_quartiles")
    if spread:
        lines.append("ratio per matched pair of calls, quartiles: " + ", ".join(
            f"{name.replace('_cuda_graph', ' replayed').replace('_', ' ')} {q['q1']:.2f}-{q['q3']:.2f}"
            for name, q in spread.items()))
    firsts = [(label, r[key]) for key, label in (("backbone_alone", "backbone"), ("model", "CamoXpert"))
              if "first_train_step_s" in r[key]]
    if firsts:
        what = "compile + first call" if r["compile"] else "first call (cuDNN kernel search)"
        lines.append(f"{what}: " + "; ".join(f"{label} train {m['first_train_step_s']:.1f} s, inference "
                                             f"{m['first_infer_s']:.1f} s" for label, m in firsts))
    if "graph_breaks" in r:
        lines.append(f"graph breaks: train {r['graph_breaks']['train']}, eval {r['graph_breaks']['eval']}")
    for name, b in r.get("model_attention_backends", {}).items():
        lines.append(
            f"  model with attention {name:<9}: "
            + (f"{b['infer_img_per_s']:.1f} img/s" if b["usable"] else f"not usable ({b['reason'][:60]})")
        )
    unit = r.get("attention_unit")
    if unit:
        lines.append(f"attention alone at {tuple(unit['shape'])} (B, heads, N, head_dim):")
        for name, b in unit["results"].items():
            if b["usable"]:
                speed = (
                    f"  x{b['fwd_speedup_vs_math']:.2f} / x{b['fwd_bwd_speedup_vs_math']:.2f} vs math"
                    if "fwd_speedup_vs_math" in b else ""
                )
                lines.append(f"  {name:<14} fwd {b['fwd_ms']:.3f} ms  fwd+bwd {b['fwd_bwd_ms']:.3f} ms{speed}")
            else:
                lines.append(f"  {name:<14} not usable ({b['reason'][:60]})")
    data = r.get("data_loader")
    if data:
        lines.append(f"data loader (1 worker, decode+augment {data.get('img_size')} px): {data.get('img_per_s', 0):.1f} img/s")
    return "\n".join(lines)


@click.command()
@click.option("--device", default="auto", show_default=True, callback=check_device_option, help="auto, cpu, cuda, cuda:N.")
@click.option("--batch-size", type=_POSITIVE, default=None, help="Default: 16 on GPU, 2 on CPU.")
@click.option("--img-size", type=int, default=None, callback=check_img_size_option,
              help="A multiple of 32. Default: 384 on GPU, 128 on CPU.")
@click.option("--backbone", type=click.Choice(SUPPORTED_BACKBONES), default=CamoXpertConfig().backbone,
              show_default=True, help="The model's backbone; the default is train's.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile both the model and the backbone.")
@click.option("--compile-mode", type=click.Choice(["default", "reduce-overhead", "max-autotune"]), default="default",
              show_default=True, help="torch.compile mode; reduce-overhead replays CUDA graphs.")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Warm-up runs per measurement (default 10 GPU / 2 CPU).")
@click.option("--iters", type=_POSITIVE, default=None, help="Timed runs per measurement (default 30 GPU / 3 CPU).")
@click.option("--rounds", type=_POSITIVE, default=3, show_default=True, help="Alternating measurement rounds (medians kept).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--skip-attention", is_flag=True, help="Skip the attention-backend comparison.")
@click.option("--skip-data", is_flag=True, help="Skip the data-loader measurement.")
@click.option("--set", "overrides", multiple=True, help="Model config override, e.g. --set dim=96.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), callback=check_output_file, help="Write the full result as JSON here.")
def benchmark(device, batch_size, img_size, backbone, precision, compile_, compile_mode, warmup, iters, rounds, channels_last,
              skip_attention, skip_data, overrides, json_out) -> None:
    """Measure training/inference speed and memory of CamoXpert against its backbone alone."""
    from engine.tools.benchmark import BenchmarkSettings, run_benchmark
    from engine.files import atomic_write_text
    from engine.runtime import autocast_dtype, resolve_device

    try:
        dev = resolve_device(device)
        dtype = autocast_dtype(dev, precision)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    gpu = dev.type == "cuda"
    from engine.config import parse_set_overrides

    from models import CamoXpertConfig

    try:  # the project's one --set parser; here its keys are model config keys
        model_overrides = parse_set_overrides(overrides)
    except ValueError as exc:
        raise click.UsageError(f"{exc} Model config overrides are KEY=VALUE, e.g. --set dim=96.") from None
    try:  # a wrong key or value is a usage error before anything is built
        CamoXpertConfig.from_dict({"backbone": backbone, **model_overrides})
    except ValueError as exc:
        raise click.UsageError(f"--set: {exc}") from None
    except TypeError as exc:  # e.g. dim=[ read as text, where a number is needed
        raise click.UsageError(f"--set {' '.join(overrides)}: a value has the wrong type for the model config "
                               f"({exc}).") from None

    started = time.perf_counter()

    def say(msg: str) -> None:
        # elapsed seconds: compiling takes minutes, and this shows which part took them
        click.echo(f"… [{time.perf_counter() - started:5.0f} s] {msg}", err=True)

    settings = BenchmarkSettings(
        backbone=backbone,
        batch_size=batch_size or (16 if gpu else 2),
        img_size=img_size or (384 if gpu else 128),
        dtype=dtype,
        warmup=warmup if warmup is not None else (10 if gpu else 2),
        iters=iters if iters is not None else (30 if gpu else 3),
        compile=compile_,
        compile_mode=compile_mode,
        channels_last=channels_last,
        rounds=rounds,
        attention_backends=not skip_attention,
        model_overrides=model_overrides,
    )
    result = run_benchmark(dev, settings, progress=say)
    if not skip_data:
        result["data_loader"] = _data_loader_throughput(result["img_size"])
    click.echo(format_report(result))
    if json_out:
        atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_out}")


def _data_loader_throughput(img_size: int) -> Optional[dict]:
    """Decode+augment img/s for one worker, when the data stack is installed."""
    try:
        from datasets.benchmark import benchmark_data_pipeline
    except ImportError as exc:  # the data stack is optional for a model-only benchmark
        return {"skipped": f"data stack not importable: {exc}"}
    return benchmark_data_pipeline(img_size=img_size)
