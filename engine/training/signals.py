"""SIGTERM/SIGINT turned into a "stop after this step" request.

Notebook kernels (Kaggle, Colab) and schedulers stop a run with SIGTERM or SIGINT. The trainer
checks :attr:`GracefulStop.requested` after every optimizer step, saves ``last.pt`` and returns.
A second signal while stopping restores the default behaviour (a second Ctrl-C interrupts).
"""
from __future__ import annotations

import signal
import threading
from typing import Dict, Optional

__all__ = ["GracefulStop"]


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
