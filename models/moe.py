"""Mixture of experts over feature maps: top-k routing per token (pixel) or per image.

Every expert runs on the whole (normalised) map and the router's top-k choice becomes a dense
gate map, so the layer is one static graph: no host-device sync, no per-sample Python loop, no
capacity drops, ``torch.compile`` captures it without breaks, DDP sees every parameter used
every step, and a sample's output never depends on the other samples of its batch.

At the stride-32 (default) and stride-16 maps the layer sits on (144 and 576 tokens at 384 px), running
every expert densely costs few FLOPs; what it saves is the gather/scatter of a sparse dispatch
and the samples a capacity limit would drop.

For the same reason the layer computes in its parameters' dtype (float32) under autocast: on maps
this small the GPU time is set by kernel launches, not arithmetic, and autocast would add a
cast of every expert weight (and of its gradient) to each step. Only experts that ask for it
(``runs_under_autocast``: the attention expert, whose fused SDPA kernels need half precision)
run under the caller's autocast.

* ``routing="token"`` (default): each pixel picks its own top-k experts, so object, boundary
  and background can use different experts within one image.
* ``routing="image"``: the router sees the pooled map and one top-k choice holds for the image.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn as nn

from .names import ROUTING_MODES
from .precision import pause_autocast

__all__ = ["ROUTING_MODES", "MoEOutput", "MoELayer", "Router", "switch_balance_loss"]



class MoEOutput(NamedTuple):
    """Output of :class:`MoELayer`.

    Attributes:
        features: (B, C, H, W) input plus the gated expert updates.
        aux_loss: scalar load-balancing loss (differentiable w.r.t. the router); None in eval mode.
        load: (E,) fraction of routing choices per expert, times top_k (sums to top_k; no
            gradient): the share of tokens (or images) that picked each expert; None in eval mode.
    """

    features: torch.Tensor
    aux_loss: Optional[torch.Tensor]
    load: Optional[torch.Tensor]


class Router(nn.Module):
    """Expert logits per token (1x1 conv) or per image (the same conv on the pooled map).

    Args:
        dim: input channels.
        num_experts: experts to choose from.
        routing: ``"token"`` or ``"image"``.
    """

    def __init__(self, dim: int, num_experts: int, routing: str = "token"):
        super().__init__()
        if routing not in ROUTING_MODES:
            raise ValueError(f"Unknown routing {routing!r}. Valid: {', '.join(ROUTING_MODES)}.")
        self.routing = routing
        self.gate = nn.Conv2d(dim, num_experts, 1)
        # Zero init: every expert starts equally likely, so routing noise spreads the first
        # steps over all experts instead of a random few (which would never train the others).
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.routing == "image":
            x = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return self.gate(x)  # (B, E, H, W) or (B, E, 1, 1)


def switch_balance_loss(probs: torch.Tensor, dispatch: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch-Transformer load-balancing loss ``E * sum_e f_e * P_e`` over all routed tokens.

    ``f_e`` (fraction of routing slots sent to expert e) carries no gradient; ``P_e`` (mean router
    probability) does, so minimising the loss pushes probability away from overloaded experts.
    Equals 1.0 at perfect balance.

    Args:
        probs: (B, E, ...) router softmax over dim 1.
        dispatch: (B, E, ...) 1 where a token is routed to an expert.
        top_k: experts per token.
    """
    num_experts = probs.shape[1]
    reduce_dims = [d for d in range(probs.dim()) if d != 1]
    fraction = dispatch.float().mean(dim=reduce_dims) / top_k  # (E,) sums to 1
    importance = probs.float().mean(dim=reduce_dims)  # (E,) sums to 1
    return num_experts * (fraction.detach() * importance).sum()


