"""Ctrl-C during a sweep: Ray Tune catches SIGINT (and SIGUSR1) itself, saves its state and returns
from `fit()` as if the sweep had ended. Whoever must tell an interrupted sweep from a complete one
wraps the handler Tune installed for the run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def watch(on_interrupt: Callable[[], None]) -> None:
    """Call `on_interrupt` when Tune's handler fires, then Tune's handler. Call it from a Tune
    callback's `setup`, once Tune has installed its handlers (Tune catches no signal off the main
    thread, and neither does this)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGUSR1):
        tune_handler = signal.getsignal(signum)
        if callable(tune_handler):
            signal.signal(signum, _noting(on_interrupt, tune_handler))


def _noting(on_interrupt: Callable[[], None], tune_handler: Callable) -> Callable:
    def handler(signum, frame) -> None:
        on_interrupt()
        tune_handler(signum, frame)

    return handler
