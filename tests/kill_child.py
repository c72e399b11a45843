"""Run render-dataset, merge-dataset or run-benchmark in a child process that tests/test_kill.py signals.

After it has written sequence --hold-after K of its output, the child prints "holding PID PATH"
(PATH: the final output being written) and holds there until its stop flag is set, so the test's
signal lands mid-file, with more sequences queued, whatever the machine's speed. A SIGKILL ends it
while it holds. It also ends if the test process dies, so it can never outlive a crashed test.
"""

import os
import signal
import sys
import time

import click

from ibdata import h5format

COMMANDS = {"render": ("render.cli", "render_dataset"), "merge": ("render.cli", "merge_dataset"),
            "benchmark": ("benchmarks.cli", "run_benchmark")}


def holding(write_sequence, hold_after: int, parent: int, stubborn: bool):
    """Wrap DatasetWriter.write_sequence so that it holds after its hold_after-th call until the stop flag is
    set; a stubborn hold then prints "flag set" and goes on holding, as a long step between safe points
    would, until a second signal stops it at once."""
    calls = [0]

    def wrapped(self, *args, **kwargs):
        write_sequence(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == hold_after:
            flag = signal.getsignal(signal.SIGTERM).__self__  # the command's ibutil.preempt.StopFlag
            print(f"holding {os.getpid()} {self.path}", flush=True)
            said = False
            while stubborn or not flag.requested:  # a state, not a time: the flag is set by the test's signal
                if flag.requested and not said:
                    print("flag set", flush=True)
                    said = True
                if os.getppid() != parent:
                    os._exit(3)
                time.sleep(0.01)
    return wrapped


if __name__ == "__main__":
    command, hold, args = sys.argv[1], sys.argv[2], sys.argv[3:]  # hold: K, or K+ for a stubborn hold
    h5format.DatasetWriter.write_sequence = holding(h5format.DatasetWriter.write_sequence, int(hold.rstrip("+")),
                                                    os.getppid(), hold.endswith("+"))
    module, name = COMMANDS[command]
    cli: click.Command = getattr(__import__(module, fromlist=[name]), name)
    cli.main(args, standalone_mode=True)