class MoELayer(nn.Module):
    """Residual mixture of experts: ``x + sum_e gate_e * expert_e(norm(x))``.

    The experts see a batch-normalised copy of the map (backbone features differ in scale from
    level to level) and each expert's last layer starts at zero, so at initialisation the layer
    is the identity and the model starts as its plain decoder; the experts grow in from there.

    Args:
        experts: the expert modules, each (B, C, H, W) -> (B, C, H, W).
        dim: channels C.
        top_k: experts chosen per token (or image).
        routing: ``"token"`` or ``"image"`` (see the module docstring).
        router_noise: std of Gaussian noise added to router logits in training, which keeps
            all experts explored early on.
    """

    def __init__(
        self,
        experts: Sequence[nn.Module],
        dim: int,
        top_k: int = 2,
        routing: str = "token",
        router_noise: float = 0.5,
    ):
        super().__init__()
        if not 1 <= top_k <= len(experts):
            raise ValueError(f"top_k must be between 1 and the number of experts ({len(experts)}), got {top_k}.")
        self.experts = nn.ModuleList(experts)
        self.num_experts = len(experts)
        self.top_k = top_k
        self.router_noise = float(router_noise)
        self.norm = nn.BatchNorm2d(dim)
        self.router = Router(dim, self.num_experts, routing)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x).float()  # (B, E, h, w)
        if self.training and self.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.router_noise
        return logits

    def _gates(self, logits: torch.Tensor, probs: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, E, h, w) gates: each token's top-k probabilities, zero for the experts it skips."""
        top_logits, top_i = logits.topk(self.top_k, dim=1)  # (B, k, h, w)
        if self.top_k > 1:
            # The top-k probabilities renormalised to sum to 1 are the softmax over the chosen
            # logits alone: the same gates without a full softmax, a sum and a division.
            top_p = top_logits.softmax(dim=1)
        else:
            # With k == 1 the raw probability is the gate (as in Switch); renormalising it to 1
            # would cut the router off from the task gradient.
            top_p = (logits.softmax(dim=1) if probs is None else probs).gather(1, top_i)
        return torch.zeros_like(logits).scatter(1, top_i, top_p)

    def route(self, x: torch.Tensor):
        """Router probabilities, gates and dispatch mask, each (B, E, h, w) (h = w = 1 per image)."""
        logits = self._logits(x)
        probs = logits.softmax(dim=1)
        gates = self._gates(logits, probs)
        return probs, gates, gates > 0

    def forward(self, x: torch.Tensor) -> MoEOutput:
        # Computes in the parameters' dtype: no per-weight casts (module docstring). ``outer`` is
        # the caller's autocast dtype (None without autocast), for the experts that run under it.
        paused, outer = pause_autocast(x.device.type)
        with paused:
            h = self.norm(x.to(self.norm.weight.dtype))
            logits = self._logits(h)
            # Full probabilities feed only the balance loss, a training signal: eval skips them.
            probs = logits.softmax(dim=1) if self.training else None
            gates = self._gates(logits, probs)
            # One stack + one weighted reduction: at these map sizes the cost is kernel launches.
            ys = torch.stack([self._expert(expert, h, outer) for expert in self.experts], dim=1)  # (B, E, C, H, W)
            out = (ys * gates.unsqueeze(2).to(ys.dtype)).sum(dim=1)  # (B, C, H, W)
        if not self.training:
            return MoEOutput(x + out.to(x.dtype), None, None)
        dispatch = gates > 0
        aux = switch_balance_loss(probs, dispatch, self.top_k)
        load = dispatch.float().mean(dim=[d for d in range(dispatch.dim()) if d != 1]).detach()  # (E,)
        return MoEOutput(x + out.to(x.dtype), aux, load)

    @staticmethod
    def _expert(expert: nn.Module, h: torch.Tensor, outer: Optional[torch.dtype]) -> torch.Tensor:
        """One expert's update, under the caller's autocast if the expert asks for it."""
        if outer is None or not getattr(expert, "runs_under_autocast", False):
            return expert(h)
        with torch.autocast(h.device.type, dtype=outer):
            return expert(h).to(h.dtype)
