"""The ``train`` section: run length, optimizer, precision, device, budget and cadence."""
from __future__ import annotations

from typing import Literal, Optional, Tuple, Union

from pydantic import Field, field_validator, model_validator

from .base import SEED_MAX, Section
from .duration import parse_duration

__all__ = ["TrainSettings"]

Auto = Optional[Union[bool, Literal["auto"]]]


class TrainSettings(Section):
    """Training: where runs write, how long, the optimizer, precision, device and cadence."""

    checkpoint_dir: str = Field("checkpoints", description="Where runs write (last.pt, best.pt, config.yaml, logs)")
    epochs: int = Field(8, ge=1, description="Total epochs")
    stage1_epochs: int = Field(1, ge=0, description="Epochs with the backbone frozen, then fine-tuned (at most epochs)")
    batch_size: int = Field(8, ge=1, description="Images per process and step")
    accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step")
    lr: float = Field(0.003, gt=0.0, description="Peak learning rate")
    stage2_lr_scale: float = Field(0.5, gt=0.0, description="Stage 2 peak learning rate = lr * stage2_lr_scale")
    backbone_lr_scale: float = Field(
        1.0, ge=0.0, description="Backbone learning rate relative to the rest in stage 2 (0.1 for pretrained)")
    weight_decay: float = Field(0.05, ge=0.0, description="AdamW weight decay")
    warmup_steps: int = Field(30, ge=0, description="Linear warm-up steps at the start of each stage (0: none)")
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0, description="The cosine decays to lr * min_lr_ratio")
    betas: Tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, two numbers in [0, 1)")
    grad_clip: float = Field(1.0, ge=0.0, description="Largest gradient norm; 0 disables clipping")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Mixed precision; auto: bf16 or fp16 on a GPU, fp32 on the CPU")
    use_ema: bool = Field(True, description="Keep EMA weights, validate and save them")
    ema_decay: float = Field(
        0.999, ge=0.0, lt=1.0, description="Final EMA decay; warms up as min(decay, (1+n)/(10+n)) after n updates")
    cuda_graphs: Auto = Field(
        None, description="null/auto: replay one captured CUDA graph per update where exact (one CUDA process, "
                          "bf16/fp32, no accumulation); false: eager")
    compile: Auto = Field(
        None, description="torch.compile the model; null/auto: on CUDA for runs of 1 h or 50,000 steps and more "
                          "(a failed compile falls back to eager)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    seed: int = Field(42, ge=0, le=SEED_MAX, description="Random seed (0 to 2**32 - 1)")
    time_budget: Optional[str] = Field(
        None, description="Wall-time budget such as 8h30m, 90m or 240s (at most 30 days): the schedule ends, "
                          "checkpoints written, inside it; with --resume a new budget for this session")
    budget_margin_seconds: Optional[float] = Field(
        None, ge=0.0, description="Safety margin kept free at the end of a budget; null: 5% (5 s to 5 min)")
    adapt_to_budget: bool = Field(
        True, description="From scratch: no frozen stage 1; short runs: flips-only augmentation")
    short_run_steps: int = Field(3000, ge=0, description="Runs with fewer optimizer steps than this count as short")
    val_every_seconds: float = Field(
        60.0, ge=0.0, description="Validate at an epoch end once this much time passed since the last (0: every epoch)")
    val_every_steps: int = Field(0, ge=0, description="Also validate every N optimizer steps (0: off)")
    save_every_seconds: float = Field(
        300.0, ge=0.0, description="Write last.pt once this much time passed since the last write (0: off)")
    save_every_steps: int = Field(0, ge=0, description="Also write last.pt every N optimizer steps (0: off)")
    max_nonfinite_steps: int = Field(
        10, ge=0, description="Stop (saving last.pt) after this many non-finite steps in a row; 0: never stop")
    log_every_steps: int = Field(10, ge=1, description="Read the losses from the device and log them every N steps")

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: Tuple[float, float]) -> Tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"must be two numbers in [0, 1), e.g. [0.9, 0.999], got {list(value)}.")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, name: str) -> str:
        from engine.runtime import check_device_name  # torch: only when a device is named

        if name not in ("", "auto", "cpu"):
            try:
                check_device_name(name)
            except ValueError:
                raise ValueError(f"must be auto, cpu, cuda or cuda:N (e.g. --device cuda:0), got {name!r}.") from None
        return name

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # no budget
        parse_duration(value)
        return value if isinstance(value, str) else str(value)

    @model_validator(mode="after")
    def _stage1_within_epochs(self) -> "TrainSettings":
        if self.stage1_epochs > self.epochs:
            raise ValueError(f"stage1_epochs must be between 0 and epochs ({self.epochs}), got {self.stage1_epochs}.")
        return self

    @property
    def time_budget_seconds(self) -> Optional[float]:
        """``time_budget`` in seconds, None without a budget."""
        return None if self.time_budget is None else parse_duration(self.time_budget)
