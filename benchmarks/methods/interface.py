"""The method interface: what train() gets (TrainSpec) and returns (TrainSummary), and tau handling.

Every file in benchmarks/methods/ is one method and exports (benchmarks/methods/__init__.py lists them):

    NAME                     registry key, CLI prefix (--frame-cnn-lr) and default row label
    Config                   frozen dataclass of the method's settings, fields commented, validated
    TRAINS, SEEDED           whether it fits anything to the train split; whether seeds give new models
    label(config) -> str     the row name in tables and figures
    train(config, spec, out_dir, *, device, progress) -> TrainSummary
        learned methods select on spec.val_split (best.pt), spend spec.budget_gflop when given, checkpoint
        on SIGTERM (ibutil.preempt.Preempted) and resume an interrupted run in out_dir (ibutil.run.TrainRun)
    load(config, out_dir, device) -> model     the selected checkpoint (summary.json's selected_checkpoint)
    predict(model, x0, x2, tau) -> x_tau
        x0, x2: (B, 3, H, W) float in [0, 1]; tau: a float or a (B,) tensor in (0, 1), the position
        of the wanted frame between x0 (tau = 0) and x2 (tau = 1); returns (B, 3, H, W) in [0, 1]
        on x0's device.
and optionally QUICK and DEMO (Config overrides of --quick and --demo), SHARED (field -> an unprefixed CLI option that
several methods share, e.g. the latent models' --width), variants(config) -> [Config] (the models a
benchmark run trains, e.g. one per alpha), record(config) -> dict (extra fields of its records), and
group_key(config) with train_group(configs, spec, out_dirs, group_dir, *, device, progress) -> [TrainSummary]:
variants with equal keys that run-benchmark --ensemble trains together as one batched network (the
alpha-VAE's alpha sweep), each into its own out_dir as train() would (group_dir marks the group, so a preempted
group resumes as one). Every learned method writes its loop on ibutil.run.TrainRun; the latent models share
their code through benchmarks/methods/latent_models.py (not a method), and no method imports another.
A learned method's Config has an `lr` field: the centre of the benchmark's learning-rate sweep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ibutil.errors import UserError
from ibutil.run import TrainSummary, read_summary, write_summary  # noqa: F401  (the one summary, re-exported)
from ibutil.selection import EVAL_EVERY, MIN_DELTA, PATIENCE, Selection

@dataclass(frozen=True)
class TrainSpec:
    """What every trained method gets from the benchmark, the same for all of them (docs/benchmark.md)."""

    data: str  # HDF5 dataset file; a method fits its train split only and selects on val_split
    gaps: tuple[int, ...]  # gaps k of the training triplets (t-k, t, t+k), mixed in one run
    steps: int  # optimiser steps when budget_gflop is None
    batch_size: int  # triplets per optimiser step
    seed: int  # seeds the weights, the data order and any noise
    val_split: str = "val"  # split whose loss selects the checkpoint (best.pt) and stops early; "none": the last step
    eval_every: int = EVAL_EVERY  # steps between val evaluations (and one at the last step)
    patience: int = PATIENCE  # evaluations without a new best before stopping early (0: never)
    min_delta: float = MIN_DELTA  # a new best must be lower than the old by more than this
    budget_gflop: float | None = None  # when set, the steps are what this many GFLOP buy at the method's counted cost
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: at evaluations and the end)
    cache: str | None = None  # folder for per-machine measurements (alpha-vae's dtype choice); None: the model's folder

    def __post_init__(self):
        object.__setattr__(self, "gaps", tuple(self.gaps))
        if self.steps < 1 or self.batch_size < 1 or self.seed < 0:
            raise UserError(f"steps and batch_size must be >= 1 and seed >= 0, got {self}")
        if self.val_split in ("train", "test", "heldout"):
            raise UserError(f"val_split must not be the {self.val_split} split: selection looks at validation data only")
        if self.eval_every < 1 or self.checkpoint_every < 0:
            raise UserError(f"eval_every must be >= 1 and checkpoint_every >= 0, got {self}")
        Selection(self.patience, self.min_delta)  # validates both
        if self.budget_gflop is not None and not (isinstance(self.budget_gflop, (int, float))
                                                  and math.isfinite(self.budget_gflop) and self.budget_gflop > 0):
            raise UserError(f"budget_gflop must be a positive number of GFLOP, got {self.budget_gflop!r}")

    def resume_identity(self) -> dict:
        """What a resumed run must share with the checkpoint: everything but where the data lie and how often it saves."""
        return {k: v for k, v in asdict(self).items() if k not in ("data", "checkpoint_every", "cache")}


def check_frames(x0: torch.Tensor, x2: torch.Tensor) -> None:
    """UserError unless x0 and x2 are both (B, 3, H, W)."""
    if x0.shape != x2.shape or x0.ndim != 4 or x0.shape[1] != 3:
        raise UserError(f"x0 {tuple(x0.shape)} and x2 {tuple(x2.shape)} must both be (B, 3, H, W)")


def tau_column(tau, x0: torch.Tensor) -> torch.Tensor:
    """tau as a float or (B,) tensor in (0, 1) -> (B, 1, 1, 1) float32 on x0's device, for broadcasting."""
    t = torch.as_tensor(tau, dtype=torch.float32, device=x0.device)
    if t.ndim == 0:
        t = t.expand(x0.shape[0])
    if t.shape != (x0.shape[0],):
        raise UserError(f"tau must be a float or a ({x0.shape[0]},) tensor, got shape {tuple(t.shape)}")
    if not bool(((t > 0) & (t < 1)).all()):
        raise UserError("tau must lie strictly between 0 (x0) and 1 (x2)")
    return t.view(-1, 1, 1, 1)
