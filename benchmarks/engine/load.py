"""What an eval job scores: each entry's selected model loaded as a row (evaluate.Row), and the reference table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from benchmarks import methods
from benchmarks.engine import plugins
from benchmarks.engine.cache import model_dir
from benchmarks.engine.config import BenchmarkConfig
from benchmarks.engine.jobs import Entry, TrainJob
from benchmarks.methods.interface import read_summary
from benchmarks.scoring import evaluate, metrics
from ibutil.errors import UserError
from ibutil.run import RECORD_KEYS
from ibutil.selection import select_trial


def reference_table(config: BenchmarkConfig, path: Path):
    """The pose table or object templates that score `path` (metrics.table_for, cached under --cache); None for
    a file that render-dataset did not write (no render config to build a table from): no pose/position metrics."""
    from benchmarks.scoring import tables

    try:
        tables.dataset_config(path)
    except UserError as exc:
        print(f"no pose or position metrics for {path}: {exc}", file=sys.stderr)
        return None
    return metrics.table_for(path, config.cache, progress=config.progress, step_deg=config.table_step_deg)


def select(config: BenchmarkConfig, trials: list[TrainJob]) -> tuple[TrainJob, Any]:
    """The trial whose run reached the lowest val loss (the only one without a sweep) and its summary."""
    summaries = []
    for job in trials:
        summary = read_summary(model_dir(config, job))
        if summary is None or not summary.trained:
            raise UserError(f"{job.id} has not finished; run it first (run-benchmark ... --only {job.id})")
        summaries.append(summary)
    best = 0 if len(trials) == 1 else select_trial([s.best_val_loss for s in summaries])
    return trials[best], summaries[best]


def load_row(config: BenchmarkConfig, entry: Entry, trials: list[TrainJob]) -> evaluate.Row:
    """What scoring needs of one entry: its loaded model (the selected lr trial) as a predict function, its
    record fields (the selected trial's summary, lr included), its log."""
    module = methods.get(entry.method)
    folder, summary, chosen = None, None, entry.config
    if trials:
        job, summary = select(config, trials)
        folder, chosen = model_dir(config, job), job.config
    model = module.load(chosen, folder, config.device)
    fields = {"method": entry.method, **methods.record_fields(module, entry.config), "seed": entry.seed,
              **(summary.record() if summary is not None else dict.fromkeys(RECORD_KEYS)),
              "lr_trials": config.lr_trials if methods.learned(module) else None}
    log = folder / "log.csv" if folder is not None and (folder / "log.csv").exists() else None
    # A plug-in's every output is checked (shape, device, range, NaN): a built-in's are by tests/test_methods.py.
    plugin = methods.PLUGINS.get(entry.method)
    predict = (plugins.checked(module, model, plugin.source) if plugin is not None
               else lambda x0, x2, tau: module.predict(model, x0, x2, tau))
    return evaluate.Row(label=entry.label, predict=predict, fields=fields, shown=entry.seed in (None, config.first_seed),
                       log=str(log) if log else None)
