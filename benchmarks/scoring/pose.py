"""Pose error for DoF 1 and 2: nearest neighbour in a densely rendered lookup table, geodesic error on SO(3).

A table renders the dataset's object at a regular grid of factors with the dataset's size,
supersampling, camera and lights (its stored RenderConfig), through the same render pool as
render-dataset, so a table frame at a dataset frame's pose has the same pixels. A predicted frame's
pose is the pose of the table frame with the highest cosine similarity (docs/benchmark.md), found
exactly by benchmarks.scoring.nearest at a fraction of a brute-force product's cost.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks.scoring import nearest, tables
from ibdata.frames import to_float
from ibutil.errors import UserError
from render.presets import RenderConfig, poses_from_factors

# Grid spacing in degrees per DoF (issue 13: at most 0.5 deg for DoF 1, at most 2 deg for DoF 2).
DEFAULT_STEP_DEG = {1: 0.5, 2: 2.0}
# What a frame with no light at all (all zeros, so no cosine) scores: the largest possible values.
BLACK_NN_DISTANCE = 1.0
BLACK_POSE_ERROR_DEG = 180.0
BATCH = 256  # predictions per search call
DISTINCT_STRIDE = 61  # distinct(): every 61st pixel of a row keys it (51 of 3,072 at 32 px)
# Grid steps per side of a search block (benchmarks.scoring.nearest): 16 neighbouring poses, whose frames look alike.
BLOCK_SIDE = {1: 16, 2: 4}


@dataclass(frozen=True)
class PoseTable:
    """A rendered grid of poses of one dataset's object, size, camera and lights."""

    config: RenderConfig  # the dataset's render config (dof 1 or 2)
    step_deg: float  # grid spacing per factor
    factors: np.ndarray  # (N, F) float64 degrees: rot_x (dof 1), (rot_x, rot_y) (dof 2) on the grid
    frames: np.ndarray  # (N, H, W, 3) uint8
    meta: dict  # cache key, build seconds, renderer
    search: dict | None = field(default=None, repr=False, compare=False)  # nearest.build's arrays (None: built here)
    rotations: np.ndarray = field(init=False, repr=False)  # (N, 3, 3) object rotation of each table frame
    _unit: dict = field(init=False, repr=False, compare=False)  # device -> (N, H*W*3) float32 unit rows
    _index: dict = field(init=False, repr=False, compare=False)  # device -> nearest.Index

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotations", rotations(self.config, self.factors))
        object.__setattr__(self, "_unit", {})
        object.__setattr__(self, "_index", {})

    def index(self, device: torch.device) -> nearest.Index:
        """The exact search index of the table on `device` (benchmarks.scoring.nearest), made once per device."""
        key = str(device)
        if key not in self._index:
            arrays = self.search if self.search is not None else \
                nearest.build(self.rows(), groups=search_blocks(self.config.dof, self.step_deg))
            self._index[key] = nearest.Index.on(self.rows(), arrays, device)
        return self._index[key]

    def rows(self) -> np.ndarray:
        """The table frames as rows (N, H*W*3) uint8, in the HWC order predictions are flattened to."""
        return self.frames.reshape(len(self.frames), -1)

    def unit_rows(self, device: torch.device) -> torch.Tensor:
        """Table frames as unit-norm rows on `device`: (N, H*W*3) float32, computed once per device."""
        key = str(device)
        if key not in self._unit:
            x = to_float(self.frames.reshape(len(self.frames), -1), device)
            self._unit[key] = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self._unit[key]

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes)


def grid(dof: int, step_deg: float) -> np.ndarray:
    """The table's factors: every multiple of step in [0, 360) per rotation axis: (N, dof) float64."""
    angles = np.arange(round(360.0 / step_deg)) * step_deg
    if dof == 1:
        return angles[:, None]
    rx, ry = np.meshgrid(angles, angles, indexing="ij")
    return np.stack([rx.ravel(), ry.ravel()], axis=1)


def search_blocks(dof: int, step_deg: float) -> np.ndarray:
    """The search blocks of grid(dof, step_deg): tiles of BLOCK_SIDE[dof] steps per factor, (K, G) row indices."""
    return nearest.tiles((round(360.0 / step_deg),) * dof, BLOCK_SIDE[dof])


def rotations(config: RenderConfig, factors: np.ndarray) -> np.ndarray:
    """Object rotations of factors (N, F) through the dataset's own factor-to-pose map: (N, 3, 3)."""
    return poses_from_factors(config, factors)[:, 0, :3, :3]  # scale 1 for dof 1, 2


