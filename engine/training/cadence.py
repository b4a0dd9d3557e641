"""When to log, validate, save and stop, decided at control points that every rank agrees on.

Reading the device (losses, non-finite counts) costs a host sync, so it happens only at control
points: every ``log_every_steps`` updates, at epoch ends, and at step-based save/validation
points. There the per-rank wishes (a signal arrived, a save or validation is due by the clock,
the budget is running out) are combined with one all-reduce, so all ranks act together.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from engine.distributed import all_reduce_max

if TYPE_CHECKING:
    from engine.settings import TrainSettings

__all__ = ["Cadence", "Decision"]


@dataclass
class Decision:
    """What to do after this update.

    Attributes:
        validate: validate (and maybe write best.pt) now.
        save: write last.pt now.
        stop_signal: a SIGTERM/SIGINT arrived: save and return.
        out_of_time: the budget left only covers the final validation and saves.
        consecutive_bad: non-finite updates in a row, as of now.
    """

    validate: bool = False
    save: bool = False
    stop_signal: bool = False
    out_of_time: bool = False
    consecutive_bad: int = 0


class Cadence:
    """Validation, save and log cadence of a run (``train`` section of the config).

    Args:
        tcfg: the ``train`` settings.
        distributed: several processes (decisions are all-reduced; signals are seen at control
            points only).
        clock: monotonic clock in seconds.
    """

    def __init__(self, tcfg: "TrainSettings", distributed: bool, clock: Callable[[], float] = time.monotonic):
        self.log_every = tcfg.log_every_steps
        self.val_every_steps = tcfg.val_every_steps
        self.val_every_s = tcfg.val_every_seconds
        self.save_every_steps = tcfg.save_every_steps
        self.save_every_s = tcfg.save_every_seconds
        # 0 disables the stop; the count is read at control points, so check at least as often.
        self.max_nonfinite = tcfg.max_nonfinite_steps
        self.distributed = distributed
        self.clock = clock

    def is_control_point(self, step: int, epoch_end: bool, signal: bool) -> bool:
        """Whether to read the device and decide after update number ``step``."""
        every = [self.log_every, self.val_every_steps, self.save_every_steps, self.max_nonfinite]
        return (epoch_end or (signal and not self.distributed)
                or any(k > 0 and step % k == 0 for k in every))

    def decide(self, step: int, epoch_end: bool, signal: bool, consecutive_bad: torch.Tensor,
               last_val_at: float, last_save_at: float, out_of_time: bool) -> Decision:
        """Combine this rank's view into one decision shared by all ranks (one host sync)."""
        now = self.clock()
        val = (self.val_every_steps > 0 and step % self.val_every_steps == 0) or (
            epoch_end and now - last_val_at >= self.val_every_s)
        save = (self.save_every_steps > 0 and step % self.save_every_steps == 0) or (
            self.save_every_s > 0 and now - last_save_at >= self.save_every_s)
        flags = torch.stack([
            consecutive_bad.to(torch.float64).reshape(()),
            *(torch.tensor(float(v), dtype=torch.float64, device=consecutive_bad.device)
              for v in (val, save, signal, out_of_time)),
        ])
        if self.distributed:
            all_reduce_max(flags)
        bad, val, save, signal, out_of_time = flags.tolist()
        return Decision(bool(val), bool(save), bool(signal), bool(out_of_time), int(bad))

    def diverged(self, consecutive_bad: int) -> bool:
        """``max_nonfinite_steps`` non-finite updates in a row (never when it is 0)."""
        return self.max_nonfinite > 0 and consecutive_bad >= self.max_nonfinite
