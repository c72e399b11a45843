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
from inbetween.train import (CHECKPOINT_NAME, LOG_NAME, TrainConfig, load_checkpoint, read_checkpoint, resolve_device,
                             torch_save_atomic, train)
from inbetween.vae import KL_FORMS, inbetween, interpolate
from render import h5format
from ibutil.errors import UserError
from ibutil.io import ensure_writable_folder
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

        # Repeats would duplicate jobs and records: keep the first of each, in the order given.
        fill("dofs", tuple(dict.fromkeys(int(d) for d in self.dofs)))
        fill("methods", tuple(dict.fromkeys(self.methods)))
        fill("kls", tuple(dict.fromkeys(self.kls)))
        fill("data", tuple(dict.fromkeys(str(p) for p in self.data)))
        fill("gaps", normalize_gaps(tuple(self.gaps)))
        fill("alphas", tuple(dict.fromkeys(float(a) for a in self.alphas)))
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
    ensure_writable_folder(out.parent)
    return out


# ----------------------------------------------------------------------------- datasets


def dataset_dofs(config: BenchmarkConfig) -> dict[int, Path | None]:
    """DoF -> the --data file (validated), or None where the benchmark renders the dataset itself."""
    if not config.data:
        return {dof: None for dof in config.dofs}
    files: dict[int, Path | None] = {}
    for p in config.data:
        with h5format.open_dataset(p) as f:
            dof = int(f.attrs["dof"])
        if dof in files:
            raise UserError(f"--data gives two files for dof {dof}: {files[dof]} and {p}")
        files[dof] = Path(p)
    return dict(sorted(files.items()))


def dataset_path(config: BenchmarkConfig, dof: int, given: Path | None) -> Path:
    """Where the dataset of `dof` is: the --data file, or its render in the cache (by render-config hash)."""
    if given is not None:
        return given
    return Path(config.cache) / "data" / f"dof{dof}-{config_hash(render_config(config, dof).to_json())}.h5"


def render_if_missing(config: BenchmarkConfig, dof: int) -> Path:
    """Render the benchmark's dataset of `dof` into the cache unless a verified copy is there."""
    from render.dataset import render_dataset  # renders in spawned GL workers

    path = dataset_path(config, dof, None)
    if path.exists():
        try:
            h5format.verify(path)
            return path
        except UserError:
            pass  # a damaged cache entry: render it again
    render_dataset(render_config(config, dof), path, workers=os.cpu_count() or 1, overwrite=True,
                   progress=config.progress)
    return path


def ready_dataset(config: BenchmarkConfig, dof: int, given: Path | None) -> Path:
    """The dataset of `dof`, which must exist (its render job has run) and fit every gap."""
    path = dataset_path(config, dof, given)
    if not path.exists():
        raise UserError(f"the dof {dof} dataset is not rendered yet; run the job render-dof{dof} first")
    check_gaps(config, {dof: path})
    return path


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

    @property
    def label(self) -> str:
        if self.method == "alpha-vae":
            return f"alpha-vae a={self.alpha:g}" + (f" {self.kl}" if self.kl else "")
        return self.method

    @property
    def id(self) -> str:
        """The job's name in the plan, e.g. train-alpha-vae-dof2-a100-avg-gaussian-s0."""
        middle = f"-a{self.alpha:g}" + (f"-{self.kl}" if self.kl else "") if self.method == "alpha-vae" else ""
        return f"train-{self.method}-dof{self.dof}{middle}-s{self.seed}"


def training_jobs(config: BenchmarkConfig, dofs) -> list[Job]:
    """Every (DoF, method, alpha, KL, seed) to train, in a stable order."""
    jobs = []
    for dof in sorted(dofs):
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


def n_train_triplets(config: BenchmarkConfig, data: Path) -> int:
    """Training triplets of all benchmark gaps, from the file's shape alone: sum over k of S (T - 2k)."""
    with h5format.open_dataset(data) as f:
        n_seq, n_frames = f["train"]["frames"].shape[:2]
    return sum(n_seq * (n_frames - 2 * k) for k in config.gaps)


