"""The 1-, 2- and 6-DoF presets: render config, factor sampling and factor-to-pose maps (no GL).

A sequence's factors depend only on (seed, split, sequence index), never on worker count or
rendering order, so any subset of sequences can be re-rendered identically.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ibdata.tasks import HeldoutRegion, rotation_x, rotation_y
from ibutil.errors import UserError
from render.objects import COLOURS, OBJECT_NAMES
from render.scene import CameraSpec, ObjectSpec, SceneSpec, pose_matrix, reflect

PRESETS = {1: "rotate-x", 2: "rotate-xy", 6: "three-objects-xy"}
SPLITS = ("train", "val", "test", "heldout")  # the groups of a file, in file order
# Mixed into the seed so the splits draw disjoint streams; train and test keep their v1 codes.
SPLIT_CODES = {"train": 0, "test": 1, "val": 2, "heldout": 3}
# Preset defaults: (frames per sequence, train sequences, test sequences). About 10^4 training
# frames for the random presets; 50 frames leave room for gaps up to 24. val and heldout default
# to as many sequences as test.
DEFAULTS = {1: (360, 1, 1), 2: (50, 200, 50), 6: (50, 200, 50)}
MOTIONS = ("linear", "bounce")  # dof 6: straight lines inside the frame, or reflecting off the borders
PROTOCOLS = ("heldout", "paper")  # paper: no region cut out of training, no heldout sequences
# The held-out region of each preset (kind, centre, radius, default margin); see ibdata/tasks.py and
# docs/dataset-format.md. dof 1: the upside-down arc of the turn; dof 2: a 30-degree geodesic ball
# of poses around the upside-down pose; dof 6: the top-right corner of the frame.
REGIONS = {1: ("arc", (180.0,), 20.0, 10.0, "deg"), 2: ("so3_ball", (180.0, 0.0), 30.0, 10.0, "deg"),
           6: ("quadrant", (0.3, 0.3), 0.0, 0.2, "ndc")}
MAX_ATTEMPTS = 20_000  # rejection-sampling draws per sequence before the region is declared too large
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
    move_speed: tuple[float, float] = (0.02, 0.06)  # dof 6 bounce: |speed| per axis, frame half-widths/frame
    val_sequences: int | None = None  # sequences in val/; None = as many as test (dof 1: always 1)
    heldout_sequences: int | None = None  # sequences in heldout/; None = as many as test (dof 1: 1); 0 for paper
    motion: str = "linear"  # dof 6: "linear" (straight line inside the frame) or "bounce" (reflecting)
    protocol: str = "heldout"  # "heldout": training avoids the held-out region; "paper": no cut, no heldout
    heldout_margin: float | None = None  # factor distance kept between heldout and train/val; None = preset's
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
        n_extra = 0 if self.protocol == "paper" else (1 if self.dof == 1 else self.test_sequences)
        fill("val_sequences", (1 if self.dof == 1 else self.test_sequences) if self.val_sequences is None
             else self.val_sequences)
        fill("heldout_sequences", n_extra if self.heldout_sequences is None else self.heldout_sequences)
        fill("heldout_margin", float(REGIONS[self.dof][3] if self.heldout_margin is None else self.heldout_margin))
        fill("supersample", max(1, min(3, 256 // self.size)) if self.supersample is None else self.supersample)
        fill("rot_speed_deg", tuple(float(v) for v in self.rot_speed_deg))
        fill("move_speed", tuple(float(v) for v in self.move_speed))
        if self.frames < 3:
            raise UserError(f"--frames must be at least 3 (a triplet), not {self.frames}")
        if self.train_sequences < 1 or self.test_sequences < 1 or self.val_sequences < 1:
            raise UserError("--train-sequences, --test-sequences and --val-sequences must be at least 1")
        if self.motion not in MOTIONS:
            raise UserError(f"unknown --motion {self.motion!r}; choose linear or bounce")
        if self.motion == "bounce" and self.dof != 6:
            raise UserError("--motion bounce is a dof 6 option (dof 1 and 2 rotate along straight lines)")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown --protocol {self.protocol!r}; choose heldout or paper")
        if self.dof == 1 and (self.val_sequences != 1 or self.heldout_sequences not in (0, 1)):
            raise UserError("--dof 1 renders exactly one val and one heldout turn; drop --val-sequences/--heldout-sequences")
        if self.protocol == "paper" and self.heldout_sequences != 0:
            raise UserError("--protocol paper has no held-out region, so no heldout split; drop --heldout-sequences")
        if self.protocol == "heldout" and self.heldout_sequences < 1:
            raise UserError("--heldout-sequences must be at least 1 (or use --protocol paper for none)")
        if not self.heldout_margin >= 0 or not math.isfinite(self.heldout_margin):
            raise UserError(f"--heldout-margin must be a finite number >= 0, not {self.heldout_margin}")
        if self.protocol == "heldout":
            kind, centre, radius, _, unit = REGIONS[self.dof]
            if unit == "deg" and radius + self.heldout_margin >= 180.0:
                raise UserError(f"--heldout-margin {self.heldout_margin:g} deg around a {radius:g}-degree region "
                                "covers every pose, leaving no training data; use a margin below "
                                f"{180 - radius:g}")
            if unit == "ndc" and centre[0] - self.heldout_margin <= -(1.0 - SIX_DOF_SCALE):
                raise UserError(f"--heldout-margin {self.heldout_margin:g} ndc around the corner region reaches "
                                "the far borders, leaving no training motion; use a margin below "
                                f"{centre[0] + 1.0 - SIX_DOF_SCALE:g}")
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
        if self.dof == 1:
            for split in SPLITS:
                turn_angles(self, split)  # UserError if the held-out cut leaves fewer than 3 frames

    @property
    def preset(self) -> str:
        return PRESETS[self.dof]

    def to_json(self) -> dict:
        """The config as plain JSON-able values (what the file stores)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def heldout_region(config: RenderConfig) -> HeldoutRegion | None:
    """The preset's held-out region with the config's margin; None under the paper protocol."""
    if config.protocol == "paper":
        return None
    kind, centre, radius, _, unit = REGIONS[config.dof]
    return HeldoutRegion(kind, centre, radius, config.heldout_margin, unit)


