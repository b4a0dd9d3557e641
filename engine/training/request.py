"""What a ``train`` invocation asks of a run, beside its configuration.

The configuration says *how* to train; a :class:`RunRequest` says *what to do with the
checkpoint folder*: continue a checkpoint, replace an earlier run, or start the time budget
afresh. The CLI resolves both and hands them to :class:`~engine.training.trainer.Trainer`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["RunRequest"]


@dataclass(frozen=True)
class RunRequest:
    """How a run starts: fresh or resumed, and what it may replace.

    Attributes:
        resume: a last.pt path or loaded checkpoint dict to continue from; its model must match
            the configuration's (checked by the trainer, for the CLI and Python callers alike).
        resume_path: the file a loaded ``resume`` dict came from: a checkpoint folder holding
            another run (not this file's) is then refused unless ``overwrite``.
        overwrite: replace an earlier run in the checkpoint folder instead of refusing.
        new_budget: on resume, ``train.time_budget`` is a fresh budget for this session instead
            of the rest of the checkpoint's budget.
    """

    resume: Optional[Any] = None
    resume_path: Optional[os.PathLike] = None
    overwrite: bool = False
    new_budget: bool = False

    @property
    def source(self) -> Optional[os.PathLike]:
        """The checkpoint file resumed from: ``resume_path``, else ``resume`` when it is a path."""
        if self.resume_path is not None:
            return self.resume_path
        return self.resume if isinstance(self.resume, (str, os.PathLike)) else None
