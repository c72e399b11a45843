"""The frame-CNN baseline: a small U-Net that maps the two end frames (x0, x2) to the middle frame x1."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ibutil.flops import flops_of_steps, run_summary, steps_for_budget, training_step_flops, write_summary
from ibutil.preempt import Preempted, StopFlag
from ibutil.selection import EVAL_EVERY, MIN_DELTA, PATIENCE, Selection
from inbetween.train import package_version, resolve_device, torch_save_atomic
from render.errors import UserError, write_text_atomic

CHECKPOINT_FORMAT = "frame-cnn"
CHECKPOINT_VERSION = 1
LOSSES = ("mse", "l1")
DOWNSAMPLINGS = 2  # U-Net depth: inputs are zero-padded to a multiple of 2**DOWNSAMPLINGS
PREDICT_BATCH = 256  # triplets per forward pass in predict()
CURVE_POINTS = 100  # fit() logs the mean training loss of each of about this many blocks of steps
CHECKPOINT_NAME = "checkpoint.pt"  # fit(out_dir=...): the last state, resumable (load_checkpoint reads its weights)
BEST_NAME = "best.pt"  # the selected (lowest val loss) weights
# Fields that may differ when a run resumes: where it runs and how often it saves, not what it trains.
RESUMABLE_CHANGES = ("device", "checkpoint_every")


@dataclass(frozen=True)
class FrameCNNConfig:
    """Architecture and training budget of the frame CNN; stored in every checkpoint."""

    channels: int = 32  # feature channels at full resolution, doubled after each downsampling
    steps: int = 5000  # optimiser steps (replaced by the budget's when budget_gflop is set)
    batch_size: int = 64  # triplets per step, sampled uniformly with replacement
    lr: float = 1e-3  # Adam peak learning rate, cosine-decayed to lr / 10 over the steps
    loss: str = "mse"  # training loss on [0, 1] pixels: "mse" (the benchmark's metric) or "l1"
    seed: int = 0  # seeds weight initialisation and batch sampling (torch.Generator)
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda" or "cuda:N"
    eval_every: int = EVAL_EVERY  # with val data: evaluate the val loss every this many steps, and at the last step
    patience: int = PATIENCE  # stop after this many evaluations in a row without a new best (0: never stop early)
    min_delta: float = MIN_DELTA  # a new best must be lower than the old by more than this (loss units)
    budget_gflop: float | None = None  # when set, train floor(budget / FLOPs per step) steps instead of `steps`
    checkpoint_every: int = 0  # with out_dir: also checkpoint every this many steps (0: at evaluations and the end)

    def __post_init__(self):
        for name in ("channels", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"frame-cnn {name} must be a positive integer, got {value!r}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise UserError(f"frame-cnn lr must be a positive number, got {self.lr!r}")
        if self.loss not in LOSSES:
            raise UserError(f"unknown frame-cnn loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserError(f"frame-cnn seed must be a non-negative integer, got {self.seed!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise UserError(f"unknown device {self.device!r}; choose auto, cpu, cuda or cuda:N")
        if not isinstance(self.eval_every, int) or isinstance(self.eval_every, bool) or self.eval_every < 1:
            raise UserError(f"frame-cnn eval_every must be a positive integer (steps), got {self.eval_every!r}")
        if not isinstance(self.checkpoint_every, int) or isinstance(self.checkpoint_every, bool) \
                or self.checkpoint_every < 0:
            raise UserError(f"frame-cnn checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        Selection(self.patience, self.min_delta)  # validates both
        if self.budget_gflop is not None and (not isinstance(self.budget_gflop, (int, float))
                                              or isinstance(self.budget_gflop, bool)
                                              or not math.isfinite(self.budget_gflop) or self.budget_gflop <= 0):
            raise UserError(f"frame-cnn budget_gflop must be a positive number of GFLOP or None, got {self.budget_gflop!r}")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU, size-preserving."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
    )


class FrameCNN(nn.Module):
    """U-Net with two downsamplings: concat(x0, x2) (B, 6, H, W) -> x1_hat (B, 3, H, W).

    It predicts a correction to the pixel average (x0 + x2) / 2, and its last layer starts at
    zero, so an untrained model is the pixel-average baseline. (A sigmoid output trained with
    MSE on mostly-black frames saturated at black within a few hundred steps in our trials.)
    """

    def __init__(self, config: FrameCNNConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.enc1 = _block(6, c)  # (B, c, H, W)
        self.enc2 = _block(c, 2 * c)  # (B, 2c, H/2, W/2)
        self.mid = _block(2 * c, 4 * c)  # (B, 4c, H/4, W/4)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)  # -> (B, 2c, H/2, W/2)
        self.dec2 = _block(4 * c, 2 * c)  # skip concat: 2c + 2c in
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)  # -> (B, c, H, W)
        self.dec1 = _block(2 * c, c)  # skip concat: c + c in
        self.head = nn.Conv2d(c, 3, 1)  # (B, 3, H, W) correction to the pixel average

    def reset_parameters(self, generator: torch.Generator) -> None:
        """He-uniform weights, zero biases (zero head), drawn from `generator` so a seed fixes every byte."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    fan_in = module.weight[0].numel()  # torch's convention for both conv kinds
                    bound = math.sqrt(6.0 / fan_in)
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.zero_()
            self.head.weight.zero_()  # start as the pixel average

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, x0: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) x2 in [0, 1] -> (B, 3, H, W), not clamped (predict clamps); any H, W."""
        h, w = x0.shape[-2:]
        m = 2 ** DOWNSAMPLINGS
        # Pad right/bottom with black, the background colour, to a size the pooling divides.
        x = F.pad(torch.cat([x0, x2], dim=1), (0, -w % m, 0, -h % m))  # (B, 6, H', W')
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        z = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(z), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return (x0 + x2) / 2 + self.head(d1)[..., :h, :w]

    @torch.no_grad()
    def predict(self, x0: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The benchmark interface: (N, 3, H, W) x2 in [0, 1] on any device -> x1_hat in [0, 1] on x0's device."""
        if x0.shape != x2.shape or x0.ndim != 4 or x0.shape[1] != 3:
            raise UserError(f"x0 {tuple(x0.shape)} and x2 {tuple(x2.shape)} must both be (N, 3, H, W)")
        was_training = self.training
        self.eval()
        out = [self(a.to(self.device, torch.float32), b.to(self.device, torch.float32)).clamp(0, 1).to(x0.device, x0.dtype)
               for a, b in zip(x0.split(PREDICT_BATCH), x2.split(PREDICT_BATCH))]
        self.train(was_training)
        return torch.cat(out) if out else x0.new_empty(x0.shape)


