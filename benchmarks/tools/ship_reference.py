"""Ship a trained model of a finished benchmark run as a reference model (benchmarks.engine.reference_models).

    python -m benchmarks.tools.ship_reference --run-cache .cache/inbetween-bench --results docs/results/v3-d-dof2 \\
        --method alpha-vae --alpha 100 --dof 2 --seed 10

The run's config.json (in --results, the committed folder) rebuilds its plan, and the model is found as the
engine finds it to score it: the entry's train jobs, their cache folders (benchmarks.engine.cache.model_dir) and
the lr trial selected on val (benchmarks.engine.load.select). Its summary must equal what the committed
results.json records for that row (selected step, steps, val loss, FLOPs), so what ships is what was scored.
It copies the files the method's `load` reads (summary.json and the checkpoint it selects) into --out/NAME with
model.json: the method config, DoF and seed, each file's sha256, the dataset (sha256, render identity, split
shapes, the render-dataset command), the run folder, the command that trained it (RUN.md, else config.json).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import click

from benchmarks import methods
from benchmarks.engine.cache import dataset_path, model_dir
from benchmarks.engine.config import BenchmarkConfig
from benchmarks.engine.load import select
from benchmarks.engine.plan import plan, train_jobs
from benchmarks.engine.reference_models import header_identity, write_model
from ibdata import h5format
from ibutil.cli import DataclassOptions, MultiValueCommand, user_errors
from ibutil.errors import UserError
from ibutil.run import CHECKPOINT_NAME, RECORD_KEYS, SUMMARY_NAME
from render.dataset import config_from_json, regenerate_command

# The summary fields that must equal the committed records' (the model scored is the model shipped).
CHECKED = ("steps", "selected_step", "best_val_loss", "train_flops", "params")


@dataclass(frozen=True)
class ShipConfig:
    """Which model of which finished run to ship, and where."""

    run_cache: str  # the --cache the run trained into (e.g. .cache/inbetween-bench)
    results: str  # the run's output folder, committed (e.g. docs/results/v3-d-dof2): config.json, results.json, RUN.md
    dof: int  # the DoF the model trained on
    method: str = "alpha-vae"  # the method (a built-in)
    alpha: float | None = None  # its record's alpha (the alpha-VAE's variants), when the method has several rows
    kl: str | None = None  # its record's KL form (alpha > 0), when the run swept several
    seed: int | None = None  # the training seed (required for a seeded method)
    name: str | None = None  # the model's folder name (default: from its train job, e.g. alpha-vae-a100-avg-gaussian-dof2-s10)
    out: str = "reference/models"  # the reference-models folder to ship into
    data: tuple[str, ...] = ()  # where the run's --data files are now, if it scored files given with --data

    def __post_init__(self):
        object.__setattr__(self, "data", tuple(str(p) for p in self.data))
        methods.get(self.method)  # UserError naming the methods
        if self.name is not None and (not self.name or Path(self.name).name != self.name or self.name[0] == "."):
            raise UserError(f"--name {self.name!r} must be a plain folder name (no /, not hidden)")


def run_config(ship: ShipConfig) -> tuple[BenchmarkConfig, dict, dict]:
    """The finished run's BenchmarkConfig, rebuilt from its config.json with --run-cache (and --data) for where
    its outputs are now; its results.json and config.json."""
    folder = Path(ship.results)
    try:
        recorded = json.loads((folder / "config.json").read_text())
        doc = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"--results {folder} is not a finished run's folder (no readable config.json and "
                        "results.json); give the run-benchmark --out folder, e.g. docs/results/v3-d-dof2") from None
    if recorded.get("plugins"):
        raise UserError(f"{folder} ran methods from outside the package ({', '.join(recorded['plugins'])}); "
                        "only built-in methods are shipped")
    known = {f.name for f in fields(BenchmarkConfig)} - {"reference", "reference_models", "plugins"}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in known}
    values["method_configs"] = {name: {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
                                for name, cfg in recorded.get("method_configs", {}).items()}
    data = values.get("data", ())
    if data:
        given = ship.data or data
        if len(given) != len(data):
            raise UserError(f"{folder} scored {len(data)} --data file(s) ({', '.join(data)}); give as many --data")
        for p in given:
            if not Path(p).is_file():
                raise UserError(f"the run scored --data {p}, which is not here; pass --data PATH where that file is")
        values["data"] = tuple(given)
    values |= {"cache": ship.run_cache, "progress": False}
    return BenchmarkConfig(**values), doc, recorded


def find_model(config: BenchmarkConfig, ship: ShipConfig):
    """(train job, summary) of the model the run scored for the asked row: its entry's lr trials, as load.select
    picks among them. UserError naming the rows if none or several fit."""
    wanted = {"alpha": ship.alpha, "kl": ship.kl}
    by_entry: dict = {}
    for job in train_jobs(plan(config)).values():
        e = job.entry
        fields_ = methods.record_fields(methods.get(e.method), e.config)
        if job.dof == ship.dof and e.method == ship.method and e.seed == ship.seed \
                and all(v is None or fields_.get(k) == v for k, v in wanted.items()):
            by_entry.setdefault(e, []).append(job)
    if len(by_entry) != 1:
        rows = sorted({f"{j.entry.label} seed {j.entry.seed}" for j in train_jobs(plan(config)).values()
                       if j.dof == ship.dof})
        what = "no trained row" if not by_entry else "several rows"
        raise UserError(f"{what} of {ship.results} at dof {ship.dof} fit --method {ship.method} --alpha {ship.alpha} "
                        f"--kl {ship.kl} --seed {ship.seed}; its rows: {'; '.join(rows) or 'none'}")
    (trials,) = by_entry.values()
    return select(config, trials)


def committed_record(doc: dict, ship: ShipConfig, fields_: dict) -> dict:
    """The committed results.json record of the row (any split, gap and tau: they share the training summary)."""
    for r in doc["records"]:
        if (r["dof"], r["method"], r.get("seed")) == (ship.dof, ship.method, ship.seed) and not r.get("reference") \
                and all(r.get(k) == v for k, v in fields_.items()):
            return r
    raise UserError(f"{ship.results}/results.json has no record of {ship.method} {fields_} seed {ship.seed} at dof "
                    f"{ship.dof}: that run did not score this model")


def run_command(folder: Path, recorded: dict) -> tuple[str, str | None]:
    """The command that trained the run and its commit: RUN.md's indented run-benchmark line and `at commit X`,
    else config.json's command (the interpreter's path dropped)."""
    run_md = folder / "RUN.md"
    if run_md.is_file():
        text = run_md.read_text()
        line = re.search(r"^ {4}(run-benchmark .*)$", text, re.M)
        commit = re.search(r"at commit ([0-9a-f]{7,40})", text)
        if line:
            return line.group(1).strip(), commit.group(1) if commit else None
    command = recorded.get("command", "")
    first, _, rest = command.partition(" ")
    return (Path(first).name + " " + rest).strip(), None


def ship(config: ShipConfig) -> Path:
    """Copy the model into config.out/NAME with its model.json (reference_models.write_model); returns the folder."""
    bench, doc, recorded = run_config(config)
    if config.dof not in bench.dofs and not bench.data:
        raise UserError(f"{config.results} did not run dof {config.dof} (it ran dof {', '.join(map(str, bench.dofs))})")
    job, summary = find_model(bench, config)
    module = methods.get(config.method)
    fields_ = methods.record_fields(module, job.entry.config)
    record = committed_record(doc, config, fields_)
    differ = [k for k in CHECKED if record.get(k) != getattr(summary, k)]
    if differ:
        raise UserError(f"the model in {model_dir(bench, job)} is not the one {config.results} scored: "
                        + ", ".join(f"{k} {getattr(summary, k)} (committed {record.get(k)})" for k in differ)
                        + "; give the --run-cache that run trained into")
    header = h5format.read_header(dataset_path(bench, config.dof))
    identity = header_identity(header)
    if identity is None:
        raise UserError(f"{header.path} has no render config: a model trained on it cannot be matched to the data a "
                        "run scores; ship models trained on render-dataset files")
    folder = model_dir(bench, job)
    files = {SUMMARY_NAME: folder / SUMMARY_NAME}
    selected = summary.selected_checkpoint or CHECKPOINT_NAME
    files[selected] = folder / selected
    command, commit = run_command(Path(config.results), recorded)
    name = config.name or job.id.removeprefix("train-")
    manifest = {
        "name": name, "method": config.method, "label": job.entry.label, "config": asdict(job.config),
        "record": fields_, "dof": config.dof, "seed": job.entry.seed,
        "dataset": {"file": str(header.path), "sha256": header.sha256, "identity": identity,
                    "shapes": {s: list(v) for s, v in header.shapes.items()},
                    "regenerate": regenerate_command(config_from_json(header.config), Path(f"data/dof{config.dof}.h5"))},
        "run": str(config.results).rstrip("/"), "command": command, "commit": commit, "cache_folder": folder.name,
        **{k: getattr(summary, k) for k in RECORD_KEYS}, "planned_steps": summary.planned_steps,
    }
    write_model(Path(config.out) / name, files, manifest)
    return Path(config.out) / name


OPTIONS = DataclassOptions()
OPTIONS.add(ShipConfig, "ship")


@click.command(cls=MultiValueCommand, context_settings={"help_option_names": ["-h", "--help"]})
def ship_reference(**options):
    """Copy a trained model of a finished run into a reference-models folder with its model.json.

    Example: python -m benchmarks.tools.ship_reference --run-cache .cache/inbetween-bench
    --results docs/results/v3-d-dof2 --method alpha-vae --alpha 100 --dof 2 --seed 10
    """
    with user_errors():
        out = ship(ShipConfig(**OPTIONS.values(options).get("ship", {})))
        manifest = json.loads((out / "model.json").read_text())
        sizes = ", ".join(f"{n} {(out / n).stat().st_size / 1e6:.1f} MB" for n in manifest["files"])
        click.echo(f"shipped {manifest['label']} (dof {manifest['dof']}, seed {manifest['seed']}, selected step "
                   f"{manifest['selected_step']} of {manifest['steps']}) to {out}/ ({sizes}); run-benchmark "
                   "--reference-models scores it where the data has its render identity")


OPTIONS.extend(ship_reference)

if __name__ == "__main__":
    ship_reference()
