"""A learned method's training run on disk: its summary record, resumable checkpoints, validation selection, preemption.

The one trainer's bookkeeping. Every learned method's loop has the same shape (benchmarks/methods/frame_cnn.py
reads top to bottom; inbetween/train.py runs one TrainRun per member of a batched ensemble):

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
lowest val loss), log.csv (training curve: step and the mean of each loss column over blocks of steps),
val.csv (every evaluation: step, val_loss and any other evaluated column), summary.json (TrainSummary).

Under torchrun (torch.distributed initialised) the run is rank-aware: every rank calls the same methods
at the same steps; rank 0 alone evaluates (the result is broadcast, so every rank selects and stops
alike) and writes; generator states are gathered so a checkpoint resumes every rank's stream; the stop
flag travels in all_reduce_step's one all-reduce per step, so all ranks stop after the same step.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
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


def distributed_context() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@functools.lru_cache(maxsize=4)  # a loop asks once per step; the order changes once per epoch
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training items in `epoch`: a function of (seed, epoch) only, so a resumed run
    sees the same batches. (n,) int64."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def all_reduce_step(values: torch.Tensor, requested: bool) -> tuple[torch.Tensor, bool]:
    """A step's loss values averaged over the ranks, and whether any rank got a stop signal: one all-reduce.

    values (...) are each rank's mean loss times its rank_share weight, so their average over the ranks
    is the global batch's mean; on one process they come back as they are.
    """
    if distributed_context()[1] == 1:
        return values, requested
    packed = torch.cat([values.detach().reshape(-1).float(), torch.tensor([float(requested)], device=values.device)])
    dist.all_reduce(packed)
    return (packed[:-1] / dist.get_world_size()).view(values.shape), bool(packed[-1] > 0)


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


def _state_of(obj, world: int = 1) -> Any:
    """What a checkpoint keeps of one state entry. Generators under DDP: every rank's state, rank 0 first."""
    if isinstance(obj, torch.Generator):
        if world == 1:
            return obj.get_state()
        states = [None] * world
        dist.all_gather_object(states, obj.get_state())
        return states
    if isinstance(obj, nn.Module):
        return {k: v.detach().cpu() for k, v in obj.state_dict().items()}
    return obj.state_dict()


def _load_state(obj, state, rank: int, world: int, path: Path) -> None:
    if not isinstance(obj, torch.Generator):
        obj.load_state_dict(state)
        return
    states = state if isinstance(state, list) else [state]
    if len(states) == world:
        obj.set_state(states[rank].cpu())
    elif rank == 0:
        # Another process count: the global batches are unchanged, but ranks > 0 have no saved stream to
        # continue, so they keep the one they were seeded with (the run is no longer bit-reproducible).
        obj.set_state(states[0].cpu())
        warnings.warn(f"{path} was saved by {len(states)} process(es) and is resumed by {world}: the "
                      "sampling noise of ranks > 0 restarts from their own seeds", stacklevel=4)


def _weights(state: dict) -> dict:
    """The modules' weights of a training state (what best.pt keeps), on the CPU."""
    return {name: _state_of(obj) for name, obj in state.items() if isinstance(obj, nn.Module)}


