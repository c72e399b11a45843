"""The benchmark engine behind run-benchmark: datasets, cached training, exhaustive evaluation, records.

For each DoF and gap k the test triplets are every (t-k, t, t+k) inside every test sequence
(`inbetween.data.triplet_index`), so anyone can recompute a number from the HDF5 file.
Learned methods train on the training split only, on triplets of all benchmark gaps mixed,
once per seed; each trained model is cached under a hash of everything that determines it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks import frame_cnn, metrics, optical_flow, pixel_average
from inbetween.data import TripletDataset, normalize_gaps
from inbetween.train import TrainConfig, train
from inbetween.vae import KL_FORMS, inbetween, interpolate
from render import h5format
from render.errors import UserError
from render.presets import PRESETS, RenderConfig

METHODS = ("pixel-average", "optical-flow", "frame-cnn", "alpha-vae")
LEARNED = ("frame-cnn", "alpha-vae")
EVAL_BATCH = 512  # test triplets per forward pass
N_EXAMPLES = 6  # test triplets shown in each in-between grid
INTERP_STEPS = 7  # points on each latent interpolation strip


@dataclass(frozen=True)
class BenchmarkConfig:
    """Every option of a benchmark run; written to config.json beside the results."""

    out: str = "results/benchmark"  # output folder, written atomically (a temp folder renamed at the end)
    dofs: tuple[int, ...] = (1, 2, 6)  # presets to benchmark (ignored when `data` names the files)
    gaps: tuple[int, ...] = (2, 5, 10, 20)  # frame gaps k of the test triplets (t-k, t, t+k)
    methods: tuple[str, ...] = METHODS  # which methods to run
    alphas: tuple[float, ...] = (0.0, 100.0)  # alpha-VAE weights of the in-between divergence (0 = plain VAE)
    kls: tuple[str, ...] = ("avg-gaussian",)  # alpha-VAE divergence forms (docs/method.md); alpha 0 ignores it
    seeds: int = 1  # independent training seeds per learned method (seeds 0..N-1)
    epochs: int = 5  # training epochs over the training triplets (alpha-VAE; the frame CNN gets as many steps)
    steps: int | None = None  # train exactly this many steps instead of epochs
    width: float = 0.25  # alpha-VAE channel multiplier (1.0 = the paper's 128-256-512-1024)
    latent: int = 32  # alpha-VAE latent size
    batch_size: int = 64  # triplets per training step, for both learned methods
    lr: float = 3e-4  # alpha-VAE Adam learning rate
    cnn_channels: int = 32  # frame-CNN feature channels at full resolution
    cnn_lr: float = 1e-3  # frame-CNN peak learning rate (cosine decay)
    dtype: str = "fp32"  # alpha-VAE compute: fp32 or bf16 autocast
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    data: tuple[str, ...] = ()  # existing HDF5 v1 files, one per DoF; empty = render them into the cache
    cache: str = ".cache/inbetween-bench"  # rendered datasets and trained models, keyed by config hash
    render_size: int = 32  # image size of datasets the benchmark renders itself
    quick: bool = False  # the tiny CI profile (see quick_config)
    overwrite: bool = False  # replace an existing output folder
    threads: int = 0  # torch CPU threads (0 = torch's default)
    progress: bool = True  # show the progress bar

    def __post_init__(self) -> None:
        def fill(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        fill("dofs", tuple(int(d) for d in self.dofs))
        fill("methods", tuple(self.methods))
        fill("kls", tuple(self.kls))
        fill("data", tuple(str(p) for p in self.data))
        fill("gaps", normalize_gaps(tuple(self.gaps)))
        fill("alphas", tuple(float(a) for a in self.alphas))
        for d in self.dofs:
            if d not in PRESETS:
                raise UserError(f"--dof must be 1, 2 or 6, not {d}")
        for m in self.methods:
            if m not in METHODS:
                raise UserError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
        for k in self.kls:
            if k not in KL_FORMS:
                raise UserError(f"unknown KL form {k!r}; choose from {', '.join(KL_FORMS)}")
        for a in self.alphas:
            if not math.isfinite(a) or a < 0:
                raise UserError(f"--alpha must be a finite number >= 0, not {a}")
        if "alpha-vae" in self.methods and not self.alphas:
            raise UserError("alpha-vae needs at least one --alpha")
        if self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, not {self.seeds}")
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise UserError("--epochs and --steps must be at least 1")
        if not self.methods:
            raise UserError("no --methods to run")
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0, not {self.threads}")


def quick_config(**overrides: Any) -> BenchmarkConfig:
    """The --quick profile: tiny renders and models that finish in under 3 minutes on 2 cores."""
    base = dict(gaps=(1, 3), seeds=1, epochs=1, steps=30, width=0.05, latent=8, batch_size=32,
                cnn_channels=8, render_size=16, quick=True)
    base.update(overrides)
    return BenchmarkConfig(**base)


def render_config(config: BenchmarkConfig, dof: int) -> RenderConfig:
    """The dataset the benchmark renders for one DoF (the preset's defaults, or tiny for --quick)."""
    if config.quick:
        frames = 24 if dof == 1 else 10
        return RenderConfig(dof=dof, size=config.render_size, frames=frames,
                            train_sequences=None if dof == 1 else 6, test_sequences=None if dof == 1 else 3)
    return RenderConfig(dof=dof, size=config.render_size)


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_out(config: BenchmarkConfig) -> Path:
    """Refuse an existing output folder (without overwrite) or one that cannot be created."""
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; --out must be a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out.parent} for --out: {exc.strerror}") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UserError(f"{out.parent} is not writable; choose another --out")
    return out


