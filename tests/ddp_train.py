"""Train a tiny alpha-VAE from the command line; tests/test_ddp.py runs it under torchrun."""

import argparse
import importlib
import os

import torch

from ibutil.preempt import preemption_exits
from inbetween import TrainConfig

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out_dir")
    parser.add_argument("steps", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--early-stop", action="store_true",
                        help="select on the file's val split every 2 steps; stop at the second evaluation")
    parser.add_argument("--wait-at", type=int, default=None,
                        help="rank 1 holds training step K until it gets a stop signal (tests/test_ddp.py)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_module = importlib.import_module("inbetween.train")  # `inbetween.train` is the function
    if args.wait_at is not None and os.environ.get("RANK") == "1":
        from preempt_train import counting

        train_module.member_losses = counting(train_module.member_losses, args.wait_at, f"rank 1 pid {os.getpid()} ")
    # Only rank 0 evaluates; patience 1 with an unreachable min_delta stops at the second evaluation.
    selection = dict(val_split="val", eval_every=2, patience=1, min_delta=1e9) if args.early_stop else \
        dict(val_split="none")
    with preemption_exits():
        train_module.train(TrainConfig(data=args.data, out_dir=args.out_dir, gaps=(1,), alpha=10.0, latent=4,
                                       width=0.05, steps=args.steps, batch_size=args.batch_size, lr=1e-3, seed=3,
                                       device="cpu", progress=False, resume=args.resume, **selection))