def model_location(config: BenchmarkConfig, job: Job, data: Path, data_sha: str):
    """(cache path of the model's checkpoint, its training config) for `job`; the hash covers both."""
    root = Path(config.cache) / "models"
    if job.method == "alpha-vae":
        tc = alpha_vae_config(config, job, data, Path("unused"))
        key = {k: v for k, v in asdict(tc).items() if k not in ("data", "out_dir", "device", "resume", "progress",
                                                                  "checkpoint_every")}
        out_dir = root / f"alpha-vae-dof{job.dof}-{config_hash([key, data_sha])}"
        return out_dir / CHECKPOINT_NAME, replace(tc, out_dir=str(out_dir))
    steps = steps_per_run(config, n_train_triplets(config, data))
    cnn = frame_cnn.FrameCNNConfig(channels=config.cnn_channels, steps=steps,
                                   batch_size=config.batch_size, lr=config.cnn_lr, seed=job.seed,
                                   device=config.device)
    key = {k: v for k, v in asdict(cnn).items() if k != "device"}
    return root / f"frame-cnn-dof{job.dof}-{config_hash([key, data_sha, list(config.gaps)])}" / "checkpoint.pt", cnn


def model_is_trained(config: BenchmarkConfig, job: Job, data: Path, data_sha: str) -> bool:
    """True if the cache holds the finished model of `job`."""
    path, cfg = model_location(config, job, data, data_sha)
    if not path.exists():
        return False
    if job.method == "frame-cnn":
        return True  # written once, at the end of training
    return read_checkpoint(path)["step"] >= steps_per_run(config, n_train_triplets(config, data))


def train_model(config: BenchmarkConfig, job: Job, data: Path, data_sha: str) -> None:
    """Train the model of `job` into the cache (an alpha-VAE resumes an interrupted run)."""
    path, cfg = model_location(config, job, data, data_sha)
    if job.method == "alpha-vae":
        train(cfg)
        return
    if path.exists():
        return
    train_set = TripletDataset(data, "train", config.gaps)
    b = train_set.batch_uint8(np.arange(len(train_set)))  # x0, x1, x2: (N, 3, H, W) uint8
    model = frame_cnn.fit(cfg, b["x0"], b["x1"], b["x2"], progress=config.progress, log_path=path.parent / LOG_NAME)
    frame_cnn.save_checkpoint(model, path)


def load_model(config: BenchmarkConfig, job: Job, data: Path, data_sha: str):
    """(model, its training log.csv) of a trained job; UserError naming the job if it has not run."""
    if not model_is_trained(config, job, data, data_sha):
        raise UserError(f"{job.id} has not finished; run it first (run-benchmark ... --only {job.id})")
    path, _ = model_location(config, job, data, data_sha)
    if job.method == "alpha-vae":
        return load_checkpoint(path, resolve_device(config.device)).eval(), path.parent / LOG_NAME
    return frame_cnn.load_checkpoint(path, config.device), path.parent / LOG_NAME


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


