"""alpha-vae: the paper's model (inbetween/), trained by inbetween.train; the frame at tau decodes (1-tau) z0 + tau z2.

z0, z2 are the encoder means of the end frames; tau = 0.5 is the paper's in-between. One benchmark
row per (alpha, KL form): alpha = 0 is a plain VAE (its divergence term is multiplied by zero, so
one model serves every KL form).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.methods import latent_models as shared
from benchmarks.methods.interface import TrainSpec, TrainSummary, read_summary
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import write_text_atomic
from ibutil.run import CHECKPOINT_NAME
from inbetween.dtype_choice import choose_dtype
from inbetween.train import DTYPES, TrainConfig, load_checkpoint, read_checkpoint, train_ensemble
from inbetween.vae import KL_FORMS, LIKELIHOODS, AlphaVAE

NAME = "alpha-vae"
TRAINS = True
SEEDED = True
QUICK = shared.QUICK  # the --quick CI profile's architecture (fp32, the default, like every profile)
DEMO = shared.DEMO
# Unprefixed CLI options: --alpha and --kl sweep this method; --width and --latent set every latent model alike.
SHARED = {"alphas": "--alpha", "kls": "--kl", **shared.SHARED}
# The opt-in dtype that times fp32 against bf16 on this machine (inbetween.dtype_choice). Never the default: a
# timing must not decide a committed number, and the same command must give the same numbers everywhere.
AUTO = "auto"
DTYPE_CHOICE_NAME = "dtype_choice.json"  # the measurement behind an auto dtype, in the model's folder
GROUP_NAME = "group.json"  # train_group's record of its members, in the group's folder
OLD_GROUP_CHECKPOINT = "ensemble.pt"  # what the release before the one trainer kept there (refused)


@dataclass(frozen=True)
class Config:
    """The alpha-VAE rows of a benchmark: one model per (alpha, KL form) in the sweep, all of one architecture."""

    alphas: tuple[float, ...] = (0.0, 100.0)  # weights of the in-between divergence D, one model each (0 = plain VAE)
    kls: tuple[str, ...] = ("avg-gaussian",)  # forms of D, one model each: avg-gaussian, mixture, jensen
    mixture_samples: int = 8  # Monte Carlo draws per triplet that estimate D when the form is mixture
    latent: int = shared.LATENT  # latent size
    width: float = shared.WIDTH  # channel multiplier (1.0 = the paper's 128-256-512-1024)
    lr: float = shared.LR  # Adam learning rate (constant)
    likelihood: str = shared.LIKELIHOOD  # reconstruction likelihood: bernoulli (BCE) or gaussian (MSE, sigma 0.1)
    # fp32 (deterministic, the default); bf16 autocast for the convolutions (opt-in: every alpha-VAE of the run
    # uses it); auto (opt-in): bf16 only where a timing on this machine found it faster, recorded in dtype_choice.json
    dtype: str = "fp32"

    def __post_init__(self):
        object.__setattr__(self, "alphas", tuple(dict.fromkeys(float(a) for a in self.alphas)))
        object.__setattr__(self, "kls", tuple(dict.fromkeys(self.kls)))
        for a in self.alphas:
            if not math.isfinite(a) or a < 0:
                raise UserError(f"--alpha must be a finite number >= 0, not {a}")
        if not self.alphas:
            raise UserError("alpha-vae needs at least one --alpha")
        for k in self.kls:
            if k not in KL_FORMS:
                raise UserError(f"unknown KL form {k!r}; choose from {', '.join(KL_FORMS)}")
        if self.likelihood not in LIKELIHOODS:
            raise UserError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if not isinstance(self.mixture_samples, int) or isinstance(self.mixture_samples, bool) \
                or self.mixture_samples < 1:
            raise UserError(f"--alpha-vae-mixture-samples must be a positive integer, not {self.mixture_samples!r}")
        if self.dtype not in (*DTYPES, AUTO):
            raise UserError(f"unknown dtype {self.dtype!r}; choose {', '.join((*DTYPES, AUTO))}")


def variants(config: Config) -> list[Config]:
    """One config per model to train: each alpha with each KL form (alpha = 0 once, with no form)."""
    return [replace(config, alphas=(a,), kls=() if a == 0 else (k,))
            for a in config.alphas for k in ((None,) if a == 0 else config.kls)]


def _alpha_kl(config: Config) -> tuple[float, str | None]:
    """The (alpha, KL form or None) of a variant."""
    if len(config.alphas) != 1 or len(config.kls) > 1:
        raise UserError("train, load and label take one variant (see variants()), not a sweep")
    return config.alphas[0], (config.kls[0] if config.kls else None)


def label(config: Config) -> str:
    alpha, kl = _alpha_kl(config)
    return f"alpha-vae a={alpha:g}" + (f" {kl}" if kl else "")


def record(config: Config) -> dict:
    """The fields that tell this method's records apart: alpha and KL form."""
    alpha, kl = _alpha_kl(config)
    return {"alpha": alpha, "kl": kl}


