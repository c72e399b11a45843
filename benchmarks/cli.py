"""Click commands `run-benchmark`, `export-triplets` and `score-predictions`, their options generated from the
config dataclasses (train-inbetween: inbetween/cli.py)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import fields

import click

from benchmarks import methods
from benchmarks.engine import plugins
from benchmarks.engine.config import BenchmarkConfig, dataset_command, profile_config
from benchmarks.external.export import ExportConfig
from benchmarks.external.predictions import ScoreConfig
from ibutil.cli import DataclassOptions, MultiValueCommand, option_values, user_errors
from ibutil.errors import UserError
from ibutil.preempt import preemption_exits

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
BENCH = "benchmark"  # the target name of BenchmarkConfig's own options
PLUGINS = "plugins"  # ctx.meta key: the run's plug-ins, their options and the generated options they belong to


def benchmark_options(extra: list[methods.Plugin] = ()) -> DataclassOptions:
    """run-benchmark's generated options: BenchmarkConfig's fields, then every built-in's and plug-in's Config
    fields as --{method}-{field} (e.g. --frame-cnn-lr), or under the unprefixed name the method shares (--alpha,
    --width). A plug-in's own option that another method already has is a UserError."""
    options = DataclassOptions()
    options.add(BenchmarkConfig, BENCH, names={"dofs": "--dof", "gaps": "--gap"},
                skip=("profile", "overwrite", "progress", "method_configs", "plugins"))
    for module in methods.REGISTRY.values():
        options.add(module.Config, module.NAME, prefix=f"{module.NAME}-", names=methods.hooks(module).SHARED)
    for plugin in extra:
        module, shared = plugin.module, methods.hooks(plugin.module).SHARED
        for f in fields(module.Config):
            opt = f"--{module.NAME}-{f.name.replace('_', '-')}"
            if f.name not in shared and opt.lstrip("-").replace("-", "_") in options.routes:
                raise UserError(f"{plugin.source}: its option {opt} is another method's; rename the field or NAME")
        try:
            options.add(module.Config, module.NAME, prefix=f"{module.NAME}-", names=shared)
        except Exception as exc:  # noqa: BLE001  (an annotation that does not resolve, a type click cannot parse)
            raise UserError(f"{plugin.source}: its Config fields must be typed bool, int, float, str or tuples of "
                            f"them ({plugins.first_line(exc)})") from None
    return options


BENCHMARK_OPTIONS = benchmark_options()


@contextmanager
def reference_remedy():
    """A --reference run on other data (report.OtherDataset) says how to get its file: the results know the bytes
    differ, the engine's profiles how that run made its dataset (config.dataset_command)."""
    from benchmarks.results.report import OtherDataset

    try:
        yield
    except OtherDataset as exc:
        file = exc.ref["doc"]["datasets"][str(exc.dof)]["file"]
        raise UserError(f"{exc}; {dataset_command(exc.ref['config'], file, exc.dof)} and pass it as --data") from None


