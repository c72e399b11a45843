"""Reference models: trained checkpoints shipped in a folder (reference/models/), each with its model.json, that a run
scores beside what it trains wherever the dataset scored has the render identity of the one the model trained on.

A folder holds one subfolder per model: the model folder a benchmark cache holds (summary.json and the checkpoint
it selects, all that the method's `load` reads) and model.json, the manifest benchmarks.tools.ship_reference
writes: the method and its config, DoF and seed, each file's sha256, the dataset it trained on (its sha256 and
render identity), the committed run it comes from and the command that trained it. Nothing trains them here.

The render identity (render_identity) is the dataset's render config without its sequence counts and, for the
random presets (DoF 2 and 6), without the sequence length: the renderer draws every sequence from (seed, split,
index) alone (render.presets.sequence_rng), so a file with more or fewer, longer or shorter sequences of the same
identity has the same kind of frames, and its test and heldout sequences come from streams no train sequence is
drawn from. DoF 1's `frames` is the turn's step, which places its train and test angles, so it stays.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import methods
from benchmarks.engine.cache import dataset_dofs
from benchmarks.engine.config import BenchmarkConfig, render_config
from benchmarks.scoring.tables import dataset_config
from ibdata import h5format
from ibutil.errors import UserError
from ibutil.io import atomic_path, write_text_atomic
from render.presets import RenderConfig

MANIFEST = "model.json"  # in each model's folder, beside the files it lists
FORMAT = "inbetween-reference-model"
FORMAT_VERSION = 1
# What a render identity leaves out: how many sequences each split has (and, DoF 2 and 6, how long they are).
COUNT_FIELDS = ("train_sequences", "val_sequences", "test_sequences", "heldout_sequences")
REQUIRED = ("name", "method", "config", "dof", "seed", "files", "dataset", "run", "command")


@dataclass(frozen=True)
class ReferenceModel:
    """One shipped model: its folder and its manifest (model.json)."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def dof(self) -> int:
        return int(self.manifest["dof"])

    @property
    def seed(self) -> int | None:
        return self.manifest["seed"]

    @property
    def identity(self) -> dict[str, Any]:
        """The render identity of the dataset it trained on."""
        return self.manifest["dataset"]["identity"]

    @property
    def mark(self) -> str:
        """What its rows carry as `reference` (their labels end `[ref model RUN sSEED]`): the run folder and seed."""
        return f"model {Path(self.manifest['run']).name}" + ("" if self.seed is None else f" s{self.seed}")

    def config(self) -> Any:
        """The method's Config of this model (one variant), rebuilt from model.json (JSON lists back to tuples)."""
        module = methods.get(self.method)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.manifest["config"].items()}
        try:
            return module.Config(**values)
        except TypeError as exc:
            raise UserError(f"reference model {self.name}: its config does not fit method {self.method} ({exc}); "
                            "ship it again with python -m benchmarks.tools.ship_reference") from None


def render_identity(render: RenderConfig) -> dict[str, Any]:
    """What a model's training data and a scored dataset must share (the module docstring says why): the render
    config as the file stores it, without the sequence counts and, for DoF 2 and 6, the sequence length."""
    drop = COUNT_FIELDS + (() if render.dof == 1 else ("frames",))
    return {k: v for k, v in render.to_json().items() if k not in drop}


def header_identity(header: h5format.DatasetHeader) -> dict[str, Any] | None:
    """The render identity of a file's header; None for a file render-dataset did not write (no render config)."""
    try:
        return render_identity(dataset_config(header))  # the render config the pose tables are built from, too
    except UserError:
        return None


def scored_identities(config: BenchmarkConfig) -> dict[int, dict[str, Any] | None]:
    """DoF -> the render identity of the dataset the run scores (a --data file's header, else the render config)."""
    return {dof: render_identity(render_config(config, dof)) if header is None else header_identity(header)
            for dof, header in dataset_dofs(config).items()}


def difference(theirs: dict[str, Any], mine: dict[str, Any]) -> str | None:
    """The fields in which two render identities differ, as `seed 1 (here 0)`; None where they are equal."""
    keys = sorted(set(theirs) | set(mine))
    diff = [f"{k} {theirs.get(k, 'unset')} (here {mine.get(k, 'unset')})" for k in keys if theirs.get(k) != mine.get(k)]
    return ", ".join(diff) or None