def train(config: Config, spec: TrainSpec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """inbetween.train on the train split, selecting on spec.val_split; an interrupted run in out_dir resumes.
    The same loop as train-inbetween's and train_group's (inbetween.train.train_ensemble of one member)."""
    dtype = resolve_dtype(config, spec, [out_dir], device)
    train_ensemble([_train_config(config, spec, out_dir, device, progress, dtype)])
    return read_summary(out_dir)  # inbetween.train wrote it


def group_key(config: Config):
    """Variants with equal keys train together in train_group: everything but alpha (one batched network needs
    one architecture and one step count, and the KL form changes the counted FLOPs a budget buys)."""
    _, kl = _alpha_kl(config)
    return replace(config, alphas=(0.0,), kls=(kl or "avg-gaussian",))


def train_group(configs: list[Config], spec: TrainSpec, out_dirs: list, group_dir, *, device: str = "auto",
                progress: bool = True) -> list[TrainSummary]:
    """Variants of one group_key as one batched network (inbetween.train.train_ensemble), each into its own
    out_dir exactly as train() writes it; each member's checkpoint.pt resumes it. group_dir records the group
    (group.json: its members), so the benchmark resumes a preempted group as a group. The members share
    spec's batch order and seed, so each equals train() of its config within float rounding (fp32;
    tests/test_ensemble.py states the bounds, bf16's too)."""
    if (Path(group_dir) / OLD_GROUP_CHECKPOINT).exists():  # an older release's ensemble: refused, one line
        read_checkpoint(Path(group_dir) / OLD_GROUP_CHECKPOINT)
    dtype = resolve_dtype(configs[0], spec, [*out_dirs, group_dir], device)  # one shape, so one choice for all
    Path(group_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(group_dir) / GROUP_NAME, json.dumps({"members": [str(d) for d in out_dirs],
                                                                "data_seed": spec.seed}, indent=1) + "\n")
    train_ensemble([_train_config(c, spec, d, device, progress, dtype) for c, d in zip(configs, out_dirs)])
    return [read_summary(d) for d in out_dirs]


def resolve_dtype(config: Config, spec: TrainSpec, out_dirs: list, device: str) -> str:
    """fp32 or bf16: config.dtype, or with "auto" inbetween.dtype_choice's measurement for this shape on this
    machine (cached under spec.cache). The choice is written to each out_dir as dtype_choice.json; a run that
    already has one keeps it, so a resumed run never switches dtype."""
    if config.dtype != AUTO:
        return config.dtype
    for d in out_dirs:
        path = Path(d) / DTYPE_CHOICE_NAME
        if path.exists():
            return json.loads(path.read_text())["dtype"]
    probe = _train_config(config, spec, out_dirs[0], device, progress=False, dtype="fp32")
    choice = choose_dtype(probe, spec.cache or Path(out_dirs[0]).parent)
    for d in out_dirs:
        Path(d).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(d) / DTYPE_CHOICE_NAME, json.dumps(choice, indent=1, sort_keys=True) + "\n")
    return choice["dtype"]


def _train_config(config: Config, spec: TrainSpec, out_dir, device: str, progress: bool, dtype: str) -> TrainConfig:
    """The inbetween.train config of one variant under the benchmark's spec (resume=True: a run in out_dir goes on)."""
    alpha, kl = _alpha_kl(config)
    return TrainConfig(
        data=str(spec.data), out_dir=str(out_dir), gaps=spec.gaps, alpha=alpha, kl_form=kl or "avg-gaussian",
        mixture_samples=config.mixture_samples,
        likelihood=config.likelihood, latent=config.latent, width=config.width,
        steps=spec.steps if spec.budget_gflop is None else None, budget_gflop=spec.budget_gflop,
        batch_size=spec.batch_size, lr=config.lr, seed=spec.seed, device=device, dtype=dtype,
        val_split=spec.val_split, eval_every=spec.eval_every, patience=spec.patience, min_delta=spec.min_delta,
        checkpoint_every=spec.checkpoint_every, resume=True, progress=progress,
        log_test=spec.val_split == "none")  # with val selection, val.csv is the curve; scoring test each epoch is waste


def load(config: Config, out_dir, device: str = "auto") -> AlphaVAE:
    """The selected model of a finished run in out_dir (best.pt; checkpoint.pt without selection)."""
    summary = read_summary(out_dir)
    if summary is None or not summary.trained:
        raise UserError(f"{out_dir} holds no finished alpha-VAE run; train it (again) first")
    path = Path(out_dir) / (summary.selected_checkpoint or CHECKPOINT_NAME)
    return load_checkpoint(path, resolve_device(device)).eval()


# The frame at tau decodes (1 - tau) z0 + tau z2 of the encoder means, as for every latent model.
predict = shared.predict
