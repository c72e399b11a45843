"""The output folder of a run: the cached evaluation outputs gathered into one RunResult, written by the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.engine.cache import eval_output, is_done
from benchmarks.engine.config import BenchmarkConfig
from benchmarks.engine.jobs import EvalJob
from benchmarks.engine.plan import plan, skipped
from benchmarks.engine.reference_models import matching
from ibutil.errors import UserError
from ibutil.io import ensure_writable_folder


def check_out(config: BenchmarkConfig) -> Path:
    """Refuse an existing output folder (without overwrite) or one that cannot be created."""
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; --out must be a folder")
    ensure_writable_folder(out.parent)
    return out


@dataclass
class RunResult:
    """Everything the report needs."""

    datasets: dict[int, dict[str, str]]  # dof -> {"file", "sha256"}
    records: list[dict[str, Any]]
    ceiling: list[dict[str, Any]]  # metrics of the true frame (the best any method can score on the mask metrics)
    examples: dict[int, dict[str, np.ndarray]]  # dof -> row label -> (N_EXAMPLES, 3, H, W), largest gap, tau 0.5
    strips: dict[int, dict[str, np.ndarray]]  # dof -> label -> (INTERP_STEPS, 3, H, W)
    curves: dict[str, str]  # seed-0 trained model "dof2 alpha-vae a=100 avg-gaussian" -> its log.csv
    paths: list[dict[str, Any]] = field(default_factory=list)  # smoothness along the tau path (dof 1, 2)
    triplets: list[dict[str, Any]] = field(default_factory=list)  # per-triplet metrics at tau 0.5 (scoring)
    tables: dict[int, dict | None] = field(default_factory=dict)  # dof -> the reference table's kind and step
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it did not run here
    # The shipped models scored as reference rows (their model.json, by DoF) and one line per model left out.
    reference_models: list[dict[str, Any]] = field(default_factory=list)
    reference_models_left_out: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    # dof -> the eval job's wall times (evaluate.evaluate_dof's "timing": seconds, rows; job_seconds, table_seconds);
    # absent for an output evaluated before they were recorded
    evaluation: dict[int, dict] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # jobs whose outputs were absent (aggregate only)


def aggregate(config: BenchmarkConfig, wall_s: float = 0.0) -> tuple[Path, list[str]]:
    """Build the output folder from the evaluation outputs present; returns it and the missing jobs' names."""
    from benchmarks.results import report

    out = check_out(config)
    jobs = plan(config)
    shipped, left_out = matching(config)
    result = RunResult(datasets={}, records=[], ceiling=[], examples={}, strips={}, curves={}, wall_s=wall_s,
                       skipped=skipped(config), reference_models_left_out=left_out,
                       reference_models=[m.manifest for models in shipped.values() for m in models])
    for job in (j for j in jobs if isinstance(j, EvalJob)):
        path = eval_output(config, job)
        if not path.exists():
            result.missing += [j.id for j in jobs if j.dof == job.dof and not is_done(config, j)]
            continue
        part = torch.load(path, weights_only=False)
        result.datasets[part["dof"]] = part["dataset"]
        result.records += part["records"]
        result.ceiling += part["ceiling"]
        result.paths += part["paths"]
        result.triplets += part.get("triplets", [])
        result.tables[part["dof"]] = part["table"]
        result.examples[part["dof"]], result.strips[part["dof"]] = part["examples"], part["strips"]
        result.curves.update(part["curves"])
        if "timing" in part:
            result.evaluation[part["dof"]] = part["timing"]
    if not result.datasets:
        raise UserError(f"nothing to aggregate yet: no evaluation job has run (missing: {', '.join(result.missing)})")
    return report.write_output(config, result, out), result.missing
