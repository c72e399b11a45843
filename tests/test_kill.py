"""SIGINT, SIGTERM and SIGKILL to render-dataset, merge-dataset and run-benchmark mid-file: no output, no worker.

Each child holds after writing its first sequence until its stop flag is set (tests/kill_child.py), so
every signal lands in the same state, the file half-written with more sequences queued, whatever the
machine's speed. Timeouts here only stop a broken test from hanging; no assertion depends on them.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ibutil.preempt import Interrupted
from ibdata import h5format
from render.dataset import croissant_for, dataset_card, make_header
from render.presets import (RenderConfig, heldout_scored, poses_from_factors, sequence_factors, shard_ranges,
                            split_shapes)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CHILD = Path(__file__).with_name("kill_child.py")
HANG_S = 600  # only stops a broken test from hanging; a passing one never comes near it
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
TINY = ["--dof", "2", "--size", "8", "--frames", "4", "--train-sequences", "6", "--test-sequences", "2"]
TINY_CONFIG = RenderConfig(dof=2, size=8, frames=4, train_sequences=6, test_sequences=2)
N_SEQUENCES = 12  # train 6, val, test and heldout 2 each


def _children(pid):
    """Pids whose parent is `pid`, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _descendants(pid):
    found, todo = set(), [pid]
    while todo:
        kids = _children(todo.pop())
        found.update(kids)
        todo += kids
    return found


