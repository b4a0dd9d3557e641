"""Exponential moving average of model weights, used for validation and saved in checkpoints."""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

__all__ = ["ModelEma"]


class ModelEma:
    """EMA copy of a model: ``ema = d * ema + (1 - d) * weights`` after every optimizer step.

    The update is three fused ``torch._foreach_*`` operations over all floating-point tensors
    (as in timm's ``ModelEmaV3``) instead of one kernel per tensor, with its weight read from the
    device so that no step waits for the GPU. The decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that short runs are not dominated
    by the random initial weights: 0.5 after 8 updates, 0.99 after about 900, 0.999 after
    about 9000. Floating-point buffers (BatchNorm running statistics) are averaged too;
    integer buffers are copied.

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
        self._weight: Optional[torch.Tensor] = None  # 0-dim, on the model's device
        self._pairs: Optional[Tuple[int, List[torch.Tensor], List[torch.Tensor], List[Tuple[torch.Tensor, torch.Tensor]]]] = None

    def current_decay(self) -> float:
        """Decay used by the next update."""
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    def _tensors(self, model: nn.Module):
        # The tensor lists are built once per source model: parameters and buffers are updated
        # in place by the optimizer and BatchNorm, so the same tensors stay valid.
        if self._pairs is None or self._pairs[0] != id(model):
            ema_state = self.module.state_dict(keep_vars=True)
            dst, src, ints = [], [], []
            for name, value in model.state_dict(keep_vars=True).items():
                target = ema_state[name].data
                value = value.data
                if target.dtype.is_floating_point:
                    dst.append(target)
                    src.append(value)
                else:
                    ints.append((target, value))
            self._pairs = (id(model), dst, src, ints)
        return self._pairs[1:]

    @torch.no_grad()
    def update(self, model: nn.Module, apply: Optional[torch.Tensor] = None) -> None:
        """Fold the current weights of ``model`` into the average.

        Args:
            model: the model whose weights to fold in (same architecture).
            apply: optional 0-dim float tensor, 1 to update and 0 to leave the average as it is
                (a skipped optimizer step), decided on the device without a host sync.
        """
        self.prepare()
        self.fold(model, apply)
        self.num_updates += 1

    def prepare(self) -> None:
        """Write the next update's weight ``1 - decay`` into the device tensor :meth:`fold` reads.

        Separate from :meth:`fold` so that a fold captured in a CUDA graph reads each step's
        weight (a captured ``fill_`` would replay the first step's number forever).
        """
        weight = 1.0 - self.current_decay()
        if self._weight is None:
            first = next((t for t in self.module.state_dict().values() if t.dtype.is_floating_point), None)
            self._weight = torch.tensor(weight, device=first.device if first is not None else "cpu")
        else:
            self._weight.fill_(weight)

    @torch.no_grad()
    def fold(self, model: nn.Module, apply: Optional[torch.Tensor] = None) -> None:
        """``ema += weight * (model - ema)`` on the device, with the weight :meth:`prepare` wrote."""
        dst, src, ints = self._tensors(model)
        weight = self._weight if apply is None else apply.to(self._weight.device, torch.float32) * self._weight
        if dst:
            if any(s.dtype != d.dtype for s, d in zip(src, dst)):
                src = [s.to(d.dtype) for s, d in zip(src, dst)]
            # ema + weight * (model - ema). Not _foreach_lerp_: it takes its weight as a Python
            # scalar, and turning the device tensor into one waits for the GPU on every step (and
            # is illegal inside a CUDA-graph capture). _foreach_mul_ has a 0-dim tensor overload.
            diffs = torch._foreach_sub(src, dst)
            torch._foreach_mul_(diffs, weight)
            torch._foreach_add_(dst, diffs)
        for target, value in ints:
            target.copy_(value)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The averaged weights (a model state dict)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor], num_updates: int = 0) -> None:
        """Restore averaged weights and the update count."""
        self.module.load_state_dict(state)
        self.num_updates = int(num_updates)
