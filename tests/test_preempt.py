"""Preemption with a real SIGTERM in the middle of an epoch: checkpoint, exit 143, resume to the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import preempt_train
from ibutil.preempt import Interrupted, Preempted, StopFlag, StoppedAtOnce, preemption_exits
from inbetween.toy import write_toy_dataset

SCRIPT = Path(__file__).with_name("preempt_train.py")
WAIT_AT = 4  # the signal lands inside training step 4 (of 6 in the first epoch)
HANG_S = 1800  # only stops a hung child from hanging the suite; no assertion depends on time


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy.h5", image_size=8, frames=8, train=4, val=2, test=1)


def interrupted_run(method: str, data: Path, out: Path) -> subprocess.CompletedProcess:
    """Start the child, wait until it holds step WAIT_AT, send SIGTERM, wait for it to exit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SCRIPT.parent), str(Path.cwd())]))
    child = subprocess.Popen([sys.executable, str(SCRIPT), method, str(data), str(out), "--wait-at", str(WAIT_AT)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()  # blocks until the child reaches step WAIT_AT (or dies)
        assert line.strip() == f"waiting at step {WAIT_AT}", line + child.stderr.read()
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=HANG_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, line + stdout, stderr)


def state_dict(path: Path) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["model"] if "model" in payload else payload["state"]["model"]  # inbetween.train / ibutil.run


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["alpha-vae", "frame-cnn", "autoencoder", "acai"])
def test_sigterm_mid_epoch_checkpoints_exits_143_and_resumes_to_the_same_bytes(method, data, tmp_path):
    train = preempt_train.TRAINERS[method]
    stopped = interrupted_run(method, data, tmp_path / "split")
    assert stopped.returncode == 143, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last == (f"stopped: SIGTERM received: stopped after step {WAIT_AT} and saved "
                    f"{tmp_path / 'split' / 'checkpoint.pt'}; run again with resume to continue")
    assert "Traceback" not in stopped.stderr
    ckpt = torch.load(tmp_path / "split" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == WAIT_AT  # the step in flight finished, nothing after it ran
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["steps"] == WAIT_AT and summary["selected_step"] == 3
    assert not list((tmp_path / "split").glob(".*tmp*"))  # no half-written file

    if method == "alpha-vae":  # inbetween.train refuses to start over a preempted run silently
        with pytest.raises(Exception, match="resume"):
            train(data, tmp_path / "split")
    resumed = train(data, tmp_path / "split", resume=True)
    straight = train(data, tmp_path / "straight")
    assert same(resumed.state_dict(), straight.state_dict())  # the selected models
    for name in ("checkpoint.pt", "best.pt"):
        assert same(state_dict(tmp_path / "split" / name), state_dict(tmp_path / "straight" / name)), name
    a, b = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("split", "straight"))
    assert a["status"] == b["status"] == "finished" and a["steps"] == b["steps"] == preempt_train.STEPS
    assert a["selected_step"] == b["selected_step"] and a["best_val_loss"] == b["best_val_loss"]
    assert a["train_flops"] == b["train_flops"] == a["flops_per_step"] * preempt_train.STEPS


def test_run_benchmark_exits_143_on_sigterm_during_training_and_a_rerun_resumes(data, tmp_path):
    from click.testing import CliRunner

    from benchmarks.cli import run_benchmark

    stopped = interrupted_run("run-benchmark", data, tmp_path / "split")
    assert stopped.returncode == 143, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped: SIGTERM received: stopped after step {WAIT_AT} and saved ") and "Traceback" \
        not in stopped.stderr
    (folder,) = (tmp_path / "split" / "cache" / "models").iterdir()
    assert json.loads((folder / "summary.json").read_text())["status"] == "preempted"
    assert not (tmp_path / "split" / "out").exists()  # no results from an unfinished run
    for root in ("split", "straight"):  # the rerun resumes; a fresh cache trains from scratch
        r = CliRunner().invoke(run_benchmark, preempt_train.benchmark_args(data, tmp_path / root))
        assert r.exit_code == 0, r.output
    (straight,) = (tmp_path / "straight" / "cache" / "models").iterdir()
    assert folder.name == straight.name  # the same job
    for name in ("checkpoint.pt", "best.pt"):
        assert same(state_dict(folder / name), state_dict(straight / name)), name
    a, b = (json.loads((tmp_path / root / "out" / "results.json").read_text())["records"] for root in ("split", "straight"))
    assert [r["mse"] for r in a] == [r["mse"] for r in b]


def test_stop_flag_restores_handlers_and_a_second_signal_is_not_swallowed():
    # Python's own Ctrl-C handler, whatever the suite inherited (a shell's background job starts with SIGINT ignored).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopFlag() as flag:
            assert not flag.requested
            signal.raise_signal(signal.SIGINT)
            assert flag.signum == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C stops at once, as Python's default does
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_preempted_exit_codes_and_cli_line(capsys):
    assert Preempted(signal.SIGTERM, 7, "run/checkpoint.pt").exit_code == 143
    assert Preempted(signal.SIGINT, 7, "run/checkpoint.pt").exit_code == 130
    with pytest.raises(SystemExit) as info, preemption_exits():
        raise Preempted(signal.SIGTERM, 7, Path("run") / "checkpoint.pt")
    assert info.value.code == 143
    assert capsys.readouterr().err == ("stopped: SIGTERM received: stopped after step 7 and saved run/checkpoint.pt; "
                                       "run again with resume to continue\n")


def test_nested_stop_flags_share_one_signal_and_the_loop_unwinds_from_its_safe_point():
    saved = [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        with StopFlag() as outer:  # run-benchmark's job loop
            with StopFlag() as inner:  # the render or training inside a job: the same flag
                assert not inner.requested
                signal.raise_signal(signal.SIGTERM)  # only recorded: nothing is raised here
                assert inner.signum == outer.signum == signal.SIGTERM
                with pytest.raises(StoppedAtOnce) as at_once:  # the second signal, of either kind, stops at once
                    signal.raise_signal(signal.SIGINT)
                assert at_once.value.exit_code == 130 and isinstance(at_once.value, KeyboardInterrupt)
            assert signal.getsignal(signal.SIGTERM) == outer._handle  # the inner flag installed nothing
            with pytest.raises(Interrupted) as info:
                outer.check("job 3 stopped; run it again")
        assert str(info.value) == "SIGTERM received: job 3 stopped; run it again" and info.value.exit_code == 143
        assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == [signal.SIG_DFL] * 2
        with StopFlag() as fresh:
            assert not fresh.requested
            fresh.check("never raised")
    finally:
        for s, handler in zip((signal.SIGINT, signal.SIGTERM), saved):
            signal.signal(s, handler)


def test_every_stop_exits_128_plus_the_signal_with_one_line(capsys):
    assert isinstance(Preempted(signal.SIGINT, 1, "c.pt"), Interrupted)
    cases = [(Interrupted(signal.SIGINT, "render of x.h5 stopped after 3 of 9 sequences"), 130,
              "stopped: SIGINT received: render of x.h5 stopped after 3 of 9 sequences\n"),
             (StoppedAtOnce(signal.SIGTERM), 143,
              "stopped: SIGTERM received twice: stopped at once, without waiting for a safe point; nothing "
              "half-written was kept; run the same command again\n"),
             (KeyboardInterrupt(), 130, "stopped: SIGINT received: stopped; run the same command again\n")]
    for exc, code, line in cases:
        with pytest.raises(SystemExit) as info, preemption_exits():
            raise exc
        assert info.value.code == code and capsys.readouterr().err == line
