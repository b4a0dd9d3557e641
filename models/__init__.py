"""CamoXpert models: backbone, attention, experts, MoE, decoder and the assembled detector."""
from .attention import (
    ATTENTION_BACKENDS,
    FUSED_SDPA_KERNELS,
    SDTAEncoder,
    attention_backend_from_env,
    resolve_attention_backend,
    set_attention_backend,
)
from .backbone import SUPPORTED_BACKBONES, PretrainedWeightsError, build_backbone
from .camoxpert import CamoXpert, CamoXpertConfig, CamoXpertOutput, build_model, count_parameters
from .experts import EXPERT_TYPES
from .moe import MoELayer

__all__ = [
    "ATTENTION_BACKENDS",
    "FUSED_SDPA_KERNELS",
    "EXPERT_TYPES",
    "SUPPORTED_BACKBONES",
    "CamoXpert",
    "CamoXpertConfig",
    "CamoXpertOutput",
    "MoELayer",
    "PretrainedWeightsError",
    "SDTAEncoder",
    "attention_backend_from_env",
    "build_backbone",
    "build_model",
    "count_parameters",
    "resolve_attention_backend",
    "set_attention_backend",
]
