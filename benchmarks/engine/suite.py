"""The benchmark engine behind run-benchmark: the plan of typed jobs (render, train, eval), running them, aggregating.

Every job has one hash, of everything that determines its output; its cache entry is named
`{id}-{hash}`, so the plan and the cache agree by construction. The engine talks to methods only
through the registry (benchmarks/methods/): trained methods train on the train split only, on
triplets of all benchmark gaps mixed, once per seed (once in all for unseeded ones). Learned
methods select their checkpoint on the val split, get the same budget (--budget-gflop: the same
FLOPs; else the same steps) and --lr-trials learning rates each (one train job per trial; the
trial with the lowest val loss is scored).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks import methods
from benchmarks.engine import plugins
from benchmarks.engine.config import BenchmarkConfig, render_config, steps_per_run
from benchmarks.methods.interface import TrainSpec, TrainSummary, read_summary, write_summary
from benchmarks.scoring import evaluate, metrics
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import ensure_writable_folder, torch_save_atomic
from ibutil.preempt import StopFlag
from ibutil.run import RECORD_KEYS
from ibutil.selection import lr_grid, select_trial
from ibdata import h5format


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses included)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_jsonable).encode()).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else str(obj)


def check_out(config: BenchmarkConfig) -> Path:
    """Refuse an existing output folder (without overwrite) or one that cannot be created."""
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; --out must be a folder")
    ensure_writable_folder(out.parent)
    return out


# ----------------------------------------------------------------------------- datasets


def dataset_dofs(config: BenchmarkConfig) -> dict[int, Path | None]:
    """DoF -> the --data file (validated), or None where the benchmark renders the dataset itself."""
    if not config.data:
        return {dof: None for dof in config.dofs}
    files: dict[int, Path | None] = {}
    for p in config.data:
        dof = h5format.read_header(p).dof
        if dof in files:
            raise UserError(f"--data gives two files for dof {dof}: {files[dof]} and {p}")
        files[dof] = Path(p)
    return dict(sorted(files.items()))


def check_gaps(config: BenchmarkConfig, dof: int, path: Path) -> None:
    """Every gap must fit the sequences of every split of the dataset: 2k+1 <= T."""
    n_frames = min(t for _, t in h5format.read_header(path).shapes.values())
    for k in config.gaps:
        if 2 * k + 1 > n_frames:
            raise UserError(f"--gap {k} is too large for dof {dof} ({path}): sequences have {n_frames} frames, "
                            f"so gaps can be at most {(n_frames - 1) // 2}")


# ----------------------------------------------------------------------------- the jobs


@dataclass(frozen=True)
class RenderJob:
    """Render the benchmark's dataset of one DoF into the cache."""

    dof: int
    hash: str  # of the render config
    kind: str = "render"

    @property
    def id(self) -> str:
        return f"render-dof{self.dof}"

    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One row-maker of the results: a method's config (one variant of it) and, for seeded methods, a seed."""

    method: str
    config: Any  # the method's Config, one variant
    seed: int | None  # None: the method has no seed

    @property
    def label(self) -> str:
        return methods.get(self.method).label(self.config)


@dataclass(frozen=True)
class TrainJob:
    """Train one entry on one DoF's train split, at one learning rate of its sweep."""

    dof: int
    entry: Entry
    hash: str  # of the method, its config, the seed, the lr, the budget and the dataset
    needs: tuple[str, ...]
    lr: float | None = None  # this trial's learning rate (None: the method has none)
    trial: int | None = None  # index into the lr grid when --lr-trials > 1
    kind: str = "train"

    @property
    def id(self) -> str:
        slug = self.entry.label.replace(" ", "-").replace("=", "")
        return (f"train-{slug}-dof{self.dof}" + ("" if self.entry.seed is None else f"-s{self.entry.seed}")
                + ("" if self.trial is None else f"-lr{self.trial}"))

    @property
    def config(self) -> Any:
        """The method config this job trains: the entry's, at this trial's lr."""
        return self.entry.config if self.lr is None else replace(self.entry.config, lr=self.lr)


