"""AdamW parameter groups and the two-stage warmup + cosine learning-rate schedule.

Stage 1 trains everything but the (frozen) backbone at the full learning rate; stage 2
fine-tunes the whole model at ``lr * stage2_lr_scale``, the backbone at a further
``backbone_lr_scale``. Each stage has its own linear warmup and cosine decay, so unfreezing the
backbone never meets a learning rate that the fresh, random-gradient backbone cannot take.

The schedule is a pure function of the optimizer step, so its state is one integer.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

__all__ = ["TwoStageSchedule", "build_optimizer", "param_groups", "set_group_lr"]


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Split parameters into backbone/head x decay/no-decay groups.

    Biases and normalisation weights (tensors with fewer than 2 dims) get no weight decay, as
    in nanoGPT. All parameters are listed, frozen or not, so the optimizer's groups do not change
    when the backbone is unfrozen (which keeps checkpoints of both stages loadable).
    """
    groups = {
        (is_backbone, decay): []
        for is_backbone in (True, False)
        for decay in (True, False)
    }
    for name, param in model.named_parameters():
        groups[(name.startswith("backbone."), param.ndim >= 2)].append(param)
    out = []
    for (is_backbone, decay), params in groups.items():
        if params:
            out.append({
                "params": params,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'backbone' if is_backbone else 'head'}_{'decay' if decay else 'no_decay'}",
                "is_backbone": is_backbone,
            })
    return out


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999),
                    device_type: str = "cpu", capturable_on: Optional[torch.device] = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, the fused kernel where torch has it (CUDA, and CPU since
    torch 2.4): one kernel for all parameters, and it can skip a non-finite step on the device.

    With ``capturable_on`` (a CUDA device) the step counters and every group's learning rate
    live on that device, so a step captured in a CUDA graph reads the rates the schedule writes
    in place (:func:`set_group_lr`).
    """
    if capturable_on is not None:
        groups = param_groups(model, weight_decay)
        for group in groups:
            group["lr"] = torch.tensor(float(lr), device=capturable_on)  # one tensor per group
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True, capturable=True)
    try:
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas))


def set_group_lr(group: dict, lr: float) -> None:
    """Set a parameter group's rate: in place when it is a device tensor (a captured step reads it)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


class TwoStageSchedule:
    """Per-step learning rates for the two training stages.

    Args:
        optimizer: optimizer whose groups carry ``is_backbone``.
        base_lr: peak learning rate of stage 1.
        total_steps: optimizer steps of the whole run.
        stage1_steps: optimizer steps with the backbone frozen (0: single stage).
        warmup_steps: linear warmup at the start of each stage.
        min_lr_ratio: the cosine ends at ``peak * min_lr_ratio``.
        stage2_lr_scale: stage 2 peak relative to ``base_lr`` (only when there is a stage 1).
        backbone_lr_scale: backbone learning rate relative to the rest when it trains.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        total_steps: int,
        stage1_steps: int = 0,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.01,
        stage2_lr_scale: float = 0.5,
        backbone_lr_scale: float = 0.1,
    ):
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.total_steps = max(1, int(total_steps))
        self.stage1_steps = max(0, min(int(stage1_steps), self.total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.min_lr_ratio = float(min_lr_ratio)
        self.stage2_lr_scale = float(stage2_lr_scale)
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.step_count = 0
        self._apply()

    def stage(self, step: int = None) -> int:
        """1 while the backbone is frozen, else 2."""
        step = self.step_count if step is None else step
        return 1 if step < self.stage1_steps else 2

    def lr_at(self, step: int, is_backbone: bool = False) -> float:
        """Learning rate of the update with 0-based index ``step``."""
        if step < self.stage1_steps:
            local, length, peak = step, self.stage1_steps, self.base_lr
            if is_backbone:
                return 0.0  # frozen
        else:
            local, length = step - self.stage1_steps, self.total_steps - self.stage1_steps
            peak = self.base_lr * (self.stage2_lr_scale if self.stage1_steps > 0 else 1.0)
            if is_backbone:
                peak *= self.backbone_lr_scale
        length = max(1, length)
        warmup = min(self.warmup_steps, length // 2)
        if local < warmup:
            return peak * (local + 1) / warmup
        progress = min(1.0, (local - warmup) / max(1, length - warmup))
        return peak * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _apply(self) -> None:
        capturable = bool(self.optimizer.defaults.get("capturable"))
        for group in self.optimizer.param_groups:
            value = self.lr_at(self.step_count, group.get("is_backbone", False))
            device = group["params"][0].device if group["params"] else None
            lr = group["lr"]
            if capturable and device is not None and not (isinstance(lr, torch.Tensor) and lr.device == device):
                # A capturable optimizer reads its rates on the device (a resumed state may hold
                # floats or CPU tensors): give the group its own device tensor before any capture.
                group["lr"] = torch.tensor(value, device=device)
            else:
                set_group_lr(group, value)

    def step(self) -> None:
        """Advance one optimizer step and set the groups' learning rates for the next one."""
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        """Current learning rate of each group (computed, so device-held rates cost no sync)."""
        return [self.lr_at(self.step_count, g.get("is_backbone", False)) for g in self.optimizer.param_groups]

    def resize(self, total_steps: int, stage1_steps: int, warmup_steps: int) -> None:
        """Change the run's length (a time budget sized it) and re-apply the current rates."""
        self.total_steps = max(1, int(total_steps))
        self.stage1_steps = max(0, min(int(stage1_steps), self.total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self._apply()

    def state_dict(self) -> Dict[str, int]:
        """Plain state: the step, and the sizes (a resumed run that continues this schedule keeps them)."""
        return {"step_count": self.step_count, "total_steps": self.total_steps, "stage1_steps": self.stage1_steps,
                "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Restore the step and re-apply its learning rates.

        The sizes are not restored here: the resumed run's setup decides them before this is
        called (:func:`engine.training.setup.build_run_state` keeps the saved ones unless the
        resume changes the run's length, and a time budget or a new batch layout sizes them again).
        """
        self.step_count = int(state["step_count"])
        self._apply()
