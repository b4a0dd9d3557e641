"""On-device running sums of the training losses and of the router's health.

Every optimizer step adds to tensors on the compute device, so no step waits for the GPU; the
sums are read (one host sync) only when a line is logged or a validation record is written.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from engine.distributed import all_reduce_sum

__all__ = ["LOSS_TERMS", "StepMeters"]

LOSS_TERMS = ("loss", "main", "side", "aux")


class StepMeters:
    """Sums since the last validation (``interval``) and since the last log line (``window``).

    Args:
        device: where the sums live.
        num_layers: MoE layers of the model (rows of ``expert_load``).
        num_experts: experts per layer.
    """

    def __init__(self, device: torch.device, num_layers: int, num_experts: int):
        self.device = device
        self.shape = (num_layers, num_experts)
        # [loss, main, side, aux, good steps, skipped steps]
        self.interval = torch.zeros(6, device=device, dtype=torch.float64)
        self.window = torch.zeros(6, device=device, dtype=torch.float64)
        self.load = torch.zeros(self.shape, device=device, dtype=torch.float64)  # (L, E) summed loads
        self.layer_aux = torch.zeros(num_layers, device=device, dtype=torch.float64)  # (L,)
        self.consecutive_bad = torch.zeros((), device=device, dtype=torch.float64)

    @torch.no_grad()
    def add(self, terms: torch.Tensor, bad: torch.Tensor, load: torch.Tensor, layer_aux: torch.Tensor) -> None:
        """Add one optimizer step.

        Args:
            terms: (4,) mean loss terms of the step (``LOSS_TERMS`` order).
            bad: 0-dim bool, the step was skipped (non-finite loss or gradient).
            load: (L, E) mean expert load of the step.
            layer_aux: (L,) mean balance loss per MoE layer.
        """
        good = (~bad).to(torch.float64)
        row = torch.cat([terms.to(torch.float64) * good, good.reshape(1), (1.0 - good).reshape(1)])  # (6,)
        self.interval += row
        self.window += row
        if load.numel():
            self.load += load.to(torch.float64) * good
            self.layer_aux += layer_aux.to(torch.float64) * good
        self.consecutive_bad.mul_(1.0 - good).add_(1.0 - good)  # resets on a good step

    def read_window(self) -> Dict[str, Optional[float]]:
        """Mean loss terms since the last call (this rank only; for log lines), then reset."""
        values = self.window.tolist()
        self.window.zero_()
        n = values[4]
        out: Dict[str, Optional[float]] = {k: (values[i] / n if n else None) for i, k in enumerate(LOSS_TERMS)}
        out["skipped"] = values[5]
        return out

    def read_interval(self, layer_names: List[str], expert_names: List[str], top_k: int) -> Dict[str, Any]:
        """Means since the last call over every rank (a collective), then reset.

        Returns:
            ``train_loss``, ``train_main_loss``, ``train_side_loss``, ``train_aux_loss`` means (None when every step was skipped), ``skipped_steps``, and
            ``router``: per MoE layer, each expert's share of routing slots (sums to 1) and the
            layer's mean balance loss.
        """
        flat = torch.cat([self.interval, self.load.flatten(), self.layer_aux])
        all_reduce_sum(flat)
        values = flat.tolist()
        n = values[4]
        names = ("train_loss", "train_main_loss", "train_side_loss", "train_aux_loss")
        out: Dict[str, Any] = {k: (values[i] / n if n else None) for i, k in enumerate(names)}
        out["skipped_steps"] = int(values[5])
        L, E = self.shape
        load = values[6:6 + L * E]
        aux = values[6 + L * E:]
        router = {}
        for li, name in enumerate(layer_names[:L]):
            shares = {expert_names[e]: (load[li * E + e] / (n * top_k) if n else None) for e in range(E)}
            router[name] = {"share": shares, "balance_loss": aux[li] / n if n else None}
        out["router"] = router
        self.interval.zero_()
        self.load.zero_()
        self.layer_aux.zero_()
        return out

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Unread interval sums (saved mid-interval so a resumed run reports the same means)."""
        return {"interval": self.interval.cpu(), "load": self.load.cpu(), "layer_aux": self.layer_aux.cpu(),
                "consecutive_bad": self.consecutive_bad.cpu()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_dict` (ignored when the model's MoE shape changed)."""
        if state.get("load") is not None and tuple(state["load"].shape) != self.shape:
            return
        for key in ("interval", "load", "layer_aux", "consecutive_bad"):
            if state.get(key) is not None:
                getattr(self, key).copy_(state[key].to(self.device))
