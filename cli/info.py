"""``train_ultimate.py info``: versions, device, usable SDPA kernels, attention policy, model size."""
from __future__ import annotations

import json

from typing import TYPE_CHECKING

import click

from cli.options import check_output_file

from models.config import CamoXpertConfig
from models.names import FUSED_SDPA_KERNELS, SUPPORTED_BACKBONES, attention_backend_from_env

if TYPE_CHECKING:
    import torch


def collect_info(device: torch.device, backbone: str) -> dict:
    """Everything ``info`` reports, as a JSON-able dict."""
    # Imported here, not at module level: `train_ultimate.py --help` and every other command
    # import this module and must not pay for torch and the model.
    import torch

    from models import CamoXpertConfig, build_model, count_parameters
    from models.sdpa_probe import attention_status_line, default_probe_dtype, probe_sdpa_kernels

    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["compute_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
    dtype = default_probe_dtype(device)
    kernels = probe_sdpa_kernels(device, dtype)
    info["sdpa_probe_dtype"] = str(dtype).replace("torch.", "")
    info["sdpa_kernels"] = {k: {"usable": v.usable, "reason": v.reason} for k, v in kernels.items()}
    info["attention_policy"] = attention_backend_from_env()
    # What a model built now runs here: explicit math, or SDPA and which of its kernels can run.
    info["attention_status"] = attention_status_line(device, dtype)
    policy = info["attention_policy"]
    fused = FUSED_SDPA_KERNELS if policy == "auto" else (policy,) if policy != "math" else ()
    info["attention_fused"] = any(kernels[k].usable for k in fused)
    cfg = CamoXpertConfig(backbone=backbone)
    model = build_model(cfg)
    info["model"] = {
        "backbone": backbone,
        "num_experts": cfg.num_experts,
        "top_k": cfg.top_k,
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
    }
    return info


def format_info(info: dict) -> str:
    """The human-readable status block: versions, device, SDPA kernels, what attention runs, model."""
    from models.sdpa_probe import policy_summary

    lines = [f"PyTorch {info['torch']}  CUDA {info['cuda'] or 'none'}  cuDNN {info['cudnn'] or 'none'}"]
    if "gpu" in info:
        lines.append(
            f"✓ GPU: {info['gpu']} (compute {info['compute_capability']}, {info['gpu_memory_gb']} GB) on {info['device']}"
        )
    else:
        lines.append(f"• Device: {info['device']} (no GPU)")
    for name, v in info["sdpa_kernels"].items():
        mark = "✓" if v["usable"] else "✗"
        why = "" if v["usable"] else f"  ({v['reason']})"
        lines.append(f"  {mark} SDPA kernel {name:<9} [{info['sdpa_probe_dtype']}]{why}")
    lines.append(f"{'✓' if info['attention_fused'] else '•'} Attention: {info['attention_status']}")
    lines.append(f"  Attention policy: {policy_summary()}")
    m = info["model"]
    lines.append(
        f"✓ Model: {m['backbone']}, {m['num_experts']} experts, top-{m['top_k']}: "
        f"{m['params'] / 1e6:.2f}M params ({m['trainable_params'] / 1e6:.2f}M trainable)"
    )
    return "\n".join(lines)


@click.command()
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--backbone", type=click.Choice(SUPPORTED_BACKBONES), default=CamoXpertConfig().backbone,
              show_default=True, help="The model's backbone; the default is train's.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), callback=check_output_file, help="Also write the report as JSON here.")
def info(device: str, backbone: str, json_out: str) -> None:
    """Show torch/CUDA versions, the GPU, usable SDPA kernels, the attention policy and model size."""
    from engine.files import atomic_write_text
    from engine.runtime import resolve_device

    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    report = collect_info(dev, backbone)
    click.echo(format_info(report))
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")
