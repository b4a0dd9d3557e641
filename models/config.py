"""The model's configuration: every field with its default, bounds and one-line help.

Kept free of torch (as :mod:`models.names`): the command line builds its ``train`` flags and
``engine.settings`` its typed ``model`` section from these fields before any heavy import.
Each field's ``metadata`` holds ``help`` (one line) and, where they apply, ``choices`` and the
numeric bounds ``ge``/``gt``/``le``; the checks that involve several fields are in
``__post_init__``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from .names import DECODER_NAMES, EXPERT_NAMES, ROUTING_MODES, SUPPORTED_BACKBONES

__all__ = ["CamoXpertConfig", "setting"]


def setting(help: str, **rules: Any) -> Dict[str, Any]:
    """Field metadata: one-line ``help`` plus rules (``choices``, ``ge``, ``gt``, ``le``).

    Args:
        help: the field's one-line description (flag help, generated docs and YAML comments).
        **rules: ``choices`` (allowed values) and numeric bounds read by ``engine.settings``.
    """
    return {"help": help, **rules}


@dataclass
class CamoXpertConfig:
    """Everything needed to rebuild a CamoXpert; checkpoints carry it as a dict.

    The run configuration's ``model`` section is this class (``engine.settings`` derives its
    typed section from these fields), so a model built from Python without a config is the
    model ``train`` builds by default.
    """

    # The small backbone keeps the CPU quick start fast; real data asks for a larger one.
    backbone: str = field(default="edgenext_xx_small", metadata=setting(
        "timm EdgeNeXt variant", choices=SUPPORTED_BACKBONES))
    pretrained: bool = field(default=False, metadata=setting(
        "ImageNet backbone weights through timm (HF cache or hub)"))
    pretrained_weights: Optional[str] = field(default=None, metadata=setting(
        "Local backbone weight file (.safetensors/.pth); implies pretrained"))
    dim: int = field(default=64, metadata=setting(
        "Width of every pyramid level after projection (a multiple of 8: attention head sizes)", ge=8))
    num_experts: int = field(default=7, metadata=setting(
        "Experts per MoE layer, taken in order from experts; 0 builds no MoE (the decoder alone)", ge=0))
    experts: Tuple[str, ...] = field(default=EXPERT_NAMES, metadata=setting(
        "Expert names, in the order num_experts takes them", choices=EXPERT_NAMES))
    top_k: int = field(default=2, metadata=setting(
        "Experts chosen per token (per image with routing: image)", ge=1))
    routing: str = field(default="token", metadata=setting(
        "token: each pixel picks its experts; image: one choice per image", choices=ROUTING_MODES))
    # One MoE layer, on the stride-32 map, by default (docs/results: the level comparison).
    moe_levels: Tuple[int, ...] = field(default=(3,), metadata=setting(
        "Pyramid levels with an MoE layer (0 = stride 4 ... 3 = stride 32)", ge=0, le=3))
    router_noise: float = field(default=0.5, metadata=setting(
        "Standard deviation of the router's logit noise in training", ge=0))
    num_heads: int = field(default=8, metadata=setting(
        "Requested attention heads (reduced so that head_dim % 8 == 0)", ge=1))
    use_flash_attn: bool = field(default=True, metadata=setting(
        "Fused SDPA attention (true) or explicit math attention (false)"))
    deep_supervision: bool = field(default=True, metadata=setting(
        "Side-output losses in training"))
    decoder: str = field(default="refine", metadata=setting(
        "refine: 3x3 conv after every top-down merge; fpn: plain FPN (the reference)", choices=DECODER_NAMES))

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
        if self.decoder not in DECODER_NAMES:
            raise ValueError(f"decoder must be one of {', '.join(DECODER_NAMES)}, got {self.decoder!r}.")
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