class MethodCommand(MultiValueCommand):
    """run-benchmark's command: before parsing, loads the methods from outside the package that the command
    line names (each --method-file; the --methods names of installed entry points) and adds their options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with user_errors():
            found = plugins.discover(option_values(args, "--method-file"), option_values(args, "--methods"))
            generated = benchmark_options(found)
            added = generated.options[len(BENCHMARK_OPTIONS.options):]
            taken = {o for p in self.params for o in p.opts + p.secondary_opts}
            for option in added:
                if set(option.opts) & taken:
                    raise UserError(f"a plug-in's option {option.opts[0]} is one of run-benchmark's own; rename it")
        ctx.meta[PLUGINS] = found, added, generated
        return super().parse_args(ctx, args)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        added = ctx.meta.get(PLUGINS, ((), [], None))[1]
        return params[:len(self.params)] + added + params[len(self.params):]  # the plug-ins' before --help


@click.command(cls=MethodCommand, context_settings=CONTEXT)
@click.option("--quick", is_flag=True,
              help="Tiny CI profile: 16 px data, tiny models, gaps 1 3, 30 steps; about a minute. Its latent "
                   "models are too small to decode frames: use it to test the pipeline, not to read numbers.")
@click.option("--demo", is_flag=True,
              help="The README's main job: dof 1 and 2 at 32 px, every method, 250 steps each, gaps 2 5 10; "
                   "about 5 minutes on 2 cores, every latent model decodes recognisable frames.")
@click.option("--method-file", "method_files", multiple=True, type=click.Path(dir_okay=False), metavar="PATH.py",
              help="A method of your own: a Python file with the method interface (docs/your-method.md). It runs "
                   "beside the built-ins, or as --methods selects it by its NAME; its Config fields become "
                   "--{NAME}-{field} options. Installed packages' methods (entry points) need only --methods.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--plan", "show_plan", is_flag=True,
              help="Print the run's independent jobs (renders, trainings, evaluations) as JSON lines and exit.")
@click.option("--only", "only", default=None, metavar="JOB",
              help="Run one job of the plan (its outputs go to --cache), e.g. from a job-array task.")
@click.option("--aggregate", is_flag=True,
              help="Build --out from the job outputs present in --cache and name the missing jobs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def run_benchmark(ctx, quick, demo, method_files, overwrite, show_plan, only, aggregate, quiet, **options):
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

    from benchmarks.engine import cache, jobs, plan, reference_models, run
    from benchmarks.engine.aggregate import aggregate as aggregate_outputs  # `aggregate` is the flag
    from benchmarks.results import report
    from benchmarks.results.stats import Row

    found, _, generated = ctx.meta.get(PLUGINS, ([], [], BENCHMARK_OPTIONS))
    with user_errors(), reference_remedy(), preemption_exits(), methods.registered(found):
        # A --method-file's method runs beside the built-ins unless --methods chooses.
        default = methods.DEFAULT_METHODS + tuple(p.name for p in found if p.file)
        # A shared option (--width) sets every chosen method that has the field; --frame-cnn-lr sets one method.
        chosen = {BENCH, *(options.get("methods") or default)}
        given = generated.values(options, renamed_only_for=chosen)
        profile = "quick" if quick else "demo" if demo else "full"
        for plugin in (p for p in found if p.name in chosen):  # its Config's own errors: one line naming it
            given[plugin.name] = plugins.make_config(plugin, profile, given.get(plugin.name, {}))
        settings = (dict(methods=default) | given.pop(BENCH, {})
                    | dict(overwrite=overwrite, progress=not quiet, method_configs=given,
                           plugins={p.name: f"{p.source}, sha256 {p.sha256}" for p in found}))
        if quick and demo:
            raise UserError("give --quick or --demo, not both")
        config = profile_config(profile, **settings)
        plugins.check_predicts(config)  # a plug-in that trains nothing predicts a dummy batch before any job runs
        if sum((show_plan, only is not None, aggregate)) > 1:
            raise UserError("give at most one of --plan, --only and --aggregate")
        if config.reference:  # an unreadable --reference, or one on other data already here, stops before any work
            files = {dof: cache.dataset_path(config, dof) for dof in cache.dataset_dofs(config)}
            report.check_reference_data(config.reference, files)
        # Shipped models: a file that is not what its model.json says stops here; one on other data is left out.
        for line in reference_models.check(config):
            click.echo(line, err=True)
        if show_plan:
            for job in plan.plan(config):
                click.echo(json.dumps(jobs.job_json(job)))
            return
        for reason in plan.skipped(config).values():  # e.g. rife without its package: one line, then the rest runs
            click.echo(reason, err=True)
        if only is not None:
            if config.threads:
                torch.set_num_threads(config.threads)
            run.run_job(config, plan.find_job(config, only))
            click.echo(f"{only}: done")
            return
        if aggregate:
            path, missing = aggregate_outputs(config)
            if missing:
                click.echo(f"missing (not in the results): {', '.join(missing)}", err=True)
        else:
            path = run.run_benchmark(config)
        click.echo(f"results in {path}/ (results.md, results.json, results.csv, config.json, figures)")
        records = json.loads((path / "results.json").read_text())["records"]
        plugin_rows = tuple(dict.fromkeys(Row.of(r).label for r in records if r["method"] in config.plugins))
        click.echo("\n".join(report.summary_lines(records, path, mine=plugin_rows)))  # a plug-in's rows and their rank


BENCHMARK_OPTIONS.extend(run_benchmark)


# export-triplets and score-predictions: predictions made elsewhere (benchmarks.external.export and
# benchmarks.external.predictions).
EXPORT_OPTIONS = DataclassOptions()
EXPORT_OPTIONS.add(ExportConfig, "export", names={"splits": "--split", "gaps": "--gap"}, skip=("progress",))


@click.command(cls=MultiValueCommand, context_settings=CONTEXT)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_triplets(quiet, **options):
    """Write every triplet the benchmark scores on a dataset file to an HDF5 inputs file, for a model run elsewhere.

    Example: export-triplets --data data/dof1.h5 --split test --gap 2 5 10 20 --out inputs.h5

    The file holds x0, x2 (N, H, W, 3) uint8, tau (N,) and the index of each row (split, sequence,
    start, gap, j); predict `frames` (N, H, W, 3) for it and run score-predictions. Layout:
    docs/your-method.md.
    """
    from benchmarks.external.export import export_triplets as export

    with user_errors():
        path, n = export(ExportConfig(**EXPORT_OPTIONS.values(options).get("export", {}), progress=not quiet))
        click.echo(f"wrote {path}: {n} triplets (x0, x2, tau and the index split/sequence/start/gap/j); predict "
                   f"`frames` ({n}, H, W, 3) in this order and run score-predictions")


EXPORT_OPTIONS.extend(export_triplets)

SCORE_OPTIONS = DataclassOptions()
SCORE_OPTIONS.add(ScoreConfig, "score", skip=("progress",))


@click.command(cls=MultiValueCommand, context_settings=CONTEXT)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def score_predictions(quiet, **options):
    """Score predictions made elsewhere for an export-triplets file; write the folder run-benchmark writes.

    Example: score-predictions --data data/dof1.h5 --inputs inputs.h5 --predictions preds.h5 --name my-model
    --reference docs/results/grid --out results/my-model

    `frames` in the predictions file: (N, H, W, 3) uint8, or float in [0, 1], row i the frame at tau[i]
    between x0[i] and x2[i]. The same metrics, splits, tau and well-posed subsets as run-benchmark.
    """
    from benchmarks.external.predictions import score_predictions as score
    from benchmarks.results import report

    with user_errors(), reference_remedy(), preemption_exits():
        config = ScoreConfig(**SCORE_OPTIONS.values(options).get("score", {}), progress=not quiet)
        path = score(config)
        click.echo(f"results in {path}/ (report.html, results.md, results.json, results.csv, config.json, figures)")
        click.echo("\n".join(report.summary_lines(report.records_with_references(path), path, mine=config.name)))
        click.echo(f"Open {path}/report.html in a browser: every table (click a header to sort) and figure on one page.")


SCORE_OPTIONS.extend(score_predictions)