@dataclass(frozen=True)
class EvalJob:
    """Score every entry of one DoF on every evaluation split, gap and tau."""

    dof: int
    entries: tuple[Entry, ...]
    models: tuple[tuple[str, ...], ...]  # per entry: the ids of its TrainJobs (one per lr trial); () if it fits nothing
    hash: str
    needs: tuple[str, ...]
    kind: str = "eval"

    @property
    def id(self) -> str:
        return f"eval-dof{self.dof}"


@dataclass(frozen=True)
class EnsembleJob:
    """Train several TrainJobs of one method, DoF, seed and lr trial as one batched network (module.train_group).

    Its members keep their own ids, hashes and cache folders (model_dir), so a member trained here and
    one trained alone by its TrainJob are interchangeable in the cache.
    """

    dof: int
    members: tuple[TrainJob, ...]
    hash: str  # of the members' hashes
    needs: tuple[str, ...]
    part: int | None = None  # which group of its method, DoF, seed and trial, when there are several (KL forms)
    kind: str = "train"

    @property
    def id(self) -> str:
        first = self.members[0]
        return (f"train-{first.entry.method}-ensemble-dof{self.dof}"
                + ("" if first.entry.seed is None else f"-s{first.entry.seed}")
                + ("" if first.trial is None else f"-lr{first.trial}")
                + ("" if self.part is None else f"-{self.part}"))


Job = RenderJob | TrainJob | EnsembleJob | EvalJob


def job_json(job: Job) -> dict[str, Any]:
    """The plan line of a job."""
    line = {"id": job.id, "kind": job.kind, "dof": job.dof, "hash": job.hash, "needs": list(job.needs)}
    if isinstance(job, TrainJob):
        line |= {"method": job.entry.method, "label": job.entry.label, "seed": job.entry.seed, "lr": job.lr}
    if isinstance(job, EnsembleJob):
        first = job.members[0]
        line |= {"method": first.entry.method, "members": [m.id for m in job.members], "seed": first.entry.seed,
                 "lr": first.lr}
    return line


def skipped(config: BenchmarkConfig) -> dict[str, str]:
    """Method -> the one-line reason it cannot run here (a method's optional `available()`), for those skipped."""
    reasons = {name: methods.hooks(methods.get(name)).available() for name in config.methods}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def entries(config: BenchmarkConfig) -> list[Entry]:
    """Every row-maker of a DoF, in table order: each method's variants, each with its seeds (skipped methods out)."""
    out = []
    unavailable = skipped(config)
    for name in (m for m in config.methods if m not in unavailable):
        module = methods.get(name)
        for variant in methods.hooks(module).variants(config.method_configs[name]):
            seeds = range(config.first_seed, config.first_seed + config.seeds) if module.SEEDED else [None]
            out += [Entry(name, variant, seed) for seed in seeds]
    return out


# The options that change what a trained model is, beyond its method's config (the rest say where and how loudly).
BUDGET_OPTIONS = ("gaps", "epochs", "steps", "batch_size", "budget_gflop", "eval_every", "patience")
VAL_SPLIT = "val"  # the split every learned method selects on


def trial_lrs(config: BenchmarkConfig, entry: Entry) -> list[float | None]:
    """The learning rates of an entry's train jobs: lr_grid around its config's lr; [None] if it has no lr."""
    if not methods.learned(methods.get(entry.method)):
        return [None]
    return list(lr_grid(entry.config.lr, config.lr_trials))


