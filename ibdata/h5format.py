"""HDF5 format v2 ("inbetween-sequences"): the one module that writes, validates and reads dataset files (v1 too).

The contract is documented in docs/dataset-format.md; change it only with a new FORMAT_VERSION. The renderer
writes through DatasetWriter; every reader takes a file's facts from one DatasetHeader (read_header).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from ibutil import io as ibio
from ibutil.errors import UserError
from ibutil.io import ensure_writable_folder, temp_path, write_text_atomic

FORMAT = "inbetween-sequences"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
SPLITS = ("train", "test")  # the splits every file has, v1 included
ALL_SPLITS = ("train", "val", "test", "heldout")  # every split a v2 render-dataset file has, in file order
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


def croissant_path(path: Path) -> Path:
    """The Croissant JSON-LD description beside a dataset file: NAME.croissant.json for NAME.h5."""
    path = Path(path)
    return path.with_name(path.stem + ".croissant.json")


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files of `path` and its sidecars left by processes that are dead; returns them."""
    return ibio.remove_stale_temps(path, manifest_path(path), card_path(path), croissant_path(path))


def card_path(path: Path) -> Path:
    """The markdown dataset card beside a dataset file."""
    return path.with_name(path.name + ".md")


def sha256_file(path: Path, check: Callable[[], None] | None = None) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (`check`, if given, called after each)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            if check is not None:
                check()
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
    """The root attributes of a v2 file (format and format_version are implied)."""

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
    camera: dict[str, Any] | None = None  # v2: type, intrinsics, pose (render.scene.camera_json); with it every
    # split stores poses (S, T, K, 4, 4), K = len(objects)
    heldout: dict[str, Any] | None = None  # v2: the held-out region and margin (ibdata.tasks.HeldoutRegion) + protocol


