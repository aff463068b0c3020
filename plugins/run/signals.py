"""SIGINT and SIGTERM during a run: stop cleanly, never in the middle of writing a file.

A run moves through three phases, and a signal means something different in each:

- start-up (spec, data, model, compilation): nothing of this run is saved yet, so the
  signal stops the run at once (`Stop` is raised from the handler);
- training: the signal only asks the trainer to stop after the current step; the runner
  then writes a checkpoint and raises `RunInterrupted`;
- the report (plots, summary): training is finished and checkpointed, so the signal stops
  the run at once again.

Inside `deferred()` (checkpoints, the lock file) a signal is only recorded and takes
effect when the block ends, so a second Ctrl-C can never tear a checkpoint. The exit code
is 128 + the number of the first signal: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

HANDLED = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    return 128 + int(signum)


class Stop(BaseException):
    """Raised by the handler where a signal stops the run at once. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` in plugin code swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal_name(signum)}")


class SignalGuard:
    """SIGINT/SIGTERM handlers for the duration of a `with` block (main thread only;
    elsewhere the guard does nothing). Guards nest: each restores the handlers it found."""

    def __init__(self, *, ignore_when_stopped=False):
        """ignore_when_stopped: when the block ends by a signal (Stop, RunInterrupted), ignore
        further signals instead of restoring the old handlers: the process is about to exit
        with 130/143, and a late second Ctrl-C must not turn that into a kill."""
        self.ignore_when_stopped = ignore_when_stopped
        self.received: int | None = None  # the first signal, which sets the exit code
        self.raising = True  # False while training: a signal only requests a stop
        self.on_signal = None  # called on every signal (the trainer's stop request)
        self._depth = 0
        self._previous: dict = {}
        self._hook = sys.unraisablehook

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in HANDLED:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
            self._hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, exc_type, exc, tb):
        stopped = self.ignore_when_stopped and getattr(exc, "signum", None) is not None
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_IGN if stopped else handler)
        if self._previous:
            sys.unraisablehook = self._hook
        self._previous.clear()
        return False

    def _unraisable(self, info):
        """A Stop raised inside a finalizer or weakref callback (matplotlib's) cannot propagate and
        was printed as "Exception ignored ... Traceback"; the signal is kept in `received`, and
        the next check (a file write's end) raises it where it can be handled."""
        if isinstance(info.exc_value, Stop):
            return
        self._hook(info)

    @property
    def active(self) -> bool:
        return bool(self._previous)

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        if self.on_signal is not None:
            self.on_signal(signum)
        if self.raising and self._depth == 0:
            raise Stop(self.received)

    def check(self):
        """Raise `Stop` now if a signal arrived while it was deferred."""
        if self.received is not None and self._depth == 0:
            raise Stop(self.received)

    @contextlib.contextmanager
    def deferred(self):
        """Signals arriving inside the block wait for its end (a file being written)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self.raising:
            self.check()

    def stop_after_step(self, request):
        """Training: a signal calls request() (the trainer stops after its current step)."""
        self.raising = False
        self.on_signal = lambda signum: request()
        if self.received is not None:
            request()

    def stop_at_once(self):
        """Back to raising `Stop` from the handler (now, if a signal is pending)."""
        self.raising, self.on_signal = True, None
        self.check()
