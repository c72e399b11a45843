"""Reference renders for the v2 metrics: render poses through the dataset's render pool, cache them by config hash."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ibdata import h5format
from ibutil.errors import UserError
from ibutil.io import atomic_path, ensure_writable_folder
from render import backend
from render.dataset import GENERATOR, config_from_json
from render.presets import RenderConfig, scene_for

TABLE_VERSION = 1  # bump when what a cached table holds changes; old files are then rebuilt under a new hash
CHUNK_FRAMES = 240  # frames per pool task: big enough to amortise the task, small enough for a smooth progress bar


def dataset_config(path: str | os.PathLike) -> RenderConfig:
    """The RenderConfig stored in a dataset file's `config` attribute (what every table is built from)."""
    header = h5format.read_header(path)
    try:
        config = config_from_json(header.config)
    except (TypeError, UserError) as exc:  # a hand-written file whose config is not a RenderConfig
        raise UserError(f"{path}: its config attribute is not a render config ({exc}); "
                        "tables need a file written by render-dataset") from None
    if (config.dof, config.size) != (header.dof, header.image_size):
        raise UserError(f"{path}: its config attribute (dof {config.dof}, {config.size} px) does not describe the "
                        f"file (dof {header.dof}, {header.image_size} px); tables need a file written by "
                        "render-dataset")
    return config


def table_key(kind: str, config: RenderConfig, **params) -> dict:
    """What determines a table's pixels: the appearance fields of the config (not seed, lengths or speeds)."""
    return {"kind": kind, "version": TABLE_VERSION, "dof": config.dof, "size": config.size,
            "object": config.object, "supersample": config.supersample, "generator": GENERATOR, **params}


def key_hash(key: dict) -> str:
    """A short stable hash of a table key (the cache file name)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def render_poses(config: RenderConfig, poses: np.ndarray, size: int, supersample: int, workers: int = 1,
                 progress: bool = True, desc: str = "table") -> tuple[np.ndarray, np.ndarray, dict]:
    """Render poses (N, K, 4, 4) of config's scene in spawned GL workers: frames (N, size, size, 3) uint8,
    masks (N, size, size) uint8 and the renderer info. The same code path as render-dataset."""
    info = backend.probe_platform()
    chunks = [poses[i:i + CHUNK_FRAMES] for i in range(0, len(poses), CHUNK_FRAMES)]
    frames, masks = [], []
    # No more workers than chunks: each spawned worker pays the GL start-up (seconds) even if it gets no work.
    workers = max(1, min(workers, len(chunks)))
    pool = backend.render_pool(scene_for(config), size, supersample, info["platform"], workers)
    try:
        with tqdm(total=len(poses), unit="frame", desc=desc, disable=not progress) as bar:
            for f, m in pool.map(backend.render_task, chunks):
                frames.append(f)
                masks.append(m)
                bar.update(len(f))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return np.concatenate(frames), np.concatenate(masks), info


def cached(cache: str | os.PathLike, key: dict, build) -> dict[str, np.ndarray]:
    """The arrays of table `key` from `<cache>/tables/<kind>-<hash>.npz`, built by `build()` (a dict of
    arrays) and written atomically on a miss. `meta` (JSON: key, build seconds, renderer) is added."""
    folder = Path(cache) / "tables"
    path = folder / f"{key['kind']}-dof{key['dof']}-{key_hash(key)}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
            if json.loads(str(arrays["meta"]))["key"] == key:
                return arrays
        except (OSError, ValueError, KeyError):
            pass  # a damaged or foreign cache entry: build it again
    ensure_writable_folder(folder, "--cache")
    start = time.perf_counter()
    arrays, info = build()
    meta = {"key": key, "build_seconds": round(time.perf_counter() - start, 3), "renderer": info,
            "frames": int(len(arrays["frames"])) if "frames" in arrays else None}
    arrays = {**arrays, "meta": np.array(json.dumps(meta, sort_keys=True))}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # readers see a complete table or none; a file handle,
        np.savez_compressed(fh, **arrays)  # so numpy does not append a second .npz
    return arrays
