"""Stopping on a signal: SIGTERM or SIGINT only sets a flag; the work loop polls it at safe points and unwinds."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGINT)  # SLURM and Kubernetes send SIGTERM before they kill; Ctrl-C sends SIGINT


class Interrupted(Exception):
    """A long command stopped on a signal at a safe point, after its usual cleanup.

    The message says what stopped and how to resume. exit_code is the shell's convention for death
    by that signal, 128 + signal number: 143 for SIGTERM, 130 for SIGINT, so a scheduler sees the
    job as terminated and can requeue it. Every command that handles signals exits with it.
    """

    def __init__(self, signum: int, message: str):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"{signal.Signals(self.signum).name} received: {message}")


class Preempted(Interrupted):
    """Training stopped on a signal after writing its checkpoint; the same call with resume=True continues it."""

    def __init__(self, signum: int, step: int, checkpoint: str | Path):
        self.step, self.checkpoint = int(step), Path(checkpoint)
        super().__init__(signum, f"stopped after step {self.step} and saved {self.checkpoint}; "
                                 "run again with resume to continue")


class StoppedAtOnce(KeyboardInterrupt):
    """A second stop signal while the first is pending: unwind now, wherever the main thread is.

    A KeyboardInterrupt, so `except Exception` does not catch it and every `finally` and context
    manager still runs (temporary files are removed, worker processes killed).
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"{signal.Signals(self.signum).name} received twice: stopped at once, without waiting "
                         "for a safe point; nothing half-written was kept; run the same command again")


class StopFlag:
    """While entered, SIGTERM and SIGINT only record the signal in `signum`; the work loop polls it.

    The handler does nothing else: an exception raised from a signal handler lands wherever the
    main thread happens to be, and one that lands in a finaliser or weakref callback is printed as
    "Exception ignored" and lost. The loop calls `check` (or reads `requested`) at its safe points
    (after each sequence, step or job) and unwinds from there with its usual cleanup.

    A second signal while the first is pending raises StoppedAtOnce from the handler, so a second
    Ctrl-C stops at once (if that exception is lost as above, the flag still stops the loop at the
    next safe point). A StopFlag entered while another is active shares its state (one flag per
    process: run-benchmark's job loop and the training loop inside a job see the same signal).
    Signal handlers can only be installed from the main thread; elsewhere the flag is inert.
    """

    def __init__(self):
        self._signum: int | None = None
        self._saved: dict[int, object] = {}
        self._outer: StopFlag | None = None  # the active flag this one shares, if any

    def __enter__(self) -> StopFlag:
        self._outer = None
        if threading.current_thread() is threading.main_thread():
            active = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
            if isinstance(active, StopFlag):
                self._outer = active._root()
            else:
                self._saved = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python
        self._saved = {}  # a nested flag keeps its link: `signum` still reads the shared state after the block

    def _root(self) -> StopFlag:
        return self if self._outer is None else self._outer._root()

    def _handle(self, signum, frame) -> None:
        if self._signum is not None:  # the second signal: the user or scheduler insists
            raise StoppedAtOnce(signum)
        self._signum = signum

    @property
    def signum(self) -> int | None:
        """The first stop signal received while entered (None: none yet)."""
        return self._root()._signum

    @signum.setter
    def signum(self, value: int | None) -> None:
        self._root()._signum = value

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self, message: str) -> None:
        """At a safe point: raise Interrupted(signum, message) if a stop was requested. `message` says what
        stopped and how to resume (e.g. "render of x.h5 stopped after 3 of 40 sequences; run it again")."""
        if self.requested:
            raise Interrupted(self.signum, message)


@contextmanager
def preemption_exits():
    """For CLIs: an Interrupted (Preempted included) or a Ctrl-C becomes one line on stderr and exit code
    128 + signal (143 for SIGTERM, 130 for SIGINT)."""
    try:
        yield
    except Interrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt as exc:  # StoppedAtOnce, or a Ctrl-C outside any StopFlag (Python's own handler)
        signum = getattr(exc, "signum", int(signal.SIGINT))
        text = str(exc) if isinstance(exc, StoppedAtOnce) else "SIGINT received: stopped; run the same command again"
        print(f"stopped: {text}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