def plan(config: BenchmarkConfig) -> list[Job]:
    """Every job of the run in dependency order: renders, then trainings, then evaluations.

    Jobs of one kind are independent of each other, so a scheduler can run each kind as an array.
    """
    dofs = dataset_dofs(config)
    identity = {dof: h5format.sha256_file(given) if given is not None else render_hash(config, dof)
                for dof, given in dofs.items()}
    budget = {k: v for k, v in asdict(config).items() if k in BUDGET_OPTIONS}
    if config.budget_gflop is not None:  # the budget replaces the step count
        budget = {k: v for k, v in budget.items() if k not in ("epochs", "steps")}
    jobs: list[Job] = [RenderJob(dof, identity[dof]) for dof, given in dofs.items() if given is None]
    renders = {dof: (f"render-dof{dof}",) if given is None else () for dof, given in dofs.items()}
    evals = []
    for dof in dofs:
        trains: list[TrainJob] = []
        models: list[tuple[str, ...]] = []
        hashes = []
        for e in entries(config):
            if not methods.get(e.method).TRAINS:
                models.append(())
                hashes.append(config_hash([methods.job_key(e.method), e.config]))
                continue
            lrs = trial_lrs(config, e)
            trials = [TrainJob(dof, e, "", renders[dof], lr, None if len(lrs) == 1 else i) for i, lr in enumerate(lrs)]
            trials = [replace(j, hash=config_hash([methods.job_key(e.method), j.config, e.seed, budget, identity[dof]]))
                      for j in trials]
            trains += trials
            models.append(tuple(j.id for j in trials))
            hashes.append([j.hash for j in trials])
        trains = ensembles(trains) if config.ensemble else trains
        jobs += trains
        evals.append(EvalJob(dof, tuple(entries(config)), tuple(models),
                             config_hash([identity[dof], list(config.gaps), config.all_taus, hashes,
                                          evaluate.SCORING_VERSION, config.table_step_deg]
                                         + (["score-train"] if config.score_train else [])),
                             renders[dof] + tuple(j.id for j in trains)))
    return jobs + evals


def ensembles(trains: list[TrainJob]) -> list[TrainJob | EnsembleJob]:
    """Group the train jobs of one DoF that can train as one batched network: same method (one with
    train_group), seed, lr trial and module.group_key. Groups of one stay TrainJobs; order is kept (an
    ensemble sits where its first member was)."""
    groups: dict[tuple, list[TrainJob]] = {}
    for job in trains:
        optional = methods.hooks(methods.get(job.entry.method))
        key = ((job.entry.method, job.entry.seed, job.trial, config_hash(optional.group_key(job.config)))
               if optional.grouped else (job.id,))
        groups.setdefault(key, []).append(job)
    # A method, seed and trial whose jobs split into several groups (the KL ablation's forms) numbers them.
    count = {}
    for key, members in groups.items():
        if len(members) > 1:
            count[key[:3]] = count.get(key[:3], 0) + 1
    out: list[TrainJob | EnsembleJob] = []
    seen: dict[tuple, int] = {}
    for key, members in groups.items():
        if len(members) == 1:
            out.append(members[0])
            continue
        seen[key[:3]] = seen.get(key[:3], 0) + 1
        out.append(EnsembleJob(members[0].dof, tuple(members), config_hash([m.hash for m in members]),
                               members[0].needs, seen[key[:3]] if count[key[:3]] > 1 else None))
    return out


def train_jobs(jobs: list[Job]) -> dict[str, TrainJob]:
    """Every TrainJob of a plan by id, the members of its ensembles included."""
    out = {}
    for job in jobs:
        for j in job.members if isinstance(job, EnsembleJob) else (job,):
            if isinstance(j, TrainJob):
                out[j.id] = j
    return out


def find_job(config: BenchmarkConfig, job_id: str) -> Job:
    """The plan's job named `job_id`; UserError listing the names if there is none."""
    jobs = plan(config)
    for job in jobs:
        if job.id == job_id:
            return job
    for job in jobs:
        if isinstance(job, EnsembleJob) and job_id in (m.id for m in job.members):
            raise UserError(f"{job_id} trains in the ensemble {job.id}: run --only {job.id}, or pass --no-ensemble "
                            "to train it alone")
    names = ", ".join(j.id for j in jobs[:6]) + (", ..." if len(jobs) > 6 else "")
    raise UserError(f"no job {job_id!r} in this plan; run-benchmark ... --plan lists them ({names})")


# ----------------------------------------------------------------------------- where outputs live


def dataset_path(config: BenchmarkConfig, dof: int) -> Path:
    """The dataset of `dof`: the --data file, or the cache entry of its render job."""
    given = dataset_dofs(config)[dof]
    if given is not None:
        return given
    return Path(config.cache) / "data" / f"dof{dof}-{render_hash(config, dof)}.h5"


