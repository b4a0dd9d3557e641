"""Mixture of experts over feature maps: per-image top-k routing with static shapes.

No host-device sync and no per-sample Python loop: the router's top-k picks are turned into a
dense (B, E) gate matrix, and each expert runs on a fixed number of samples, so the whole
layer is one static graph (``torch.compile`` captures it without breaks, DDP sees every
parameter used every step).

* Evaluation (and training with ``capacity_factor <= 0``): every expert runs on the whole batch
  and outputs are combined with the gates. Exact, and a sample's output never depends on the
  other samples of its batch.
* Training with ``capacity_factor > 0``: each expert runs on its ``C = ceil(B * k / E * cf)``
  highest-gated samples only (Switch-Transformer capacity). Assignments over capacity are
  dropped for that step, which the balance loss discourages.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn

__all__ = ["MoEOutput", "MoELayer", "Router", "switch_balance_loss"]


class MoEOutput(NamedTuple):
    """Output of :class:`MoELayer`.

    Attributes:
        features: (B, C, H, W) input plus the gated expert updates.
        aux_loss: scalar load-balancing loss (differentiable w.r.t. the router).
        load: (E,) fraction of samples routed to each expert (for logging; no gradient).
    """

    features: torch.Tensor
    aux_loss: torch.Tensor
    load: torch.Tensor


class Router(nn.Module):
    """Image-level router: global average pool, LayerNorm, linear to expert logits."""

    def __init__(self, dim: int, num_experts: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Linear(dim, num_experts)
        # Zero init: every expert starts equally likely, so routing noise spreads the first
        # steps over all experts instead of a random few (which would never train the others).
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (B, C)
        return self.gate(self.norm(pooled))  # (B, E)


def switch_balance_loss(probs: torch.Tensor, dispatch: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch-Transformer load-balancing loss ``E * sum_e f_e * P_e``.

    ``f_e`` (fraction of routing slots sent to expert e) carries no gradient; ``P_e`` (mean router
    probability) does, so minimising the loss pushes probability away from overloaded experts.
    Equals 1.0 at perfect balance.

    Args:
        probs: (B, E) router softmax.
        dispatch: (B, E) 1 where a sample is routed to an expert.
        top_k: experts per sample.
    """
    num_experts = probs.shape[-1]
    fraction = dispatch.float().mean(dim=0) / top_k  # (E,) sums to 1
    importance = probs.float().mean(dim=0)  # (E,) sums to 1
    return num_experts * (fraction.detach() * importance).sum()


class MoELayer(nn.Module):
    """Residual mixture of experts: ``x + sum_e gate_e(x) * expert_e(x)``.

    Args:
        experts: the expert modules, each (B, C, H, W) -> (B, C, H, W).
        dim: channels C (router input).
        top_k: experts chosen per image.
        capacity_factor: training-time expert capacity (see module docstring); <= 0 runs dense.
        router_noise: std of Gaussian noise added to router logits in training, which keeps
            all experts explored early on.
    """

    def __init__(
        self,
        experts: Sequence[nn.Module],
        dim: int,
        top_k: int = 2,
        capacity_factor: float = 1.25,
        router_noise: float = 0.5,
    ):
        super().__init__()
        if not 1 <= top_k <= len(experts):
            raise ValueError(f"top_k must be between 1 and the number of experts ({len(experts)}), got {top_k}.")
        self.experts = nn.ModuleList(experts)
        self.num_experts = len(experts)
        self.top_k = top_k
        self.capacity_factor = float(capacity_factor)
        self.router_noise = float(router_noise)
        self.router = Router(dim, self.num_experts)

    def capacity(self, batch: int) -> int:
        """Samples each expert processes for a batch of ``batch`` (``batch`` means dense)."""
        if not self.training or self.capacity_factor <= 0:
            return batch
        return min(batch, max(1, math.ceil(batch * self.top_k / self.num_experts * self.capacity_factor)))

    def route(self, x: torch.Tensor):
        """Router probabilities (B, E), gates (B, E) and dispatch mask (B, E)."""
        logits = self.router(x)
        if self.training and self.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.router_noise
        probs = logits.float().softmax(dim=-1)  # (B, E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # (B, k)
        if self.top_k > 1:
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        # With k == 1 the raw probability is the gate (as in Switch); renormalising it to 1
        # would cut the router off from the task gradient.
        gates = torch.zeros_like(probs).scatter(1, top_i, top_p)
        return probs, gates, gates > 0

    def forward(self, x: torch.Tensor) -> MoEOutput:
        B, E = x.shape[0], self.num_experts
        probs, gates, dispatch = self.route(x)
        cap = self.capacity(B)
        # Few, batched ops on purpose: at these map sizes the layer's cost is kernel launches,
        # not arithmetic, so the combine is one stack + one weighted reduction.
        if cap >= B:
            ys = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, C, H, W)
            out = (ys * gates.view(B, E, 1, 1, 1).to(ys.dtype)).sum(dim=1)  # (B, C, H, W)
        else:
            w, idx = gates.t().topk(cap, dim=1)  # (E, cap): each expert's highest-gated samples
            ys = torch.stack([expert(x.index_select(0, idx[e])) for e, expert in enumerate(self.experts)])
            ys = ys * w.view(E, cap, 1, 1, 1).to(ys.dtype)  # (E, cap, C, H, W); zero gates fill spare slots
            out = torch.zeros_like(x).index_add(0, idx.flatten(), ys.flatten(0, 1).to(x.dtype))
        aux = switch_balance_loss(probs, dispatch, self.top_k)
        load = dispatch.float().mean(dim=0).detach()  # (E,)
        return MoEOutput(x + out.to(x.dtype), aux, load)
