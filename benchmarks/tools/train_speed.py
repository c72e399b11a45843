"""Training throughput of the alpha-VAE at 32x32 and paper width: the naive loop against ours, in one run.

    python -m benchmarks.tools.train_speed            # ~3 minutes on 2 CPU cores
    python -m benchmarks.tools.train_speed --rounds 8 --loss-steps 40 --device cuda
    python -m benchmarks.tools.train_speed --ensemble 2,4,6,12 --width 0.125 --latent 32   # inbetween.ensemble

naive: three separate fp32 forward passes per step (x0, x1, x2), the loss summed, default Adam.
ours:  one pass over the stacked 3B batch (inbetween.train.compute_loss) with fused Adam, in fp32 and
       in bf16 autocast. The variants run interleaved, one step each per round, so that load from
       other processes hits all of them alike; the table gives medians over the timed rounds.
Then the same short inbetween.train run in fp32 and in bf16, and both final test losses (fp32 eval).

--ensemble M[,M...]: instead, M models (alphas 0, 1, 10, 100, ... and seeds 0, 1, ... in turn) as one
inbetween.ensemble step against the M steps of M sequential inbetween.train models, interleaved per
round; model-images/s (M x 3B images per round), the speed-up and the share of the fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ibdata.triplets import TripletDataset
from ibutil.device import cpu_info, resolve_device
from inbetween.ensemble import StackedVAE, stacked_adam
from inbetween.toy import write_toy_dataset
from inbetween.train import TrainConfig, build_model, compute_loss, make_optimizer, member_terms, train
from inbetween.vae import inbetween_divergence, kl_standard_normal, reconstruction_nll


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best-of-`reps` GFLOP/s of an n x n matmul: the ceiling the convolutions are measured against."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def naive_step(model, optimizer, batch, config, generator):
    """The straightforward loop: each frame through its own forward pass, the losses summed."""
    nll, kl, enc = 0.0, 0.0, []
    for x in (batch["x0"], batch["x1"], batch["x2"]):
        logits, mu, logvar = model(x, generator)
        nll = nll + reconstruction_nll(logits, x, config.likelihood).mean()
        kl = kl + kl_standard_normal(mu, logvar).mean()
        enc += [mu, logvar]
    loss = nll + kl + config.alpha * inbetween_divergence(*enc, form=config.kl_form, generator=generator).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def our_step(dtype):
    def step(model, optimizer, batch, config, generator):
        loss = compute_loss(model, batch, config, generator, dtype=dtype).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (one step of each variant per round)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--batch", type=int, default=64, help="triplets per step (3x as many images)")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = the paper)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--loss-steps", type=int, default=24, help="steps of the fp32-vs-bf16 run (0: skip it)")
    ap.add_argument("--data", default=None, help="an HDF5 v1 file at 32x32 (default: a toy moving-disk file)")
    ap.add_argument("--latent", type=int, default=128, help="latent size (128 = the paper)")
    ap.add_argument("--ensemble", default=None,
                    help="comma-separated ensemble sizes M: time inbetween.ensemble against M sequential models")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tmp = tempfile.TemporaryDirectory(prefix="train_speed-")
    data = args.data or str(write_toy_dataset(Path(tmp.name) / "toy32.h5", image_size=32, frames=16,
                                              train=16, test=4, seed=0))
    config = TrainConfig(data=data, width=args.width, latent=args.latent, batch_size=args.batch, device=str(device),
                         progress=False)
    dataset = TripletDataset(data, "train", config.gaps)
    rng = np.random.default_rng(0)
    images = 3 * args.batch
    print(f"cpu {cpu_name()}")
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{dataset.image_size}x{dataset.image_size}, width {args.width}, batch {args.batch} triplets "
          f"= {images} images/step")

    peak32 = matmul_peak(device, torch.float32)
    if args.ensemble:  # fp32 only (a bf16 matmul without bf16 hardware takes minutes)
        print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s")
        sizes = [int(m) for m in args.ensemble.split(",")]
        time_ensembles(args, sizes, config, dataset, device, rng, images, peak32)
        tmp.cleanup()
        return
    peak16 = matmul_peak(device, torch.bfloat16)
    print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")

    variants = {
        "naive fp32 (3 passes, Adam)": (naive_step, torch.float32, "foreach"),
        "ours fp32 (stacked 3B, fused Adam)": (our_step("fp32"), torch.float32, "fused"),
        "ours bf16 (stacked 3B, fused Adam)": (our_step("bf16"), torch.bfloat16, "fused"),
    }
    state = {}
    for name, (step, _, opt_kind) in variants.items():
        model = build_model(config, dataset.image_size).to(device)
        opt = make_optimizer(model, config) if opt_kind == "fused" else torch.optim.Adam(model.parameters(), config.lr)
        state[name] = (model, opt, torch.Generator(device=device).manual_seed(0))

    # Training FLOPs per image (forward and backward), counted on one real naive step; the stacked
    # step does the same arithmetic on the same 3B images.
    batch = dataset.batch(rng.choice(len(dataset), args.batch), device)
    model, opt, gen = state[next(iter(variants))]
    with FlopCounterMode(display=False) as counter:
        naive_step(model, opt, batch, config, gen)
    flops_per_image = counter.get_total_flops() / images
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch["x0"][:1])
    print(f"forward {counter.get_total_flops() / 1e9:.3f} GFLOP/image, training step "
          f"{flops_per_image / 1e9:.3f} GFLOP/image")

    if args.rounds > 0:
        time_variants(args, variants, state, dataset, config, device, rng, images, flops_per_image, peak32, peak16)
    if args.loss_steps:
        compare_dtypes(args, data, device, tmp.name)
    tmp.cleanup()


def cpu_name() -> str:
    """The CPU model and its wide-vector / matrix flags (avx2, avx512*, amx*), from /proc/cpuinfo."""
    model, flags = cpu_info()
    model = model or platform.processor() or "unknown"
    wide = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    return f"{model} ({os.cpu_count()} logical cores; flags: {' '.join(wide) or 'none of avx2/avx512/amx'})"


def time_ensembles(args, sizes, config, dataset, device, rng, images, peak32):
    """Per M: one ensemble step and one step of each of M sequential models per round, interleaved; medians."""
    # Training FLOPs per image, counted on one real step of the sequential model (the ensemble does the same maths).
    model, opt = build_model(config, dataset.image_size).to(device), None
    opt = make_optimizer(model, config)
    batch = dataset.batch(rng.choice(len(dataset), args.batch), device)
    with FlopCounterMode(display=False) as counter:
        our_step("fp32")(model, opt, batch, config, torch.Generator(device=device).manual_seed(0))
    flops_per_image = counter.get_total_flops() / images
    print(f"training step {flops_per_image / 1e9:.4f} GFLOP/image (width {args.width}, latent {args.latent})")
    print("\n| M | sequential s/round | ensemble s/round | sequential model-img/s | ensemble model-img/s | "
          "speed-up | ensemble GFLOP/s | of fp32 peak |")
    print("|---|---|---|---|---|---|---|---|")
    alphas = (0.0, 1.0, 10.0, 100.0)
    for m in sizes:
        cfgs = [dataclasses.replace(config, alpha=alphas[i % 4], seed=i // 4) for i in range(m)]
        seq = []
        for c in cfgs:
            model = build_model(c, dataset.image_size).to(device)
            seq.append((model, make_optimizer(model, c), torch.Generator(device=device).manual_seed(c.seed), c))
        stack = StackedVAE.from_states(model.config, [build_model(c, dataset.image_size).state_dict() for c in cfgs],
                                       device)
        ens_opt = stacked_adam(stack, config.lr)
        gens = [torch.Generator(device=device).manual_seed(c.seed) for c in cfgs]

        def ensemble_step(b):
            x = torch.cat([b["x0"], b["x1"], b["x2"]])
            logits, mu, logvar = stack(x, gens)
            loss = torch.stack([member_terms(x, logits[i], mu[i], logvar[i], c, g).loss
                                for i, (c, g) in enumerate(zip(cfgs, gens))]).sum()
            ens_opt.zero_grad(set_to_none=True)
            loss.backward()
            ens_opt.step()
            return loss

        def sequential_step(b):
            for model, opt, gen, c in seq:
                loss = our_step("fp32")(model, opt, b, c, gen)
            return loss

        times = {"seq": [], "ens": []}
        for r in range(args.warmup + args.rounds):
            b = dataset.batch(rng.choice(len(dataset), args.batch), device)
            for name, fn in (("seq", sequential_step), ("ens", ensemble_step)) if r % 2 else \
                    (("ens", ensemble_step), ("seq", sequential_step)):
                sync(device)
                t0 = time.perf_counter()
                fn(b).item()
                sync(device)
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
        s, e = statistics.median(times["seq"]), statistics.median(times["ens"])
        gflops = m * images / e * flops_per_image / 1e9
        print(f"| {m} | {s:.3f} | {e:.3f} | {m * images / s:.0f} | {m * images / e:.0f} | {s / e:.2f}x | "
              f"{gflops:.0f} | {100 * gflops / peak32:.0f}% |", flush=True)


def time_variants(args, variants, state, dataset, config, device, rng, images, flops_per_image, peak32, peak16):
    """One step of each variant per round, warm-up rounds first; prints the table of medians."""
    times = {name: [] for name in variants}
    data_times = []
    for r in range(args.warmup + args.rounds):
        for name, (step, _, _) in variants.items():
            model, opt, gen = state[name]
            sync(device)
            t0 = time.perf_counter()
            batch = dataset.batch(rng.choice(len(dataset), args.batch), device)
            sync(device)
            t1 = time.perf_counter()
            loss = step(model, opt, batch, config, gen)
            loss.item()
            sync(device)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
                data_times.append(t1 - t0)
        print(f"round {r + 1}/{args.warmup + args.rounds}: " +
              ", ".join(f"{times[n][-1]:.2f}s" if times[n] else "warm-up" for n in variants), flush=True)

    base = images / statistics.median(times[next(iter(variants))])
    print(f"\n| variant | s/step (median of {args.rounds}) | images/s | vs naive | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|")
    for name, (_, dtype, _) in variants.items():
        med = statistics.median(times[name])
        ips = images / med
        gflops = ips * flops_per_image / 1e9
        peak = peak32 if dtype == torch.float32 else peak16
        print(f"| {name} | {med:.3f} | {ips:.1f} | {ips / base:.2f}x | {gflops:.0f} | "
              f"{100 * gflops / peak:.0f}% of {'fp32' if dtype == torch.float32 else 'bf16'} |")
    step_med = statistics.median(t for ts in times.values() for t in ts)
    data_med = statistics.median(data_times)
    print(f"\ndata loading (gather + convert {args.batch} triplets): median {1e3 * data_med:.2f} ms "
          f"= {100 * data_med / step_med:.2f}% of the median step")


def compare_dtypes(args, data, device, tmp):
    """The same short inbetween.train run in fp32 and in bf16 autocast; both final losses."""
    print(f"\nsame run, fp32 vs bf16: {args.loss_steps} steps of inbetween.train, test loss in fp32")
    for dtype in ("fp32", "bf16"):
        out = Path(tmp) / f"run-{dtype}"
        cfg = TrainConfig(data=data, out_dir=str(out), width=args.width, batch_size=args.batch,
                          steps=args.loss_steps, device=str(device), dtype=dtype, progress=False,
                          val_split="none")  # the toy file has no val split; the test loss is logged
        t0 = time.perf_counter()
        train(cfg)  # log_test: the test loss at the last step, in val.csv
        with open(out / "log.csv", newline="") as fh:
            train_loss = float(list(csv.DictReader(fh))[-1]["train_loss"])
        with open(out / "val.csv", newline="") as fh:
            last = list(csv.DictReader(fh))[-1]
        print(f"  {dtype}: train loss (last logged steps) {train_loss:.2f}, "
              f"test loss {float(last['test_loss']):.2f} nats/triplet, {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
