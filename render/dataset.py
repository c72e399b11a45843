"""Render a preset into a format-v2 HDF5 file: factors in this process, frames in spawned GL workers."""

from __future__ import annotations

import json
import time
from concurrent.futures import wait
from pathlib import Path

from tqdm import tqdm

import render
from ibdata import h5format
from render import backend
from ibutil.errors import UserError
from ibutil.preempt import StopFlag
from render.croissant import croissant
from ibdata.h5format import DatasetWriter, Header
from render.presets import (RenderConfig, factor_names, heldout_region, heldout_scored, poses_from_factors, scene_for,
                            sequence_factors, shard_ranges, split_shapes)
from render.scene import camera_json

GENERATOR = f"inbetween-bench {render.__version__}"
POLL_S = 0.2  # while a worker renders a long sequence, how often the wait looks at the stop flag


def default_out(config: RenderConfig, shard: tuple[int, int] | None = None) -> Path:
    """data/dof<D>-<object>-<size>px-seed<seed>.h5, with .shard-<I>-of-<N> before .h5 for a shard."""
    suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return Path("data") / f"dof{config.dof}-{config.object}-{config.size}px-seed{config.seed}{suffix}.h5"


def make_header(config: RenderConfig, renderer_info: dict, shard: dict | None = None) -> Header:
    """The root attributes of a file rendered from `config`."""
    names, units = factor_names(config)
    return Header(
        dof=config.dof, preset=config.preset, image_size=config.size, seed=config.seed,
        factor_names=names, factor_units=units,
        objects=[{"index": k + 1, "name": o.name, "colour": list(o.colour), "scale": o.scale}
                 for k, o in enumerate(scene_for(config).objects)],
        config=config.to_json(), generator=GENERATOR, renderer=renderer_info, shard=shard,
        camera=camera_json(scene_for(config).camera, config.size), heldout=heldout_json(config))


def heldout_json(config: RenderConfig) -> dict:
    """The file's `heldout` attribute: protocol, region and margin (region null under the paper protocol)."""
    region = heldout_region(config)
    return {"protocol": config.protocol, "region": None if region is None else region.to_json(),
            "scored": "heldout/scored[s, t] = 1 where frame t of sequence s lies in the region; score the "
                      "triplets whose middle frame is scored"}


def config_from_json(values: dict) -> RenderConfig:
    """Rebuild the RenderConfig stored in a file's `config` attribute (v1 configs: bounce motion, paper protocol)."""
    values = dict(values)
    if "motion" not in values:  # a v1 file: dof 6 bounced, and there was no held-out cut
        values.update(motion="bounce" if values.get("dof") == 6 else "linear", protocol="paper")
    return RenderConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k != "objects"})


def regenerate_command(config: RenderConfig, out: Path, shard: dict | None = None) -> str:
    """The render-dataset command line that reproduces `config`'s content (or one shard of it)."""
    parts = ["render-dataset", f"--dof {config.dof}", f"--size {config.size}", f"--frames {config.frames}"]
    if config.dof != 1:
        parts += [f"--train-sequences {config.train_sequences}", f"--val-sequences {config.val_sequences}",
                  f"--test-sequences {config.test_sequences}"]
        if config.protocol == "heldout":
            parts.append(f"--heldout-sequences {config.heldout_sequences}")
    if config.dof == 6:
        parts.append(f"--motion {config.motion}")
    parts.append(f"--protocol {config.protocol}")
    if config.protocol == "heldout":
        parts.append(f"--heldout-margin {config.heldout_margin!r}")
    parts += [f"--object {config.object}", f"--seed {config.seed}", f"--supersample {config.supersample}",
              f"--out {out}"]
    if shard is not None:
        parts.insert(-1, f"--shard {shard['index']}/{shard['count']}")
    return " ".join(parts)


