"""CamoXpert: EdgeNeXt backbone -> per-level MoE -> FPN decoder, built from one config."""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
import torch.nn as nn

from .backbone import build_backbone
from .config import CamoXpertConfig
from .decoder import build_decoder
from .experts import build_experts
from .moe import MoELayer

__all__ = ["CamoXpert", "CamoXpertConfig", "CamoXpertOutput", "build_model", "count_parameters"]

# Attention never runs on tokens finer than this stride (24x24 = 576 tokens at 384 px).
ATTENTION_MIN_STRIDE = 16


class CamoXpertOutput(NamedTuple):
    """Training-mode output.

    Attributes:
        logits: (B, 1, H, W) main prediction at the input size.
        side_logits: deep-supervision logits, each (B, 1, H/4, W/4); empty when disabled.
        aux_loss: scalar MoE load-balancing loss (mean over MoE layers).
        expert_load: (num_moe_layers, E) fraction of images routed to each expert (each row
            sums to top_k); rows follow ``CamoXpert.moe_layer_names``.
        layer_aux_loss: (num_moe_layers,) balance loss of each MoE layer (no gradient; for logs).
    """

    logits: torch.Tensor
    side_logits: List[torch.Tensor]
    aux_loss: torch.Tensor
    expert_load: torch.Tensor
    layer_aux_loss: torch.Tensor


class CamoXpert(nn.Module):
    """Camouflaged object detector.

    In eval mode ``model(images)`` returns (B, 1, H, W) logits; in training mode a
    :class:`CamoXpertOutput`. H and W must be multiples of 32.

    Args:
        config: the model configuration.
    """

    def __init__(self, config: CamoXpertConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, config.pretrained, config.pretrained_weights)
        dim = config.dim
        # Plain 1x1 laterals, as in FPN: the decoder's fuse convs normalise after merging.
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in self.backbone.out_channels)
        names = config.experts[: config.num_experts]
        self.moe = nn.ModuleDict()
        for level in config.moe_levels if config.num_experts else ():
            stride = self.backbone.strides[level]
            experts = build_experts(
                names,
                dim,
                num_heads=config.num_heads,
                use_flash_attn=config.use_flash_attn,
                pool=max(1, ATTENTION_MIN_STRIDE // stride),
            )
            self.moe[str(level)] = MoELayer(experts, dim, config.top_k, config.routing, config.router_noise)
        self.decoder = build_decoder(
            config.decoder, dim, num_levels=len(self.backbone.out_channels), side_outputs=config.deep_supervision
        )

    def forward(self, images: torch.Tensor):
        B, _, H, W = images.shape
        if H % 32 or W % 32:
            raise ValueError(
                f"Input size {H}x{W} is not divisible by 32 (the backbone's output stride). "
                f"Consider resizing or padding to ({-(-H // 32) * 32}, {-(-W // 32) * 32})."
            )
        feats = [lat(f) for lat, f in zip(self.lateral, self.backbone(images))]
        aux_losses, loads = [], []
        for key, moe in self.moe.items():
            level = int(key)
            feats[level], aux, load = moe(feats[level])
            aux_losses.append(aux)
            loads.append(load)
        with_sides = self.training and self.config.deep_supervision
        logits, sides = self.decoder(feats, (H, W), with_sides=with_sides)
        if not self.training:
            return logits
        if aux_losses:
            layer_aux = torch.stack(aux_losses)  # (L,)
            aux_loss = layer_aux.mean()
            expert_load = torch.stack(loads)  # (L, E)
        else:
            layer_aux = logits.new_zeros((0,))
            aux_loss = logits.new_zeros(())
            expert_load = logits.new_zeros((0, self.config.num_experts))
        return CamoXpertOutput(logits, sides, aux_loss, expert_load, layer_aux.detach())

    @property
    def moe_layer_names(self) -> List[str]:
        """Names of the MoE layers (``stride16`` ...), in the order of ``expert_load`` rows."""
        return [f"stride{self.backbone.strides[int(k)]}" for k in self.moe]

    @property
    def expert_names(self) -> List[str]:
        """Expert names, in the order of ``expert_load`` columns."""
        return list(self.config.experts[: self.config.num_experts])


def build_model(config: Optional[CamoXpertConfig] = None, **overrides) -> CamoXpert:
    """Build a :class:`CamoXpert` from a config and/or keyword overrides.

    Example:
        ``build_model(backbone="edgenext_xx_small", num_experts=7, top_k=2, use_flash_attn=True)``
    """
    if config is None:
        config = CamoXpertConfig.from_dict(overrides)
    elif overrides:
        config = CamoXpertConfig.from_dict({**config.to_dict(), **overrides})
    return CamoXpert(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