def split_shapes(config: RenderConfig) -> dict[str, tuple[int, int]]:
    """(sequences, frames) of each split, in file order. dof 1's splits may differ in frames (the cut arc)."""
    counts = {"train": config.train_sequences, "val": config.val_sequences, "test": config.test_sequences,
              "heldout": config.heldout_sequences}
    return {split: (counts[split], len(turn_angles(config, split)) if config.dof == 1 else config.frames)
            for split in SPLITS}


def turn_angles(config: RenderConfig, split: str) -> np.ndarray:
    """dof 1: the rot_x of every frame of the split's one turn, (T_split,) float64 degrees.

    One full turn of `frames` steps; test sits half a step between training frames (the paper's
    protocol), val a quarter step. Under the heldout protocol train, val and test keep only the
    frames at least `margin` from the region, as one contiguous arc starting just after it
    (unwrapped: values may exceed 360); heldout is the full half-step turn starting opposite the region.
    """
    step = 360.0 / config.frames
    offset = {"train": 0.0, "val": 0.25, "test": 0.5, "heldout": 0.5}[split]
    angles = (np.arange(config.frames) + offset) * step
    region = heldout_region(config)
    if region is None:
        return angles
    if split == "heldout":
        start = region.centre[0] - 180.0  # opposite the region, so the region sits mid-turn
        return np.sort(start + np.mod(angles - start, 360.0))
    start = region.centre[0] + region.radius + region.margin
    keep = angles[region.distance(angles[:, None]) >= region.margin]
    unwrapped = np.sort(start + np.mod(keep - start, 360.0))
    if len(unwrapped) < 3:
        raise UserError(f"--heldout-margin {region.margin:g} leaves {len(unwrapped)} {split} frames of the turn "
                        "(a triplet needs 3); lower it or raise --frames")
    return unwrapped


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