# ----------------------------------------------------------------------------- datasets


def resolve_datasets(config: BenchmarkConfig) -> dict[int, Path]:
    """DoF -> dataset file: the --data files (validated), or renders cached by render-config hash."""
    if config.data:
        files: dict[int, Path] = {}
        for p in config.data:
            with h5format.open_dataset(p) as f:
                dof = int(f.attrs["dof"])
            if dof in files:
                raise UserError(f"--data gives two files for dof {dof}: {files[dof]} and {p}")
            files[dof] = Path(p)
        return files
    from render.dataset import render_dataset  # renders in spawned GL workers

    files = {}
    for dof in config.dofs:
        rc = render_config(config, dof)
        path = Path(config.cache) / "data" / f"dof{dof}-{config_hash(rc.to_json())}.h5"
        if path.exists():
            try:
                h5format.verify(path)
                files[dof] = path
                continue
            except UserError:
                pass  # a damaged cache entry: render it again
        render_dataset(rc, path, workers=os.cpu_count() or 1, overwrite=True, progress=config.progress)
        files[dof] = path
    return files


def check_gaps(config: BenchmarkConfig, files: dict[int, Path]) -> None:
    """Every gap must fit the sequences of every dataset: 2k+1 <= T."""
    for dof, path in files.items():
        with h5format.open_dataset(path) as f:
            n_frames = min(f[s]["frames"].shape[1] for s in h5format.SPLITS)
        for k in config.gaps:
            if 2 * k + 1 > n_frames:
                raise UserError(f"--gap {k} is too large for dof {dof} ({path}): sequences have {n_frames} frames, "
                                f"so gaps can be at most {(n_frames - 1) // 2}")


# ----------------------------------------------------------------------------- training (cached)


@dataclass(frozen=True)
class Job:
    """One trained model to obtain: a learned method on one dataset with one seed (and alpha, KL form)."""

    dof: int
    method: str
    seed: int
    alpha: float | None = None
    kl: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        if self.method == "alpha-vae":
            return f"alpha-vae a={self.alpha:g}" + (f" {self.kl}" if self.kl else "")
        return self.method


def training_jobs(config: BenchmarkConfig, files: dict[int, Path]) -> list[Job]:
    """Every (DoF, method, alpha, KL, seed) to train, in a stable order."""
    jobs = []
    for dof in sorted(files):
        for seed in range(config.seeds):
            if "frame-cnn" in config.methods:
                jobs.append(Job(dof, "frame-cnn", seed))
            if "alpha-vae" in config.methods:
                for alpha in config.alphas:
                    # alpha = 0 multiplies D by zero: one plain VAE serves every KL form.
                    for kl in ((None,) if alpha == 0 else config.kls):
                        jobs.append(Job(dof, "alpha-vae", seed, alpha, kl))
    return jobs


