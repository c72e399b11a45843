"""Running the plan: one job (render, train, ensemble, eval) into the cache, or every job and then the output folder.

A job whose output is cached is skipped; one stopped by SIGTERM or Ctrl-C resumes when run again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks import methods
from benchmarks.engine.aggregate import aggregate, check_out
from benchmarks.engine.cache import dataset_dofs, dataset_path, ensemble_dir, eval_output, is_done, model_dir
from benchmarks.engine.config import BenchmarkConfig, render_config, steps_per_run
from benchmarks.engine.jobs import EnsembleJob, Job, RenderJob, TrainJob
from benchmarks.engine.load import load_row, reference_row, reference_table
from benchmarks.engine.plan import plan, train_jobs
from benchmarks.engine.reference_models import matching
from benchmarks.methods.interface import TrainSpec, TrainSummary, write_summary
from benchmarks.scoring import evaluate
from ibdata import h5format
from ibdata.triplets import check_gaps
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import torch_save_atomic
from ibutil.preempt import StopFlag

VAL_SPLIT = "val"  # the split every learned method selects on


def ready_dataset(config: BenchmarkConfig, dof: int) -> h5format.DatasetHeader:
    """The header of the dataset of `dof`, read once here and passed down: it must exist (its render job has
    run) and fit every gap."""
    header = dataset_dofs(config)[dof]  # a --data file's, read there
    if header is None:
        path = dataset_path(config, dof)
        if not path.exists():
            raise UserError(f"the dof {dof} dataset is not rendered yet; run the job render-dof{dof} first")
        header = h5format.read_header(path)
    check_gaps(header, config.gaps)  # every split: training reads train and val, scoring the rest
    return header


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


def train_spec(config: BenchmarkConfig, job: TrainJob, data: h5format.DatasetHeader) -> TrainSpec:
    """The budget every trained method gets: the same FLOPs (or steps), batch size, gaps and selection rule."""
    n_seq, n_frames = data.shapes["train"]
    n_triplets = sum(n_seq * (n_frames - 2 * k) for k in config.gaps)  # every (t-k, t, t+k) of the train split
    return TrainSpec(data=str(data.path), gaps=config.gaps, steps=steps_per_run(config, n_triplets),
                     batch_size=config.batch_size, seed=job.entry.seed or 0, val_split=VAL_SPLIT,
                     eval_every=config.eval_every, patience=config.patience, budget_gflop=config.budget_gflop,
                     cache=config.cache)


def train(config: BenchmarkConfig, job: TrainJob, data: h5format.DatasetHeader) -> None:
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


def train_ensemble(config: BenchmarkConfig, job: EnsembleJob, data: h5format.DatasetHeader) -> None:
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
        start = time.perf_counter()
        header = ready_dataset(config, job.dof)
        jobs = train_jobs(plan(config))
        rows = [load_row(config, e, [jobs[m] for m in trial_ids]) for e, trial_ids in zip(job.entries, job.models)]
        rows += [reference_row(config, m) for m in matching(config)[0][job.dof]]  # shipped models: scored, not trained
        table_start = time.perf_counter()
        table = reference_table(config, header.path)
        table_seconds = time.perf_counter() - table_start
        out = evaluate.evaluate_dof(job.dof, header.path, rows, config.gaps, all_taus=config.all_taus,
                                    progress=config.progress, table=table, device=resolve_device(config.device),
                                    score_train=config.score_train)
        # The eval job's wall time beside its scoring's (evaluate_dof): loading the models, and the reference
        # table (rendered on a first run, else read from the cache).
        out["timing"] |= {"job_seconds": round(time.perf_counter() - start, 3), "table_seconds": round(table_seconds, 3)}
        torch_save_atomic(out, eval_output(config, job))


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