class DatasetWriter:
    """Stream sequences into a temporary file beside `path`; rename it into place only on success.

    Use as a context manager. Sequences of a split must be written in index order, which lets
    the writer hash each array as it goes. On an exception the temporary file is removed and
    nothing appears at `path`.
    """

    def __init__(self, path: Path, header: Header, shapes: dict[str, tuple[int, int]], card: str,
                 overwrite: bool = False, croissant: Callable[[str], str] | None = None):
        self.path = Path(path)
        self.header = header
        self.shapes = shapes  # split -> (S sequences, T frames); train and test required, val and heldout optional
        self.card = card
        self.croissant = croissant  # the file's sha256 -> Croissant JSON-LD text, written beside the file
        self.overwrite = overwrite
        self._tmp = temp_path(self.path)
        self._file: h5py.File | None = None
        self._next: dict[str, int] = {}
        self._hashes: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> DatasetWriter:
        check_target(self.path, self.overwrite)
        missing = [s for s in SPLITS if s not in self.shapes]
        if missing or set(self.shapes) - set(ALL_SPLITS):
            raise ValueError(f"splits must include {SPLITS} and be among {ALL_SPLITS}, got {tuple(self.shapes)}")
        remove_stale_temps(self.path)
        try:
            return self._create()
        except BaseException:  # __exit__ does not run when __enter__ fails: remove the half-made file here
            if self._file is not None:
                self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise

    def _create(self) -> DatasetWriter:
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
        for key in ("shard", "camera", "heldout"):
            if getattr(h, key) is not None:
                f.attrs[key] = json.dumps(getattr(h, key), sort_keys=True)
        n_factors, n_objects = len(h.factor_names), len(h.objects)
        for split in ALL_SPLITS:  # file order, whatever the order of `shapes`
            if split not in self.shapes:
                continue
            n_seq, n_frames = self.shapes[split]
            g = f.create_group(split)
            tc = max(1, min(n_frames, CHUNK_BYTES // (size * size * 3)))
            layouts = {
                "frames": ((n_seq, n_frames, size, size, 3), np.uint8, (1, tc, size, size, 3)),
                "factors": ((n_seq, n_frames, n_factors), np.float32, (1, n_frames, n_factors)),
                "masks": ((n_seq, n_frames, size, size), np.uint8, (1, tc, size, size)),
            }
            if h.camera is not None:
                layouts["poses"] = ((n_seq, n_frames, n_objects, 4, 4), np.float32, (1, n_frames, n_objects, 4, 4))
            if split == "heldout":
                layouts["scored"] = ((n_seq, n_frames), np.uint8, (1, n_frames))
            for name, (shape, dtype, chunks) in layouts.items():
                # An empty split (the heldout split of --protocol paper) cannot be chunked: store it plain.
                opts = dict(chunks=chunks, compression="gzip", compression_opts=GZIP_LEVEL) if n_seq else {}
                g.create_dataset(name, shape, dtype, **opts)
            self._next[split] = 0
            self._hashes[split] = {name: hashlib.sha256() for name in g}
        return self

    def write_sequence(self, split: str, index: int, frames: np.ndarray, factors: np.ndarray,
                       masks: np.ndarray, poses: np.ndarray | None = None, scored: np.ndarray | None = None) -> None:
        """Write sequence `index` of `split`: frames (T,H,W,3) uint8, factors (T,F), masks (T,H,W) uint8,
        poses (T,K,4,4) (files with a camera) and scored (T,) bool (the heldout split)."""
        if index != self._next[split]:
            raise RuntimeError(f"sequences must be written in order: expected {self._next[split]}, got {index}")
        arrays = {
            "frames": np.ascontiguousarray(frames, dtype=np.uint8),
            "factors": np.ascontiguousarray(factors, dtype=np.float32),
            "masks": np.ascontiguousarray(masks, dtype=np.uint8),
        }
        g = self._file[split]
        for name, value, dtype in (("poses", poses, np.float32), ("scored", scored, np.uint8)):
            if (name in g) != (value is not None):
                raise ValueError(f"{split}/{name}: {'missing' if name in g else 'not part of this file'}")
            if value is not None:
                arrays[name] = np.ascontiguousarray(value, dtype=dtype)
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
        if exc_type is not None or short:
            try:
                f.close()
            finally:  # even if a second Ctrl-C lands in close()
                self._tmp.unlink(missing_ok=True)
            if exc_type is None:
                raise RuntimeError(f"split(s) {', '.join(short)} were not fully written")
            return
        try:
            f.close()
            # Sidecars first, the data file last: whatever is at `path` is complete.
            digest = sha256_file(self._tmp)
            write_text_atomic(manifest_path(self.path), f"{digest}  {self.path.name}\n")
            write_text_atomic(card_path(self.path), self.card)
            if self.croissant is not None:
                write_text_atomic(croissant_path(self.path), self.croissant(digest))
            os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)  # gone after the rename; removed if a second Ctrl-C lands before it


# ----------------------------------------------------------------------------- reading


def open_dataset(path: str | os.PathLike) -> h5py.File:
    """Open a v1 or v2 file read-only after validating its schema; raises UserError naming the problem."""
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
    """Check a file against the v1 or v2 schema (attributes, groups, shapes, dtypes); raises UserError."""
    fmt = _attr_str(f.attrs.get("format"))
    if fmt != FORMAT:
        raise UserError(f"{name} is not an {FORMAT} dataset (format attribute: {fmt!r}); "
                        "give a file written by render-dataset")
    version = f.attrs.get("format_version")
    if version is None or int(version) not in READABLE_VERSIONS:
        raise UserError(f"{name} has format_version {version}, but this version of inbetween-bench reads "
                        f"versions {', '.join(map(str, READABLE_VERSIONS))}; install a matching release or "
                        "re-render the file")
    version = int(version)
    missing = [a for a in ROOT_ATTRS if a not in f.attrs]
    if missing:
        raise UserError(f"{name} lacks root attributes {', '.join(missing)}; the file is not a valid v{version} dataset")
    size, n_factors = int(f.attrs["image_size"]), len(f.attrs["factor_names"])
    if len(f.attrs["factor_units"]) != n_factors:
        raise UserError(f"{name}: factor_units and factor_names differ in length")
    n_objects = len(json.loads(_attr_str(f.attrs["objects"])))
    for split in SPLITS if version == 1 else ALL_SPLITS:
        if split not in f:
            if split in SPLITS:
                raise UserError(f"{name} has no '{split}' group; the file is not a valid v{version} dataset")
            continue
        g = f[split]
        for arr in ("frames", "factors", "masks") + (("scored",) if split == "heldout" else ()):
            if arr not in g:
                raise UserError(f"{name}: {split}/{arr} is missing")
        s, t = g["frames"].shape[:2]
        expected = {
            "frames": ((s, t, size, size, 3), np.uint8),
            "factors": ((s, t, n_factors), np.float32),
            "masks": ((s, t, size, size), np.uint8),
            "poses": ((s, t, n_objects, 4, 4), np.float32),
            "scored": ((s, t), np.uint8),
        }
        if ("poses" in g) != ("camera" in f.attrs):
            raise UserError(f"{name}: a v2 file has both the camera attribute and {split}/poses, or neither")
        for arr, (shape, dtype) in expected.items():
            if arr not in g:
                continue
            if g[arr].shape != shape or g[arr].dtype != dtype:
                raise UserError(f"{name}: {split}/{arr} has shape {g[arr].shape} {g[arr].dtype}, "
                                f"expected {shape} {np.dtype(dtype)}")


@dataclass(frozen=True, kw_only=True)
class DatasetHeader(Header):
    """Everything a reader needs to know about a file but its arrays: read once (read_header) and passed down.

    The root attributes (Header's fields, JSON ones decoded) plus where the file is, its format version and
    the (sequences, frames) of each split it has.
    """

    path: Path
    format_version: int
    shapes: dict[str, tuple[int, int]]  # split -> (S sequences, T frames), the file's splits in file order

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits present, in file order (v1: train, test; v2 render: all four)."""
        return tuple(self.shapes)

    def n_frames(self, split: str) -> int:
        """T, the frames per sequence of `split`."""
        return self.shapes[split][1]

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the file's bytes, computed the first time it is asked for (whole-file read)."""
        return sha256_file(self.path)


def read_header(source: str | os.PathLike | h5py.File | DatasetHeader) -> DatasetHeader:
    """The header of a file: a path (opened, validated and closed) or a file open_dataset returned.

    A header given is returned as it is, so a function can take a path or the header its caller read.
    """
    if isinstance(source, DatasetHeader):
        return source
    if not isinstance(source, h5py.File):
        with open_dataset(source) as f:
            return read_header(f)
    f = source
    values: dict[str, Any] = {key: json.loads(_attr_str(f.attrs[key])) if key in f.attrs else None
                              for key in ("shard", "camera", "heldout")}
    for key in ROOT_ATTRS[2:]:  # format and format_version are implied
        value = f.attrs[key]
        if key in ("objects", "config", "renderer"):
            values[key] = json.loads(_attr_str(value))
        elif key in ("factor_names", "factor_units"):
            values[key] = tuple(_attr_str(v) for v in value)
        elif isinstance(value, (np.integer, int)):
            values[key] = int(value)
        else:
            values[key] = _attr_str(value)
    shapes = {s: tuple(int(n) for n in f[s]["frames"].shape[:2]) for s in file_splits(f)}
    return DatasetHeader(**values, path=Path(f.filename), format_version=int(f.attrs["format_version"]),
                         shapes=shapes)


def file_splits(f: h5py.File) -> tuple[str, ...]:
    """The splits present in an open file, in file order (v1: train, test; v2 render: all four)."""
    return tuple(s for s in ALL_SPLITS if s in f)


def require_split(f: h5py.File, split: str, name: str = "file") -> h5py.Group:
    """The group of `split`; UserError (one line) if the name is unknown or the file lacks it (a v1 file)."""
    if split not in ALL_SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(ALL_SPLITS)}")
    if split not in f:
        raise UserError(f"{name} has no {split} split (format v{int(f.attrs['format_version'])}); "
                        "re-render it with this version of render-dataset")
    return f[split]


