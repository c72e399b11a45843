"""Compute accounting: FLOPs of a training step (torch.utils.flop_counter) and a budget as steps (the record: ibutil.run)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from ibutil.errors import UserError


def training_step_flops(build: Callable[[], nn.Module], loss: Callable[[nn.Module], torch.Tensor]) -> int:
    """FLOPs of one forward and backward pass: `loss(build())` and its .backward().

    What counts: FlopCounterMode's registry, i.e. matrix products and convolutions (2 FLOPs per
    multiply-add), forward and backward (gradients of weights and of every activation that needs
    one; not of the input images). Not counted: elementwise work (activations, the loss, sampling)
    and the optimiser update, which are a small fraction of these models' FLOPs.

    The model and its inputs are built under FakeTensorMode (torch's shape-only tensors, the same
    machinery torch.compile traces with), so nothing is computed: the count is exact for the real
    shapes, leaves every RNG, device and real model untouched, and costs about 0.2-0.5 s at any
    width on a 2-core CPU (the first count in a process also imports torch._dynamo: 1-4 s there).
    `loss` must create its inputs itself (e.g. torch.rand(shape)).
    """
    with torch.random.fork_rng(devices=[]), FakeTensorMode():
        model = build()
        with FlopCounterMode(display=False) as counter:
            loss(model).backward()
    return int(counter.get_total_flops())


def epoch_accounting(flops_of_batch: Callable[[int], int], n: int, batch_size: int) -> dict:
    """Steps per epoch over n triplets in batches of batch_size, and the FLOPs of an epoch's last, smaller
    batch (flops_of_batch(size) counts one step of `size` triplets): the epoch arguments of flops_of_steps."""
    per_epoch = math.ceil(n / batch_size)
    return {"epoch_steps": per_epoch, "last_step_flops": flops_of_batch(n - (per_epoch - 1) * batch_size)}


def flops_of_steps(steps: int, flops_per_step: int, epoch_steps: int | None = None,
                   last_step_flops: int | None = None) -> int:
    """FLOPs of `steps` optimiser steps. With epoch_steps, every epoch_steps-th step is an epoch's last,
    smaller batch costing last_step_flops (a loop over the data in order); else all cost flops_per_step."""
    if epoch_steps is None:
        return steps * flops_per_step
    last = steps // epoch_steps  # epochs completed, each ended by one last batch
    return (steps - last) * flops_per_step + last * last_step_flops


def steps_for_budget(budget_gflop: float, flops_per_step: int, what: str = "this model",
                     epoch_steps: int | None = None, last_step_flops: int | None = None) -> int:
    """The most optimiser steps the budget pays for (flops_of_steps <= budget); UserError if not even one.

    Without epochs this is floor(budget / flops_per_step); with them the smaller last batches are
    counted at their own cost. Either way less than one step's FLOPs of the budget is left unspent.
    """
    if not isinstance(budget_gflop, (int, float)) or isinstance(budget_gflop, bool) \
            or not math.isfinite(budget_gflop) or budget_gflop <= 0:
        raise UserError(f"budget_gflop must be a positive number of GFLOP, got {budget_gflop!r}")
    budget = math.floor(budget_gflop * 1e9)
    if epoch_steps is None:
        steps = budget // flops_per_step
    else:
        epoch = flops_of_steps(epoch_steps, flops_per_step, epoch_steps, last_step_flops)
        epochs, rest = divmod(budget, epoch)
        steps = epochs * epoch_steps + min(epoch_steps - 1, rest // flops_per_step)  # rest < one epoch's cost
    if steps < 1:
        raise UserError(f"a budget of {budget_gflop:g} GFLOP buys no training step of {what} "
                        f"({flops_per_step / 1e9:.4g} GFLOP per step); raise budget_gflop")
    return steps
