"""The benchmark's configuration: what to run (BenchmarkConfig), the --quick and --demo profiles and the datasets they render."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from benchmarks import methods
from ibdata.triplets import normalize_gaps
from ibutil.device import check_device_name
from ibutil.errors import UserError
from ibutil.selection import EVAL_EVERY, PATIENCE, Selection
from render.dataset import regenerate_command
from render.presets import PRESETS, RenderConfig


@dataclass(frozen=True)
class BenchmarkConfig:
    """Every option of a benchmark run; written to config.json beside the results."""

    out: str = "results/benchmark"  # output folder, written atomically (a temp folder renamed at the end)
    dofs: tuple[int, ...] = (1, 2, 6)  # presets to benchmark (ignored when --data names the files)
    gaps: tuple[int, ...] = (2, 5, 10, 20)  # frame gaps k: tests score frames t-k+1..t+k-1 from (t-k, t+k)
    methods: tuple[str, ...] = methods.DEFAULT_METHODS  # which registered methods to run, in table order
    seeds: int = 1  # independent training seeds per seeded method (seeds 0..N-1)
    first_seed: int = 0  # start the seeds here (first_seed..first_seed+N-1): one long run's seeds across sessions
    epochs: int = 5  # training budget of every trained method: epochs over the training triplets of all gaps
    steps: int | None = None  # train exactly this many optimiser steps instead of --epochs
    batch_size: int = 64  # triplets per training step, for every trained method
    budget_gflop: float | None = None  # FLOPs per learned model (GFLOP, counted per step), replacing --epochs/--steps
    lr_trials: int = 1  # learning rates tried per learned model (lr_grid around its default; best val loss wins)
    eval_every: int = EVAL_EVERY  # steps between val evaluations of every learned method (and one at the last step)
    patience: int = PATIENCE  # val evaluations without a new best before a learned method stops (0: never)
    # (inbetween.ensemble: each member equals its model trained alone within float rounding)
    ensemble: bool = True  # train a method's models of one DoF, seed and shape (alpha sweep) as one batched job; off: one by one
    all_taus: bool = True  # score every intermediate frame of each gap (off: the middle frame, tau = 0.5, only)
    score_train: bool = False  # also score the train split, as a diagnostic (records split = "train"; never a headline)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    data: tuple[str, ...] = ()  # existing HDF5 dataset files, one per DoF; empty = render them into the cache
    cache: str = ".cache/inbetween-bench"  # rendered datasets, trained models and evaluations, keyed by job hash
    render_size: int = 32  # image size of the datasets the benchmark renders itself
    profile: str = "full"  # full (the defaults), quick (the tiny CI profile) or demo (the README's main job): PROFILES
    overwrite: bool = False  # replace an existing output folder
    threads: int = 0  # torch CPU threads (0 = torch's default)
    # A grid coarser than benchmarks.scoring.pose's defaults is stated beside the pose tables in results.md.
    table_step_deg: float | None = None  # pose-table grid step (degrees, divides 360) for dof 1 and 2; default 0.5, 2
    progress: bool = True  # show progress bars
    # Their rows stand beside this run's where the datasets are byte-identical (report.references_for).
    reference: tuple[str, ...] = ()  # committed run folders (e.g. docs/results/grid) to show beside this run's rows
    # Each model's rows stand beside this run's where its training data has the scored data's render identity
    # (benchmarks.engine.reference_models); they are loaded and scored, never trained.
    reference_models: str | None = None  # folder of shipped trained models (e.g. reference/models) to score as reference rows; '' for none
    # Method name -> its Config; a dict of field overrides is turned into one (over the --quick profile's
    # values when quick), and methods not named get their defaults.
    method_configs: dict[str, Any] = field(default_factory=dict)
    # Set by run-benchmark from the methods it loaded from outside the package; recorded in config.json only.
    plugins: dict[str, str] = field(default_factory=dict)  # method -> its source ("method file PATH") and sha256

    def __post_init__(self) -> None:
        def fill(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        # Repeats would duplicate jobs and records: keep the first of each, in the order given.
        fill("dofs", tuple(dict.fromkeys(int(d) for d in self.dofs)))
        fill("methods", tuple(dict.fromkeys(self.methods)))
        fill("data", tuple(dict.fromkeys(str(p) for p in self.data)))
        fill("gaps", normalize_gaps(tuple(self.gaps)))
        fill("reference_models", str(self.reference_models) if self.reference_models else None)  # '': none
        if self.profile not in ("full", *PROFILES):
            raise UserError(f"unknown profile {self.profile!r}; choose full, {', '.join(PROFILES)}")
        for d in self.dofs:
            if d not in PRESETS:
                raise UserError(f"--dof must be 1, 2 or 6, not {d}")
        if not self.methods:
            raise UserError("no --methods to run")
        for m in self.methods:
            methods.get(m)  # UserError naming the registered methods
        for name in self.method_configs:
            if name not in self.methods:
                raise UserError(f"options of method {name} were given but {name} is not among --methods")
        configs = {}
        for name in self.methods:
            module, given = methods.get(name), self.method_configs.get(name, {})
            if is_dataclass(given):
                configs[name] = given
            else:
                configs[name] = module.Config(**(methods.hooks(module).overrides(self.profile) | dict(given)))
        fill("method_configs", configs)
        if self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, not {self.seeds}")
        if self.first_seed < 0:
            raise UserError(f"--first-seed must be at least 0, not {self.first_seed}")
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise UserError("--epochs and --steps must be at least 1")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.budget_gflop is not None and not (isinstance(self.budget_gflop, (int, float))
                                                  and math.isfinite(self.budget_gflop) and self.budget_gflop > 0):
            raise UserError(f"--budget-gflop must be a positive number of GFLOP, not {self.budget_gflop}")
        if self.lr_trials < 1:
            raise UserError(f"--lr-trials must be at least 1, not {self.lr_trials}")
        if self.eval_every < 1:
            raise UserError(f"--eval-every must be at least 1, not {self.eval_every}")
        Selection(self.patience)  # validates --patience
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0, not {self.threads}")
        check_table_step(self.table_step_deg)
        check_device_name(self.device)
        if self.reference_models is not None and not Path(self.reference_models).is_dir():
            raise UserError(f"--reference-models {self.reference_models} is not a folder; give one such as "
                            f"{REFERENCE_MODELS}, or '' for none")


# The --quick profile: tiny renders and models that finish in a few minutes on 2 cores (the methods'
# own QUICK dicts shrink their models).
# Its pose tables are coarse (10 degrees: 36 dof 1 and 1,296 dof 2 frames, against 720 and 32,400 at the
# defaults), so the table renders take seconds; results.md says so beside the pose tables.
QUICK = dict(gaps=(1, 3), seeds=1, epochs=1, steps=30, batch_size=32, render_size=16, eval_every=10,
             table_step_deg=10.0)
# The trained models the repository ships (benchmarks.engine.reference_models; absent from an installed wheel).
REFERENCE_MODELS = Path(__file__).resolve().parents[2] / "reference" / "models"
# The --demo profile (scripts/demo.sh, the README's main job): dof 1 and 2 at 32 px, every method, the
# alpha-VAE at alpha 0 and 100, in about 5 minutes on 2 cores. 250 steps of 32 triplets at lr 1e-3 (the
# methods' DEMO dicts: width 0.125 and latent 32 for the latent models, 16 channels for the frame CNN)
# are enough for every latent model to decode recognisable frames; the committed runs train to the
# validation plateau instead. It scores the middle frame only (tau = 0.5), its dof 2 set is smaller than
# the preset (render_config), and its pose tables are 4 degrees (90 dof 1 and 8,100 dof 2 frames). Its figures
# show the largest gap (examples.pick_figures), 10: the dof 1 teapot turns 20 degrees across the strip (10 at
# gap 5, too little to see), and gap 10 is where the latent models' in-betweening matters. The
# models the repository ships (REFERENCE_MODELS, where there is that folder) stand beside its rows, so a
# newcomer sees what the latent models do when trained to the plateau, not only after 250 steps.
DEMO = dict(dofs=(1, 2), gaps=(2, 5, 10), seeds=1, steps=250, batch_size=32, render_size=32, eval_every=125,
            all_taus=False, table_step_deg=4.0,
            reference_models=str(REFERENCE_MODELS) if REFERENCE_MODELS.is_dir() else None)
PROFILES = {"quick": QUICK, "demo": DEMO}


def check_table_step(step_deg: float | None) -> None:
    """UserError unless a --table-step-deg is None (the DoF's default) or a positive step that divides 360 evenly."""
    if step_deg is not None:
        n = 360.0 / step_deg if step_deg > 0 else 0.5
        if abs(n - round(n)) > 1e-9:
            raise UserError(f"--table-step-deg must be > 0 and divide 360 evenly (e.g. 0.5, 2, 4), not {step_deg}")


def profile_config(profile: str, **overrides: Any) -> BenchmarkConfig:
    """The named profile (full, quick or demo; BenchmarkConfig refuses others) with `overrides` on top."""
    return BenchmarkConfig(**(PROFILES.get(profile, {}) | {"profile": profile} | overrides))


def quick_config(**overrides: Any) -> BenchmarkConfig:
    """The --quick profile with `overrides` on top."""
    return profile_config("quick", **overrides)


def render_config(config: BenchmarkConfig, dof: int) -> RenderConfig:
    """The dataset the benchmark renders for one DoF: the preset's defaults, tiny for --quick, and for --demo
    the dof 1 preset as it is and a smaller dof 2 set (30-frame sequences, 100 train and 10 of each other split)."""
    if config.profile == "quick":
        frames = 24 if dof == 1 else 10
        return RenderConfig(dof=dof, size=config.render_size, frames=frames,
                            train_sequences=None if dof == 1 else 6, test_sequences=None if dof == 1 else 3)
    if config.profile == "demo" and dof != 1:
        return RenderConfig(dof=dof, size=config.render_size, frames=30, train_sequences=100, test_sequences=10,
                            val_sequences=10, heldout_sequences=10)
    return RenderConfig(dof=dof, size=config.render_size)


def dataset_command(run: dict, file: str, dof: int) -> str:
    """How to get the dataset a run scored for `dof` (`file`, as its results.json names it), from the run's
    config.json (`run`): the render-dataset command of its profile, or where the card of a file given with --data is."""
    if run.get("data"):
        return f"it scored the file {file} (given with --data): get that file, its dataset card (.h5.md) says how"
    bench = profile_config(run.get("profile", "full"), render_size=run.get("render_size", 32))
    return "regenerate it with: " + regenerate_command(render_config(bench, dof), Path(f"data/dof{dof}-reference.h5"))


def steps_per_run(config: BenchmarkConfig, n_train_triplets: int) -> int:
    """Optimiser steps of one trained model: --steps, or --epochs over the training triplets of all gaps
    (a learned method given --budget-gflop trains the steps that budget buys instead)."""
    if config.steps is not None:
        return config.steps
    return config.epochs * math.ceil(n_train_triplets / config.batch_size)