def dataset_card(config: RenderConfig, header: Header, out: Path) -> str:
    """The markdown card written beside the file."""
    shapes = split_shapes(config)
    split_rows = "\n".join(f"| {split} | {n} | {t} | {n * t} |" for split, (n, t) in shapes.items())
    factor_rows = "\n".join(f"| {i} | `{n}` | {u} |" for i, (n, u) in
                            enumerate(zip(header.factor_names, header.factor_units)))
    object_rows = "\n".join(f"| {o['index']} | {o['name']} | {o['colour']} |" for o in header.objects)
    motion = {
        1: f"one {config.object} turning about the x-axis through a full turn in {config.frames} steps; "
           "the test turn is offset by half a step (val by a quarter), so no test image equals a training image"
           + ("" if config.protocol == "paper" else "; train, val and test skip the held-out arc"),
        2: f"one {config.object} whose rotation about x and y moves in a straight line in angle space "
           f"(random start, random per-axis speed {config.rot_speed_deg[0]}-{config.rot_speed_deg[1]} deg/frame, "
           "angles unwrapped)",
        6: ("three objects, each moving at constant velocity along a straight line from a random start to a "
            "random end point inside the frame (so every middle frame is determined by its neighbours)"
            if config.motion == "linear" else
            "three objects, each moving in a straight line in the image plane at a random speed "
            f"({config.move_speed[0]}-{config.move_speed[1]} half-widths/frame per axis), reflecting off the "
            "borders (so a middle frame is not always determined by its neighbours)")
           + "; they may overlap and occlude each other (object 1 is in front)",
    }[config.dof]
    region = heldout_region(config)
    heldout_text = ("Protocol `paper`: no region of factor space is held out and the heldout split is empty."
                    if region is None else
                    f"Protocol `heldout`: the region `{json.dumps(region.to_json())}` "
                    f"(ibdata/tasks.py `HeldoutRegion`) is shown only by the heldout split; no train or val frame "
                    f"comes within {region.margin:g} {region.unit} of it ("
                    + ("the turn's frames near it are cut from train, val and test; heldout is the full half-step turn"
                       if config.dof == 1 else "rejection sampling from the seeded streams") + "). Score heldout triplets whose middle frame has `heldout/scored` = 1.")
    return f"""# Dataset card: {out.name}

**What.** Synthetic sequences for image in-betweening (predict frame t from frames t-k and t+k):
{motion}. Preset `{config.preset}` (dof {config.dof}), {config.size}x{config.size} RGB frames with
per-pixel object masks and the ground-truth factor of every object in every frame.

**Splits.**

| split | sequences | frames per sequence | frames |
|---|---|---|---|
{split_rows}

Train, val, test and heldout sequences are drawn from disjoint random streams of seed {config.seed}.
Train to fit, val to select (never reported), test and heldout to report. {heldout_text}

Every frame also stores each object's 4x4 world pose (`SPLIT/poses`) and the file the camera
(`camera` attribute: type, intrinsics, pose), so a frame can be re-rendered without this code.

**Factors** (`factors[..., i]`; `deg` = degrees, `ndc` = image-plane position in [-1, 1], x right, y up):

| column | name | unit |
|---|---|---|
{factor_rows}

**Objects** (mask value = index; 0 is background):

| index | object | colour (linear RGB) |
|---|---|---|
{object_rows}

**How it was made.** {GENERATOR}; renderer {header.renderer['pyrender']} on {header.renderer['platform']}
({header.renderer['gl_renderer']}), {config.supersample}x{config.supersample} supersampling box-filtered to
{config.size} px. Format: HDF5 `{h5format.FORMAT}` version {h5format.FORMAT_VERSION}
(see docs/dataset-format.md of inbetween-bench). The sha256 of the file is in `{out.name}.sha256`;
a Croissant JSON-LD description is in `{h5format.croissant_path(out).name}`.

**Regenerate.** The same command gives identical arrays for any `--workers`:

```
{regenerate_command(config, out, header.shard)}
```

Full config: `{json.dumps(config.to_json(), sort_keys=True)}`
"""


