"""Choose fp32 or bf16 autocast for alpha-VAE training by a short measurement, cached per machine.

bf16 is not faster everywhere: on a CPU without AMX it ran at 0.79x (width 0.125) and 0.97x (width
1.0) of fp32 here, on an AMX machine 1.7x. choose_dtype times a few interleaved training steps of
both from the same weights and batches, and picks bf16 only if it was faster by min_speedup and its
loss matched fp32's; the record it returns goes into the results ("dtype_choice").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ibdata.triplets import TripletDataset
from ibutil.device import cpu_info, resolve_device
from ibutil.io import write_text_atomic
from inbetween.train import TrainConfig, build_model, compute_loss, make_optimizer

CACHE_SUBDIR = "dtype-choice"


@dataclasses.dataclass(frozen=True)
class Trial:
    """What one measurement found: median seconds per step and the mean training loss of the last steps."""

    fp32_s: float
    bf16_s: float | None  # None: bf16 could not run on this device
    fp32_loss: float
    bf16_loss: float | None


def decide(trial: Trial, min_speedup: float = 1.05, loss_rtol: float = 0.02) -> tuple[str, str]:
    """(dtype, reason): bf16 only if it ran, its loss is finite and within loss_rtol of fp32's, and it
    was at least min_speedup times as fast; fp32 otherwise."""
    if trial.bf16_s is None or trial.bf16_loss is None:
        return "fp32", "bf16 autocast is not available on this device"
    if not math.isfinite(trial.bf16_loss):
        return "fp32", f"the bf16 loss was {trial.bf16_loss}"
    rel = abs(trial.bf16_loss - trial.fp32_loss) / max(abs(trial.fp32_loss), 1e-12)
    if rel > loss_rtol:
        return "fp32", f"the bf16 loss differs from fp32's by {100 * rel:.1f}% (> {100 * loss_rtol:g}%)"
    speedup = trial.fp32_s / trial.bf16_s
    if speedup < min_speedup:
        return "fp32", f"bf16 ran at {speedup:.2f}x fp32's speed (< {min_speedup:g}x)"
    return "bf16", f"bf16 ran at {speedup:.2f}x fp32's speed with the loss within {100 * rel:.1f}%"


def machine() -> dict:
    """What the choice depends on besides the model: the processor (or GPU) and the torch version."""
    cpu, found = cpu_info()
    cpu = cpu or platform.processor() or platform.machine()
    flags = " ".join(sorted(f for f in found if f.startswith(("avx512_bf16", "amx"))))
    return {"cpu": cpu, "cpu_bf16_flags": flags, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def measure(config: TrainConfig, steps: int = 6) -> Trial:
    """`steps` training steps each of fp32 and bf16 from the same weights, batches and noise, interleaved.

    Times are medians over the steps after the first; losses the mean training loss of the last half.
    """
    device = resolve_device(config.device)
    data = TripletDataset(config.data, "train", config.gaps)
    rng = np.random.default_rng(0)
    batches = [data.batch(rng.choice(len(data), config.batch_size), device) for _ in range(steps)]
    runs = {}
    for dtype in ("fp32", "bf16"):
        model = build_model(config, data.image_size).to(device)
        runs[dtype] = (model, make_optimizer(model, config), torch.Generator(device=device).manual_seed(0))
    times, losses = {"fp32": [], "bf16": []}, {"fp32": [], "bf16": []}
    bf16_ok = True
    for batch in batches:
        for dtype in ("fp32", "bf16") if len(times["fp32"]) % 2 == 0 else ("bf16", "fp32"):
            if dtype == "bf16" and not bf16_ok:
                continue
            model, opt, gen = runs[dtype]
            t0 = time.perf_counter()
            try:
                loss = compute_loss(model, batch, config, gen, dtype=dtype).loss
            except RuntimeError:  # this device has no bf16 kernels
                bf16_ok = False
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()  # syncs the device
            times[dtype].append(time.perf_counter() - t0)
            losses[dtype].append(value)
    last = max(1, steps // 2)
    fp32_s = statistics.median(times["fp32"][1:] or times["fp32"])
    if not bf16_ok or not times["bf16"]:
        return Trial(fp32_s, None, float(np.mean(losses["fp32"][-last:])), None)
    return Trial(fp32_s, statistics.median(times["bf16"][1:] or times["bf16"]),
                 float(np.mean(losses["fp32"][-last:])), float(np.mean(losses["bf16"][-last:])))


def choose_dtype(config: TrainConfig, cache_dir: str | Path, steps: int = 6, refresh: bool = False,
                 min_speedup: float = 1.05, loss_rtol: float = 0.02,
                 measure_fn: Callable[[TrainConfig, int], Trial] = measure) -> dict:
    """The dtype for training models like `config` on this machine, as a record for the results.

    Cached in cache_dir/dtype-choice/<key>.json, keyed by the machine (CPU model or GPU, torch
    version, threads) and the model shape (width, latent, batch size, image data, device); refresh
    measures again. The record: dtype, reason, the trial's numbers, machine, key, cached, measured_at.
    """
    shape = {"width": config.width, "latent": config.latent, "batch_size": config.batch_size,
             "data": str(config.data), "gaps": list(config.gaps), "device": resolve_device(config.device).type,
             "steps": steps, "min_speedup": min_speedup, "loss_rtol": loss_rtol}
    mach = machine()
    key = hashlib.sha256(json.dumps([mach, shape], sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / CACHE_SUBDIR / f"{key}.json"
    if path.exists() and not refresh:
        try:
            return {**json.loads(path.read_text()), "cached": True}
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache entry is measured again
    trial = measure_fn(config, steps)
    dtype, reason = decide(trial, min_speedup, loss_rtol)
    record = {"dtype": dtype, "reason": reason, **dataclasses.asdict(trial),
              "speedup": trial.fp32_s / trial.bf16_s if trial.bf16_s else None,
              "machine": mach, "shape": shape, "key": key,
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return {**record, "cached": False}