def _as_tensor(images, name: str) -> torch.Tensor:
    """Training frames on the CPU as given: (N, 3, H, W) float in [0, 1] or uint8 in 0..255."""
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim != 4 or t.shape[1] != 3:
        raise UserError(f"{name} must have shape (N, 3, H, W), got {tuple(t.shape)}")
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise UserError(f"{name} must be float in [0, 1] or uint8, got {t.dtype}")
    return t.detach().cpu()


def _to_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()


@contextmanager
def _deterministic_cudnn():
    """cuDNN picks its fastest (and not always deterministic) kernels unless told not to."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def step_flops(config: FrameCNNConfig, height: int, width: int) -> int:
    """FLOPs of one training step of batch_size triplets at H x W (forward + backward; optimiser excluded)."""
    return _step_flops(config.channels, config.batch_size, height, width)


@functools.lru_cache(maxsize=64)  # one count per model and batch shape
def _step_flops(channels: int, batch_size: int, height: int, width: int) -> int:
    def loss(model: FrameCNN) -> torch.Tensor:
        x0, x1, x2 = (torch.rand(batch_size, 3, height, width) for _ in range(3))
        return F.mse_loss(model(x0, x2), x1)  # l1 costs the same matmul and convolution FLOPs
    return training_step_flops(lambda: FrameCNN(FrameCNNConfig(channels=channels, device="cpu")), loss)


def total_steps(config: FrameCNNConfig, height: int, width: int) -> int:
    """The run's optimiser steps: config.steps, or what budget_gflop buys at this image size."""
    if config.budget_gflop is None:
        return config.steps
    return steps_for_budget(config.budget_gflop, step_flops(config, height, width), "the frame CNN")


@torch.no_grad()
def val_loss(model: FrameCNN, x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> float:
    """The training loss (unclamped output) averaged over every val triplet, in fixed batches: deterministic."""
    loss_fn = F.mse_loss if model.config.loss == "mse" else F.l1_loss
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(x0), PREDICT_BATCH):
        a, target, b = (_to_float(x[i:i + PREDICT_BATCH], model.device) for x in (x0, x1, x2))
        total += loss_fn(model(a, b), target, reduction="sum").item() / target[0].numel()
    model.train(was_training)
    return total / len(x0)


