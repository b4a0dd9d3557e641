"""The ``loss`` and ``eval`` sections: what training minimises and how runs are validated."""
from __future__ import annotations

from pydantic import Field, field_validator

from .base import Section

__all__ = ["EvalSettings", "LossSettings"]


class LossSettings(Section):
    """Loss weights: main structure loss, deep-supervision sides, MoE balance."""

    side_weight: float = Field(1.0, ge=0.0, description="Weight of the mean deep-supervision side loss")
    aux_weight: float = Field(0.01, ge=0.0, description="Weight of the MoE load-balancing loss")
    edge_kernel: int = Field(31, ge=1, description="Structure-loss window in px, odd (F3Net / SINet-V2)")
    edge_weight: float = Field(
        5.0, ge=0.0,
        description="Extra weight of pixels near object boundaries in the structure loss (up to 1 + edge_weight)")

    @field_validator("edge_kernel")
    @classmethod
    def _odd(cls, kernel: int) -> int:
        if kernel % 2 == 0:
            raise ValueError(f"must be a positive odd integer (e.g. 31), got {kernel}.")
        return kernel


class EvalSettings(Section):
    """Validation during training (S-measure and MAE; best.pt has the best S-measure)."""

    batch_size: int = Field(8, ge=1, description="Images per validation forward pass")
    max_images: int = Field(
        0, ge=0, description="Validate on at most this many held-out images (an evenly spread subset; 0: all)")
    device_cache_mb: int = Field(
        2048, ge=0,
        description="Keep the decoded validation split on the device up to this size (0: decode every time)")
    budget_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="With a time budget: largest share of the training time validations take")