def render_hash(config: BenchmarkConfig, dof: int) -> str:
    """The hash of a render job: of the render config, which fixes the dataset's bytes."""
    return config_hash(render_config(config, dof).to_json())


def model_dir(config: BenchmarkConfig, job: TrainJob) -> Path:
    return Path(config.cache) / "models" / f"{job.id}-{job.hash}"


def eval_output(config: BenchmarkConfig, job: EvalJob) -> Path:
    return Path(config.cache) / "evals" / f"{job.id}-{job.hash}.pt"


def is_done(config: BenchmarkConfig, job: Job) -> bool:
    """Whether the output of `job` is in the cache."""
    if isinstance(job, RenderJob):
        return dataset_path(config, job.dof).exists()
    if isinstance(job, TrainJob):  # a preempted or in-progress run is not done: running it again resumes it
        summary = read_summary(model_dir(config, job))
        return summary is not None and summary.trained
    if isinstance(job, EnsembleJob):
        return all(is_done(config, m) for m in job.members)
    return eval_output(config, job).exists()


def ready_dataset(config: BenchmarkConfig, dof: int) -> Path:
    """The dataset of `dof`, which must exist (its render job has run) and fit every gap."""
    path = dataset_path(config, dof)
    if not path.exists():
        raise UserError(f"the dof {dof} dataset is not rendered yet; run the job render-dof{dof} first")
    check_gaps(config, dof, path)
    return path


# ----------------------------------------------------------------------------- running


def run_job(config: BenchmarkConfig, job: Job) -> None:
    """Run one job of the plan unless its output is cached (its inputs must exist)."""
    if isinstance(job, RenderJob):
        render_if_missing(config, job.dof)
    elif isinstance(job, TrainJob):
        if not is_done(config, job):
            train(config, job, ready_dataset(config, job.dof))
    elif isinstance(job, EnsembleJob):
        if not is_done(config, job):
            train_ensemble(config, job, ready_dataset(config, job.dof))
    elif not is_done(config, job):
        path = ready_dataset(config, job.dof)
        jobs = train_jobs(plan(config))
        rows = [load_row(config, e, [jobs[m] for m in trial_ids], path) for e, trial_ids in zip(job.entries, job.models)]
        table = reference_table(config, path)
        torch_save_atomic(evaluate.evaluate_dof(job.dof, path, rows, config.gaps, all_taus=config.all_taus,
                                               progress=config.progress, table=table,
                                               device=resolve_device(config.device), score_train=config.score_train),
                          eval_output(config, job))


def reference_table(config: BenchmarkConfig, path: Path):
    """The pose table or object templates that score `path` (metrics.table_for, cached under --cache); None for
    a file that render-dataset did not write (no render config to build a table from): no pose/position metrics."""
    from benchmarks.scoring import tables

    try:
        tables.dataset_config(path)
    except UserError as exc:
        print(f"no pose or position metrics for {path}: {exc}", file=sys.stderr)
        return None
    return metrics.table_for(path, config.cache, progress=config.progress, step_deg=config.table_step_deg)


def render_if_missing(config: BenchmarkConfig, dof: int) -> Path:
    """Render the benchmark's dataset of `dof` into the cache unless a verified copy is there."""
    from render.dataset import render_dataset  # renders in spawned GL workers

    path = dataset_path(config, dof)
    if path.exists():
        try:
            h5format.verify(path)
            return path
        except UserError:
            pass  # a damaged cache entry: render it again
    render_dataset(render_config(config, dof), path, workers=os.cpu_count() or 1, overwrite=True,
                   progress=config.progress)
    return path


def train_spec(config: BenchmarkConfig, job: TrainJob, data: Path) -> TrainSpec:
    """The budget every trained method gets: the same FLOPs (or steps), batch size, gaps and selection rule."""
    n_seq, n_frames = h5format.read_header(data).shapes["train"]
    n_triplets = sum(n_seq * (n_frames - 2 * k) for k in config.gaps)  # every (t-k, t, t+k) of the train split
    return TrainSpec(data=str(data), gaps=config.gaps, steps=steps_per_run(config, n_triplets),
                     batch_size=config.batch_size, seed=job.entry.seed or 0, val_split=VAL_SPLIT,
                     eval_every=config.eval_every, patience=config.patience, budget_gflop=config.budget_gflop,
                     cache=config.cache)