def pose_table(config: RenderConfig, cache: str | os.PathLike, step_deg: float | None = None,
               workers: int | None = None, progress: bool = True) -> PoseTable:
    """The lookup table of `config`'s object: loaded from `<cache>/tables/`, or rendered and cached."""
    if config.dof not in DEFAULT_STEP_DEG:
        raise UserError(f"pose tables exist for dof 1 and 2, not {config.dof}; dof 6 uses position_metrics")
    step = float(DEFAULT_STEP_DEG[config.dof] if step_deg is None else step_deg)
    n = 360.0 / step
    if step <= 0 or abs(n - round(n)) > 1e-9:
        raise UserError(f"the table step must divide 360 degrees evenly, not {step}")
    factors = grid(config.dof, step)

    def build():
        if progress:  # the slow part of a first run: say what it is and that it happens once
            print(f"pose table dof{config.dof}: rendering {len(factors):,} poses on a {step:g} deg grid once, "
                  f"cached in {os.path.join(str(cache), 'tables')} for every later run", file=sys.stderr)
        poses = poses_from_factors(config, factors)
        frames, _, info = tables.render_poses(config, poses, config.size, config.supersample,
                                              workers or os.cpu_count() or 1, progress, f"pose table dof{config.dof}")
        return {"frames": frames, "factors": factors}, info

    key = tables.table_key("pose-table", config, step_deg=step)
    arrays = tables.cached(cache, key, build)
    frames = arrays["frames"]
    # The search index (seconds to build) is cached beside its table, keyed by the table and the index settings.
    blocks = search_blocks(config.dof, step)
    search = tables.cached(cache, key | {"kind": "pose-search", "format": 2, "dims": nearest.DIMS,
                                         "fine_dims": nearest.FINE_DIMS, "block_side": BLOCK_SIDE[config.dof]},
                           lambda: (nearest.build(frames.reshape(len(frames), -1), groups=blocks), {}))
    return PoseTable(config, step, arrays["factors"], frames, json.loads(str(arrays["meta"])),
                     search={k: search[k] for k in nearest.ARRAYS})


def _as_rows(pred, device: torch.device) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] (numpy or torch) -> (N, H*W*3) float32 rows in the table's HWC order."""
    x = pred if isinstance(pred, torch.Tensor) else torch.from_numpy(np.asarray(pred))
    if x.ndim != 4 or x.shape[1] != 3:
        raise UserError(f"predictions must have shape (N, 3, H, W), got {tuple(x.shape)}")
    return x.to(device, torch.float32).permute(0, 2, 3, 1).reshape(len(x), -1)


