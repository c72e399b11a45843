"""export-triplets: every triplet the benchmark scores on a dataset file, as an HDF5 inputs file for models run elsewhere.

The layout (docs/your-method.md, section 3), version 1. N rows, one per scored target frame:

    x0, x2      (N, H, W, 3) uint8   the end frames of the window (t-k, t+k)
    tau         (N,) float64         j / 2k: where between x0 (0) and x2 (1) the target lies
    split       (N,) str             the split of the dataset file ("test", "heldout")
    sequence    (N,) int64           the sequence in that split
    start       (N,) int64           the window's first frame t-k (x0 is frame `start`, x2 frame `start + 2k`)
    gap         (N,) int64           k
    j           (N,) int64           the target is frame `start + j`, 1 <= j <= 2k-1
    well_posed  (N,) uint8           1 where the target's factors interpolate the ends' (the headline tables)

with attributes format = "inbetween-bench-triplets", version, source_sha256 (of the dataset file's
bytes), source_file, dof, splits, gaps and all_taus. The rows run in the order the benchmark scores
them (split, then gap, then j, then window), which `scored_groups` fixes for both this file and
score-predictions. A predictions file holds `frames` (N, H, W, 3), row i the prediction of row i.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from benchmarks.engine.config import BenchmarkConfig
from ibdata import h5format
from ibdata.triplets import TripletDataset, check_gaps, normalize_gaps
from ibutil.errors import UserError
from ibutil.io import atomic_path, ensure_writable_folder

FORMAT = "inbetween-bench-triplets"
VERSION = 1
INDEX = ("split", "sequence", "start", "gap", "j")  # what names a row
HEADLINE_TAU = 0.5  # the only tau --tau accepts: the benchmark scores every tau or the middle frame
CHUNK_ROWS = 256  # HDF5 chunk of the frame datasets (rows)


@dataclass(frozen=True)
class ExportConfig:
    """Every option of export-triplets."""

    data: str  # the dataset file (HDF5, format v1 or v2, e.g. from render-dataset) whose scored triplets to export
    out: str = "inputs.h5"  # the inputs file to write (atomically: nothing is left at this path on an error)
    splits: tuple[str, ...] = ()  # splits to export (default: every split the benchmark scores, test and heldout)
    gaps: tuple[int, ...] = BenchmarkConfig.gaps  # frame gaps k: the targets are frames t-k+1..t+k-1 of (t-k, t+k)
    tau: float | None = None  # 0.5: the middle frame only (the tables' headline); default: every tau = j/2k
    overwrite: bool = False  # replace an existing --out file
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        object.__setattr__(self, "gaps", normalize_gaps(tuple(self.gaps)))
        object.__setattr__(self, "splits", tuple(dict.fromkeys(self.splits)))
        if self.tau is not None and self.tau != HEADLINE_TAU:
            raise UserError(f"--tau must be {HEADLINE_TAU} (the middle frame) or left out (every tau j/2k), "
                            f"not {self.tau:g}: the benchmark scores one or the other")

    @property
    def all_taus(self) -> bool:
        return self.tau is None


def export_splits(data, asked: tuple[str, ...]) -> list[str]:
    """The splits to export, in the benchmark's order: the asked ones (all scored splits if none); UserError
    naming the scored splits for one the benchmark does not score. `data`: a file's path or its header."""
    from benchmarks.scoring import evaluate  # (torch, matplotlib): not imported for the CLI's --help
    header = h5format.read_header(data)
    scored = evaluate.evaluation_splits(header)
    for split in asked:
        if split not in scored:
            raise UserError(f"--split {split}: the benchmark does not score it in {header.path}; choose from "
                            f"{', '.join(scored)}")
    return [s for s in scored if not asked or s in asked]


def scored_groups(path, splits: list[str], gaps: tuple[int, ...],
                  all_taus: bool) -> Iterator[tuple[str, int, int, TripletDataset]]:
    """(split, k, j, windows) in the order evaluate.evaluate_dof scores them: split, then evaluate.scored_groups."""
    from benchmarks.scoring import evaluate
    for split in splits:
        for k, j, ds in evaluate.scored_groups(path, split, gaps, all_taus):
            yield split, k, j, ds