class TrainRun:
    """The bookkeeping of one training run: step count, curve, val schedule, best weights, checkpoints, stop flag.

    out_dir None trains in memory: no files, signals act as before, and the best weights are kept
    in memory. identity: what must equal the checkpoint's to resume (config and budget, not paths or
    devices). meta: JSON-able facts a loader needs (e.g. the model config), kept in every file.
    evaluate: run `val` on the schedule even without selection (None: only when selecting), e.g. to log
    a test loss. retired: checkpoint formats of older releases, refused with one line saying to retrain.
    The state given to step_done, stop and finish may be a function returning it, called only when a
    file is written (a batched ensemble builds a member's modules from its stack then).
    """

    def __init__(self, out_dir, *, method: str, fmt: str, identity: dict, meta: dict, params: int,
                 flops_per_step: int, planned_steps: int, lr: float, val_split: str | None, eval_every: int,
                 patience: int, min_delta: float, budget_gflop: float | None = None, checkpoint_every: int = 0,
                 columns: tuple[str, ...] = ("train_loss",), epoch_steps: int | None = None,
                 last_step_flops: int | None = None, dtype: str | None = None, evaluate: bool | None = None,
                 retired: tuple[str, ...] = ()):
        self.out = Path(out_dir) if out_dir is not None else None
        self.method, self.fmt, self.meta, self.params, self.lr, self.dtype = method, fmt, meta, params, lr, dtype
        self.retired = retired
        self.identity = json.dumps(identity, sort_keys=True, default=str)
        self.flops_per_step, self.planned, self.budget_gflop = flops_per_step, planned_steps, budget_gflop
        self.epochs = {"epoch_steps": epoch_steps, "last_step_flops": last_step_flops}
        self.selecting = val_split not in (None, NO_VAL)
        self.evaluating = self.selecting if evaluate is None else evaluate
        self.val_split, self.eval_every, self.checkpoint_every = val_split, eval_every, checkpoint_every
        self.columns = columns
        self.rank, self.world = distributed_context()
        self.writes = self.out is not None and self.rank == 0  # rank 0 alone writes files
        self.selection = Selection(patience, min_delta)
        self.step, self.stopped_early, self.seconds_before = 0, False, 0.0
        self.curve: list[tuple] = []  # (step, mean loss per column) per block of `every` steps
        self.val_rows: list[tuple] = []  # (step, value per val column) per evaluation
        self.val_columns: tuple[str, ...] = ("val_loss",)
        self.every = max(1, planned_steps // CURVE_POINTS)  # steps per logged block
        self._block, self._block_n = None, 0  # losses summed on the device: no sync per step
        self._best = None  # in-memory best weights (out_dir None)
        self._flag: StopFlag | None = None
        self.result: TrainSummary | None = None  # finish()'s summary
        self._t0 = None
        self._charged = None  # seconds charged by charge(); None: the wall time since resume() counts

    # ----------------------------------------------------------------------------- the loop

    @property
    def running(self) -> bool:
        return self.step < self.planned and not self.stopped_early

    def resume(self, state: dict, allowed: bool = True) -> TrainRun:
        """Load out_dir/checkpoint.pt into `state` (name -> module, optimiser or generator) if there is one.

        allowed False: a run already in out_dir is a UserError (continue it with resume=True)."""
        self._t0 = time.perf_counter()
        if self.out is None:
            return self
        path = self.out / CHECKPOINT_NAME
        if not allowed and (path.exists() or (self.out / LOG_NAME).exists()):
            raise UserError(f"{self.out} already holds a run; pass resume=True to continue it or choose another out_dir")
        if self.writes:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create out_dir {self.out}: {exc.strerror}") from None
        if not path.exists():
            return self
        payload = read_checkpoint(path, self.fmt, hint=f"remove {self.out} to start over", retired=self.retired)
        if payload.get("identity") != self.identity:
            saved, ours = json.loads(payload.get("identity") or "{}"), json.loads(self.identity)
            changed = sorted(k for k in saved.keys() | ours.keys() if saved.get(k) != ours.get(k))
            raise UserError(f"cannot resume {path}: it was trained with a different {', '.join(changed)}; "
                            "use the same settings or another out_dir")
        for name, obj in state.items():
            _load_state(obj, payload["state"][name], self.rank, self.world, path)
        run = payload["run"]
        self.step, self.stopped_early, self.seconds_before = run["step"], run["stopped_early"], run["train_seconds"]
        self.curve, self.val_rows = [tuple(r) for r in run["curve"]], [tuple(r) for r in run["val_rows"]]
        self.val_columns = tuple(run.get("val_columns", self.val_columns))
        self.selection = Selection.from_state(run["selection"])
        self._block, self._block_n = run["block"], run["block_n"]
        return self

    def stop_flag(self):
        """While entered, SIGTERM/SIGINT ask the run to checkpoint and stop after the current step (with out_dir)."""
        self._flag = StopFlag() if self.out is not None else None
        return self._flag if self._flag is not None else nullcontext()

    def step_done(self, state, losses: torch.Tensor, val: Callable[[], float | dict] | None = None,
                  stop: bool | None = None) -> None:
        """After an optimiser step: log `losses` (one per column), evaluate val when due, checkpoint,
        and act on a stop signal (checkpoint, summary "preempted", raise Preempted).

        val returns the val loss, or a dict of evaluated columns whose "val_loss" (if any) selects.
        stop: whether to stop now, as all_reduce_step found it (None: this run's own stop_flag, all-reduced
        under DDP; False: the caller acts on it, e.g. for every member of an ensemble at once).
        """
        self.step += 1
        losses = losses.detach().reshape(-1).float()
        self._block = losses.clone() if self._block is None else self._block.to(losses.device) + losses
        self._block_n += 1
        evaluated = self.evaluating and val is not None and (self.step % self.eval_every == 0
                                                             or self.step == self.planned)
        if evaluated:
            self._evaluated(state, val)
        if self.step % self.every == 0 or not self.running:  # .tolist() waits for the device
            self.curve.append((self.step, *(self._block / self._block_n).tolist()))
            self._block, self._block_n = None, 0
        if self.out is not None and (evaluated or (self.checkpoint_every and self.step % self.checkpoint_every == 0)):
            self.checkpoint(state)
        if stop is None:
            stop = all_reduce_step(torch.zeros(()), self._flag is not None and self._flag.requested)[1]
        if stop and self.running:  # else the run ends normally now
            self.stop(state)
            # A rank stopped by another rank's signal reports SIGTERM, what schedulers send.
            raise Preempted((self._flag and self._flag.signum) or signal.SIGTERM, self.step, self.out / CHECKPOINT_NAME)

    def _evaluated(self, state, val) -> None:
        """Rank 0 evaluates; every rank gets the values, selects alike and stops alike; rank 0 keeps best.pt."""
        values = None
        if self.rank == 0:
            got = val()
            values = got if isinstance(got, dict) else {"val_loss": got}
            self.val_columns = tuple(values)
        if self.world > 1:
            box = [values]
            dist.broadcast_object_list(box, src=0)
            values = box[0]
            self.val_columns = tuple(values)
        self.val_rows.append((self.step, *(float(v) for v in values.values())))
        if self.selecting:
            loss = float(values["val_loss"])
            if self.selection.update(self.step, loss):
                self._save_best(state, loss)
            self.stopped_early = self.selection.should_stop

    def stop(self, state) -> None:
        """A stop signal: write the checkpoint and the summary "preempted" (the caller raises Preempted)."""
        self.checkpoint(state)
        if self.writes:
            write_summary(self.summary("preempted"), self.out)

    def charge(self, seconds: float) -> None:
        """Count `seconds` as this run's training time (a batched ensemble splits its wall time over its
        members); once called, only charged time counts."""
        self._charged = (self._charged or 0.0) + seconds

    @property
    def last_loss(self) -> float | None:
        return self.curve[-1][1] if self.curve else None

    def finish(self, state) -> TrainSummary:
        """Write the last checkpoint, logs and summary.json; load the selected weights into the modules."""
        self.result = self.summary("stopped-early" if self.stopped_early else "finished")
        best = self._best
        if self.out is not None:
            self.checkpoint(state)
            if self.writes:
                write_summary(self.result, self.out)
                if self.selecting and self.selection.best_step is not None:
                    best = read_checkpoint(self.out / BEST_NAME, self.fmt)["state"]
        state = state() if callable(state) else state
        for name, weights in (best or {}).items():
            state[name].load_state_dict(weights)
        return self.result

    # ----------------------------------------------------------------------------- records and files

    @property
    def seconds(self) -> float:
        if self._charged is not None:
            return self.seconds_before + self._charged
        return self.seconds_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def summary(self, status: str) -> TrainSummary:
        sel = self.selection
        best = self.selecting and sel.best_step is not None  # no finite val loss yet: the last step stands in
        return TrainSummary(
            method=self.method, status=status, params=self.params, flops_per_step=self.flops_per_step,
            steps=self.step, planned_steps=self.planned,
            train_flops=flops_of_steps(self.step, self.flops_per_step, **self.epochs),
            train_seconds=round(self.seconds, 3), budget_gflop=self.budget_gflop, lr=self.lr, dtype=self.dtype,
            selected_step=sel.best_step if best else self.step, best_val_loss=sel.best_loss if best else None,
            selected_checkpoint=BEST_NAME if best else CHECKPOINT_NAME,
            val_split=self.val_split if self.selecting else None, eval_every=self.eval_every if self.selecting else None,
            patience=sel.patience, min_delta=sel.min_delta, version=package_version())

    def checkpoint(self, state) -> None:
        """checkpoint.pt (everything to resume), log.csv and val.csv, each written atomically by rank 0.

        Every rank calls it (generator states are gathered from all of them)."""
        state = state() if callable(state) else state
        saved = {name: _state_of(obj, self.world) for name, obj in state.items()}
        if not self.writes:
            return
        block = None if self._block is None else self._block.cpu()
        run = {"step": self.step, "stopped_early": self.stopped_early, "train_seconds": self.seconds,
               "curve": self.curve, "val_rows": self.val_rows, "val_columns": list(self.val_columns),
               "selection": self.selection.state_dict(), "block": block, "block_n": self._block_n}
        torch_save_atomic({"format": self.fmt, "version": package_version(), "meta": self.meta,
                           "identity": self.identity, "step": self.step, "state": saved, "run": run,
                           "summary": asdict(self.summary("in-progress"))}, self.out / CHECKPOINT_NAME)
        write_text_atomic(self.out / LOG_NAME, ",".join(("step", *self.columns)) + "\n"
                          + "".join(",".join(map(repr, row)) + "\n" for row in self.curve))
        if self.val_rows:
            write_text_atomic(self.out / VAL_LOG_NAME, ",".join(("step", *self.val_columns)) + "\n"
                              + "".join(",".join(map(repr, row)) + "\n" for row in self.val_rows))

    def _save_best(self, state, loss: float) -> None:
        if self.rank != 0:
            return
        state = state() if callable(state) else state
        weights = _weights(state)
        if self.out is None:
            self._best = {k: {n: t.clone() for n, t in w.items()} for k, w in weights.items()}
            return
        torch_save_atomic({"format": self.fmt, "version": package_version(), "meta": self.meta, "step": self.step,
                           "val_loss": loss, "state": weights}, self.out / BEST_NAME)