def croissant_for(config: RenderConfig, header: Header, out: Path) -> callable:
    """The Croissant writer of a file: its sha256 -> JSON-LD text (render.croissant)."""
    shapes = split_shapes(config)
    n_objects = len(header.objects)

    def fields(split: str) -> list[tuple[str, str, str]]:
        n, t = shapes[split]
        size = config.size
        rows = [
            ("frames", "sc:ImageObject", f"uint8 ({n}, {t}, {size}, {size}, 3): RGB frames of each sequence"),
            ("factors", "sc:Float", f"float32 ({n}, {t}, {len(header.factor_names)}): ground-truth factors "
                                    f"{', '.join(header.factor_names)} ({', '.join(header.factor_units)})"),
            ("masks", "sc:Integer", f"uint8 ({n}, {t}, {size}, {size}): 0 background, k object k"),
            ("poses", "sc:Float", f"float32 ({n}, {t}, {n_objects}, 4, 4): each object's world pose"),
        ]
        if split == "heldout":
            rows.append(("scored", "sc:Boolean", f"uint8 ({n}, {t}): 1 where the frame lies in the held-out region"))
        return rows

    description = (f"Synthetic sequences for image in-betweening, preset {config.preset} (dof {config.dof}), "
                   f"{config.size}x{config.size} RGB frames with object masks, factors, poses and camera. "
                   "Splits: train (fit), val (select), test and heldout (report).")
    command = regenerate_command(config, out, header.shard)
    return lambda sha256: croissant(out.name, sha256, description, f"{h5format.FORMAT_VERSION}.0.0", command,
                                    {split: fields(split) for split in shapes})


def render_dataset(config: RenderConfig, out: str | Path | None = None, workers: int = 1,
                   overwrite: bool = False, progress: bool = True, shard: tuple[int, int] | None = None) -> Path:
    """Render every sequence of `config` (or of one shard `(index, count)`) and write the file atomically.

    A shard whose file already exists, verifies against its manifest and holds this config and
    shard is skipped, so an interrupted array job can simply be rerun. SIGTERM is handled like
    Ctrl-C (the temporary file is removed); workers exit by themselves if this process dies.
    """
    out = Path(out) if out is not None else default_out(config, shard)
    if workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    shapes = split_shapes(config)
    ranges = {split: (0, n) for split, (n, _) in shapes.items()}
    shard_info = None
    if shard is not None:
        ranges = shard_ranges(config, *shard)
        shard_info = {"index": shard[0], "count": shard[1], "sequences": {s: list(r) for s, r in ranges.items()}}
        shapes = {split: (b - a, shapes[split][1]) for split, (a, b) in ranges.items()}
        if out.exists() and not overwrite:
            state = _existing_shard(out, config, shard_info)
            if state == "complete":
                if progress:
                    tqdm.write(f"{out} is complete (manifest and content verified); skipping shard {shard[0]}/{shard[1]}")
                return out
            overwrite = state == "broken"  # re-render a damaged shard; refuse to replace a foreign file
    h5format.check_target(out, overwrite)
    h5format.remove_stale_temps(out)
    tasks = [(split, i) for split, (a, b) in ranges.items() for i in range(a, b)]  # global sequence indices
    # Factors first: a held-out region too large to sample around fails here, before any process or file.
    factors = {task: sequence_factors(config, *task) for task in tasks}  # each (T, F) float64
    poses = {task: poses_from_factors(config, factors[task]) for task in tasks}  # each (T, K, 4, 4)
    total = sum(n * t for n, t in shapes.values())
    again = "run the same command again" + (" (complete shards are skipped)" if shard is not None else "")

    def stopped(done: int) -> str:
        return f"render of {out} stopped after {done} of {len(tasks)} sequences; nothing was written; {again}"

    with StopFlag() as stop:
        renderer_info = backend.probe_platform()
        stop.check(stopped(0))
        header = make_header(config, renderer_info, shard_info)
        start = time.perf_counter()
        # Left on a stop or an error: the bar closes, the writer removes its temporary file, the pool kills its workers.
        with backend.render_pool(scene_for(config), config.size, config.supersample, renderer_info["platform"],
                                 workers) as pool, \
                DatasetWriter(out, header, shapes, dataset_card(config, header, out), overwrite,
                              croissant_for(config, header, out)) as writer, \
                tqdm(total=total, unit="frame", desc=f"render dof{config.dof}", disable=not progress) as bar:
            futures = [pool.submit(backend.render_task, poses[task]) for task in tasks]
            # Results in task order, so the writer streams and hashes sequences in order.
            for done, ((split, i), future) in enumerate(zip(tasks, futures)):
                while not wait([future], timeout=POLL_S).done:  # a long sequence: look at the flag meanwhile
                    stop.check(stopped(done))
                frames, masks = future.result()
                scored = heldout_scored(config, factors[(split, i)]) if split == "heldout" else None
                writer.write_sequence(split, i - ranges[split][0], frames, factors[(split, i)], masks,
                                      poses[(split, i)], scored)
                bar.update(len(frames))
                stop.check(stopped(done + 1))
    if progress:
        elapsed = time.perf_counter() - start
        tqdm.write(f"wrote {out} ({total} frames in {elapsed:.1f} s, {total / elapsed:.0f} frames/s)")
    return out


