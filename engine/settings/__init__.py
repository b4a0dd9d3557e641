"""Typed settings: every default, type, bound and one-line help of a run, in one place.

``configs/default.yaml`` and ``docs/configuration.md`` are generated from these classes
(``python -m engine.settings --write``), the ``train`` command's flags are built from their
fields (:mod:`cli.config_options`), and a configuration is resolved and validated once
(:meth:`ConfigRequest.resolve`) before a command writes anything.

Names are imported on first use (as in :mod:`models`): :class:`ConfigError` and the ``--set``
parser need neither pydantic nor torch.
"""
from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SEED_MAX": "base",
    "Section": "base",
    "AugmentSettings": "data",
    "DataSettings": "data",
    "MAX_IMG_SIZE": "data",
    "SyntheticSettings": "data",
    "MAX_DURATION_S": "duration",
    "parse_duration": "duration",
    "ConfigError": "errors",
    "format_validation_error": "errors",
    "field_info": "fields",
    "leaf_fields": "fields",
    "deep_merge": "layers",
    "load_yaml": "layers",
    "parse_set_overrides": "layers",
    "ModelSettings": "model",
    "ConfigRequest": "request",
    "RunConfig": "run",
    "as_run_config": "run",
    "validate_section": "run",
    "EvalSettings": "scoring",
    "LossSettings": "scoring",
    "TrainSettings": "train",
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
    from .base import SEED_MAX, Section
    from .data import MAX_IMG_SIZE, AugmentSettings, DataSettings, SyntheticSettings
    from .duration import MAX_DURATION_S, parse_duration
    from .errors import ConfigError, format_validation_error
    from .fields import field_info, leaf_fields
    from .layers import deep_merge, load_yaml, parse_set_overrides
    from .model import ModelSettings
    from .request import ConfigRequest
    from .run import RunConfig, as_run_config, validate_section
    from .scoring import EvalSettings, LossSettings
    from .train import TrainSettings
