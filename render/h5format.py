"""HDF5 format v1 ("inbetween-sequences"): the one module that writes, validates and reads dataset files.

The contract is documented in docs/dataset-format.md; change it only with a new FORMAT_VERSION.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ibutil.errors import UserError
from ibutil.io import ensure_writable_folder, write_text_atomic

FORMAT = "inbetween-sequences"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
ROOT_ATTRS = (
    "format", "format_version", "dof", "preset", "image_size", "seed", "factor_names",
    "factor_units", "objects", "config", "generator", "renderer",
)
# Chunks hold whole frames of one sequence and stay near this many bytes, so reading one
# sequence touches only its own chunks whatever the image size.
CHUNK_BYTES = 1 << 20
GZIP_LEVEL = 4
_STR = h5py.string_dtype("utf-8")


def manifest_path(path: Path) -> Path:
    """The sha256 manifest beside a dataset file (`sha256sum -c` format)."""
    return path.with_name(path.name + ".sha256")


def card_path(path: Path) -> Path:
    """The markdown dataset card beside a dataset file."""
    return path.with_name(path.name + ".md")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_target(path: Path, overwrite: bool) -> None:
    """Fail early (UserError) if `path` exists without overwrite, or its folder cannot be written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it or choose another --out")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file path ending in .h5 for --out")
    ensure_writable_folder(path.parent)


@dataclass(frozen=True)
class Header:
    """The root attributes of a v1 file (format and format_version are implied)."""

    dof: int
    preset: str
    image_size: int
    seed: int
    factor_names: tuple[str, ...]
    factor_units: tuple[str, ...]
    objects: list[dict[str, Any]]  # stored as JSON
    config: dict[str, Any]  # the full render config, stored as JSON
    generator: str  # e.g. "inbetween-bench 0.1.0"
    renderer: dict[str, Any]  # pyrender version, GL platform and renderer string, stored as JSON
    shard: dict[str, Any] | None = None  # shard files only: {"index", "count", "sequences": {split: [start, stop]}}


