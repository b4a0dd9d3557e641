"""Names the command line checks before any work: backbones, experts, routing, decoders, attention policies.

Kept free of torch and timm so that ``train_ultimate.py --help``, option parsing and the
``TORCH_SDPA_BACKEND`` check cost no heavy import. :mod:`models.attention` and
:mod:`models.backbone` re-export these.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = [
    "ATTENTION_BACKENDS",
    "DECODER_NAMES",
    "ENV_VAR",
    "EXPERT_NAMES",
    "FUSED_SDPA_KERNELS",
    "ROUTING_MODES",
    "SUPPORTED_BACKBONES",
    "attention_backend_from_env",
    "resolve_attention_backend",
]

#: timm EdgeNeXt variants the backbone wrapper builds.
SUPPORTED_BACKBONES = ("edgenext_xx_small", "edgenext_x_small", "edgenext_small", "edgenext_base")

#: Expert names, in the order a model with fewer experts takes them (keys of ``models.experts.EXPERT_TYPES``).
EXPERT_NAMES = ("texture", "attention", "hybrid", "frequency", "edge", "context", "contrast")
#: Router modes: each pixel picks its experts (token) or one choice per image.
ROUTING_MODES = ("token", "image")
#: Decoder names (keys of ``models.decoder.DECODERS``).
DECODER_NAMES = ("refine", "fpn")

ENV_VAR = "TORCH_SDPA_BACKEND"
#: SDPA's fused kernels, each of which a policy can pin.
FUSED_SDPA_KERNELS = ("flash", "efficient", "cudnn")
#: Every policy name: SDPA choosing (auto), SDPA pinned to one fused kernel, explicit math.
ATTENTION_BACKENDS = ("auto", *FUSED_SDPA_KERNELS, "math")


def resolve_attention_backend(value: Optional[str]) -> str:
    """Validate a backend name (case-insensitive); ``None`` or ``""`` means ``auto``.

    Raises:
        ValueError: naming the bad value and listing the valid ones.
    """
    if value is None or str(value).strip() == "":
        return "auto"
    name = str(value).strip().lower()
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"Unknown attention backend {value!r}. Valid values: {', '.join(ATTENTION_BACKENDS)} "
            f"(set with {ENV_VAR}=<value> or set_attention_backend(model, <value>))."
        )
    return name


def attention_backend_from_env() -> str:
    """The process-wide policy from ``TORCH_SDPA_BACKEND`` (``auto`` when unset)."""
    return resolve_attention_backend(os.environ.get(ENV_VAR))
