"""Time budgets: ``--time-budget 8h30m`` turned into a schedule that ends inside the budget.

The run measures how long an optimizer step takes (after a few warm-up steps, which include
cuDNN autotuning and compilation), then sizes the number of optimizer steps so that training,
the validations and checkpoint writes on the way, the final validation and the final save all
fit in the time left, minus a safety margin. A deadline guard stops training early should the
estimates turn out too low, so the final checkpoints are always written before the budget ends.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from engine.settings.duration import parse_duration  # re-exported: the budget's own parser

__all__ = ["BudgetPlan", "RunCosts", "StepTimeProbe", "TimeBudget", "default_margin", "parse_duration", "plan_steps"]


def default_margin(budget_s: float) -> float:
    """Safety margin kept free at the end of a budget: 5% of it, at least 5 s, at most 5 min."""
    return min(max(0.05 * budget_s, 5.0), 300.0)


class TimeBudget:
    """Wall-clock budget of one session of a run.

    Args:
        seconds: the budget of this run (``None``: no budget).
        used_s: seconds already spent by earlier sessions of the same budget (resume).
        margin_s: safety margin (``None``: :func:`default_margin`).
        clock: monotonic clock in seconds (tests pass a fake one).
        started: ``clock()`` when the session started (process start, so start-up counts);
            default: now.
    """

    def __init__(self, seconds: Optional[float], used_s: float = 0.0, margin_s: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, started: Optional[float] = None):
        self.seconds = None if seconds is None else float(seconds)
        self.used_before_s = float(used_s)
        self.margin_s = 0.0 if self.seconds is None else float(
            default_margin(self.seconds) if margin_s is None else margin_s)
        self.clock = clock
        self.started = clock() if started is None else started

    @property
    def enabled(self) -> bool:
        """Whether a budget was given."""
        return self.seconds is not None

    def used(self) -> float:
        """Seconds of the budget spent so far, earlier sessions included."""
        return self.used_before_s + (self.clock() - self.started)

    def left(self) -> float:
        """Seconds left (``inf`` without a budget)."""
        return math.inf if self.seconds is None else self.seconds - self.used()

    def must_stop(self, reserve_s: float) -> bool:
        """True when the time left no longer covers ``reserve_s`` (final validation and saves) and
        half the margin."""
        return self.enabled and self.left() < reserve_s + 0.5 * self.margin_s

    def state_dict(self) -> dict:
        """What last.pt keeps: the budget and the seconds spent."""
        return {"seconds": self.seconds, "used_s": float(self.used())}


class StepTimeProbe:
    """Measures the wall time per optimizer step, data loading included, after a warm-up.

    The first ``warmup`` steps (cuDNN autotuning, compilation, worker start-up) are ignored; the
    mean over the next ``measure`` steps is the estimate, or over fewer (at least 3) once they
    span ``enough_s`` seconds (slow steps, short budgets).

    Args:
        warmup: steps to ignore.
        measure: steps to average.
        clock: monotonic clock in seconds.
        enough_s: measured seconds that suffice.
    """

    def __init__(self, warmup: int = 5, measure: int = 20, clock: Callable[[], float] = time.monotonic,
                 enough_s: float = math.inf):
        self.warmup = int(warmup)
        self.measure = max(1, int(measure))
        self.clock = clock
        self.enough_s = float(enough_s)
        self.marks: List[float] = []

    def mark(self) -> None:
        """Call after every optimizer step (until :attr:`ready`)."""
        if not self.ready:
            self.marks.append(self.clock())

    @property
    def ready(self) -> bool:
        """Enough steps measured."""
        measured = len(self.marks) - self.warmup - 1
        if measured >= self.measure:
            return True
        return measured >= 3 and self.marks[-1] - self.marks[self.warmup] >= self.enough_s

    def seconds_per_step(self) -> float:
        """Mean wall seconds per step over the measured steps."""
        m = self.marks[self.warmup:]
        return (m[-1] - m[0]) / max(1, len(m) - 1)


@dataclass
class BudgetPlan:
    """Schedule sized to a budget.

    Attributes:
        total_steps: optimizer steps of the whole run.
        stage1_steps: steps with the backbone frozen.
        warmup_steps: linear warm-up steps of each stage.
        train_seconds: training time the plan expects from now on.
        notes: what was assumed (for the log).
    """

    total_steps: int
    stage1_steps: int
    warmup_steps: int
    train_seconds: float
    notes: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunCosts:
    """What the pieces of a run cost, in seconds, and how often they happen.

    Attributes:
        step_s: measured seconds per optimizer step.
        val_s: seconds one validation takes (measured or estimated).
        val_every_s: seconds of training between validations (0: every epoch; counted as one
            validation per ``val_s`` of training, the most it can cost).
        save_s: seconds one last.pt write takes.
        save_every_s: seconds between last.pt writes (0: none on the way).
    """

    step_s: float
    val_s: float = 0.0
    val_every_s: float = 0.0
    save_s: float = 1.0
    save_every_s: float = 0.0


def plan_steps(seconds_left: float, costs: RunCosts, steps_done: int = 0, stage1_fraction: float = 0.0,
               warmup_steps: int = 0, margin_s: float = 0.0) -> BudgetPlan:
    """Size the schedule so that the run ends inside ``seconds_left``.

    Training time ``T`` is what remains once the margin and the final validation and save are
    taken off, shared with the validations (every ``val_every_s``) and saves (every
    ``save_every_s``) made on the way::

        T * (1 + val_s / val_every_s + save_s / save_every_s) = left - margin - val_s - save_s

    Args:
        seconds_left: budget left.
        costs: step, validation and save times and their spacing.
        steps_done: optimizer steps already taken.
        stage1_fraction: share of the run with the backbone frozen (0: single stage).
        warmup_steps: configured warm-up (capped at a tenth of the run).
        margin_s: safety margin.
    """
    step_s, val_s, val_every_s = costs.step_s, costs.val_s, costs.val_every_s
    save_s, save_every_s = costs.save_s, costs.save_every_s
    available = seconds_left - margin_s - val_s - save_s
    overhead = 1.0
    if val_every_s > 0:
        overhead += val_s / val_every_s
    if save_every_s > 0:
        overhead += save_s / save_every_s
    train_s = max(0.0, available / overhead)
    new_steps = int(train_s // max(step_s, 1e-9))
    total = steps_done + max(1, new_steps)
    stage1 = int(round(stage1_fraction * total))
    warmup = min(int(warmup_steps), max(1, total // 10))
    notes = [f"{step_s * 1000:.0f} ms/step measured", f"validation ~{val_s:.1f} s", f"save ~{save_s:.1f} s",
             f"margin {margin_s:.0f} s"]
    return BudgetPlan(total, stage1, warmup, new_steps * step_s, notes)