def _is_worker(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"spawn_main" in fh.read()
    except OSError:
        return False


def _alive(pid):
    """Running and not a zombie (a zombie has exited; only its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until_dead(pids):
    """Wait for a state, every pid gone (polling /proc: they are not our children); returns those alive at the
    hang guard, which a correct program never reaches (a worker dies with its parent)."""
    end = time.monotonic() + HANG_S
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def interrupt(command, args, sig, twice=False):
    """Start kill_child.py, wait until it holds mid-file, send `sig` (twice: once more after the child has seen
    the first and holds on); returns (returncode, stderr, output path, temporary path, the child's processes at
    the signal: pid -> is a render worker)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(CHILD.parent), os.getcwd()]))
    child = subprocess.Popen([sys.executable, str(CHILD), command, "1+" if twice else "1", *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()  # blocks until the child holds after its first sequence (or dies)
        assert line.startswith(f"holding {child.pid} "), line + child.stderr.read()
        path = Path(line.split(maxsplit=2)[2].rstrip("\n"))
        tmp = h5format.temp_path(path, child.pid)
        assert tmp.exists() and not path.exists()
        processes = {p: _is_worker(p) for p in _descendants(child.pid)}  # workers, multiprocessing's resource tracker
        child.send_signal(sig)
        if twice:
            assert child.stdout.readline() == "flag set\n"  # the first signal was recorded; it holds on
            child.send_signal(sig)
        _, stderr = child.communicate(timeout=HANG_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not _wait_until_dead(processes), "a worker outlived its parent"
    return child.returncode, stderr, path, tmp, processes


def check_stopped(sig, result, message):
    returncode, stderr, path, tmp, _ = result
    if sig == signal.SIGKILL:  # nothing can clean up in-process: the final name never appears, the temp name stays
        assert returncode == -signal.SIGKILL and not path.exists() and tmp.exists()
        # ... and the next render or merge to that path deletes it: it belongs to a dead process.
        assert h5format.remove_stale_temps(path) == [tmp]
    else:
        assert returncode == 128 + sig, stderr
        assert stderr.strip().splitlines()[-1] == f"stopped: {signal.Signals(sig).name} received: {message}", stderr
        assert "Traceback" not in stderr and not path.exists() and not tmp.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_stopped_render_leaves_no_file_and_no_worker(tmp_path, sig):
    out = tmp_path / "k.h5"
    result = interrupt("render", [*TINY, "--workers", "2", "--quiet", "--out", out], sig)
    assert sum(result[4].values()) == 2  # both render workers had been started when the signal came
    check_stopped(sig, result, f"render of {out} stopped after 1 of {N_SEQUENCES} sequences; nothing was written; "
                               "run the same command again")


def test_a_second_ctrl_c_stops_a_render_at_once_and_still_cleans_up(tmp_path):
    # The child does not reach a safe point after the first Ctrl-C (it holds on, as a long step would).
    out = tmp_path / "k.h5"
    returncode, stderr, path, tmp, processes = interrupt("render", [*TINY, "--workers", "2", "--quiet", "--out", out],
                                                         signal.SIGINT, twice=True)
    assert returncode == 130 and sum(processes.values()) == 2, stderr
    assert stderr.strip().splitlines()[-1] == ("stopped: SIGINT received twice: stopped at once, without waiting for "
                                               "a safe point; nothing half-written was kept; run the same command "
                                               "again"), stderr
    assert "Traceback" not in stderr and not path.exists() and not tmp.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def write_shards(folder, config, count):
    """Shard files of `config` as render-dataset --shard I/N writes them, with blank frames (merge copies
    whatever it finds, so no GL is needed)."""
    renderer = {"platform": "none", "pyrender": "none", "gl_renderer": "none", "gl_version": "none"}
    paths = []
    for index in range(count):
        ranges = shard_ranges(config, index, count)
        shard = {"index": index, "count": count, "sequences": {s: list(r) for s, r in ranges.items()}}
        shapes = {s: (b - a, split_shapes(config)[s][1]) for s, (a, b) in ranges.items()}
        path = folder / f"s{index}.h5"
        header = make_header(config, renderer, shard)
        with h5format.DatasetWriter(path, header, shapes, dataset_card(config, header, path),
                                    croissant=croissant_for(config, header, path)) as writer:
            for split, (a, b) in ranges.items():
                for i in range(a, b):
                    factors = sequence_factors(config, split, i)  # (T, F)
                    blank = np.zeros((len(factors), config.size, config.size), np.uint8)
                    writer.write_sequence(split, i - a, np.stack([blank] * 3, -1), factors, blank,
                                          poses_from_factors(config, factors),
                                          heldout_scored(config, factors) if split == "heldout" else None)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), TINY_CONFIG, 2)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_stopped_merge_leaves_no_file(shards, tmp_path, sig):
    out = tmp_path / "m.h5"
    result = interrupt("merge", [*shards, "--out", out, "--quiet"], sig)
    check_stopped(sig, result, f"merge into {out} stopped after 1 of {N_SEQUENCES} sequences; nothing was written; "
                               "run the same command again")


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_stopped_benchmark_leaves_no_file_no_worker_and_no_results(tmp_path, sig):
    # It holds inside its first job, the render of the dof 2 dataset (15 sequences) into the cache.
    args = ["--quick", "--dof", "2", "--methods", "pixel-average", "--gap", "1", "--cache", tmp_path / "cache",
            "--out", tmp_path / "out", "--quiet", "--threads", "1"]
    result = interrupt("benchmark", args, sig)
    path = result[2]
    assert path.parent == tmp_path / "cache" / "data"
    check_stopped(sig, result, f"render of {path} stopped after 1 of 15 sequences; nothing was written; "
                               "run the same command again")
    assert not (tmp_path / "out").exists()


def test_the_benchmark_job_loop_stops_after_the_job_in_hand(tmp_path, monkeypatch):
    from benchmarks.engine import plan, run
    from benchmarks.engine.config import quick_config

    ran = []

    def run_job(config, job):  # the first job gets a Ctrl-C; the loop must not start the second
        ran.append(job.id)
        if len(ran) == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(run, "run_job", run_job)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    config = quick_config(dofs=(1, 2), methods=("copy-x0",), cache=str(tmp_path / "cache"), out=str(tmp_path / "out"),
                          progress=False)
    jobs = plan.plan(config)
    with pytest.raises(Interrupted) as info:
        run.run_benchmark(config)
    assert ran == [jobs[0].id] and info.value.exit_code == 130
    assert str(info.value) == (f"SIGINT received: run-benchmark stopped after job {jobs[0].id} (1 of {len(jobs)}); "
                               f"finished jobs are cached in {tmp_path / 'cache'}; run the same command again to resume")
    assert not (tmp_path / "out").exists()
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