def alpha_vae_config(config: BenchmarkConfig, job: Job, data: Path, out_dir: Path) -> TrainConfig:
    return TrainConfig(data=str(data), out_dir=str(out_dir), gaps=config.gaps, alpha=job.alpha,
                       kl_form=job.kl or "avg-gaussian", latent=config.latent, width=config.width,
                       epochs=config.epochs, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                       seed=job.seed, device=config.device, dtype=config.dtype, resume=True, progress=config.progress)


def steps_per_run(config: BenchmarkConfig, n_train_triplets: int) -> int:
    """Optimiser steps of one learned model: the frame CNN gets the alpha-VAE's step budget."""
    if config.steps is not None:
        return config.steps
    return config.epochs * math.ceil(n_train_triplets / config.batch_size)


def obtain_model(config: BenchmarkConfig, job: Job, data: Path, data_sha: str):
    """Train the model of `job`, or load it from the cache if a finished run with the same hash exists."""
    root = Path(config.cache) / "models"
    if job.method == "alpha-vae":
        tc = alpha_vae_config(config, job, data, Path("unused"))
        key = {k: v for k, v in asdict(tc).items() if k not in ("data", "out_dir", "device", "resume", "progress",
                                                                  "checkpoint_every")}
        out_dir = root / f"alpha-vae-dof{job.dof}-{config_hash([key, data_sha])}"
        model = train(replace(tc, out_dir=str(out_dir)))
        return model, out_dir / "log.csv"
    train_set = TripletDataset(data, "train", config.gaps)
    cnn = frame_cnn.FrameCNNConfig(channels=config.cnn_channels, steps=steps_per_run(config, len(train_set)),
                                   batch_size=config.batch_size, lr=config.cnn_lr, seed=job.seed,
                                   device=config.device)
    key = {k: v for k, v in asdict(cnn).items() if k != "device"}
    path = root / f"frame-cnn-dof{job.dof}-{config_hash([key, data_sha, list(config.gaps)])}" / "checkpoint.pt"
    if path.exists():
        return frame_cnn.load_checkpoint(path, config.device), None
    b = train_set.batch_uint8(np.arange(len(train_set)))  # x0, x1, x2: (N, 3, H, W) uint8
    model = frame_cnn.fit(cnn, b["x0"], b["x1"], b["x2"], progress=config.progress)
    frame_cnn.save_checkpoint(model, path)
    return model, None


# ----------------------------------------------------------------------------- evaluation


def predictor(method: str, model=None):
    """A callable (x0, x2) -> x1_hat on (N, 3, H, W) float tensors in [0, 1]."""
    if method == "pixel-average":
        return pixel_average.predict
    if method == "optical-flow":
        return optical_flow.predict
    if method == "frame-cnn":
        return model.predict
    return lambda x0, x2: inbetween(model, x0, x2).cpu()


