"""score-predictions: score frames predicted elsewhere (any framework) for an export-triplets file, as run-benchmark would.

The predictions stand behind one evaluate.Row, so evaluate.evaluate_dof computes every metric, split,
tau, well-posedness subset and figure exactly as for a built-in method, and report.write_output
writes the same folder. evaluate_dof asks for predictions in the order the inputs file was written
(export.scored_groups); every batch it asks for is checked against the inputs' x0 and x2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from benchmarks import methods
from benchmarks.engine.config import check_table_step
from benchmarks.external import export
from ibdata import h5format
from ibdata.frames import to_float, to_uint8
from ibutil.device import check_device_name, resolve_device
from ibutil.errors import UserError
from ibutil.run import RECORD_KEYS

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
CHECK_ROWS = 4096  # rows per block when the predictions are checked for NaN and range


@dataclass(frozen=True)
class ScoreConfig:
    """Every option of score-predictions; written to config.json beside the results."""

    data: str  # the dataset file the inputs were exported from (its sha256 must equal the inputs' source_sha256)
    inputs: str  # the export-triplets file the predictions answer
    predictions: str  # HDF5 file with `frames` (N, H, W, 3): uint8, or float in [0, 1]; row i answers inputs row i
    name: str  # your method's row name in every table and figure
    out: str = "results/predictions"  # output folder, written atomically (a temp folder renamed at the end)
    reference: tuple[str, ...] = ()  # committed run folders (e.g. docs/results/grid) whose rows to show beside yours
    cache: str = ".cache/inbetween-bench"  # where the pose tables and object templates are rendered once
    # The same grid as the reference run keeps pose errors comparable (docs/results/grid used 4).
    table_step_deg: float | None = None  # pose-table grid step (degrees, divides 360) for dof 1 and 2; default 0.5, 2
    device: str = "auto"  # where the pose and position metrics run: auto, cpu, cuda or cuda:N
    overwrite: bool = False  # replace an existing output folder
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference", tuple(dict.fromkeys(str(r) for r in self.reference)))
        if not self.name.strip() or self.name != self.name.strip():
            raise UserError(f"--name must be a non-empty name without surrounding spaces, not {self.name!r}")
        if self.name in methods.REGISTRY:
            raise UserError(f"--name {self.name} is a built-in method's name; choose another so the rows stay apart")
        check_table_step(self.table_step_deg)
        check_device_name(self.device)


def check_predictions(path, inputs: export.Inputs, progress: bool = True) -> None:
    """UserError (one line) unless `path` holds `frames` of the inputs' count and shape, uint8 or float in
    [0, 1], without NaN."""
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        raise UserError(f"--predictions {path} is not an HDF5 file; write `frames` (N, H, W, 3) with h5py")
    want = (inputs.n, inputs.size, inputs.size, 3)
    with h5py.File(path, "r") as h:
        if "frames" not in h or not isinstance(h["frames"], h5py.Dataset):
            raise UserError(f"--predictions {path} has no dataset `frames`; write the predictions as `frames` "
                            f"{want} uint8 or float in [0, 1]")
        frames = h["frames"]
        if frames.shape[0] != inputs.n:
            raise UserError(f"--predictions {path}: `frames` has {frames.shape[0]} rows but {inputs.path} has "
                            f"{inputs.n}; predict every row of the inputs, in their order")
        if frames.shape != want:
            raise UserError(f"--predictions {path}: `frames` has shape {frames.shape}, expected {want} "
                            "(N, H, W, 3), channels last, the inputs' size")
        if frames.dtype != np.uint8 and frames.dtype not in FLOAT_DTYPES:
            raise UserError(f"--predictions {path}: `frames` is {frames.dtype}; write uint8 (0..255) or float "
                            "(float16/32/64) in [0, 1]")
        if frames.dtype == np.uint8:
            return
        for a in tqdm(range(0, inputs.n, CHECK_ROWS), desc="check predictions", disable=not progress, leave=False):
            block = frames[a:a + CHECK_ROWS]
            bad = np.isnan(block).any(axis=(1, 2, 3))
            if bad.any():
                raise UserError(f"--predictions {path}: `frames` row {a + int(np.argmax(bad))} holds NaN; NaN "
                                "predictions are refused (fix the model or the export)")
            lo, hi = float(block.min()), float(block.max())
            if lo < 0 or hi > 1:
                raise UserError(f"--predictions {path}: float `frames` must lie in [0, 1], found values in "
                                f"[{lo:g}, {hi:g}] (rows {a}..{a + len(block) - 1}); divide by 255 or clip")


@dataclass
class Group:
    """The triplets of one (split, k, j) that evaluate_dof scores in one run of batches."""

    split: str
    k: int
    j: int
    n: int
    offset: int  # first inputs row of the group


class Served:
    """A predict(x0, x2, tau) that answers with the predictions file's rows.

    During scoring it follows evaluate_dof's order (`groups`: the splits the inputs hold, in evaluation
    order, each at its rows); the x0 and x2 it is given must be the inputs' own. After the
    last group, calls are the figures': a pair at tau found among the inputs' test triplets of the
    largest gap gets its prediction, others raise LookupError (examples.pick_figures leaves the row out).
    """

    def __init__(self, inputs: export.Inputs, predictions: Path, groups: list[Group]):
        self.inputs, self.groups = inputs, groups
        self.predictions = h5py.File(predictions, "r")["frames"]
        self.x = h5py.File(inputs.path, "r")
        self.at, self.within, self.served = 0, 0, 0
        self.figure_rows: dict[tuple[int, bytes, bytes], int] | None = None

    def close(self) -> None:
        self.predictions.file.close()
        self.x.close()

    def rows(self, a: int, b: int) -> torch.Tensor:
        """Prediction rows a..b-1 as (n, 3, H, W) float32 in [0, 1]."""
        block = torch.from_numpy(np.ascontiguousarray(self.predictions[a:b])).permute(0, 3, 1, 2)
        return to_float(block) if block.dtype == torch.uint8 else block.float()

    def predict(self, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], tau float or (B,) -> (B, 3, H, W) float32 in [0, 1]."""
        if self.at < len(self.groups):
            return self.scored(x0, x2, tau)
        return self.figure(x0, x2, tau)

    def scored(self, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
        group, n = self.groups[self.at], len(x0)
        if float(tau) != group.j / (2 * group.k) or self.within + n > group.n:
            raise RuntimeError(f"scoring asked for {n} pairs at tau {float(tau):g}, expected the {group} group: "
                               "export.scored_groups no longer follows evaluate.evaluate_dof")
        a = group.offset + self.within
        self.within += n
        if self.within == group.n:
            self.at, self.within = self.at + 1, 0
        for name, x in (("x0", x0), ("x2", x2)):
            given = to_uint8(x).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
            if not np.array_equal(given, self.x[name][a:a + n]):
                raise RuntimeError(f"scoring's {name} differs from inputs rows {a}..{a + n - 1}: "
                                   "export.scored_groups no longer follows evaluate.evaluate_dof")
        self.served += n
        return self.rows(a, a + n)

    def figure(self, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
        if self.figure_rows is None:  # the inputs' test triplets of the largest gap: where the figures look
            k = max(self.inputs.gaps)
            idx = self.inputs.index
            rows = np.flatnonzero((idx["split"] == "test") & (idx["gap"] == k))
            a, b = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
            x0s, x2s = self.x["x0"][a:b], self.x["x2"][a:b]
            self.figure_rows = {(int(idx["j"][r]), x0s[r - a].tobytes(), x2s[r - a].tobytes()): int(r) for r in rows}
        k = max(self.inputs.gaps)
        taus = torch.as_tensor(tau, dtype=torch.float64).expand(len(x0))
        found = []
        for i in range(len(x0)):
            j = float(taus[i]) * 2 * k
            key = (round(j), *(to_uint8(x[i]).permute(1, 2, 0).numpy().tobytes() for x in (x0, x2)))
            if abs(j - round(j)) > 1e-3 or key not in self.figure_rows:  # tau arrives as float32 (j / 2k rounded)
                raise LookupError(f"no prediction for this pair at tau {float(taus[i]):g}")
            found.append(self.figure_rows[key])
        return torch.cat([self.rows(r, r + 1) for r in found])


def scored_splits(path, inputs: export.Inputs) -> list[str]:
    """The splits score-predictions scores: the inputs', in evaluate_dof's order."""
    from benchmarks.scoring import evaluate  # (matplotlib via report): not imported for the CLI's --help
    return [s for s in evaluate.evaluation_splits(path) if s in inputs.splits]


def plan_groups(path, inputs: export.Inputs) -> list[Group]:
    """Every group evaluate_dof scores on `path` at the inputs' splits, gaps and taus, with the inputs' row of each."""
    groups, offset, header = [], 0, h5format.read_header(path)  # read once, passed down
    for split, k, j, ds in export.scored_groups(header, scored_splits(header, inputs), inputs.gaps, inputs.all_taus):
        groups.append(Group(split, k, j, len(ds.index), offset))
        offset += len(ds.index)
    if offset != inputs.n:
        raise UserError(f"--inputs {inputs.path} holds {inputs.n} rows but {path} scores {offset} at its splits, gaps "
                        "and taus; export it again from this file with export-triplets")
    return groups


def check_source(config: ScoreConfig, inputs: export.Inputs) -> None:
    """The dataset file must be the one the inputs were exported from, byte for byte."""
    sha = h5format.sha256_file(Path(config.data))
    if sha != inputs.source_sha256:
        raise UserError(f"--data {config.data} (sha256 {sha[:12]}…) is not the file {inputs.path} was exported from "
                        f"({inputs.source_file}, sha256 {inputs.source_sha256[:12]}…); give that file as --data or "
                        "export again from this one")


def score_predictions(config: ScoreConfig) -> Path:
    """Score the predictions of `config` and write its output folder; returns the folder."""
    from benchmarks.engine.aggregate import RunResult, check_out
    from benchmarks.engine.load import reference_table
    from benchmarks.results import report
    from benchmarks.scoring import evaluate
    start = time.perf_counter()
    out = check_out(config)
    path = Path(config.data)
    dof = h5format.read_header(path).dof
    inputs = export.read_inputs(config.inputs)
    check_source(config, inputs)
    check_predictions(config.predictions, inputs, config.progress)
    report.check_reference_data(config.reference, {dof: path})  # before the scoring
    groups = plan_groups(path, inputs)
    served = Served(inputs, Path(config.predictions), groups)
    fields = {"method": config.name, "alpha": None, "kl": None, "seed": None, **dict.fromkeys(RECORD_KEYS),
              "lr_trials": None}
    row = evaluate.Row(label=config.name, predict=served.predict, fields=fields, shown=True, log=None)
    try:
        table = reference_table(config, path)
        part = evaluate.evaluate_dof(dof, path, [row], inputs.gaps, all_taus=inputs.all_taus, progress=config.progress,
                                    table=table, device=resolve_device(config.device),
                                    splits=scored_splits(path, inputs))
    finally:
        served.close()
    if served.served != inputs.n:
        raise RuntimeError(f"scored {served.served} of {inputs.n} predictions")
    result = RunResult(datasets={dof: part["dataset"]}, records=part["records"], ceiling=part["ceiling"],
                       examples={dof: part["examples"]}, strips={dof: part["strips"]}, curves={},
                       paths=part["paths"], triplets=part["triplets"], tables={dof: part["table"]},
                       wall_s=time.perf_counter() - start, evaluation={dof: part["timing"]})
    return report.write_output(config, result, out)