def fit(config: FrameCNNConfig, x0, x1, x2, *, val=None, out_dir: str | os.PathLike | None = None,
        resume: bool = False, progress: bool = True, log_path: str | os.PathLike | None = None) -> FrameCNN:
    """Train a fresh FrameCNN on triplets: x0, x1, x2 each (N, 3, H, W), numpy or torch, float [0, 1] or uint8.

    Returns the selected model in eval mode: with val=(x0, x1, x2) validation triplets, the weights
    of the evaluation (every eval_every steps and at the last) with the lowest val loss, stopping
    after `patience` evaluations without a new best; without val, the last step's weights.

    With out_dir: out_dir/checkpoint.pt holds the resumable state (written at each evaluation,
    every checkpoint_every steps and at the end), best.pt the selected weights, summary.json the
    params, FLOPs, seconds, selected step and lr. SIGTERM or SIGINT then lets the current step
    finish, checkpoints and raises ibutil.preempt.Preempted; resume=True continues bit for bit.

    The data stay where they are (CPU) and each batch moves to config.device; the same config,
    data and seed give the same weights byte for byte on the CPU. With log_path, the training
    curve (columns step, train_loss: the mean loss of each block of steps / CURVE_POINTS steps) is
    written there as CSV.
    """
    x0, x1, x2 = _as_tensor(x0, "x0"), _as_tensor(x1, "x1"), _as_tensor(x2, "x2")
    if not (x0.shape == x1.shape == x2.shape):
        raise UserError(f"x0 {tuple(x0.shape)}, x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)} must match")
    n = x0.shape[0]
    if n == 0:
        raise UserError("frame-cnn needs at least one training triplet; the training split is empty")
    if val is not None:
        val = tuple(_as_tensor(v, f"val x{j}") for j, v in enumerate(val))
        if len(val) != 3 or not (val[0].shape == val[1].shape == val[2].shape) or len(val[0]) == 0 \
                or val[0].shape[1:] != x0.shape[1:]:
            raise UserError("val must be three non-empty (N, 3, H, W) arrays x0, x1, x2 of the training frames' size")
    device = resolve_device(config.device)
    total = total_steps(config, *x0.shape[-2:])
    out = Path(out_dir) if out_dir is not None else None
    generator = torch.Generator().manual_seed(config.seed)  # CPU generator: same draws on any device

    model = FrameCNN(config)
    model.reset_parameters(generator)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = F.mse_loss if config.loss == "mse" else F.l1_loss
    accounting = {"params": sum(p.numel() for p in model.parameters()),
                  "flops_per_step": step_flops(config, *x0.shape[-2:]), "planned_steps": total}

    every = max(1, total // CURVE_POINTS)  # steps per logged block
    # block: the loss summed on the device (no sync per step); run: what a checkpoint adds to the weights.
    step, curve, block = 0, [], torch.zeros((), device=device)
    run = {"selection": Selection(config.patience, config.min_delta).state_dict(), "train_seconds": 0.0,
           "stopped_early": False}
    best_state = None  # the selected weights, on the CPU
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create out_dir {out}: {exc.strerror}") from None
        if (out / CHECKPOINT_NAME).exists():
            if not resume:
                raise UserError(f"{out} already holds a frame-cnn run; pass resume=True to continue it or choose "
                                "another out_dir")
            step, curve, block_value, run = _restore(out / CHECKPOINT_NAME, config, model, optimiser, generator)
            block.fill_(block_value)
            if (out / BEST_NAME).exists():
                best_state = torch.load(out / BEST_NAME, map_location="cpu", weights_only=True)["state_dict"]
    selection = Selection.from_state(run["selection"])
    t_run, seconds_before = time.perf_counter(), run["train_seconds"]

    def checkpoint():
        run["train_seconds"] = seconds_before + time.perf_counter() - t_run
        run["selection"] = selection.state_dict()
        summary = _summary(config, run, accounting, step, val is not None, "in-progress")
        save_checkpoint(model, out / CHECKPOINT_NAME, summary=summary, train_state={
            "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "step": step,
            "curve": curve, "block": block.item(), "run": run})

    # Signals are caught only when there is a folder to checkpoint into; otherwise they act as before.
    with _deterministic_cudnn(), (StopFlag() if out is not None else nullcontext(StopFlag())) as stop:
        bar = tqdm(total=total, initial=step, desc="frame-cnn", disable=not progress, leave=False)
        while step < total and not run["stopped_early"]:
            # Cosine decay from lr to lr / 10: large early steps, a settled finish.
            lr = config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
            for group in optimiser.param_groups:
                group["lr"] = lr
            idx = torch.randint(n, (config.batch_size,), generator=generator)  # (B,) on CPU
            a, target, b = (_to_float(x[idx], device) for x in (x0, x1, x2))  # (B, 3, H, W) in [0, 1]
            loss = loss_fn(model(a, b), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            block += loss.detach()
            step += 1
            bar.update(1)
            evaluated = val is not None and (step % config.eval_every == 0 or step == total)
            if evaluated:
                if selection.update(step, val_loss(model, *val)):
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    if out is not None:
                        save_checkpoint(model, out / BEST_NAME, step=step, val_loss=selection.best_loss)
                run["stopped_early"] = selection.should_stop
            if step % every == 0 or step == total or run["stopped_early"]:  # .item() waits for the device
                curve.append((step, block.item() / (((step - 1) % every) + 1)))
                block.zero_()
                bar.set_postfix(loss=f"{curve[-1][1]:.5f}")
            if out is not None and (evaluated or (config.checkpoint_every and step % config.checkpoint_every == 0)):
                checkpoint()
            if stop.requested and step < total and not run["stopped_early"]:
                bar.close()
                checkpoint()
                write_summary(out, _summary(config, run, accounting, step, val is not None, "preempted"))
                raise Preempted(stop.signum, step, out / CHECKPOINT_NAME)
        bar.close()
    if out is not None:
        checkpoint()
        status = "stopped-early" if run["stopped_early"] else "finished"
        write_summary(out, _summary(config, run, accounting, step, val is not None, status))
    if log_path is not None:
        _write_curve(curve, Path(log_path))
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


def _restore(path: Path, config: FrameCNNConfig, model: FrameCNN, optimiser, generator: torch.Generator):
    """Load checkpoint.pt's state into model, optimiser and generator; UserError if it is another run's."""
    payload = _read(path)
    state = payload.get("train_state")
    if state is None:
        raise UserError(f"{path} holds final weights only, not a resumable state; choose another out_dir")
    saved, ours = json.loads(payload["config"]), asdict(config)
    # A field the checkpoint's release did not have yet counts as its default.
    changed = [f.name for f in fields(FrameCNNConfig)
               if f.name not in RESUMABLE_CHANGES and saved.get(f.name, f.default) != ours[f.name]]
    if changed:
        raise UserError(f"cannot resume {path}: it was trained with a different {', '.join(changed)}; "
                        "use the same settings or another out_dir")
    model.load_state_dict(payload["state_dict"])
    optimiser.load_state_dict(state["optimiser"])
    generator.set_state(state["generator"])
    return state["step"], [tuple(row) for row in state["curve"]], state["block"], state["run"]


def _summary(config: FrameCNNConfig, run: dict, accounting: dict, step: int, selecting: bool, status: str) -> dict:
    """What the run cost and which step it selected: summary.json, and the checkpoint's "summary"."""
    # Every batch is a full one (sampled with replacement).
    return run_summary(method="frame-cnn", status=status, **accounting, steps=step,
                       train_flops=flops_of_steps(step, accounting["flops_per_step"]),
                       train_seconds=run["train_seconds"], budget_gflop=config.budget_gflop, lr=config.lr,
                       selection=run["selection"], selecting=selecting, eval_every=config.eval_every,
                       version=package_version())


def _write_curve(curve: list[tuple[int, float]], path: Path) -> None:
    """step,train_loss rows as CSV, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "step,train_loss\n" + "".join(f"{step},{loss!r}\n" for step, loss in curve))


def save_checkpoint(model: FrameCNN, path: str | os.PathLike, **extra) -> Path:
    """Write weights, config and `extra` entries to `path` atomically (temporary file, then rename); returns the path."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(asdict(model.config), sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    return torch_save_atomic(payload, path)


def load_checkpoint(path: str | os.PathLike, device: str = "auto") -> FrameCNN:
    """Rebuild a FrameCNN from save_checkpoint's file (or fit's checkpoint.pt / best.pt), in eval mode on `device`."""
    path = Path(path)
    payload = _read(path)
    try:
        config = FrameCNNConfig(**json.loads(payload["config"]))
    except (TypeError, ValueError) as exc:  # unknown or missing fields, broken JSON
        raise UserError(f"{path} has an unreadable frame-cnn config ({exc}); re-train it") from None
    model = FrameCNN(config)
    model.load_state_dict(payload["state_dict"])
    return model.to(resolve_device(device)).eval()


def _read(path: Path) -> dict:
    """The validated payload of a frame-cnn checkpoint file; UserError if it is missing or foreign."""
    if not path.is_file():
        raise UserError(f"no frame-cnn checkpoint at {path}; train one first or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}); re-train or re-download it") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path} is {CHECKPOINT_FORMAT} checkpoint version {payload.get('version')}, "
                        f"this release reads version {CHECKPOINT_VERSION}; re-train it")
    return payload