class DatasetWriter:
    """Stream sequences into a temporary file beside `path`; rename it into place only on success.

    Use as a context manager. Sequences of a split must be written in index order, which lets
    the writer hash each array as it goes. On an exception the temporary file is removed and
    nothing appears at `path`.
    """

    def __init__(self, path: Path, header: Header, shapes: dict[str, tuple[int, int]], card: str,
                 overwrite: bool = False):
        self.path = Path(path)
        self.header = header
        self.shapes = shapes  # split -> (S sequences, T frames)
        self.card = card
        self.overwrite = overwrite
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._file: h5py.File | None = None
        self._next: dict[str, int] = {}
        self._hashes: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> DatasetWriter:
        check_target(self.path, self.overwrite)
        h, size = self.header, self.header.image_size
        f = self._file = h5py.File(self._tmp, "w")
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = np.int64(FORMAT_VERSION)
        f.attrs["dof"] = np.int64(h.dof)
        f.attrs["preset"] = h.preset
        f.attrs["image_size"] = np.int64(size)
        f.attrs["seed"] = np.int64(h.seed)
        f.attrs.create("factor_names", np.array(h.factor_names, dtype=object), dtype=_STR)
        f.attrs.create("factor_units", np.array(h.factor_units, dtype=object), dtype=_STR)
        f.attrs["objects"] = json.dumps(h.objects, sort_keys=True)
        f.attrs["config"] = json.dumps(h.config, sort_keys=True)
        f.attrs["generator"] = h.generator
        f.attrs["renderer"] = json.dumps(h.renderer, sort_keys=True)
        if h.shard is not None:
            f.attrs["shard"] = json.dumps(h.shard, sort_keys=True)
        n_factors = len(h.factor_names)
        for split, (n_seq, n_frames) in self.shapes.items():
            g = f.create_group(split)
            tc = max(1, min(n_frames, CHUNK_BYTES // (size * size * 3)))
            opts = dict(compression="gzip", compression_opts=GZIP_LEVEL)
            g.create_dataset("frames", (n_seq, n_frames, size, size, 3), np.uint8,
                             chunks=(1, tc, size, size, 3), **opts)
            g.create_dataset("factors", (n_seq, n_frames, n_factors), np.float32,
                             chunks=(1, n_frames, n_factors), **opts)
            g.create_dataset("masks", (n_seq, n_frames, size, size), np.uint8,
                             chunks=(1, tc, size, size), **opts)
            self._next[split] = 0
            self._hashes[split] = {name: hashlib.sha256() for name in ("frames", "factors", "masks")}
        return self

    def write_sequence(self, split: str, index: int, frames: np.ndarray, factors: np.ndarray,
                       masks: np.ndarray) -> None:
        """Write sequence `index` of `split`: frames (T,H,W,3) uint8, factors (T,F), masks (T,H,W) uint8."""
        if index != self._next[split]:
            raise RuntimeError(f"sequences must be written in order: expected {self._next[split]}, got {index}")
        arrays = {
            "frames": np.ascontiguousarray(frames, dtype=np.uint8),
            "factors": np.ascontiguousarray(factors, dtype=np.float32),
            "masks": np.ascontiguousarray(masks, dtype=np.uint8),
        }
        g = self._file[split]
        for name, arr in arrays.items():
            if arr.shape != g[name].shape[1:]:
                raise ValueError(f"{split}/{name}: sequence shape {arr.shape} != {g[name].shape[1:]}")
            g[name][index] = arr
            self._hashes[split][name].update(arr.tobytes())
        self._next[split] += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        f, self._file = self._file, None
        short = [s for s, (n_seq, _) in self.shapes.items() if self._next[s] != n_seq]
        if exc_type is None and not short:
            for split in self.shapes:
                for name, h in self._hashes[split].items():
                    f[split][name].attrs["sha256"] = h.hexdigest()
        f.close()
        if exc_type is not None or short:
            self._tmp.unlink(missing_ok=True)
            if exc_type is None:
                raise RuntimeError(f"split(s) {', '.join(short)} were not fully written")
            return
        # Sidecars first, the data file last: whatever is at `path` is complete.
        digest = sha256_file(self._tmp)
        write_text_atomic(manifest_path(self.path), f"{digest}  {self.path.name}\n")
        write_text_atomic(card_path(self.path), self.card)
        os.replace(self._tmp, self.path)


# ----------------------------------------------------------------------------- reading


def open_dataset(path: str | os.PathLike) -> h5py.File:
    """Open a v1 file read-only after validating its schema; raises UserError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an HDF5 dataset file")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an HDF5 file; give a file written by render-dataset")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"{path} is truncated or corrupt ({_first_line(exc)}); re-download or re-render it") from None
    try:
        validate(f, str(path))
    except BaseException:
        f.close()
        raise
    return f


def validate(f: h5py.File, name: str = "file") -> None:
    """Check a file against the v1 schema (attributes, groups, shapes, dtypes); raises UserError."""
    fmt = _attr_str(f.attrs.get("format"))
    if fmt != FORMAT:
        raise UserError(f"{name} is not an {FORMAT} dataset (format attribute: {fmt!r}); "
                        "give a file written by render-dataset")
    version = f.attrs.get("format_version")
    if version is None or int(version) != FORMAT_VERSION:
        raise UserError(f"{name} has format_version {version}, but this version of inbetween-bench reads "
                        f"only version {FORMAT_VERSION}; install a matching release or re-render the file")
    missing = [a for a in ROOT_ATTRS if a not in f.attrs]
    if missing:
        raise UserError(f"{name} lacks root attributes {', '.join(missing)}; the file is not a valid v1 dataset")
    size, n_factors = int(f.attrs["image_size"]), len(f.attrs["factor_names"])
    if len(f.attrs["factor_units"]) != n_factors:
        raise UserError(f"{name}: factor_units and factor_names differ in length")
    for split in SPLITS:
        if split not in f:
            raise UserError(f"{name} has no '{split}' group; the file is not a valid v1 dataset")
        g = f[split]
        for arr in ("frames", "factors", "masks"):
            if arr not in g:
                raise UserError(f"{name}: {split}/{arr} is missing")
        s, t = g["frames"].shape[:2]
        expected = {
            "frames": ((s, t, size, size, 3), np.uint8),
            "factors": ((s, t, n_factors), np.float32),
            "masks": ((s, t, size, size), np.uint8),
        }
        for arr, (shape, dtype) in expected.items():
            if g[arr].shape != shape or g[arr].dtype != dtype:
                raise UserError(f"{name}: {split}/{arr} has shape {g[arr].shape} {g[arr].dtype}, "
                                f"expected {shape} {np.dtype(dtype)}")


def read_header(f: h5py.File) -> dict[str, Any]:
    """The root attributes as plain Python values (JSON attributes decoded; `shard` None if absent)."""
    out: dict[str, Any] = {"shard": json.loads(_attr_str(f.attrs["shard"])) if "shard" in f.attrs else None}
    for key in ROOT_ATTRS:
        value = f.attrs[key]
        if key in ("objects", "config", "renderer"):
            out[key] = json.loads(_attr_str(value))
        elif key in ("factor_names", "factor_units"):
            out[key] = [_attr_str(v) for v in value]
        elif isinstance(value, (np.integer, int)):
            out[key] = int(value)
        else:
            out[key] = _attr_str(value)
    return out


@dataclass(frozen=True)
class SplitArrays:
    """One split loaded into memory."""

    frames: np.ndarray  # (S, T, H, W, 3) uint8
    factors: np.ndarray  # (S, T, F) float32
    masks: np.ndarray  # (S, T, H, W) uint8


def read_split(path: str | os.PathLike, split: str) -> SplitArrays:
    """Load one split ('train' or 'test') of a validated v1 file into memory."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    with open_dataset(path) as f:
        g = f[split]
        try:
            return SplitArrays(g["frames"][()], g["factors"][()], g["masks"][()])
        except OSError as exc:
            raise UserError(f"{path}: cannot read {split} ({_first_line(exc)}); the file is truncated or corrupt") from None


@dataclass(frozen=True)
class Verification:
    """What verify() checked."""

    manifest: str  # "ok", "missing" (no manifest beside the file)
    arrays: dict[str, bool]  # "split/array" -> content hash matches


def verify(path: str | os.PathLike) -> Verification:
    """Validate the schema, the sha256 manifest (if present) and every array's content hash.

    Raises UserError on the first mismatch.
    """
    path = Path(path)
    with open_dataset(path) as f:
        arrays = {}
        for split in SPLITS:
            for name in ("frames", "factors", "masks"):
                ds = f[split][name]
                stored = _attr_str(ds.attrs.get("sha256"))
                h = hashlib.sha256()
                try:
                    for s in range(ds.shape[0]):
                        h.update(np.ascontiguousarray(ds[s]).tobytes())
                except OSError as exc:
                    raise UserError(f"{path}: cannot read {split}/{name} ({_first_line(exc)}); "
                                    "the file is truncated or corrupt") from None
                if stored != h.hexdigest():
                    raise UserError(f"{path}: {split}/{name} content does not match its sha256 attribute; "
                                    "the file is corrupt")
                arrays[f"{split}/{name}"] = True
    manifest = manifest_path(path)
    if not manifest.exists():
        return Verification("missing", arrays)
    expected = manifest.read_text(encoding="utf-8").split()[0]
    if sha256_file(path) != expected:
        raise UserError(f"{path} does not match its manifest {manifest.name}; re-download or re-render it")
    return Verification("ok", arrays)


def _attr_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
