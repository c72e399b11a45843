"""Preemption: SIGTERM or SIGINT during training asks the loop to checkpoint and stop after the current step."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGINT)  # SLURM and Kubernetes send SIGTERM before they kill; Ctrl-C sends SIGINT


class Preempted(Exception):
    """Training stopped on a signal after writing its checkpoint; the same call with resume=True continues it.

    exit_code is the shell's convention for death by that signal, 128 + signal number: 143 for
    SIGTERM, 130 for SIGINT, so a scheduler sees the job as terminated and can requeue it.
    """

    def __init__(self, signum: int, step: int, checkpoint: str | Path):
        self.signum, self.step, self.checkpoint = int(signum), int(step), Path(checkpoint)
        self.exit_code = 128 + self.signum
        super().__init__(f"{signal.Signals(self.signum).name} received: stopped after step {self.step} and saved "
                         f"{self.checkpoint}; run again with resume to continue")


class StopFlag:
    """While entered, SIGTERM and SIGINT set `signum` instead of ending the process; the loop polls it.

    A second signal while the first is pending restores the previous handler and re-delivers the
    signal, so a second Ctrl-C or a second SIGTERM stops at once. Signal handlers can only be
    installed from the main thread; elsewhere the flag is inert (signals behave as before).
    """

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python
        self._saved = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: the user or scheduler insists
            signal.signal(signum, self._saved.get(signum) or signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def preemption_exits():
    """For CLIs: a Preempted becomes its one-line message on stderr and exit code 128 + signal (143 for SIGTERM)."""
    try:
        yield
    except Preempted as exc:
        print(f"stopped: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
