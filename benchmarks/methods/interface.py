"""The method interface: what train() gets (TrainSpec) and returns (TrainSummary), and tau handling.

Every file in benchmarks/methods/ is one method and exports (benchmarks/methods/__init__.py lists them):

    NAME                     registry key, CLI prefix (--frame-cnn-lr) and default row label
    Config                   frozen dataclass of the method's settings, fields commented, validated
    TRAINS, SEEDED           whether it fits anything to the train split; whether seeds give new models
    label(config) -> str     the row name in tables and figures
    train(config, spec, out_dir, *, device, progress) -> TrainSummary
    load(config, out_dir, device) -> model
    predict(model, x0, x2, tau) -> x_tau
        x0, x2: (B, 3, H, W) float in [0, 1]; tau: a float or a (B,) tensor in (0, 1), the position
        of the wanted frame between x0 (tau = 0) and x2 (tau = 1); returns (B, 3, H, W) in [0, 1]
        on x0's device.
and optionally QUICK (Config overrides of --quick), SHARED (field -> an unprefixed CLI option that
several methods share, e.g. the latent models' --width), variants(config) -> [Config] (the models a
benchmark run trains, e.g. one per alpha) and record(config) -> dict (extra fields of its records).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ibutil.errors import UserError
from ibutil.io import write_text_atomic

SUMMARY_NAME = "summary.json"  # written beside a trained model when train() returns: the "finished" mark


@dataclass(frozen=True)
class TrainSpec:
    """What every trained method gets from the benchmark, the same for all of them (docs/benchmark.md)."""

    data: str  # HDF5 dataset file; a method reads its train split only
    gaps: tuple[int, ...]  # gaps k of the training triplets (t-k, t, t+k), mixed in one run
    steps: int  # optimiser steps: the budget
    batch_size: int  # triplets per optimiser step
    seed: int  # seeds the weights, the data order and any noise

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.seed < 0:
            raise UserError(f"steps and batch_size must be >= 1 and seed >= 0, got {self}")


@dataclass(frozen=True)
class TrainSummary:
    """What one train() call cost and chose; every field lands in the method's results records."""

    params: int  # trainable parameters (0 for methods that fit no weights)
    train_flops: int | None  # FLOPs of the whole run, counted; None where not counted yet
    train_seconds: float  # wall time of train()
    selected_step: int | None  # the step whose weights are scored (the last step: no validation selection yet)
    lr: float | None  # the learning rate trained with (None without an optimiser)


def write_summary(summary: TrainSummary, out_dir: str | os.PathLike) -> Path:
    """Write summary.json into out_dir atomically: from then on the model counts as trained."""
    return write_text_atomic(Path(out_dir) / SUMMARY_NAME, json.dumps(asdict(summary), indent=1))


def read_summary(out_dir: str | os.PathLike) -> TrainSummary | None:
    """The summary of a finished training run in out_dir, or None if it has not finished."""
    path = Path(out_dir) / SUMMARY_NAME
    return TrainSummary(**json.loads(path.read_text())) if path.exists() else None


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
