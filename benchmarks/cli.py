"""Click command `run-benchmark`: parse, build the BenchmarkConfig, call benchmarks.suite.run_benchmark."""

from __future__ import annotations

import click

from render.cli import user_errors


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


class MultiValueCommand(click.Command):
    """Lets an option declared multiple=True take several values after one flag: `--alpha 0 100`.

    Click options take one value per flag; this rewrites `--alpha 0 100` to `--alpha 0 --alpha 100`
    before parsing. A value may be a negative number; any other token starting with '-' ends the list.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        multi = {o for p in self.params if isinstance(p, click.Option) and p.multiple for o in p.opts}
        out: list[str] = []
        current, count = None, 0
        for token in args:
            if token in multi:
                current, count = token, 0
                out.append(token)
            elif current is not None and (not token.startswith("-") or _is_number(token)):
                if count:
                    out.append(current)
                out.append(token)
                count += 1
            else:
                current = None
                out.append(token)
        return super().parse_args(ctx, out)


@click.command(cls=MultiValueCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--alpha", "alphas", type=float, multiple=True,
              help="α values of the alpha-VAE, e.g. --alpha 0 100 (0 = plain VAE). Default: 0 and 100.")
@click.option("--dof", "dofs", type=int, multiple=True, help="Presets to benchmark: 1, 2, 6 (default: all).")
@click.option("--gap", "gaps", type=int, multiple=True,
              help="Frame gaps k of the test triplets (t-k, t, t+k). Default: 2 5 10 20 (--quick: 1 3).")
@click.option("--methods", "methods", multiple=True,
              help="Methods: pixel-average, optical-flow, frame-cnn, alpha-vae (default: all).")
@click.option("--kl", "kls", multiple=True,
              help="alpha-VAE divergence forms: avg-gaussian, mixture, jensen (default: avg-gaussian).")
@click.option("--data", "data", type=click.Path(), multiple=True,
              help="Existing dataset files (HDF5 v1), one per DoF; otherwise the benchmark renders them into --cache.")
@click.option("--epochs", type=int, default=None, help="Training epochs of the learned methods (default 5).")
@click.option("--steps", type=int, default=None, help="Train exactly this many steps instead of --epochs.")
@click.option("--width", type=float, default=None, help="alpha-VAE width multiplier (1.0 = the paper; default 0.25).")
@click.option("--latent", type=int, default=None, help="alpha-VAE latent size (default 32).")
@click.option("--seeds", type=int, default=None, help="Independent training seeds per learned method (default 1).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="alpha-VAE compute precision (bf16 = autocast).")
@click.option("--threads", type=int, default=0, show_default=True, help="torch CPU threads (0 = torch default).")
@click.option("--cache", default=".cache/inbetween-bench", show_default=True,
              help="Folder of rendered datasets and trained models, reused across runs by config hash.")
@click.option("--out", default="results/benchmark", show_default=True,
              help="Output folder: results.json/csv/md, config.json and figures.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--quick", is_flag=True, help="Tiny CI profile: 16 px data, tiny models, gaps 1 3; under 3 minutes.")
@click.option("--plan", "show_plan", is_flag=True,
              help="Print the run's independent jobs (renders, trainings, evaluations) as JSON lines and exit.")
@click.option("--only", "only", default=None, metavar="JOB",
              help="Run one job of the plan (its outputs go to --cache), e.g. from a job-array task.")
@click.option("--aggregate", is_flag=True,
              help="Build --out from the job outputs present in --cache and name the missing jobs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_benchmark(alphas, dofs, gaps, methods, kls, data, epochs, steps, width, latent, seeds, device, dtype,
                  threads, cache, out, overwrite, quick, show_plan, only, aggregate, quiet):
    """Train and evaluate every method on every DoF and gap, and write tables and figures to --out.

    Example: run-benchmark --alpha 0 100 --seeds 3 --out results/mine

    To fan out over machines: --plan lists the jobs; run each with the same options plus --only JOB
    (renders, then trainings, then evaluations); then --aggregate writes --out.
    """
    import json

    import torch

    from benchmarks import suite
    from benchmarks.suite import BenchmarkConfig, quick_config, run_benchmark as run

    given = dict(alphas=alphas, dofs=dofs, gaps=gaps, methods=methods, kls=kls, data=data, epochs=epochs,
                 steps=steps, width=width, latent=latent, seeds=seeds)
    options = {k: v for k, v in given.items() if v not in (None, ())}
    options |= dict(device=device, dtype=dtype, threads=threads, cache=cache, out=out, overwrite=overwrite,
                    progress=not quiet)
    with user_errors():
        config = quick_config(**options) if quick else BenchmarkConfig(**options)
        if sum((show_plan, only is not None, aggregate)) > 1:
            raise suite.UserError("give at most one of --plan, --only and --aggregate")
        if show_plan:
            for job in suite.plan(config):
                click.echo(json.dumps(job))
            return
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
            path = run(config)
        click.echo(f"results in {path}/ (results.md, results.json, results.csv, config.json, figures)")


@click.command(cls=MultiValueCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data", required=True, help="HDF5 v1 dataset file (render-dataset).")
@click.option("--out-dir", default="runs/alpha-vae", show_default=True, help="checkpoint.pt and log.csv go here.")
@click.option("--gap", "gaps", type=int, multiple=True, help="Triplet gaps k, mixed in one run (default 1).")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Weight of the in-between divergence.")
@click.option("--kl", "kl_form", default="avg-gaussian", show_default=True, help="avg-gaussian, mixture or jensen.")
@click.option("--latent", type=int, default=128, show_default=True, help="Latent size.")
@click.option("--width", type=float, default=1.0, show_default=True, help="Channel multiplier (1.0 = the paper).")
@click.option("--epochs", type=int, default=20, show_default=True, help="Passes over the training triplets.")
@click.option("--steps", type=int, default=None, help="Train exactly this many steps instead of --epochs.")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Global batch of triplets (split across processes under torchrun).")
@click.option("--lr", type=float, default=3e-4, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights, data order and noise.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out-dir.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_inbetween(data, out_dir, gaps, alpha, kl_form, latent, width, epochs, steps, batch_size, lr, seed,
                    device, dtype, resume, quiet):
    """Train one alpha-VAE on a dataset file. Runs under torchrun for DistributedDataParallel:

    torchrun --nproc_per_node 2 $(which train-inbetween) --data data/dof2.h5 --alpha 100
    """
    from inbetween import TrainConfig, train

    with user_errors():
        train(TrainConfig(data=data, out_dir=out_dir, gaps=gaps or (1,), alpha=alpha, kl_form=kl_form, latent=latent,
                          width=width, epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                          device=device, dtype=dtype, resume=resume, progress=not quiet))