def _existing_shard(path: Path, config: RenderConfig, shard_info: dict) -> str:
    """What is already at `path`, from one verification: "complete" (this shard, manifest checked),
    "broken" (unreadable or failing verification: safe to replace) or "other" (a valid file of something else).
    """
    try:
        verification = h5format.verify(path)
    except UserError:
        return "broken"
    try:
        h = h5format.read_header(path)
    except UserError:
        return "other"
    ours = h.config == config.to_json() and h.shard == shard_info
    return "complete" if ours and verification.manifest == "ok" else "other"


def merge_shards(paths: list[str | Path], out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Copy N verified shard files of one config into one format-v2 file, identical to the unsharded render.

    Copying (not an HDF5 virtual dataset) keeps the published file self-contained: it does not
    break when the shard files move or are deleted. SIGINT or SIGTERM stops it after the sequence in
    hand (ibutil.preempt.Interrupted), leaving no output and no temporary file.
    """
    out = Path(out)
    if not paths:
        raise UserError("give the shard files to merge")
    again = "nothing was written; run the same command again"
    with StopFlag() as stop:
        shards = {}
        for p in paths:
            h5format.verify(p, check=lambda: stop.check(f"merge into {out} stopped while verifying {p}; {again}"))
            h = h5format.read_header(p)
            if h.shard is None:
                raise UserError(f"{p} is not a shard (no 'shard' attribute); nothing to merge")
            i, n = h.shard["index"], h.shard["count"]
            if i in shards:
                raise UserError(f"shard {i}/{n} is given twice: {shards[i][0]} and {p}")
            shards[i] = (Path(p), h)
        first = shards[min(shards)][1]
        count = first.shard["count"]
        for i, (p, h) in shards.items():
            for key in ("config", "seed", "renderer", "generator"):
                if getattr(h, key) != getattr(first, key):
                    raise UserError(f"{p} was rendered with a different {key} than {shards[min(shards)][0]}; "
                                    "shards of one dataset must share config, seed, renderer and generator")
            if h.shard["count"] != count:
                raise UserError(f"{p} is shard {i}/{h.shard['count']}, the others are of {count}")
        missing = sorted(set(range(count)) - set(shards))
        if missing:
            raise UserError(f"missing shard(s) {', '.join(map(str, missing))} of {count}; render them first")
        config = config_from_json(first.config)
        header = make_header(config, first.renderer)
        h5format.check_target(out, overwrite)
        shapes = split_shapes(config)
        total = sum(n * t for n, t in shapes.values())
        n_sequences = sum(n for n, _ in shapes.values())
        for p, h in shards.values():
            if h.format_version != h5format.FORMAT_VERSION:
                raise UserError(f"{p} is a format v{h.format_version} shard; re-render the shards with this "
                                f"version (v{h5format.FORMAT_VERSION}) before merging")
        done = 0
        with DatasetWriter(out, header, shapes, dataset_card(config, header, out), overwrite,
                           croissant_for(config, header, out)) as writer, \
                tqdm(total=total, unit="frame", desc="merge", disable=not progress) as bar:
            for split in shapes:
                for i in range(count):
                    path, h = shards[i]
                    start = h.shard["sequences"][split][0]
                    arrays = h5format.read_split(path, split)
                    for s in range(len(arrays.frames)):
                        writer.write_sequence(split, start + s, arrays.frames[s], arrays.factors[s], arrays.masks[s],
                                              arrays.poses[s], None if arrays.scored is None else arrays.scored[s])
                        bar.update(len(arrays.frames[s]))
                        done += 1
                        stop.check(f"merge into {out} stopped after {done} of {n_sequences} sequences; {again}")
    return out
