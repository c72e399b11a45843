"""A learned method's training run on disk: its summary record, resumable checkpoints, validation selection, preemption.

Every learned method's loop has the same shape (benchmarks/methods/frame_cnn.py reads top to bottom):

    run = TrainRun(out_dir, method=NAME, fmt=FORMAT, identity=..., meta=..., params=..., flops_per_step=...,
                   planned_steps=..., lr=..., val_split=..., eval_every=..., patience=..., min_delta=...)
    state = {"model": model, "optimiser": optimiser, "generator": generator}
    run.resume(state)                                   # continue out_dir/checkpoint.pt if there is one
    with run.stop_flag():                               # SIGTERM / SIGINT: finish the step, checkpoint, Preempted
        while run.running:
            ... one optimiser step ...
            run.step_done(state, losses, val=lambda: val_loss(model))
    summary = run.finish(state)                         # summary.json; the modules hold the selected weights

Files in out_dir: checkpoint.pt (the last state, resumable), best.pt (the weights of the step with the
lowest val loss), log.csv (training curve), val.csv (every evaluation), summary.json (TrainSummary).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ibutil.errors import UserError
from ibutil.flops import flops_of_steps, steps_for_budget
from ibutil.io import read_checkpoint, torch_save_atomic, write_text_atomic
from ibutil.preempt import Preempted, StopFlag
from ibutil.selection import Selection

SUMMARY_NAME = "summary.json"  # the run's record; a model counts as trained when its status is in TRAINED
CHECKPOINT_NAME = "checkpoint.pt"  # the last state, resumable
BEST_NAME = "best.pt"  # the selected weights (lowest val loss)
LOG_NAME = "log.csv"  # step and the mean training losses of each of about CURVE_POINTS blocks of steps
VAL_LOG_NAME = "val.csv"  # step, val_loss of every evaluation
CURVE_POINTS = 100
NO_VAL = "none"  # val_split value that turns selection off (the last step is selected)
TRAINED = ("finished", "stopped-early")  # statuses of a usable model; "preempted" and "in-progress" are not
FLOPS_COUNTED = "forward + backward matmuls and convolutions of one training batch; optimiser excluded"
# The summary fields every results record carries (None for methods that fit nothing).
RECORD_KEYS = ("params", "flops_per_step", "train_flops", "train_seconds", "steps", "selected_step", "best_val_loss",
               "lr", "budget_gflop", "dtype")


def package_version() -> str:
    try:
        return metadata.version("inbetween-bench")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class TrainSummary:
    """What one training run cost and chose: summary.json, the checkpoint's "summary", and the records' fields."""

    method: str = ""  # the method (registry name) that wrote it
    status: str = "finished"  # in-progress (inside a checkpoint), finished, stopped-early or preempted
    params: int = 0  # trainable parameters (0 for methods that fit no weights)
    flops_per_step: int | None = None  # counted FLOPs of one full training batch (ibutil.flops)
    steps: int = 0  # optimiser steps run
    planned_steps: int = 0  # the steps of the budget (more than steps when stopped early)
    train_flops: int | None = None  # FLOPs of the steps run, counted (evaluation not included)
    train_seconds: float = 0.0  # wall time of training, summed over resumed parts
    budget_gflop: float | None = None  # the FLOP budget the steps were derived from; None: a step count was given
    lr: float | None = None  # the learning rate trained with (None without an optimiser)
    dtype: str | None = None  # fp32, or bf16 autocast (None: a method that does not choose)
    selected_step: int | None = None  # the step whose weights are scored
    best_val_loss: float | None = None  # the val loss of the selected step (None without selection)
    selected_checkpoint: str | None = None  # best.pt, or checkpoint.pt (the last step) without selection
    val_split: str | None = None  # the split selected on (None: no selection)
    eval_every: int | None = None  # steps between evaluations
    patience: int | None = None  # evaluations without a new best before stopping early (0: never)
    min_delta: float | None = None  # the improvement a new best needs
    version: str = ""  # package version that trained it
    flops_counted: str = FLOPS_COUNTED

    @property
    def trained(self) -> bool:
        return self.status in TRAINED

    def record(self) -> dict[str, Any]:
        """The fields a results record carries."""
        return {k: getattr(self, k) for k in RECORD_KEYS}


def write_summary(summary: TrainSummary, out_dir: str | os.PathLike) -> Path:
    """summary.json in out_dir, written atomically."""
    return write_text_atomic(Path(out_dir) / SUMMARY_NAME, json.dumps(asdict(summary), indent=1) + "\n")


def read_summary(out_dir: str | os.PathLike) -> TrainSummary | None:
    """The summary in out_dir (whatever its status), or None if there is none yet."""
    path = Path(out_dir) / SUMMARY_NAME
    if not path.exists():
        return None
    known = {f.name for f in fields(TrainSummary)}
    return TrainSummary(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def planned_steps(steps: int, budget_gflop: float | None, flops_per_step: int, what: str,
                  epoch_steps: int | None = None, last_step_flops: int | None = None) -> int:
    """`steps`, or with a budget the most steps it pays for at the counted FLOPs per step (ibutil.flops)."""
    if budget_gflop is None:
        return steps
    return steps_for_budget(budget_gflop, flops_per_step, what, epoch_steps, last_step_flops)


def load_selected(out_dir: str | os.PathLike, fmt: str, device="cpu", hint: str = "") -> dict:
    """The payload of the checkpoint a finished run selected (summary.json says which): meta, step, state."""
    out = Path(out_dir)
    summary = read_summary(out)
    if summary is None or not summary.trained:
        status = "no summary" if summary is None else f"status {summary.status}"
        raise UserError(f"{out} holds no finished training run ({status}); train it (again) first")
    return read_checkpoint(out / (summary.selected_checkpoint or CHECKPOINT_NAME), fmt, device, hint=hint)


def _state_of(obj) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, nn.Module):
        return {k: v.detach().cpu() for k, v in obj.state_dict().items()}
    return obj.state_dict()


def _load_state(obj, state) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state.cpu())
    else:
        obj.load_state_dict(state)


def _weights(state: dict) -> dict:
    """The modules' weights of a training state (what best.pt keeps), on the CPU."""
    return {name: _state_of(obj) for name, obj in state.items() if isinstance(obj, nn.Module)}