def train(config: BenchmarkConfig, job: TrainJob, data: Path) -> None:
    """Train `job` into its cache folder (resuming an interrupted run there); summary.json marks it finished.

    A SIGTERM checkpoints the run and raises ibutil.preempt.Preempted (run-benchmark exits 143); the
    next run of the job resumes it.
    """
    out = model_dir(config, job)
    out.mkdir(parents=True, exist_ok=True)
    module = methods.get(job.entry.method)
    summary = module.train(job.config, train_spec(config, job, data), out, device=config.device,
                           progress=config.progress)
    if not isinstance(summary, TrainSummary):  # e.g. a plug-in's train that returns nothing
        raise UserError(f"{job.entry.method}: train returned {type(summary).__name__}, not a TrainSummary "
                        "(benchmarks/methods/interface.py)")
    write_summary(summary, out)


def ensemble_dir(config: BenchmarkConfig, job: EnsembleJob, members: list[TrainJob]) -> Path:
    """The folder of the batched run of `members` (the ensemble's members not yet trained): its checkpoint."""
    return Path(config.cache) / "models" / f"{job.id}-{config_hash([m.hash for m in members])}"


def train_ensemble(config: BenchmarkConfig, job: EnsembleJob, data: Path) -> None:
    """Train the unfinished members of `job` as one batched network (module.train_group) into their own cache
    folders, resuming an interrupted ensemble of the same members.

    A member with a run of its own in progress (a checkpoint from --no-ensemble, say) resumes alone with
    train(); one member left also trains alone. SIGTERM checkpoints the ensemble (Preempted, exit 143).
    """
    todo = [m for m in job.members if not is_done(config, m)]
    folder = ensemble_dir(config, job, todo)
    if not folder.exists():  # no batched run of these members to resume: those with runs of their own finish them
        alone = [m for m in todo if (model_dir(config, m) / "checkpoint.pt").exists()]
        for member in alone:
            train(config, member, data)
        todo = [m for m in todo if m not in alone]
        folder = ensemble_dir(config, job, todo)
    if len(todo) == 1:
        train(config, todo[0], data)
    if len(todo) < 2:
        return
    module = methods.get(job.members[0].entry.method)
    dirs = [model_dir(config, m) for m in todo]
    summaries = module.train_group([m.config for m in todo], train_spec(config, todo[0], data), dirs, folder,
                                   device=config.device, progress=config.progress)
    for summary, out in zip(summaries, dirs):
        write_summary(summary, out)


def select(config: BenchmarkConfig, trials: list[TrainJob]) -> tuple[TrainJob, Any]:
    """The trial whose run reached the lowest val loss (the only one without a sweep) and its summary."""
    summaries = []
    for job in trials:
        summary = read_summary(model_dir(config, job))
        if summary is None or not summary.trained:
            raise UserError(f"{job.id} has not finished; run it first (run-benchmark ... --only {job.id})")
        summaries.append(summary)
    best = 0 if len(trials) == 1 else select_trial([s.best_val_loss for s in summaries])
    return trials[best], summaries[best]


def load_row(config: BenchmarkConfig, entry: Entry, trials: list[TrainJob], data: Path) -> evaluate.Row:
    """What scoring needs of one entry: its loaded model (the selected lr trial) as a predict function, its
    record fields (the selected trial's summary, lr included), its log."""
    module = methods.get(entry.method)
    folder, summary, chosen = None, None, entry.config
    if trials:
        job, summary = select(config, trials)
        folder, chosen = model_dir(config, job), job.config
    model = module.load(chosen, folder, config.device)
    fields = {"method": entry.method, **methods.record_fields(module, entry.config), "seed": entry.seed,
              **(summary.record() if summary is not None else dict.fromkeys(RECORD_KEYS)),
              "lr_trials": config.lr_trials if methods.learned(module) else None}
    log = folder / "log.csv" if folder is not None and (folder / "log.csv").exists() else None
    # A plug-in's every output is checked (shape, device, range, NaN): a built-in's are by tests/test_methods.py.
    plugin = methods.PLUGINS.get(entry.method)
    predict = (plugins.checked(module, model, plugin.source) if plugin is not None
               else lambda x0, x2, tau: module.predict(model, x0, x2, tau))
    return evaluate.Row(label=entry.label, predict=predict, fields=fields, shown=entry.seed in (None, config.first_seed),
                       log=str(log) if log else None)


