"""Train a tiny learned method in a child process; tests/test_preempt.py sends it a real SIGTERM.

At the start of training step --wait-at K the child prints "waiting at step K" and holds that step
until its stop flag is set, so the signal lands inside step K whatever the machine's speed.
"""

import argparse
import os
import signal
import sys
import time

import torch
from torch._subclasses.fake_tensor import FakeTensor

from ibutil.preempt import preemption_exits


STEPS = 14  # 24 train triplets / batch 4 = 6 steps per epoch: step 4 is inside the first epoch


def alpha_vae(data, out_dir, resume=False):
    """Train the alpha-VAE of the preemption tests (selecting on val every 3 steps); returns the model."""
    from inbetween import TrainConfig, train

    return train(TrainConfig(data=str(data), out_dir=str(out_dir), gaps=(1,), alpha=10.0, latent=4, width=0.05,
                             steps=STEPS, batch_size=4, lr=3e-3, seed=5, device="cpu", progress=False,
                             eval_every=3, patience=100, resume=resume))


def method(name: str):
    """The trainer of a registered learned method, as the preemption tests call it; returns the selected model."""
    def train(data, out_dir, resume=False):  # the method interface always resumes a run it finds in out_dir
        from benchmarks import methods
        from benchmarks.methods.interface import TrainSpec

        module = methods.get(name)
        config = module.Config(**methods.hooks(module).overrides("quick"))
        spec = TrainSpec(data=str(data), gaps=(1,), steps=STEPS, batch_size=4, seed=5, eval_every=3, patience=100)
        module.train(config, spec, out_dir, device="cpu", progress=False)
        return module.load(config, out_dir, "cpu")
    return train


def benchmark_args(data, root) -> list[str]:
    """run-benchmark on one file, training only the frame CNN (STEPS steps, val every 3) into root/cache."""
    return ["--quick", "--data", str(data), "--methods", "pixel-average", "frame-cnn", "--gap", "1", "--steps",
            str(STEPS), "--batch-size", "4", "--eval-every", "3", "--cache", f"{root}/cache", "--out", f"{root}/out",
            "--quiet", "--threads", "1"]


TRAINERS = {"alpha-vae": alpha_vae, **{name: method(name) for name in ("frame-cnn", "autoencoder", "acai")}}


def hold_until_signalled(step: int, who: str = "") -> None:
    flag = signal.getsignal(signal.SIGTERM).__self__  # the trainer's ibutil.preempt.StopFlag
    print(f"{who}waiting at step {step}", flush=True)
    parent = os.getppid()
    while not flag.requested:  # a state, not a time: the test's signal sets the flag
        if os.getppid() != parent:  # the test process died: never outlive it
            os._exit(3)
        time.sleep(0.01)


def counting(fn, wait_at: int, who: str = ""):
    """Wrap a training forward so that it holds at the wait_at-th call made with gradients on."""
    calls = [0]

    def wrapped(*args, **kwargs):
        # Training steps only: not evaluation (no grad), not the FLOP count (shape-only fake tensors).
        if torch.is_grad_enabled() and not any(isinstance(a, FakeTensor) for a in args):
            calls[0] += 1
            if calls[0] == wait_at:
                hold_until_signalled(wait_at, who)
        return fn(*args, **kwargs)
    return wrapped


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("method", choices=["alpha-vae", "frame-cnn", "autoencoder", "acai", "run-benchmark"])
    parser.add_argument("data")
    parser.add_argument("out_dir")
    parser.add_argument("--wait-at", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with preemption_exits():
        if args.method == "alpha-vae":
            import importlib

            train_module = importlib.import_module("inbetween.train")  # `inbetween.train` is the function
            train_module.member_losses = counting(train_module.member_losses, args.wait_at)
        elif args.method in ("frame-cnn", "run-benchmark"):
            from benchmarks.methods.frame_cnn import FrameCNN

            FrameCNN.forward = counting(FrameCNN.forward, args.wait_at)
            if args.method == "run-benchmark":  # the CLI itself: its exit code and last line are under test
                from benchmarks.cli import run_benchmark

                run_benchmark.main(benchmark_args(args.data, args.out_dir), standalone_mode=True)
        else:  # the module-level loss function each step calls (autoencoder.loss, acai.losses)
            import importlib

            module = importlib.import_module(f"benchmarks.methods.{args.method}")
            fn = "loss" if args.method == "autoencoder" else "losses"
            setattr(module, fn, counting(getattr(module, fn), args.wait_at))
        if args.method != "run-benchmark":
            TRAINERS[args.method](args.data, args.out_dir)
    sys.exit(0)
