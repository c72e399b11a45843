"""Click commands `run-benchmark` and `train-inbetween`, their options generated from the config dataclasses."""

from __future__ import annotations

import json

import click

from benchmarks import methods
from benchmarks.config import BenchmarkConfig, profile_config
from ibutil.cli import DataclassOptions, MultiValueCommand, user_errors
from ibutil.errors import UserError
from ibutil.preempt import preemption_exits
from inbetween.train import TrainConfig

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
BENCH = "benchmark"  # the target name of BenchmarkConfig's own options

# run-benchmark: BenchmarkConfig's fields, then every registered method's Config fields as
# --{method}-{field} (e.g. --frame-cnn-lr), or under the unprefixed name the method shares (--alpha, --width).
BENCHMARK_OPTIONS = DataclassOptions()
BENCHMARK_OPTIONS.add(BenchmarkConfig, BENCH, names={"dofs": "--dof", "gaps": "--gap"},
                      skip=("profile", "overwrite", "progress", "method_configs"))
for _name, _module in methods.REGISTRY.items():
    BENCHMARK_OPTIONS.add(_module.Config, _name, prefix=f"{_name}-", names=methods.shared_options(_module))


@click.command(cls=MultiValueCommand, context_settings=CONTEXT)
@click.option("--quick", is_flag=True,
              help="Tiny CI profile: 16 px data, tiny models, gaps 1 3, 30 steps; about a minute. Its latent "
                   "models are too small to decode frames: use it to test the pipeline, not to read numbers.")
@click.option("--demo", is_flag=True,
              help="The README's main job: dof 1 and 2 at 32 px, every method, 250 steps each, gaps 2 5; "
                   "about 5 minutes on 2 cores, every latent model decodes recognisable frames.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--plan", "show_plan", is_flag=True,
              help="Print the run's independent jobs (renders, trainings, evaluations) as JSON lines and exit.")
@click.option("--only", "only", default=None, metavar="JOB",
              help="Run one job of the plan (its outputs go to --cache), e.g. from a job-array task.")
@click.option("--aggregate", is_flag=True,
              help="Build --out from the job outputs present in --cache and name the missing jobs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_benchmark(quick, demo, overwrite, show_plan, only, aggregate, quiet, **options):
    """Train and score every method on every DoF, gap and intermediate frame; write tables and figures to --out.

    Example: run-benchmark --alpha 0 100 --seeds 3 --out results/mine

    To fan out over machines: --plan lists the jobs; run each with the same options plus --only JOB
    (renders, then trainings, then evaluations); then --aggregate writes --out.

    Learned methods select on the val split, get the same --budget-gflop (else the same steps) and
    --lr-trials learning rates each. SIGTERM or Ctrl-C stops it after the sequence, training step or
    job in hand (a training checkpoints its model) and exits 143 (130 for Ctrl-C); a second one stops
    at once. Running the same command again resumes it.
    """
    import torch

    from benchmarks import report, suite

    with user_errors(), preemption_exits():
        # A shared option (--width) sets every chosen method that has the field; --frame-cnn-lr sets one method.
        chosen = {BENCH, *(options.get("methods") or methods.DEFAULT_METHODS)}
        given = BENCHMARK_OPTIONS.values(options, renamed_only_for=chosen)
        settings = given.pop(BENCH, {}) | dict(overwrite=overwrite, progress=not quiet, method_configs=given)
        if quick and demo:
            raise UserError("give --quick or --demo, not both")
        config = profile_config("quick" if quick else "demo" if demo else "full", **settings)
        if sum((show_plan, only is not None, aggregate)) > 1:
            raise UserError("give at most one of --plan, --only and --aggregate")
        if show_plan:
            for job in suite.plan(config):
                click.echo(json.dumps(suite.job_json(job)))
            return
        for reason in suite.skipped(config).values():  # e.g. rife without its package: one line, then the rest runs
            click.echo(reason, err=True)
        if only is not None:
            if config.threads:
                torch.set_num_threads(config.threads)
            suite.run_job(config, suite.find_job(config, only))
            click.echo(f"{only}: done")
            return
        if aggregate:
            path, missing = suite.aggregate(config)
            if missing:
                click.echo(f"missing (not in the results): {', '.join(missing)}", err=True)
        else:
            path = suite.run_benchmark(config)
        click.echo(f"results in {path}/ (results.md, results.json, results.csv, config.json, figures)")
        records = json.loads((path / "results.json").read_text())["records"]
        click.echo("\n".join(report.summary_lines(records, path)))


BENCHMARK_OPTIONS.extend(run_benchmark)


# train-inbetween: every TrainConfig field.
TRAIN_OPTIONS = DataclassOptions()
TRAIN_OPTIONS.add(TrainConfig, "train", names={"gaps": "--gap", "kl_form": "--kl"}, skip=("progress",))


@click.command(cls=MultiValueCommand, context_settings=CONTEXT)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_inbetween(quiet, **options):
    """Train one alpha-VAE on a dataset file. Runs under torchrun for DistributedDataParallel:

    torchrun --nproc_per_node 2 $(which train-inbetween) --data data/dof2.h5 --alpha 100

    SIGTERM or Ctrl-C: the current step finishes, checkpoint.pt is written and it exits 143 (130);
    the same command with --resume continues to the same result.
    """
    from inbetween import train

    with user_errors(), preemption_exits():
        train(TrainConfig(**TRAIN_OPTIONS.values(options).get("train", {}), progress=not quiet))


TRAIN_OPTIONS.extend(train_inbetween)