def evaluate(predict, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean metrics of `predict` over every triplet of `test` (x0, x1, x2, mask), in batches."""
    batches = []
    n = len(test["x0"])
    for i in range(0, n, EVAL_BATCH):
        sl = slice(i, i + EVAL_BATCH)
        with torch.no_grad():
            pred = predict(test["x0"][sl], test["x2"][sl]).float().cpu().clamp(0, 1)
        batches.append(metrics.all_metrics(pred, test["x1"][sl], test["mask"][sl]))
    return metrics.mean_metrics(batches) | {"n_triplets": n}


@dataclass
class RunResult:
    """Everything the report needs."""

    datasets: dict[int, dict[str, str]]  # dof -> {"file", "sha256"}
    records: list[dict[str, Any]]
    ceiling: list[dict[str, Any]]  # metrics of the true x1 (the best any method can score on the mask metrics)
    examples: dict[int, dict[str, np.ndarray]]  # dof -> row label -> (N_EXAMPLES, 3, H, W), largest gap
    strips: dict[int, dict[str, np.ndarray]]  # dof -> label -> (INTERP_STEPS, 3, H, W)
    curves: dict[str, Path]  # alpha-VAE label "dof2 a=100 s0" -> its log.csv
    wall_s: float = 0.0


def run_benchmark(config: BenchmarkConfig) -> Path:
    """Run the whole benchmark and write the output folder; returns its path."""
    from benchmarks import report

    out = check_out(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    files = resolve_datasets(config)
    check_gaps(config, files)
    shas = {dof: h5format.sha256_file(p) for dof, p in files.items()}
    jobs = training_jobs(config, files)
    baselines = [m for m in config.methods if m not in LEARNED]
    n_steps = len(jobs) + len(files) * (len(baselines) + 1)
    result = RunResult(datasets={d: {"file": str(p), "sha256": shas[d]} for d, p in files.items()},
                       records=[], ceiling=[], examples={}, strips={}, curves={})
    bar = tqdm(total=n_steps, desc="benchmark", unit="job", disable=not config.progress)
    for dof, path in sorted(files.items()):
        tests = {k: TripletDataset(path, "test", k) for k in config.gaps}
        test_data = {k: ds.batch(np.arange(len(ds))) for k, ds in tests.items()}  # x0, x1, x2, mask per gap
        big = test_data[max(config.gaps)]
        pick = np.unique(np.linspace(0, len(big["x0"]) - 1, N_EXAMPLES).round().astype(int))
        examples = {"first frame x0": big["x0"][pick].numpy(), "ground truth x1": big["x1"][pick].numpy()}
        strips: dict[str, np.ndarray] = {}
        # The true frames between the strip's end points (the largest gap, middle example).
        s, t, k = tests[max(config.gaps)].index[pick[len(pick) // 2]]
        frames_t = np.linspace(t - k, t + k, INTERP_STEPS).round().astype(int)
        truth = h5format.read_split(path, "test").frames[s, frames_t]  # (steps, H, W, 3) uint8
        strips["ground truth"] = truth.transpose(0, 3, 1, 2).astype(np.float32) / 255

        for k, data in test_data.items():
            # The true x1 scored against itself: the mask metrics' ceiling (silhouettes are thresholded).
            per = metrics.all_metrics(data["x1"], data["x1"], data["mask"])
            result.ceiling.append({"dof": dof, "gap": k, **metrics.mean_metrics(per), "n_triplets": len(data["x1"])})
        bar.update(1)

        for method in baselines:
            bar.set_description(f"dof{dof} {method}")
            predict = predictor(method)
            for k, data in test_data.items():
                result.records.append(_record(dof, method, None, None, k, None, evaluate(predict, data)))
            examples[method] = predict(big["x0"][pick], big["x2"][pick]).float().clamp(0, 1).numpy()
            bar.update(1)

        for job in (j for j in jobs if j.dof == dof):
            bar.set_description(f"dof{dof} {job.label} seed {job.seed}")
            model, log = obtain_model(config, job, path, shas[dof])
            predict = predictor(job.method, model)
            for k, data in test_data.items():
                result.records.append(_record(dof, job.method, job.alpha, job.kl, k, job.seed, evaluate(predict, data)))
            if job.seed == 0:
                examples[job.label] = predict(big["x0"][pick], big["x2"][pick]).float().clamp(0, 1).numpy()
                if job.method == "alpha-vae":
                    xa, xb = torch.from_numpy(strips["ground truth"][0]), torch.from_numpy(strips["ground truth"][-1])
                    strips[job.label] = interpolate(model, xa, xb, INTERP_STEPS).float().cpu().numpy()
                    result.curves[f"dof{dof} {job.label}"] = log
            bar.update(1)
        examples["second frame x2"] = big["x2"][pick].numpy()
        result.examples[dof], result.strips[dof] = examples, strips
    bar.close()
    result.wall_s = time.perf_counter() - start
    return report.write_output(config, result, out)


def _record(dof, method, alpha, kl, gap, seed, values) -> dict[str, Any]:
    return {"dof": dof, "method": method, "alpha": alpha, "kl": kl, "gap": gap, "seed": seed, **values}
