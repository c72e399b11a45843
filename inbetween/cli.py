"""Click command `train-inbetween`: every TrainConfig field as an option; runs inbetween.train.train."""

from __future__ import annotations

import click

from ibutil.cli import DataclassOptions, MultiValueCommand, user_errors
from ibutil.preempt import preemption_exits
from inbetween.train import TrainConfig, train

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
TRAIN_OPTIONS = DataclassOptions()
TRAIN_OPTIONS.add(TrainConfig, "train", names={"gaps": "--gap", "kl_form": "--kl"}, skip=("progress",))


@click.command(cls=MultiValueCommand, context_settings=CONTEXT)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_inbetween(quiet, **options):
    """Train one alpha-VAE on a dataset file (the benchmark's alpha-vae rows run the same loop). Runs under
    torchrun for DistributedDataParallel:

    torchrun --nproc_per_node 2 $(which train-inbetween) --data data/dof2.h5 --alpha 100

    SIGTERM or Ctrl-C: the current step finishes, checkpoint.pt is written and it exits 143 (130);
    the same command with --resume continues to the same result.
    """
    with user_errors(), preemption_exits():
        train(TrainConfig(**TRAIN_OPTIONS.values(options).get("train", {}), progress=not quiet))


TRAIN_OPTIONS.extend(train_inbetween)
