"""Compute accounting: the FLOPs of one training step counted by torch.utils.flop_counter, and a budget as steps."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from render.errors import UserError


def training_step_flops(build: Callable[[], nn.Module], loss: Callable[[nn.Module], torch.Tensor]) -> int:
    """FLOPs of one forward and backward pass: `loss(build())` and its .backward().

    What counts: FlopCounterMode's registry, i.e. matrix products and convolutions (2 FLOPs per
    multiply-add), forward and backward (gradients of weights and of every activation that needs
    one; not of the input images). Not counted: elementwise work (activations, the loss, sampling)
    and the optimiser update, which are a small fraction of these models' FLOPs.

    The model and its inputs are built under FakeTensorMode (torch's shape-only tensors, the same
    machinery torch.compile traces with), so nothing is computed: the count is exact for the real
    shapes but takes milliseconds even for the paper-width model on a CPU, and leaves every RNG,
    device and real model untouched. `loss` must create its inputs itself (e.g. torch.rand(shape)).
    """
    with torch.random.fork_rng(devices=[]), FakeTensorMode():
        model = build()
        with FlopCounterMode(display=False) as counter:
            loss(model).backward()
    return int(counter.get_total_flops())


def steps_for_budget(budget_gflop: float, flops_per_step: int, what: str = "this model") -> int:
    """The whole optimiser steps a budget buys: floor(budget / flops_per_step); UserError if not even one."""
    if not isinstance(budget_gflop, (int, float)) or isinstance(budget_gflop, bool) \
            or not math.isfinite(budget_gflop) or budget_gflop <= 0:
        raise UserError(f"budget_gflop must be a positive number of GFLOP, got {budget_gflop!r}")
    steps = math.floor(budget_gflop * 1e9 / flops_per_step)
    if steps < 1:
        raise UserError(f"a budget of {budget_gflop:g} GFLOP buys no training step of {what} "
                        f"({flops_per_step / 1e9:.4g} GFLOP per step); raise budget_gflop")
    return steps