def sequence_rng(config: RenderConfig, split: str, index: int, attempt: int = 0) -> np.random.Generator:
    """The generator of one sequence's `attempt`-th draw, keyed by (seed, split, index, attempt) alone."""
    key = [config.seed, SPLIT_CODES[split], index] + ([attempt] if attempt else [])
    return np.random.default_rng(np.random.SeedSequence(key))


def sequence_factors(config: RenderConfig, split: str, index: int) -> np.ndarray:
    """Factors of every frame of one sequence: (T, F) float64 (degrees, or ndc for positions).

    dof 2 and 6 under the heldout protocol use rejection sampling: draw a = 0, 1, ... comes from
    SeedSequence([seed, split code, index, a]) (draw 0 from [seed, split code, index], the v1 stream)
    until the sequence fits its split: train and val stay `margin` away from the held-out region;
    heldout passes through the region in its middle third; test is taken as drawn (unchanged).
    """
    if config.dof == 1:
        return turn_angles(config, split)[:, None]
    region = heldout_region(config)
    for attempt in range(MAX_ATTEMPTS):
        rng = sequence_rng(config, split, index, attempt)
        factors = _draw(config, rng)
        if region is None or split == "test":
            return factors
        distance = region.distance(factors)  # (T,)
        if split in ("train", "val") and distance.min() >= region.margin:
            return factors
        third = config.frames // 3
        if split == "heldout" and (distance[third:config.frames - third] <= 0).any():
            return factors
    raise UserError(f"no {split} sequence found in {MAX_ATTEMPTS} draws that fits the held-out region with "
                    f"--heldout-margin {region.margin:g}; lower the margin")


def _draw(config: RenderConfig, rng: np.random.Generator) -> np.ndarray:
    """One random sequence of the dof 2 or 6 preset: (T, F) float64."""
    t = np.arange(config.frames, dtype=np.float64)
    if config.dof == 2:
        # A straight line in (rot_x, rot_y), unwrapped (angles may leave [0, 360)).
        start = rng.uniform(0.0, 360.0, size=2)
        speed = rng.uniform(*config.rot_speed_deg, size=2) * rng.choice([-1.0, 1.0], size=2)
        return start[None, :] + t[:, None] * speed[None, :]
    bound = 1.0 - SIX_DOF_SCALE
    k = len(config.objects)
    if config.motion == "linear":
        # Each object goes from a start to an end point inside the bounds at constant velocity, so
        # it never touches a border and every frame is the interpolation of any two around it.
        start, end = rng.uniform(-bound, bound, size=(2, 2 * k))
        return start[None, :] + (t / (config.frames - 1))[:, None] * (end - start)[None, :]
    # bounce: a straight line at a random speed per axis, reflecting off the borders.
    start = rng.uniform(-bound, bound, size=2 * k)
    speed = rng.uniform(*config.move_speed, size=2 * k) * rng.choice([-1.0, 1.0], size=2 * k)
    return reflect(start[None, :] + t[:, None] * speed[None, :], -bound, bound)


def heldout_scored(config: RenderConfig, factors: np.ndarray) -> np.ndarray:
    """Which frames (..., F) of the heldout split are scored (inside the region): (...,) bool."""
    region = heldout_region(config)
    if region is None:
        return np.zeros(np.shape(factors)[:-1], dtype=bool)
    return region.contains(factors)


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
        if count > n_seq and n_seq > 0:
            raise UserError(f"--shard {index}/{count}: the {split} split has only {n_seq} sequence(s); "
                            f"use at most {n_seq} shards")
        out[split] = (index * n_seq // count, (index + 1) * n_seq // count)
    return out