def evaluate_dof(config: BenchmarkConfig, dof: int, path: Path, jobs: list[Job]) -> dict[str, Any]:
    """Score every method on every gap of one dataset; also the figures' examples, strips and curves."""
    sha = h5format.sha256_file(path)
    tests = {k: TripletDataset(path, "test", k) for k in config.gaps}
    test_data = {k: ds.batch(np.arange(len(ds))) for k, ds in tests.items()}  # x0, x1, x2, mask per gap
    big = test_data[max(config.gaps)]
    pick = np.unique(np.linspace(0, len(big["x0"]) - 1, N_EXAMPLES).round().astype(int))
    examples = {"first frame x0": big["x0"][pick].numpy(), "ground truth x1": big["x1"][pick].numpy()}
    # The true frames between the interpolation strips' end points (the largest gap, middle example).
    s, t, k = tests[max(config.gaps)].index[pick[len(pick) // 2]]
    frames_t = np.linspace(t - k, t + k, INTERP_STEPS).round().astype(int)
    truth = h5format.read_split(path, "test").frames[s, frames_t]  # (steps, H, W, 3) uint8
    strips = {"ground truth": truth.transpose(0, 3, 1, 2).astype(np.float32) / 255}
    records, ceiling, curves = [], [], {}
    for k, data in test_data.items():
        # The true x1 scored against itself: the mask metrics' ceiling (silhouettes are thresholded).
        per = metrics.all_metrics(data["x1"], data["x1"], data["mask"])
        ceiling.append({"dof": dof, "gap": k, **metrics.mean_metrics(per), "n_triplets": len(data["x1"])})
    for method in (m for m in config.methods if m not in LEARNED):
        predict = predictor(method)
        for k, data in test_data.items():
            records.append(_record(dof, method, None, None, k, None, evaluate(predict, data)))
        examples[method] = predict(big["x0"][pick], big["x2"][pick]).float().clamp(0, 1).numpy()
    for job in jobs:
        model, log = load_model(config, job, path, sha)
        predict = predictor(job.method, model)
        for k, data in test_data.items():
            records.append(_record(dof, job.method, job.alpha, job.kl, k, job.seed, evaluate(predict, data)))
        if job.seed == 0:
            examples[job.label] = predict(big["x0"][pick], big["x2"][pick]).float().clamp(0, 1).numpy()
            if log.exists():  # a frame CNN cached before training logs existed has none
                curves[f"dof{dof} {job.label}"] = str(log)
            if job.method == "alpha-vae":
                xa, xb = torch.from_numpy(strips["ground truth"][0]), torch.from_numpy(strips["ground truth"][-1])
                strips[job.label] = interpolate(model, xa, xb, INTERP_STEPS).float().cpu().numpy()
    examples["second frame x2"] = big["x2"][pick].numpy()
    return {"dof": dof, "dataset": {"file": str(path), "sha256": sha}, "records": records, "ceiling": ceiling,
            "examples": examples, "strips": strips, "curves": curves}


def _record(dof, method, alpha, kl, gap, seed, values) -> dict[str, Any]:
    return {"dof": dof, "method": method, "alpha": alpha, "kl": kl, "gap": gap, "seed": seed, **values}


# ----------------------------------------------------------------------------- the plan: independent jobs


def plan(config: BenchmarkConfig) -> list[dict[str, Any]]:
    """Every job of the run, in an order that respects dependencies: renders, trainings, evaluations.

    Jobs of one kind are independent of each other, so a scheduler can run each kind as an array.
    A job's "needs" lists the ids of the jobs whose outputs it reads, and its hash covers everything
    that determines its output.
    """
    dofs = dataset_dofs(config)
    identity = {dof: (h5format.sha256_file(given) if given is not None
                      else config_hash(render_config(config, dof).to_json())) for dof, given in dofs.items()}
    jobs: list[dict[str, Any]] = []
    renders = {dof: [f"render-dof{dof}"] if given is None else [] for dof, given in dofs.items()}
    for dof, given in dofs.items():
        if given is None:
            jobs.append({"id": f"render-dof{dof}", "kind": "render", "dof": dof, "hash": identity[dof], "needs": []})
    train_jobs = training_jobs(config, dofs)
    common = {k: v for k, v in asdict(config).items() if k in TRAINING_OPTIONS}
    hashes = {}
    for job in train_jobs:
        hashes[job.id] = config_hash([asdict(job), common, identity[job.dof]])
        jobs.append({"id": job.id, "kind": "train", "dof": job.dof, "method": job.method, "alpha": job.alpha,
                     "kl": job.kl, "seed": job.seed, "hash": hashes[job.id], "needs": renders[job.dof]})
    for dof in dofs:
        models = sorted(hashes[j.id] for j in train_jobs if j.dof == dof)
        baselines = [m for m in config.methods if m not in LEARNED]
        jobs.append({"id": f"eval-dof{dof}", "kind": "eval", "dof": dof,
                     "hash": config_hash([identity[dof], list(config.gaps), baselines, models]),
                     "needs": renders[dof] + [j.id for j in train_jobs if j.dof == dof]})
    return jobs


# The options that change what a trained model is (the rest say where and how loudly to run).
TRAINING_OPTIONS = ("gaps", "epochs", "steps", "width", "latent", "batch_size", "lr", "cnn_channels", "cnn_lr",
                    "dtype")


def eval_output(config: BenchmarkConfig, job: dict[str, Any]) -> Path:
    return Path(config.cache) / "evals" / f"{job['id']}-{job['hash']}.pt"


def run_job(config: BenchmarkConfig, job: dict[str, Any]) -> None:
    """Run one job of the plan (its inputs must exist: renders before trainings before evaluations)."""
    dofs = dataset_dofs(config)
    if job["kind"] == "render":
        render_if_missing(config, job["dof"])
        return
    path = ready_dataset(config, job["dof"], dofs[job["dof"]])
    if job["kind"] == "train":
        train_job = _training_job(config, dofs, job["id"])
        sha = h5format.sha256_file(path)
        if not model_is_trained(config, train_job, path, sha):
            train_model(config, train_job, path, sha)
        return
    out = eval_output(config, job)
    if not out.exists():
        jobs = [j for j in training_jobs(config, dofs) if j.dof == job["dof"]]
        torch_save_atomic(evaluate_dof(config, job["dof"], path, jobs), out)


def _training_job(config: BenchmarkConfig, dofs, job_id: str) -> Job:
    """The training Job named `job_id` in the plan."""
    (job,) = [j for j in training_jobs(config, dofs) if j.id == job_id]
    return job


def find_job(config: BenchmarkConfig, job_id: str) -> dict[str, Any]:
    """The plan's job named `job_id`; UserError listing the names if there is none."""
    jobs = plan(config)
    for job in jobs:
        if job["id"] == job_id:
            return job
    names = ", ".join(j["id"] for j in jobs[:6]) + (", ..." if len(jobs) > 6 else "")
    raise UserError(f"no job {job_id!r} in this plan; run-benchmark ... --plan lists them ({names})")


@dataclass
class RunResult:
    """Everything the report needs."""

    datasets: dict[int, dict[str, str]]  # dof -> {"file", "sha256"}
    records: list[dict[str, Any]]
    ceiling: list[dict[str, Any]]  # metrics of the true x1 (the best any method can score on the mask metrics)
    examples: dict[int, dict[str, np.ndarray]]  # dof -> row label -> (N_EXAMPLES, 3, H, W), largest gap
    strips: dict[int, dict[str, np.ndarray]]  # dof -> label -> (INTERP_STEPS, 3, H, W)
    curves: dict[str, str]  # seed-0 learned model "dof2 alpha-vae a=100" or "dof2 frame-cnn" -> its log.csv
    wall_s: float = 0.0
    missing: list[str] = field(default_factory=list)  # jobs whose outputs were absent (aggregate only)


def aggregate(config: BenchmarkConfig, wall_s: float = 0.0) -> tuple[Path, list[str]]:
    """Build the output folder from the evaluation outputs present; returns it and the missing jobs' names."""
    from benchmarks import report

    out = check_out(config)
    jobs = plan(config)
    result = RunResult(datasets={}, records=[], ceiling=[], examples={}, strips={}, curves={}, wall_s=wall_s)
    for job in (j for j in jobs if j["kind"] == "eval"):
        path = eval_output(config, job)
        if not path.exists():
            result.missing += _missing_jobs(config, [j for j in jobs if j["dof"] == job["dof"]])
            continue
        part = torch.load(path, weights_only=False)
        result.datasets[part["dof"]] = part["dataset"]
        result.records += part["records"]
        result.ceiling += part["ceiling"]
        result.examples[part["dof"]], result.strips[part["dof"]] = part["examples"], part["strips"]
        result.curves.update(part["curves"])
    if not result.datasets:
        raise UserError(f"nothing to aggregate yet: no evaluation job has run (missing: {', '.join(result.missing)})")
    return report.write_output(config, result, out), result.missing


def _missing_jobs(config: BenchmarkConfig, jobs: list[dict[str, Any]]) -> list[str]:
    """The ids of the jobs of one DoF whose outputs are absent (the dataset is hashed once, not per job)."""
    dofs = dataset_dofs(config)
    dof = jobs[0]["dof"]
    path = dataset_path(config, dof, dofs[dof])
    sha = h5format.sha256_file(path) if path.exists() else None  # no dataset: no training can have run

    def done(job: dict[str, Any]) -> bool:
        if job["kind"] == "eval":
            return eval_output(config, job).exists()
        if job["kind"] == "render":
            return path.exists()
        return sha is not None and model_is_trained(config, _training_job(config, dofs, job["id"]), path, sha)

    return [job["id"] for job in jobs if not done(job)]


def run_benchmark(config: BenchmarkConfig) -> Path:
    """Run every job of the plan in order, then aggregate; returns the output folder."""
    check_out(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    jobs = plan(config)
    bar = tqdm(jobs, desc="benchmark", unit="job", disable=not config.progress)
    for job in bar:
        bar.set_description(job["id"])
        run_job(config, job)
    out, _ = aggregate(config, wall_s=time.perf_counter() - start)
    return out
