"""The 1-, 2- and 6-DoF presets: render config, factor sampling and factor-to-pose maps (no GL).

A sequence's factors depend only on (seed, split, sequence index), never on worker count or
rendering order, so any subset of sequences can be re-rendered identically.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ibutil.errors import UserError
from render.objects import COLOURS, OBJECT_NAMES
from render.scene import CameraSpec, ObjectSpec, SceneSpec, pose_matrix, reflect, rotation_x, rotation_y

PRESETS = {1: "rotate-x", 2: "rotate-xy", 6: "three-objects-xy"}
SPLIT_CODES = {"train": 0, "test": 1}  # mixed into the seed so the splits draw disjoint streams
# Preset defaults: (frames per sequence, train sequences, test sequences). About 10^4 training
# frames for the random presets; 50 frames leave room for gaps up to 24.
DEFAULTS = {1: (360, 1, 1), 2: (50, 200, 50), 6: (50, 200, 50)}
COMPANIONS = ("cube", "torus", "sphere", "cone", "cylinder")  # the 6-DoF preset's other two objects
# Meshes are z-up; this turns them y-up (the camera's up) so angle 0 shows an upright teapot side-on.
BASE_ROTATION = rotation_x(-90.0)
# 6-DoF objects keep this fixed tilt so they read as 3D solids while they translate.
TILT_ROTATION = rotation_y(30.0) @ rotation_x(40.0) @ BASE_ROTATION
SIX_DOF_SCALE = 0.35  # bounding-sphere radius of each 6-DoF object, in frame half-widths
SIX_DOF_DEPTHS = (0.0, -0.9, -1.8)  # object k sits in front of object k+1, so occlusion order is fixed


@dataclass(frozen=True)
class RenderConfig:
    """Everything that determines a dataset's content. Stored as JSON in the file's `config` attribute."""

    dof: int = 2  # preset: 1 (rotation about x), 2 (rotation about x and y), 6 (three objects moving in x, y)
    size: int = 32  # image side in pixels (square frames), 8..1024
    frames: int | None = None  # frames per sequence (dof 1: steps per full turn); None = preset default
    train_sequences: int | None = None  # sequences in train/; None = preset default (dof 1: always 1)
    test_sequences: int | None = None  # sequences in test/; None = preset default (dof 1: always 1)
    seed: int = 0  # the seed every random draw derives from
    object: str = "teapot"  # the object (dof 1, 2) or the first of three (dof 6)
    supersample: int | None = None  # render at k x size and box-filter down; None = auto (3 up to 85 px: 9 samples per pixel)
    rot_speed_deg: tuple[float, float] = (1.0, 3.0)  # dof 2: |angular speed| per axis, degrees/frame
    move_speed: tuple[float, float] = (0.02, 0.06)  # dof 6: |speed| per axis, frame half-widths/frame
    objects: tuple[str, ...] = field(init=False, default=())  # derived: object names, mask index k = position + 1

    def __post_init__(self) -> None:
        def fill(name: str, value) -> None:
            object.__setattr__(self, name, value)

        if self.dof not in PRESETS:
            raise UserError(f"--dof must be 1, 2 or 6, not {self.dof}")
        if not 8 <= self.size <= 1024:
            raise UserError(f"--size must be between 8 and 1024 pixels, not {self.size}")
        if self.object not in OBJECT_NAMES:
            raise UserError(f"unknown --object {self.object!r}; choose one of {', '.join(OBJECT_NAMES)}")
        frames, n_train, n_test = DEFAULTS[self.dof]
        if self.dof == 1 and (self.train_sequences not in (None, 1) or self.test_sequences not in (None, 1)):
            raise UserError("--dof 1 renders exactly one train and one test turn; drop --train-sequences/--test-sequences")
        fill("frames", frames if self.frames is None else self.frames)
        fill("train_sequences", n_train if self.train_sequences is None else self.train_sequences)
        fill("test_sequences", n_test if self.test_sequences is None else self.test_sequences)
        fill("supersample", max(1, min(3, 256 // self.size)) if self.supersample is None else self.supersample)
        fill("rot_speed_deg", tuple(float(v) for v in self.rot_speed_deg))
        fill("move_speed", tuple(float(v) for v in self.move_speed))
        if self.frames < 3:
            raise UserError(f"--frames must be at least 3 (a triplet), not {self.frames}")
        if self.train_sequences < 1 or self.test_sequences < 1:
            raise UserError("--train-sequences and --test-sequences must be at least 1")
        if not 1 <= self.supersample <= 8:
            raise UserError(f"--supersample must be between 1 and 8, not {self.supersample}")
        if self.size * self.supersample > 4096:
            raise UserError(f"--size x --supersample = {self.size * self.supersample} px exceeds 4096; lower --supersample")
        if self.seed < 0:
            raise UserError(f"--seed must be non-negative, not {self.seed}")
        for name in ("rot_speed_deg", "move_speed"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise UserError(f"{name} must be a range (low, high) with 0 <= low <= high")
        if self.dof == 6:
            fill("objects", (self.object,) + tuple(c for c in COMPANIONS if c != self.object)[:2])
        else:
            fill("objects", (self.object,))

    @property
    def preset(self) -> str:
        return PRESETS[self.dof]

    def to_json(self) -> dict:
        """The config as plain JSON-able values (what the file stores)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def split_shapes(config: RenderConfig) -> dict[str, tuple[int, int]]:
    """(sequences, frames) of each split."""
    return {"train": (config.train_sequences, config.frames), "test": (config.test_sequences, config.frames)}


