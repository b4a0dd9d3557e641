"""The ``model`` section, derived from :class:`models.CamoXpertConfig`'s fields.

The model's fields are defined once, in ``models/config.py`` (``models`` never imports
``engine``): their defaults, types, help and bounds become this typed section, whose
:meth:`to_camoxpert` gives the dataclass the model is built from.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Dict, Literal, Tuple, get_args, get_origin, get_type_hints

from pydantic import Field, create_model, model_validator

from models.config import CamoXpertConfig

from .base import Section

__all__ = ["ModelSettings"]

_BOUNDS = ("ge", "gt", "le", "lt")


class _ModelSection(Section):
    """The network (``models.CamoXpertConfig``); checkpoints store it as ``model_config``."""

    @model_validator(mode="after")
    def _cross_checks(self) -> "_ModelSection":
        self.to_camoxpert()  # num_experts against experts, top_k against num_experts, dim % 8
        return self

    def to_camoxpert(self) -> CamoXpertConfig:
        """The dataclass the model is built from (``models.build_model``)."""
        return CamoXpertConfig(**self.model_dump())


def _field(hint: Any, default: Any, rules: Dict[str, Any]) -> Tuple[Any, Any]:
    """A dataclass field's type and rules as a pydantic annotation and ``Field``."""
    choices = rules.get("choices")
    bounds = {k: rules[k] for k in _BOUNDS if k in rules}
    if get_origin(hint) is tuple:  # Tuple[X, ...]: the rules hold for every item
        item = Literal[tuple(choices)] if choices else get_args(hint)[0]
        if bounds:
            item = Annotated[item, Field(**bounds)]
        return Tuple[item, ...], Field(default, description=rules["help"])
    if choices:
        hint = Literal[tuple(choices)]
    return hint, Field(default, description=rules["help"], **bounds)


def _model_fields() -> Dict[str, Tuple[Any, Any]]:
    hints = get_type_hints(CamoXpertConfig)
    fields = {}
    for f in dataclasses.fields(CamoXpertConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields[f.name] = _field(hints[f.name], default, dict(f.metadata))
    return fields


ModelSettings = create_model("ModelSettings", __base__=_ModelSection, __module__=__name__, **_model_fields())
ModelSettings.__doc__ = _ModelSection.__doc__
