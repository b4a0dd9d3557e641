"""CamoXpert models: backbone, attention, experts, MoE, decoder and the assembled detector.

Names are imported on first use (as in :mod:`datasets`): the command line reads
:mod:`models.names` (backbones, attention policies) without paying the seconds it takes to
import torch and timm.
"""
from importlib import import_module
from typing import TYPE_CHECKING, Any

# Public name -> submodule that defines it.
_EXPORTS = {
    "ATTENTION_BACKENDS": "names",
    "FUSED_SDPA_KERNELS": "names",
    "SUPPORTED_BACKBONES": "names",
    "attention_backend_from_env": "names",
    "resolve_attention_backend": "names",
    "SDTAEncoder": "attention",
    "set_attention_backend": "attention",
    "PretrainedWeightsError": "backbone",
    "build_backbone": "backbone",
    "CamoXpert": "camoxpert",
    "CamoXpertConfig": "config",
    "CamoXpertOutput": "camoxpert",
    "build_model": "camoxpert",
    "count_parameters": "camoxpert",
    "EXPERT_TYPES": "experts",
    "MoELayer": "moe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see ordinary imports
    from .attention import SDTAEncoder, set_attention_backend
    from .backbone import PretrainedWeightsError, build_backbone
    from .camoxpert import CamoXpert, CamoXpertOutput, build_model, count_parameters
    from .config import CamoXpertConfig
    from .experts import EXPERT_TYPES
    from .moe import MoELayer
    from .names import (
        ATTENTION_BACKENDS,
        FUSED_SDPA_KERNELS,
        SUPPORTED_BACKBONES,
        attention_backend_from_env,
        resolve_attention_backend,
    )
