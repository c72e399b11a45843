"""Train a tiny alpha-VAE from the command line; tests/test_ddp.py runs it under torchrun."""

import sys

import torch

from inbetween import TrainConfig, train

if __name__ == "__main__":
    data, out_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resume = sys.argv[4:] == ["--resume"]
    torch.set_num_threads(1)
    train(TrainConfig(data=data, out_dir=out_dir, gaps=(1,), alpha=10.0, latent=4, width=0.05, steps=steps,
                      batch_size=8, lr=1e-3, seed=3, device="cpu", progress=False, resume=resume))
