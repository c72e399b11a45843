"""ibutil.io's atomic writes: the temporary name, and what a killed writer left is swept by the next writer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ibutil.io import atomic_path, remove_stale_temps, temp_path, write_text_atomic


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_temporary_name_is_hidden_beside_the_target_and_names_its_process(tmp_path):
    assert temp_path(tmp_path / "a.json", 123) == tmp_path / ".a.json.tmp-123"
    assert temp_path(tmp_path / "a.json") == tmp_path / f".a.json.tmp-{os.getpid()}"


def test_a_writer_sweeps_what_a_killed_writer_left_and_keeps_a_live_ones(tmp_path):
    target = tmp_path / "summary.json"
    stale = temp_path(target, dead_pid())
    stale.write_text("half")  # a SIGKILLed writer's file
    stale_dir = temp_path(tmp_path / "model", dead_pid())
    stale_dir.mkdir()  # a killed folder build (atomic_path builds folders too)
    live = temp_path(target, os.getppid())  # a parallel writer that is still running
    live.write_text("in progress")
    other = temp_path(tmp_path / "other.json", dead_pid())
    other.write_text("another target's")
    write_text_atomic(target, "whole\n")
    assert target.read_text() == "whole\n"
    assert not stale.exists() and live.exists() and other.exists()  # only this target's dead temporaries go
    assert remove_stale_temps(tmp_path / "model") == [stale_dir] and not stale_dir.exists()


def test_a_failed_write_leaves_neither_the_target_nor_its_temporary(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
