"""The whole run configuration: the five sections, and checking a plain dict against them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Type, TypeVar, Union

from pydantic import BaseModel, Field, ValidationError

from .base import Section
from .data import DataSettings
from .errors import format_validation_error
from .model import ModelSettings
from .scoring import EvalSettings, LossSettings
from .train import TrainSettings

__all__ = ["RunConfig", "as_run_config", "validate_section"]

T = TypeVar("T", bound=BaseModel)


class RunConfig(Section):
    """Every setting of ``train_ultimate.py train``; config.yaml and checkpoints hold its dict."""

    model: ModelSettings = Field(default_factory=ModelSettings, description=ModelSettings.__doc__)
    data: DataSettings = Field(default_factory=DataSettings, description=DataSettings.__doc__)
    train: TrainSettings = Field(default_factory=TrainSettings, description=TrainSettings.__doc__)
    loss: LossSettings = Field(default_factory=LossSettings, description=LossSettings.__doc__)
    eval: EvalSettings = Field(default_factory=EvalSettings, description=EvalSettings.__doc__)

    def with_checkpoint_dir(self, folder: Union[str, Path]) -> "RunConfig":
        """A copy writing into ``folder`` (a resumed run's folder is this machine's choice)."""
        train = self.train.model_copy(update={"checkpoint_dir": str(folder)})
        return self.model_copy(update={"train": train})


def validate_section(cls: Type[T], data: Any, prefix: str = "") -> T:
    """``cls`` validated from ``data``; errors become one :class:`~engine.settings.errors.ConfigError`.

    Args:
        cls: :class:`RunConfig` or one of its sections.
        data: the plain values.
        prefix: put before every key in messages (``config.`` for a checkpoint's run config).
    """
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, cls, prefix) from None


def as_run_config(config: Union[RunConfig, Mapping[str, Any]]) -> RunConfig:
    """A :class:`RunConfig` as is; a dict (``engine.config.resolve_config``, config.yaml) checked into one."""
    return config if isinstance(config, RunConfig) else validate_section(RunConfig, dict(config))
