"""CamoXpert: EdgeNeXt backbone -> per-level MoE -> FPN decoder, built from one config."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from .backbone import build_backbone
from .decoder import DECODERS, build_decoder
from .experts import EXPERT_TYPES, build_experts
from .moe import ROUTING_MODES, MoELayer

__all__ = ["CamoXpert", "CamoXpertConfig", "CamoXpertOutput", "build_model", "count_parameters"]

# Attention never runs on tokens finer than this stride (24x24 = 576 tokens at 384 px).
ATTENTION_MIN_STRIDE = 16


@dataclass
class CamoXpertConfig:
    """Everything needed to rebuild a CamoXpert; checkpoints carry it as a dict.

    Attributes:
        backbone: timm EdgeNeXt variant.
        pretrained: load ImageNet weights through timm (HF cache/hub).
        pretrained_weights: local weight file for the backbone (implies pretrained).
        dim: width of every pyramid level after projection (multiple of 8).
        num_experts: experts per MoE layer, taken in order from ``experts``; 0 builds no MoE
            (the decoder alone on the backbone: the reference the experts must beat).
        experts: expert names (see ``models.experts.EXPERT_TYPES``).
        top_k: experts chosen per token (or per image).
        routing: ``"token"`` (each pixel picks its experts) or ``"image"``.
        moe_levels: pyramid levels (0 = stride 4 ... 3 = stride 32) that get an MoE layer.
        router_noise: router logit noise std in training.
        num_heads: requested attention heads (reduced so head_dim % 8 == 0).
        use_flash_attn: fused SDPA attention (True) or explicit math (False).
        deep_supervision: return side outputs in training mode.
        decoder: ``"refine"`` (top-down sum refined by a 3x3 conv at every level) or ``"fpn"``
            (plain FPN: top-down sum only, 3x3 conv head).
    """

    # The same default as configs/default.yaml (tests/test_config.py checks every field): the
    # small backbone keeps the CPU quick start fast; real data asks for a larger one.
    backbone: str = "edgenext_xx_small"
    pretrained: bool = False
    pretrained_weights: Optional[str] = None
    dim: int = 64
    num_experts: int = 7
    experts: Tuple[str, ...] = tuple(EXPERT_TYPES)
    top_k: int = 2
    routing: str = "token"
    # One MoE layer, on the stride-32 map (12x12 tokens at 384 px), by default. Measured on an
    # H100 (bf16, 384 px, batch 16, edgenext_small, whole step replayed as a CUDA graph, 70-75 s
    # from scratch, one seed): MoE at stride 32 alone trained at 717 img/s to S-measure 0.706,
    # at 16 alone 690 img/s and 0.676, at 16 and 32 644 img/s and 0.697 (plain FPN: 935, 0.702).
    moe_levels: Tuple[int, ...] = (3,)
    router_noise: float = 0.5
    num_heads: int = 8
    use_flash_attn: bool = True
    deep_supervision: bool = True
    decoder: str = "refine"

    def __post_init__(self):
        self.experts = tuple(self.experts)
        self.moe_levels = tuple(int(i) for i in self.moe_levels)
        if not 0 <= self.num_experts <= len(self.experts):
            raise ValueError(
                f"num_experts must be between 0 (no MoE) and {len(self.experts)} (the experts listed: "
                f"{', '.join(self.experts)}), got {self.num_experts}."
            )
        if self.num_experts and not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be between 1 and num_experts ({self.num_experts}), got {self.top_k}.")
        if self.routing not in ROUTING_MODES:
            raise ValueError(f"routing must be one of {', '.join(ROUTING_MODES)}, got {self.routing!r}.")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}.")
        bad = [i for i in self.moe_levels if not 0 <= i <= 3]
        if bad:
            raise ValueError(f"moe_levels must be pyramid levels 0..3 (strides 4..32), got {bad}.")
        if self.dim % 8:
            raise ValueError(f"dim must be a multiple of 8 (attention head sizes), got {self.dim}.")

    def to_dict(self) -> dict:
        """Plain-Python dict (lists for tuples), safe for ``torch.load(weights_only=True)`` and YAML."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CamoXpertConfig":
        """Build from a dict; unknown keys are an error listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown model config key(s) {unknown}. Valid keys: {', '.join(sorted(names))}.")
        return cls(**dict(data))


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