def require_field(f: h5py.File, field: str, name: str = "file") -> None:
    """UserError (one line) if the file lacks a v2 field: an attribute (camera, heldout) or SPLIT/ARRAY."""
    present = field in f.attrs if "/" not in field else field in f
    if not present:
        raise UserError(f"{name} has no {field} (format v{int(f.attrs['format_version'])}, or not written by "
                        "render-dataset); re-render it with this version of render-dataset")


@dataclass(frozen=True)
class SplitArrays:
    """One split loaded into memory."""

    frames: np.ndarray  # (S, T, H, W, 3) uint8
    factors: np.ndarray  # (S, T, F) float32
    masks: np.ndarray  # (S, T, H, W) uint8
    poses: np.ndarray | None = None  # (S, T, K, 4, 4) float32 object-to-world; None where the file has no camera
    scored: np.ndarray | None = None  # (S, T) bool, heldout only: frame lies in the held-out region


def read_split(path: str | os.PathLike, split: str) -> SplitArrays:
    """Load one split ('train', 'val', 'test' or 'heldout') of a validated file into memory."""
    if split not in ALL_SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(ALL_SPLITS)}")
    with open_dataset(path) as f:
        g = require_split(f, split, str(path))
        try:
            return SplitArrays(g["frames"][()], g["factors"][()], g["masks"][()],
                               g["poses"][()] if "poses" in g else None,
                               g["scored"][()].astype(bool) if "scored" in g else None)
        except OSError as exc:
            raise UserError(f"{path}: cannot read {split} ({_first_line(exc)}); the file is truncated or corrupt") from None


@dataclass(frozen=True)
class Verification:
    """What verify() checked."""

    manifest: str  # "ok", "missing" (no manifest beside the file)
    arrays: dict[str, bool]  # "split/array" -> content hash matches


def verify(path: str | os.PathLike, check: Callable[[], None] | None = None) -> Verification:
    """Validate the schema, the sha256 manifest (if present) and every array's content hash.

    Raises UserError on the first mismatch. `check` (e.g. a StopFlag's check) is called after each
    sequence read and each block hashed, the safe points of a long verification.
    """
    path = Path(path)
    with open_dataset(path) as f:
        arrays = {}
        for split in file_splits(f):
            for name in f[split]:
                ds = f[split][name]
                stored = _attr_str(ds.attrs.get("sha256"))
                h = hashlib.sha256()
                try:
                    for s in range(ds.shape[0]):
                        h.update(np.ascontiguousarray(ds[s]).tobytes())
                        if check is not None:
                            check()
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
    if sha256_file(path, check) != expected:
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