def read_folder(folder: str | Path) -> list[ReferenceModel]:
    """Every model of a reference-models folder, by name; UserError naming a folder or manifest that is unreadable."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--reference-models {folder} is not a folder; give one such as reference/models")
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):  # not a temp
        try:
            manifest = json.loads((sub / MANIFEST).read_text())
            missing = [k for k in REQUIRED if k not in manifest]
            if manifest.get("format") != FORMAT or missing:
                raise ValueError(f"not a {FORMAT} manifest" + (f" (no {', '.join(missing)})" if missing else ""))
            if manifest.get("format_version", 0) > FORMAT_VERSION:
                raise ValueError(f"format version {manifest['format_version']}, newer than this code's {FORMAT_VERSION}")
        except (OSError, ValueError) as exc:
            raise UserError(f"reference model folder {sub}: no readable {MANIFEST} ({exc}); ship it again with "
                            "python -m benchmarks.tools.ship_reference") from None
        out.append(ReferenceModel(sub, manifest))
    names = [m.name for m in out]
    for m in out:
        if names.count(m.name) > 1:
            raise UserError(f"--reference-models {folder}: two models are named {m.name}; rename one")
    return out


def verify(model: ReferenceModel) -> None:
    """UserError unless every file model.json lists is there with its recorded sha256."""
    for name, digest in model.manifest["files"].items():
        path = model.folder / name
        if not path.is_file():
            raise UserError(f"reference model {model.name}: {path} is missing; restore it (git checkout {model.folder}) "
                            "or remove the model's folder")
        found = h5format.sha256_file(path)
        if found != digest:
            raise UserError(f"reference model {model.name}: {path} has sha256 {found[:12]}…, its {MANIFEST} says "
                            f"{digest[:12]}…; restore it (git checkout {model.folder}) or ship it again")


def matching(config: BenchmarkConfig) -> tuple[dict[int, list[ReferenceModel]], list[str]]:
    """The models of config.reference_models to score at each DoF of the run, and one line per model left out
    saying why (another DoF, another render identity, a method that is not here). No folder: nothing."""
    scored = {dof: [] for dof in dataset_dofs(config)}
    if not config.reference_models:
        return scored, []
    identities = scored_identities(config)
    reasons = []
    for model in read_folder(config.reference_models):
        why = f"reference model {model.name} ({model.method}, dof {model.dof}) not scored: "
        if model.dof not in scored:
            reasons.append(why + f"this run scores dof {', '.join(map(str, scored))}")
            continue
        if identities[model.dof] is None:
            reasons.append(why + f"the dof {model.dof} file scored here has no render config to compare with")
            continue
        diff = difference(model.identity, identities[model.dof])
        if diff is not None:
            reasons.append(why + f"its training data had another render identity: {diff}")
            continue
        if model.method not in methods.REGISTRY and model.method not in methods.PLUGINS:
            reasons.append(why + f"method {model.method} is not registered in this run")
            continue
        unavailable = methods.hooks(methods.get(model.method)).available()
        if unavailable is not None:
            reasons.append(why + unavailable)
            continue
        scored[model.dof].append(model)
    return scored, reasons


def check(config: BenchmarkConfig) -> list[str]:
    """Before any work: every model of config.reference_models has intact files (verify; UserError otherwise);
    returns matching()'s lines on the models left out."""
    if not config.reference_models:
        return []
    for model in read_folder(config.reference_models):
        verify(model)
    return matching(config)[1]


def write_model(folder: Path, files: dict[str, Path], manifest: dict[str, Any]) -> ReferenceModel:
    """A model's folder: `files` (name -> source) copied in and model.json (manifest plus the format and each
    file's sha256), written into a temporary sibling renamed at the end; UserError if the folder exists."""
    folder = Path(folder)
    if folder.exists():
        raise UserError(f"{folder} already exists; remove it to ship the model again, or choose another --name")
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        digests = {}
        for name, source in files.items():
            shutil.copyfile(source, tmp / name)
            digests[name] = h5format.sha256_file(tmp / name)
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": digests}
        write_text_atomic(tmp / MANIFEST, json.dumps(doc, indent=1) + "\n")
    return ReferenceModel(folder, doc)