# ----------------------------------------------------------------------------- aggregating


@dataclass
class RunResult:
    """Everything the report needs."""

    datasets: dict[int, dict[str, str]]  # dof -> {"file", "sha256"}
    records: list[dict[str, Any]]
    ceiling: list[dict[str, Any]]  # metrics of the true frame (the best any method can score on the mask metrics)
    examples: dict[int, dict[str, np.ndarray]]  # dof -> row label -> (N_EXAMPLES, 3, H, W), largest gap, tau 0.5
    strips: dict[int, dict[str, np.ndarray]]  # dof -> label -> (INTERP_STEPS, 3, H, W)
    curves: dict[str, str]  # seed-0 trained model "dof2 alpha-vae a=100 avg-gaussian" -> its log.csv
    paths: list[dict[str, Any]] = field(default_factory=list)  # smoothness along the tau path (dof 1, 2)
    triplets: list[dict[str, Any]] = field(default_factory=list)  # per-triplet metrics at tau 0.5 (scoring)
    tables: dict[int, dict | None] = field(default_factory=dict)  # dof -> the reference table's kind and step
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it did not run here
    wall_s: float = 0.0
    missing: list[str] = field(default_factory=list)  # jobs whose outputs were absent (aggregate only)


def aggregate(config: BenchmarkConfig, wall_s: float = 0.0) -> tuple[Path, list[str]]:
    """Build the output folder from the evaluation outputs present; returns it and the missing jobs' names."""
    from benchmarks.results import report

    out = check_out(config)
    jobs = plan(config)
    result = RunResult(datasets={}, records=[], ceiling=[], examples={}, strips={}, curves={}, wall_s=wall_s,
                       skipped=skipped(config))
    for job in (j for j in jobs if isinstance(j, EvalJob)):
        path = eval_output(config, job)
        if not path.exists():
            result.missing += [j.id for j in jobs if j.dof == job.dof and not is_done(config, j)]
            continue
        part = torch.load(path, weights_only=False)
        result.datasets[part["dof"]] = part["dataset"]
        result.records += part["records"]
        result.ceiling += part["ceiling"]
        result.paths += part["paths"]
        result.triplets += part.get("triplets", [])
        result.tables[part["dof"]] = part["table"]
        result.examples[part["dof"]], result.strips[part["dof"]] = part["examples"], part["strips"]
        result.curves.update(part["curves"])
    if not result.datasets:
        raise UserError(f"nothing to aggregate yet: no evaluation job has run (missing: {', '.join(result.missing)})")
    return report.write_output(config, result, out), result.missing


def run_benchmark(config: BenchmarkConfig) -> Path:
    """Run every job of the plan in order, then aggregate; returns the output folder.

    SIGINT or SIGTERM (ibutil.preempt.StopFlag, shared with the render and training loops inside a job)
    stops it inside the job (a render after its sequence, a training after its step, with a checkpoint)
    or after the job in hand, raising ibutil.preempt.Interrupted; finished jobs stay cached, so the same
    command resumes.
    """
    check_out(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    jobs = plan(config)
    with StopFlag() as stop, tqdm(jobs, desc="benchmark", unit="job", disable=not config.progress) as bar:
        for done, job in enumerate(bar, 1):
            bar.set_description(job.id)
            run_job(config, job)
            stop.check(f"run-benchmark stopped after job {job.id} ({done} of {len(jobs)}); finished jobs are "
                       f"cached in {config.cache}; run the same command again to resume")
    out, _ = aggregate(config, wall_s=time.perf_counter() - start)
    return out