def export_triplets(config: ExportConfig) -> tuple[Path, int]:
    """Write the inputs file of `config`; returns its path and the number of rows."""
    path, out = Path(config.data), Path(config.out)
    if out.exists() and not config.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if out.is_dir():
        raise UserError(f"{out} is a folder; --out must name a file")
    ensure_writable_folder(out.parent)
    header = h5format.read_header(path)  # read once, passed down
    dof = header.dof
    splits = export_splits(header, config.splits)
    check_gaps(header, config.gaps, splits)  # the exported splits: score-predictions scores those; nothing here trains
    groups = list(scored_groups(header, splits, config.gaps, config.all_taus))
    if not groups:
        raise UserError(f"{path} has no scored triplet at gaps {' '.join(map(str, config.gaps))}")
    n = sum(len(ds.index) for *_, ds in groups)
    size = groups[0][3].image_size
    attrs: dict[str, Any] = {"format": FORMAT, "version": VERSION, "source_sha256": header.sha256,
                             "source_file": path.name, "dof": dof, "splits": splits,
                             "gaps": np.array(config.gaps, dtype=np.int64), "all_taus": config.all_taus,
                             "command": " ".join(["export-triplets", *sys.argv[1:]])}
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h:
        h.attrs.update(attrs)
        frames = {name: h.create_dataset(name, (n, size, size, 3), np.uint8, chunks=(min(n, CHUNK_ROWS), size, size, 3),
                                         compression="gzip", compression_opts=4) for name in ("x0", "x2")}
        columns: dict[str, list[np.ndarray]] = {name: [] for name in ("tau", *INDEX, "well_posed")}
        row, arrays = 0, {}
        for split, k, j, ds in tqdm(groups, desc=f"export dof{dof}", disable=not config.progress, leave=False):
            if split not in arrays:
                arrays = {split: h5format.read_split(path, split).frames}  # (S, T, H, W, 3) uint8, one split at a time
            s, t = ds.index[:, 0], ds.index[:, 1]  # window (t-k, t+k) of sequence s
            m = len(s)
            frames["x0"][row:row + m] = arrays[split][s, t - k]
            frames["x2"][row:row + m] = arrays[split][s, t + k]
            tau = j / (2 * k)
            columns["tau"].append(np.full(m, tau))
            columns["split"].append(np.full(m, split, dtype=object))
            columns["sequence"].append(s)
            columns["start"].append(t - k)
            columns["gap"].append(np.full(m, k, dtype=np.int64))
            columns["j"].append(np.full(m, j, dtype=np.int64))
            columns["well_posed"].append(ds.well_posed(None, tau).astype(np.uint8))
            row += m
        for name, parts in columns.items():
            values = np.concatenate(parts)
            if name == "split":
                h.create_dataset(name, data=values.astype(str).astype(object), dtype=h5py.string_dtype())
            else:
                h.create_dataset(name, data=values.astype(np.float64 if name == "tau" else
                                                          np.uint8 if name == "well_posed" else np.int64))
    return out, n


@dataclass(frozen=True)
class Inputs:
    """An inputs file's attributes and index, validated (read_inputs)."""

    path: Path
    n: int
    size: int
    dof: int
    source_sha256: str
    source_file: str
    splits: list[str]
    gaps: tuple[int, ...]
    all_taus: bool
    index: dict[str, np.ndarray]  # INDEX, tau and well_posed: (N,) each


def read_inputs(path) -> Inputs:
    """The attributes and index of an export-triplets file; UserError if it is not one."""
    path = Path(path)
    hint = "write one with export-triplets"
    if not path.is_file() or not h5py.is_hdf5(path):
        raise UserError(f"--inputs {path} is not an HDF5 file; {hint}")
    with h5py.File(path, "r") as h:
        if h.attrs.get("format") != FORMAT:
            raise UserError(f"--inputs {path} is not an inputs file (no format={FORMAT} attribute); {hint}")
        if int(h.attrs.get("version", 0)) != VERSION:
            raise UserError(f"--inputs {path} has layout version {h.attrs.get('version')}, this version reads "
                            f"{VERSION}; export it again with export-triplets")
        index = {name: h[name][()] for name in ("tau", *INDEX, "well_posed")}
        index["split"] = np.array([s.decode() if isinstance(s, bytes) else s for s in index["split"]])
        n, size = h["x0"].shape[0], h["x0"].shape[1]
        return Inputs(path, n, size, int(h.attrs["dof"]), str(h.attrs["source_sha256"]), str(h.attrs["source_file"]),
                      [str(s) for s in h.attrs["splits"]], tuple(int(k) for k in h.attrs["gaps"]),
                      bool(h.attrs["all_taus"]), index)
