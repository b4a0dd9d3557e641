"""Exponential moving average of model weights, used for validation and saved in checkpoints."""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
import torch.nn as nn

__all__ = ["ModelEma"]


class ModelEma:
    """EMA copy of a model: ``ema = d * ema + (1 - d) * weights`` after every optimizer step.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so that the average is not
    dominated by the random initial weights in short runs. Floating-point buffers (BatchNorm
    running statistics) are averaged too; integer buffers are copied.

    Args:
        model: the (unwrapped, uncompiled) model to track.
        decay: the final decay.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.num_updates = 0

    def current_decay(self) -> float:
        """Decay used by the next update."""
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        d = self.current_decay()
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.lerp_(value.to(target.dtype), 1.0 - d)
            else:
                target.copy_(value)
        self.num_updates += 1

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The averaged weights (a model state dict)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor], num_updates: int = 0) -> None:
        """Restore averaged weights and the update count."""
        self.module.load_state_dict(state)
        self.num_updates = int(num_updates)

    def extra_state(self) -> Dict[str, Any]:
        """Counters to save next to the weights."""
        return {"num_updates": self.num_updates, "decay": self.decay}
