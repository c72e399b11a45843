"""The plan of a benchmark run: its entries (method variants and seeds) and every job, in dependency order.

The engine talks to methods only through the registry (benchmarks/methods/): trained methods train on
the train split only, on triplets of all benchmark gaps mixed, once per seed (once in all for unseeded
ones). Learned methods select their checkpoint on the val split, get the same budget (--budget-gflop:
the same FLOPs; else the same steps) and --lr-trials learning rates each (one train job per trial; the
trial with the lowest val loss is scored). Each job's hash is computed here, of all it depends on.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from benchmarks import methods
from benchmarks.engine.cache import config_hash, dataset_dofs, render_hash
from benchmarks.engine.config import BenchmarkConfig
from benchmarks.engine.jobs import EnsembleJob, Entry, EvalJob, Job, RenderJob, TrainJob
from benchmarks.engine.reference_models import matching
from benchmarks.scoring import evaluate
from ibutil.errors import UserError
from ibutil.selection import lr_grid

# The options that change what a trained model is, beyond its method's config (the rest say where and how loudly).
BUDGET_OPTIONS = ("gaps", "epochs", "steps", "batch_size", "budget_gflop", "eval_every", "patience")


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
    identity = {dof: given.sha256 if given is not None else render_hash(config, dof) for dof, given in dofs.items()}
    budget = {k: v for k, v in asdict(config).items() if k in BUDGET_OPTIONS}
    if config.budget_gflop is not None:  # the budget replaces the step count
        budget = {k: v for k, v in budget.items() if k not in ("epochs", "steps")}
    jobs: list[Job] = [RenderJob(dof, identity[dof]) for dof, given in dofs.items() if given is None]
    renders = {dof: (f"render-dof{dof}",) if given is None else () for dof, given in dofs.items()}
    evals = []
    shipped = matching(config)[0]  # dof -> the reference models scored there (their manifests hash their files)
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
                                         + (["score-train"] if config.score_train else [])
                                         + ([[m.manifest for m in shipped[dof]]] if shipped[dof] else [])),
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
