"""Where every job's output lives in the cache (--cache), and whether it is there.

A job's entry is named `{id}-{hash}`: the hash is of everything that determines the output (computed
by benchmarks.engine.plan from config_hash), so a changed input is a new entry and an unchanged one
is found as done. The dataset of a DoF is a --data file or its render job's entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.engine.config import BenchmarkConfig, render_config
from benchmarks.engine.jobs import EnsembleJob, EvalJob, Job, RenderJob, TrainJob
from benchmarks.methods.interface import read_summary
from ibdata import h5format
from ibutil.errors import UserError


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses included): the `{hash}` of a cache entry."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_jsonable).encode()).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else str(obj)


def render_hash(config: BenchmarkConfig, dof: int) -> str:
    """The hash of a render job: of the render config, which fixes the dataset's bytes."""
    return config_hash(render_config(config, dof).to_json())


def dataset_dofs(config: BenchmarkConfig) -> dict[int, h5format.DatasetHeader | None]:
    """DoF -> the header of its --data file (read and validated here), or None where the benchmark renders it."""
    if not config.data:
        return {dof: None for dof in config.dofs}
    files: dict[int, h5format.DatasetHeader | None] = {}
    for p in config.data:
        header = h5format.read_header(p)
        if header.dof in files:
            raise UserError(f"--data gives two files for dof {header.dof}: {files[header.dof].path} and {p}")
        files[header.dof] = header
    return dict(sorted(files.items()))


def dataset_path(config: BenchmarkConfig, dof: int) -> Path:
    """The dataset of `dof`: the --data file, or the cache entry of its render job."""
    given = dataset_dofs(config)[dof]
    if given is not None:
        return given.path
    return Path(config.cache) / "data" / f"dof{dof}-{render_hash(config, dof)}.h5"


def model_dir(config: BenchmarkConfig, job: TrainJob) -> Path:
    """The folder a train job writes (checkpoint, log.csv, summary.json), whether it trains alone or in an ensemble."""
    return Path(config.cache) / "models" / f"{job.id}-{job.hash}"


def ensemble_dir(config: BenchmarkConfig, job: EnsembleJob, members: list[TrainJob]) -> Path:
    """The folder of the batched run of `members` (the ensemble's members not yet trained): its checkpoint."""
    return Path(config.cache) / "models" / f"{job.id}-{config_hash([m.hash for m in members])}"


def eval_output(config: BenchmarkConfig, job: EvalJob) -> Path:
    """The file an eval job writes (evaluate.evaluate_dof's result)."""
    return Path(config.cache) / "evals" / f"{job.id}-{job.hash}.pt"


def is_done(config: BenchmarkConfig, job: Job) -> bool:
    """Whether the output of `job` is in the cache."""
    if isinstance(job, RenderJob):
        return dataset_path(config, job.dof).exists()
    if isinstance(job, TrainJob):  # a preempted or in-progress run is not done: running it again resumes it
        summary = read_summary(model_dir(config, job))
        return summary is not None and summary.trained
    if isinstance(job, EnsembleJob):
        return all(is_done(config, m) for m in job.members)
    return eval_output(config, job).exists()