def scene_for(config: RenderConfig) -> SceneSpec:
    """The fixed scene of a preset: objects with colours and sizes, camera and lights."""
    if config.dof == 6:
        objects = tuple(ObjectSpec(n, COLOURS[n], SIX_DOF_SCALE) for n in config.objects)
        camera = CameraSpec("orthographic", distance=4.0, half_extent=1.0)
    else:
        objects = (ObjectSpec(config.object, COLOURS[config.object], 1.0),)
        # Fit the unit bounding sphere with a 5% margin whatever the rotation.
        distance = 4.0
        camera = CameraSpec("perspective", distance, yfov_deg=math.degrees(2 * math.asin(1 / distance)) * 1.05)
    return SceneSpec(objects=objects, camera=camera)



def factor_names(config: RenderConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names and units of the factor columns, one per (object, variable)."""
    if config.dof == 1:
        return (f"{config.object}.rot_x",), ("deg",)
    if config.dof == 2:
        return (f"{config.object}.rot_x", f"{config.object}.rot_y"), ("deg", "deg")
    names = tuple(f"{n}.{axis}" for n in config.objects for axis in ("x", "y"))
    return names, ("ndc",) * len(names)


def sequence_rng(config: RenderConfig, split: str, index: int) -> np.random.Generator:
    """The generator of one sequence, keyed by (seed, split, index) alone."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, SPLIT_CODES[split], index]))


def sequence_factors(config: RenderConfig, split: str, index: int) -> np.ndarray:
    """Factors of every frame of one sequence: (T, F) float64 (degrees, or ndc for positions)."""
    t = np.arange(config.frames, dtype=np.float64)
    if config.dof == 1:
        # One full turn; test frames sit half a step between training frames, so no test
        # image equals a training image.
        offset = 0.5 if split == "test" else 0.0
        return ((t + offset) * 360.0 / config.frames)[:, None]
    rng = sequence_rng(config, split, index)
    if config.dof == 2:
        # A straight line in (rot_x, rot_y), unwrapped (angles may leave [0, 360)).
        start = rng.uniform(0.0, 360.0, size=2)
        speed = rng.uniform(*config.rot_speed_deg, size=2) * rng.choice([-1.0, 1.0], size=2)
        return start[None, :] + t[:, None] * speed[None, :]
    # dof 6: each object moves in a straight line at its own speed, reflecting off the borders.
    bound = 1.0 - SIX_DOF_SCALE
    k = len(config.objects)
    start = rng.uniform(-bound, bound, size=2 * k)
    speed = rng.uniform(*config.move_speed, size=2 * k) * rng.choice([-1.0, 1.0], size=2 * k)
    return reflect(start[None, :] + t[:, None] * speed[None, :], -bound, bound)


def poses_from_factors(config: RenderConfig, factors: np.ndarray) -> np.ndarray:
    """World poses of every object in every frame: factors (T, F) -> (T, K, 4, 4)."""
    factors = np.asarray(factors, dtype=np.float64)
    n = len(factors)
    if config.dof in (1, 2):
        rot_y = factors[:, 1] if config.dof == 2 else np.zeros(n)
        rotation = rotation_y(rot_y) @ rotation_x(factors[:, 0]) @ BASE_ROTATION  # (T, 3, 3)
        return pose_matrix(rotation, np.zeros((n, 3)), 1.0)[:, None]
    xy = factors.reshape(n, len(config.objects), 2)
    poses = []
    for k in range(len(config.objects)):
        translation = np.concatenate([xy[:, k], np.full((n, 1), SIX_DOF_DEPTHS[k])], axis=1)
        poses.append(pose_matrix(np.broadcast_to(TILT_ROTATION, (n, 3, 3)), translation, SIX_DOF_SCALE))
    return np.stack(poses, axis=1)


def shard_ranges(config: RenderConfig, index: int, count: int) -> dict[str, tuple[int, int]]:
    """The contiguous block of sequences of shard `index` of `count`, per split: split -> (start, stop).

    Shard i holds sequences [i*S//N, (i+1)*S//N) of each split, so the shards of N tile the
    unsharded dataset exactly and in order.
    """
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard must be I/N with 0 <= I < N, not {index}/{count}")
    out = {}
    for split, (n_seq, _) in split_shapes(config).items():
        if count > n_seq:
            raise UserError(f"--shard {index}/{count}: the {split} split has only {n_seq} sequence(s); "
                            f"use at most {n_seq} shards")
        out[split] = (index * n_seq // count, (index + 1) * n_seq // count)
    return out
