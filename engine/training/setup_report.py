"""The lines a run logs before its first step: device, model, attention path, data and length.

Kept apart from :class:`~engine.training.trainer.Trainer` so that its flow reads without the text,
and so that the text can be checked without a run.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import torch

from engine.training.state import RunState
from models.sdpa_probe import attention_status_line

__all__ = ["setup_lines"]

_PRECISION = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}


def setup_lines(run: RunState, n_train: int, n_val: int, img_size: int, out_dir: Path) -> List[str]:
    """What this run is about to do, one log line per subject.

    Args:
        run: the prepared run (runtime, model, schedule and budget set up).
        n_train: training images.
        n_val: validation images.
        img_size: the side the images are trained at, in pixels.
        out_dir: the checkpoint folder.

    Returns:
        The lines, in the order they are logged.
    """
    rt, m, c = run.runtime, run.model.config, run.runtime.ctx
    mode = f"DDP {'nccl' if rt.device.type == 'cuda' else 'gloo'}" if c.distributed else "single process"
    n_params = sum(p.numel() for p in run.model.parameters())
    eff = run.batch_size * run.accumulation * c.world_size
    length = (f"time budget {run.budget.seconds:.0f} s ({run.budget.left():.0f} s left), schedule sized after "
              f"the first steps" if not run.planned else
              f"{run.schedule.total_steps} steps = {run.schedule.total_steps / run.steps_per_epoch:.4g} epochs "
              f"(stage 1: {run.schedule.stage1_steps} steps)")
    return [
        f"Device {rt.device} x{c.world_size} ({mode}), precision {_PRECISION[rt.amp_dtype]}"
        f"{', torch.compile' if run.compiled else ''}.",
        f"Model {m.backbone}, {m.num_experts} experts top-{m.top_k} per {m.routing} at MoE levels "
        f"{list(m.moe_levels)}, {m.decoder} decoder: {n_params / 1e6:.2f}M parameters.",
        # What actually runs here (fused kernel, PyTorch's math kernel, or the explicit path), not the setting.
        "Attention: " + attention_status_line(rt.device, rt.amp_dtype or torch.float32, model=run.model),
        f"{n_train} training / {n_val} validation images at {img_size}px; batch {run.batch_size} x "
        f"{run.accumulation} accumulation x {c.world_size} process(es) = {eff}; {run.steps_per_epoch} "
        f"steps/epoch; {length}. Checkpoints -> {out_dir}",
    ]
