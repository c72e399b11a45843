"""Estimate the full benchmark grid's training wall time, sequential vs ensemble, from a few timed steps.

    python -m benchmarks.tools.grid_estimate --width 0.125 --rounds 3

Times (interleaved, medians of --rounds) one inbetween.train step, one inbetween.ensemble step for
each ensemble size, one frame-CNN step, and the fp32 evaluation forward of one batch; then multiplies
by the grid's step counts: every DoF's default training set (render.presets.DEFAULTS) at the
benchmark's gaps, `--epochs` epochs of batch 64, alphas x seeds alpha-VAEs and seeds frame CNNs per
DoF, one val-split evaluation per epoch per model. Rendering, the non-learned baselines and the
metrics are not included (they do not depend on the ensemble).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.methods import frame_cnn
from benchmarks.tools.train_speed import cpu_name, our_step
from ibdata.triplets import TripletDataset
from inbetween.ensemble import StackedVAE, stacked_adam
from inbetween.toy import write_toy_dataset
from inbetween.train import TrainConfig, build_model, make_optimizer, member_terms
from render.presets import DEFAULTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5, help="epochs per model (benchmarks.engine.config's default)")
    ap.add_argument("--gaps", default="2,5,10,20", help="the benchmark's gaps (training mixes them)")
    ap.add_argument("--alphas", type=int, default=4, help="alpha values per DoF")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per DoF")
    ap.add_argument("--sizes", default="4,12", help="ensemble sizes to time (4: one per DoF and seed, 12: per DoF)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    gaps = [int(k) for k in args.gaps.split(",")]
    sizes = [int(m) for m in args.sizes.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="grid_estimate-")
    data = str(write_toy_dataset(Path(tmp.name) / "toy32.h5", image_size=32, frames=16, train=16, test=4, seed=0))
    cfg = TrainConfig(data=data, width=args.width, latent=args.latent, batch_size=64, device="cpu", progress=False)
    ds = TripletDataset(data, "train", cfg.gaps)
    rng = np.random.default_rng(0)
    print(f"cpu {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    model = build_model(cfg, 32)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    ens = {}
    for m in sizes:
        stack = StackedVAE.from_states(model.config, [build_model(cfg, 32).state_dict() for _ in range(m)], "cpu")
        ens[m] = (stack, stacked_adam(stack, cfg.lr), [torch.Generator().manual_seed(i) for i in range(m)])
    cnn = frame_cnn.FrameCNN(frame_cnn.Config())
    cnn.reset_parameters(torch.Generator().manual_seed(0))
    cnn_opt = torch.optim.Adam(cnn.parameters(), lr=frame_cnn.Config.lr)

    def vae_step(b):
        our_step("fp32")(model, opt, b, cfg, gen)

    def ens_step(m):
        def run(b):
            stack, eopt, gens = ens[m]
            x = torch.cat([b["x0"], b["x1"], b["x2"]])
            logits, mu, logvar = stack(x, gens)
            loss = torch.stack([member_terms(x, logits[i], mu[i], logvar[i], cfg, g).loss
                                for i, g in enumerate(gens)]).sum()
            eopt.zero_grad(set_to_none=True)
            loss.backward()
            eopt.step()
        return run

    def cnn_step(b):
        tau = torch.full((len(b["x0"]), 1, 1, 1), 0.5)  # (B, 1, 1, 1): the middle frame; the cost does not depend on tau
        loss = torch.nn.functional.mse_loss(cnn(b["x0"], b["x2"], tau), b["x1"])
        cnn_opt.zero_grad(set_to_none=True)
        loss.backward()
        cnn_opt.step()

    @torch.no_grad()
    def vae_eval(b):
        model(torch.cat([b["x0"], b["x1"], b["x2"]]), gen)

    tasks = {"alpha-vae step": vae_step, **{f"ensemble x{m} step": ens_step(m) for m in sizes},
             "frame-cnn step": cnn_step, "alpha-vae eval batch": vae_eval}
    times = {k: [] for k in tasks}
    for r in range(args.rounds + 1):
        b = ds.batch(rng.choice(len(ds), 64))
        for name, fn in tasks.items():
            t0 = time.perf_counter()
            fn(b)
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  {k}: median {v:.3f} s of {args.rounds}")

    steps = {d: args.epochs * math.ceil(sum(s * (t - 2 * k) for k in gaps) / 64) for d, (t, s, _) in DEFAULTS.items()}
    evals = {d: args.epochs * math.ceil(sum(s2 * (t - 2 * k) for k in gaps) / 64) for d, (t, _, s2) in DEFAULTS.items()}
    n_vae = args.alphas * args.seeds
    vae_steps = sum(steps.values()) * n_vae
    print(f"grid: DoF {list(steps)}, steps per model {steps}, {n_vae} alpha-VAEs and {args.seeds} frame CNNs per "
          f"DoF = {vae_steps} alpha-VAE steps")
    cnn_h = sum(steps.values()) * args.seeds * med["frame-cnn step"] / 3600
    eval_h = sum(evals.values()) * n_vae * med["alpha-vae eval batch"] / 3600
    seq_h = vae_steps * med["alpha-vae step"] / 3600
    print(f"  sequential: alpha-VAEs {seq_h:.2f} h + their test evals {eval_h:.2f} h + frame CNNs {cnn_h:.2f} h "
          f"= {seq_h + eval_h + cnn_h:.2f} h")
    for m in sizes:
        groups = math.ceil(n_vae / m)
        ens_h = sum(steps.values()) * groups * med[f"ensemble x{m} step"] / 3600
        print(f"  ensembles of {m}: {groups} per DoF: alpha-VAEs {ens_h:.2f} h + evals {eval_h:.2f} h (sequential "
              f"bound) + frame CNNs {cnn_h:.2f} h = {ens_h + eval_h + cnn_h:.2f} h")
    tmp.cleanup()


if __name__ == "__main__":
    main()
