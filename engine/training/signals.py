"""SIGTERM/SIGINT turned into a "stop after this step" request.

Notebook kernels (Kaggle, Colab) and schedulers stop a run with SIGTERM or SIGINT. The trainer
checks :attr:`GracefulStop.requested` after every optimizer step, saves ``last.pt`` and returns.
A second signal while stopping restores the default behaviour (a second Ctrl-C interrupts),
except while a checkpoint is being written: :func:`deferred_signals` holds it until the file is
complete, so the impatient second Ctrl-C never costs the ``last.pt`` it was waiting for.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Dict, Iterator, List, Optional, Tuple

__all__ = ["GracefulStop", "deferred_signals"]


@contextlib.contextmanager
def deferred_signals(signums: Tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[List[int]]:
    """Hold ``signums`` while the block runs, then hand them to the handlers that were in place.

    For writes that must not be cut in half (a checkpoint): a signal arriving meanwhile is
    recorded, and delivered again, in order, once the block is over (also when it raised), so
    a second Ctrl-C still interrupts, right after the write. Outside the main thread, where
    Python cannot install handlers, the block runs unprotected.

    Yields:
        The signals held so far (for tests and logs).
    """
    held: List[int] = []
    previous: Dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signums:
            if signal.getsignal(signum) is not None:  # None: a handler set from C, which we could not put back
                previous[signum] = signal.signal(signum, lambda num, frame: held.append(num))
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in held:
            signal.raise_signal(signum)  # runs the restored handler now (KeyboardInterrupt for SIGINT)


class GracefulStop:
    """Context manager catching SIGTERM and SIGINT in the main thread.

    Attributes:
        requested: set once a signal arrived.
        signal_name: name of the first signal received.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signal_name: Optional[str] = None
        self._previous: Dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            # Second signal: the user insists; give them the default behaviour back.
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