def recover(pred, table: PoseTable, device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest table frame of each prediction by cosine similarity (exact: benchmarks.scoring.nearest; equal
    cosines go to the lowest table index).

    pred (N, 3, H, W) in [0, 1] -> (index into the table (N,) int64, cosine distance 1 - cos (N,)
    float64 in [0, 1] for non-negative images). An all-black frame has no direction: index -1 and
    distance BLACK_NN_DISTANCE.
    """
    device = torch.device(device or (pred.device if isinstance(pred, torch.Tensor) else "cpu"))
    size = table.frames.shape[1]
    if len(pred.shape) != 4 or pred.shape[1] != 3:
        raise UserError(f"predictions must have shape (N, 3, H, W), got {tuple(pred.shape)}")
    if tuple(pred.shape[2:]) != (size, size):
        raise UserError(f"predictions are {tuple(pred.shape[2:])} px but the table is {size}x{size}; "
                        "score frames of the table's dataset")
    search = table.index(device)
    index, distance = [], []
    for start in range(0, len(pred), BATCH):
        rows = _as_rows(pred[start:start + BATCH], device)  # (B, D)
        black = ~(rows != 0).any(dim=1)
        arg = torch.full((len(rows),), -1, dtype=torch.int64, device=device)
        best = torch.full((len(rows),), BLACK_NN_DISTANCE, dtype=torch.float64, device=device)
        if not black.all():
            lit = rows[~black]
            first, inverse = distinct(lit)  # a frame drawn many times (mean-frame's) is searched once
            found, nearest_distance, _ = nearest.search(search, lit[first])
            arg[~black], best[~black] = found[inverse], nearest_distance[inverse]
        index.append(arg.cpu())
        distance.append(best.cpu())
    return torch.cat(index).numpy(), torch.cat(distance).numpy()


def distinct(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The byte-distinct rows of (B, D) float32 rows: the first row of each set of byte-equal rows (U,) int64 and
    each row's set (B,) int64, so rows[first][inverse] equals rows. Keyed on every DISTINCT_STRIDE-th pixel, then
    checked on every pixel (rows that share a key but differ elsewhere stay apart)."""
    x = rows.cpu().numpy().view(np.uint32)  # (B, D): the bytes (-0.0 and 0.0 differ; both search the same)
    b = len(x)
    key = np.ascontiguousarray(x[:, ::DISTINCT_STRIDE])  # (B, k)
    _, lead, group = np.unique(key.view(np.dtype((np.void, key.shape[1] * 4))).ravel(), return_index=True,
                               return_inverse=True)
    if len(lead) == b:  # every key distinct, so every row: the common case, at 0.1 us a row
        every = torch.arange(b)
        return every, every
    lead = lead[group.ravel()]  # (B,) the first row with each row's key
    same = (x == x[lead]).all(axis=1)  # (B,)
    first, inverse = np.unique(np.where(same, lead, np.arange(b)), return_inverse=True)
    return torch.from_numpy(first), torch.from_numpy(inverse.ravel())


def geodesic_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation angle of a^T b in degrees, (..., 3, 3) x2 -> (...): 2 asin(||a - b||_F / sqrt 8).

    Equal to acos((tr(a^T b) - 1) / 2) but accurate for small angles too.
    """
    chord = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=(-2, -1)) / math.sqrt(8.0)
    return np.degrees(2.0 * np.arcsin(np.clip(chord, 0.0, 1.0)))


def pose_metrics(pred, factors_true, table: PoseTable,
                 device: str | torch.device | None = None) -> dict[str, np.ndarray]:
    """Per prediction: `pose_error_deg` (geodesic angle between recovered and true pose) and `nn_distance`.

    pred (N, 3, H, W) in [0, 1]; factors_true (N, F) the true factors of the frames predicted.
    """
    factors_true = np.asarray(factors_true, dtype=np.float64)
    if factors_true.shape != (len(pred), table.factors.shape[1]):
        raise UserError(f"factors must have shape {(len(pred), table.factors.shape[1])}, got {factors_true.shape}")
    index, distance = recover(pred, table, device)
    return scores_of_recovered(index, distance, factors_true, table)


def scores_of_recovered(index: np.ndarray, distance: np.ndarray, factors_true,
                        table: PoseTable) -> dict[str, np.ndarray]:
    """pose_error_deg and nn_distance from recover()'s output (N,) x2 and the true factors (N, F)."""
    error = geodesic_deg(table.rotations[np.maximum(index, 0)], rotations(table.config, factors_true))
    return {"pose_error_deg": np.where(index < 0, BLACK_POSE_ERROR_DEG, error), "nn_distance": distance}


def smoothness(path_rotations: np.ndarray) -> np.ndarray:
    """ACAI's smoothness of a path of poses, (B, P, 3, 3) with P >= 3 (the ends included) -> (B,).

    max step / end-to-end angle - 1 / (P - 1), steps and end-to-end as geodesic angles: 0 for evenly
    spaced steps, 1 - 1/(P-1) for one jump and the rest standing still, above that for detours.
    NaN where the ends have the same pose (no direction to be smooth along).
    """
    r = np.asarray(path_rotations, dtype=np.float64)
    if r.ndim != 4 or r.shape[1] < 3:
        raise UserError(f"a path needs shape (B, P >= 3, 3, 3), got {r.shape}")
    steps = geodesic_deg(r[:, :-1], r[:, 1:])  # (B, P-1)
    total = geodesic_deg(r[:, 0], r[:, -1])  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, steps.max(axis=1) / total - 1.0 / (r.shape[1] - 1), np.nan)


def path_smoothness(path_pred, factors_ends, table: PoseTable,
                    device: str | torch.device | None = None) -> np.ndarray:
    """Smoothness of predicted paths between known ends: path_pred (B, M, 3, H, W) the M frames between
    the ends, factors_ends (B, 2, F) the true factors of the two end frames -> (B,).

    The path is the true start pose, the M recovered poses, the true end pose. A black frame has no
    recovered pose; it stands still (repeats the previous pose), which the score sees as an uneven step.
    """
    b, m = path_pred.shape[:2]
    flat = path_pred.reshape(b * m, *path_pred.shape[2:])
    index, _ = recover(flat, table, device)
    return smoothness_of_recovered(index.reshape(b, m), factors_ends, table)


def smoothness_of_recovered(index: np.ndarray, factors_ends, table: PoseTable) -> np.ndarray:
    """path_smoothness from the table indices (B, M) that recover() gave the M frames of each path."""
    b, m = index.shape
    ends = rotations(table.config, np.asarray(factors_ends, dtype=np.float64).reshape(2 * b, -1)).reshape(b, 2, 3, 3)
    middle = table.rotations[np.maximum(index, 0)].reshape(b, m, 3, 3)
    path = np.concatenate([ends[:, :1], middle, ends[:, 1:]], axis=1)  # (B, M+2, 3, 3)
    black = np.concatenate([np.zeros((b, 1), bool), (index < 0).reshape(b, m), np.zeros((b, 1), bool)], axis=1)
    for j in range(1, m + 1):  # stand still at black frames
        path[black[:, j], j] = path[black[:, j], j - 1]
    return smoothness(path)