class TrainRun:
    """The bookkeeping of one training run: step count, curve, val schedule, best weights, checkpoints, stop flag.

    out_dir None trains in memory: no files, signals act as before, and the best weights are kept
    in memory. identity: what must equal the checkpoint's to resume (config and budget, not paths or
    devices). meta: JSON-able facts a loader needs (e.g. the model config), kept in every file.
    """

    def __init__(self, out_dir, *, method: str, fmt: str, identity: dict, meta: dict, params: int,
                 flops_per_step: int, planned_steps: int, lr: float, val_split: str | None, eval_every: int,
                 patience: int, min_delta: float, budget_gflop: float | None = None, checkpoint_every: int = 0,
                 columns: tuple[str, ...] = ("train_loss",), epoch_steps: int | None = None,
                 last_step_flops: int | None = None):
        self.out = Path(out_dir) if out_dir is not None else None
        self.method, self.fmt, self.meta, self.params, self.lr = method, fmt, meta, params, lr
        self.identity = json.dumps(identity, sort_keys=True, default=str)
        self.flops_per_step, self.planned, self.budget_gflop = flops_per_step, planned_steps, budget_gflop
        self.epochs = {"epoch_steps": epoch_steps, "last_step_flops": last_step_flops}
        self.selecting = val_split not in (None, NO_VAL)
        self.val_split, self.eval_every, self.checkpoint_every = val_split, eval_every, checkpoint_every
        self.columns = columns
        self.selection = Selection(patience, min_delta)
        self.step, self.stopped_early, self.seconds_before = 0, False, 0.0
        self.curve: list[tuple] = []  # (step, mean loss per column) per block of `every` steps
        self.val_rows: list[tuple[int, float]] = []
        self.every = max(1, planned_steps // CURVE_POINTS)  # steps per logged block
        self._block, self._block_n = None, 0  # losses summed on the device: no sync per step
        self._best = None  # in-memory best weights (out_dir None)
        self._flag: StopFlag | None = None
        self.result: TrainSummary | None = None  # finish()'s summary
        self._t0 = None

    # ----------------------------------------------------------------------------- the loop

    @property
    def running(self) -> bool:
        return self.step < self.planned and not self.stopped_early

    def resume(self, state: dict) -> TrainRun:
        """Load out_dir/checkpoint.pt into `state` (name -> module, optimiser or generator) if there is one."""
        self._t0 = time.perf_counter()
        if self.out is None:
            return self
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create out_dir {self.out}: {exc.strerror}") from None
        path = self.out / CHECKPOINT_NAME
        if not path.exists():
            return self
        payload = read_checkpoint(path, self.fmt, hint=f"remove {self.out} to start over")
        if payload.get("identity") != self.identity:
            saved, ours = json.loads(payload.get("identity") or "{}"), json.loads(self.identity)
            changed = sorted(k for k in saved.keys() | ours.keys() if saved.get(k) != ours.get(k))
            raise UserError(f"cannot resume {path}: it was trained with a different {', '.join(changed)}; "
                            "use the same settings or another out_dir")
        for name, obj in state.items():
            _load_state(obj, payload["state"][name])
        run = payload["run"]
        self.step, self.stopped_early, self.seconds_before = run["step"], run["stopped_early"], run["train_seconds"]
        self.curve, self.val_rows = [tuple(r) for r in run["curve"]], [tuple(r) for r in run["val_rows"]]
        self.selection = Selection.from_state(run["selection"])
        self._block, self._block_n = run["block"], run["block_n"]
        return self

    def stop_flag(self):
        """While entered, SIGTERM/SIGINT ask the run to checkpoint and stop after the current step (with out_dir)."""
        self._flag = StopFlag() if self.out is not None else None
        return self._flag if self._flag is not None else nullcontext()

    def step_done(self, state: dict, losses: torch.Tensor, val: Callable[[], float] | None = None) -> None:
        """After an optimiser step: log `losses` (one per column, detached), evaluate val when due, checkpoint,
        and act on a stop signal (checkpoint, summary "preempted", raise Preempted)."""
        self.step += 1
        losses = losses.detach().reshape(-1).float()
        self._block = losses.clone() if self._block is None else self._block.to(losses.device) + losses
        self._block_n += 1
        evaluated = self.selecting and (self.step % self.eval_every == 0 or self.step == self.planned)
        if evaluated:
            loss = float(val())
            if self.selection.update(self.step, loss):
                self._save_best(state, loss)
            self.val_rows.append((self.step, loss))
            self.stopped_early = self.selection.should_stop
        if self.step % self.every == 0 or not self.running:  # .tolist() waits for the device
            self.curve.append((self.step, *(self._block / self._block_n).tolist()))
            self._block, self._block_n = None, 0
        if self.out is not None and (evaluated or (self.checkpoint_every and self.step % self.checkpoint_every == 0)):
            self.checkpoint(state)
        if self._flag is not None and self._flag.requested and self.running:  # else the run ends normally now
            self.checkpoint(state)
            write_summary(self.summary("preempted"), self.out)
            raise Preempted(self._flag.signum, self.step, self.out / CHECKPOINT_NAME)

    @property
    def last_loss(self) -> float | None:
        return self.curve[-1][1] if self.curve else None

    def finish(self, state: dict) -> TrainSummary:
        """Write the last checkpoint, logs and summary.json; load the selected weights into the modules."""
        self.result = self.summary("stopped-early" if self.stopped_early else "finished")
        best = self._best
        if self.out is not None:
            self.checkpoint(state)
            write_summary(self.result, self.out)
            if self.selecting and self.selection.best_step is not None:
                best = read_checkpoint(self.out / BEST_NAME, self.fmt)["state"]
        for name, weights in (best or {}).items():
            state[name].load_state_dict(weights)
        return self.result

    # ----------------------------------------------------------------------------- records and files

    @property
    def seconds(self) -> float:
        return self.seconds_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def summary(self, status: str) -> TrainSummary:
        sel = self.selection
        best = self.selecting and sel.best_step is not None  # no finite val loss yet: the last step stands in
        return TrainSummary(
            method=self.method, status=status, params=self.params, flops_per_step=self.flops_per_step,
            steps=self.step, planned_steps=self.planned,
            train_flops=flops_of_steps(self.step, self.flops_per_step, **self.epochs),
            train_seconds=round(self.seconds, 3), budget_gflop=self.budget_gflop, lr=self.lr,
            selected_step=sel.best_step if best else self.step, best_val_loss=sel.best_loss if best else None,
            selected_checkpoint=BEST_NAME if best else CHECKPOINT_NAME,
            val_split=self.val_split if self.selecting else None, eval_every=self.eval_every if self.selecting else None,
            patience=sel.patience, min_delta=sel.min_delta, version=package_version())

    def checkpoint(self, state: dict) -> None:
        """checkpoint.pt (everything to resume), log.csv and val.csv, each written atomically."""
        block = None if self._block is None else self._block.cpu()
        run = {"step": self.step, "stopped_early": self.stopped_early, "train_seconds": self.seconds,
               "curve": self.curve, "val_rows": self.val_rows, "selection": self.selection.state_dict(),
               "block": block, "block_n": self._block_n}
        torch_save_atomic({"format": self.fmt, "version": package_version(), "meta": self.meta,
                           "identity": self.identity, "step": self.step,
                           "state": {name: _state_of(obj) for name, obj in state.items()}, "run": run,
                           "summary": asdict(self.summary("in-progress"))}, self.out / CHECKPOINT_NAME)
        write_text_atomic(self.out / LOG_NAME, ",".join(("step", *self.columns)) + "\n"
                          + "".join(",".join(map(repr, row)) + "\n" for row in self.curve))
        if self.selecting:
            write_text_atomic(self.out / VAL_LOG_NAME, "step,val_loss\n"
                              + "".join(f"{s},{v!r}\n" for s, v in self.val_rows))

    def _save_best(self, state: dict, loss: float) -> None:
        weights = _weights(state)
        if self.out is None:
            self._best = {k: {n: t.clone() for n, t in w.items()} for k, w in weights.items()}
            return
        torch_save_atomic({"format": self.fmt, "version": package_version(), "meta": self.meta, "step": self.step,
                           "val_loss": loss, "state": weights}, self.out / BEST_NAME)
