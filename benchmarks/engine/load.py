"""What an eval job scores: each entry's selected model loaded as a row (evaluate.Row), each shipped reference model
as a row marked reference, and the reference table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from benchmarks import methods
from benchmarks.engine import plugins
from benchmarks.engine.cache import model_dir
from benchmarks.engine.config import BenchmarkConfig
from benchmarks.engine.jobs import Entry, TrainJob
from benchmarks.engine.reference_models import ReferenceModel, verify
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
    fields = row_fields(entry.method, entry.config, entry.seed, summary,
                        config.lr_trials if methods.learned(module) else None)
    log = folder / "log.csv" if folder is not None and (folder / "log.csv").exists() else None
    return evaluate.Row(label=entry.label, predict=predictor(entry.method, model), fields=fields,
                        shown=entry.seed in (None, config.first_seed), log=str(log) if log else None)


def row_fields(method: str, config: Any, seed: int | None, summary, lr_trials: int | None) -> dict:
    """The record fields of a scored row: method, its variant's fields, seed, its training summary (empty
    for a method that trains nothing) and the lr trials it was selected from."""
    return {"method": method, **methods.record_fields(methods.get(method), config), "seed": seed,
            **(summary.record() if summary is not None else dict.fromkeys(RECORD_KEYS)), "lr_trials": lr_trials}


def predictor(method: str, model: Any):
    """(x0, x2, tau) -> frames of a loaded model through its method's predict. A plug-in's every output is checked
    (shape, device, range, NaN): a built-in's are by tests/test_methods.py."""
    module, plugin = methods.get(method), methods.PLUGINS.get(method)
    if plugin is not None:
        return plugins.checked(module, model, plugin.source)
    return lambda x0, x2, tau: module.predict(model, x0, x2, tau)


def reference_row(config: BenchmarkConfig, model: ReferenceModel) -> evaluate.Row:
    """A shipped model (benchmarks.engine.reference_models) as a row: its files verified against model.json, loaded
    by its method's `load` from its folder and predicting through the method's `predict`, exactly as a model trained
    here; its records carry `reference` (the label's `[ref model RUN sSEED]`) and the summary it was trained with."""
    verify(model)  # the eval job's hash holds model.json's sha256s: score only those bytes
    module, chosen = methods.get(model.method), model.config()
    summary = read_summary(model.folder)
    loaded = module.load(chosen, model.folder, config.device)
    fields = row_fields(model.method, chosen, model.seed, summary, None) | {"reference": model.mark}
    return evaluate.Row(label=f"{module.label(chosen)} [ref {model.mark}]", predict=predictor(model.method, loaded),
                        fields=fields, shown=True, log=None)
