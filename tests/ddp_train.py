"""Train a tiny alpha-VAE from the command line; tests/test_ddp.py runs it under torchrun."""

import argparse

import torch

from inbetween import TrainConfig, train

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out_dir")
    parser.add_argument("steps", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(TrainConfig(data=args.data, out_dir=args.out_dir, gaps=(1,), alpha=10.0, latent=4, width=0.05,
                      steps=args.steps, batch_size=args.batch_size, lr=1e-3, seed=3, device="cpu", progress=False,
                      resume=args.resume, val_split="none"))
