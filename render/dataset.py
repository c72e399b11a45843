"""Render a preset into a format-v1 HDF5 file: factors in this process, frames in spawned GL workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

import render
from render import backend, h5format
from render.errors import UserError
from render.h5format import DatasetWriter, Header
from render.presets import RenderConfig, factor_names, poses_from_factors, scene_for, sequence_factors, split_shapes

GENERATOR = f"inbetween-bench {render.__version__}"


def default_out(config: RenderConfig) -> Path:
    """data/<preset>-<object>-<size>px-seed<seed>.h5"""
    return Path("data") / f"dof{config.dof}-{config.object}-{config.size}px-seed{config.seed}.h5"


def regenerate_command(config: RenderConfig, out: Path) -> str:
    """The render-dataset command line that reproduces `config`'s content."""
    parts = ["render-dataset", f"--dof {config.dof}", f"--size {config.size}", f"--frames {config.frames}"]
    if config.dof != 1:
        parts += [f"--train-sequences {config.train_sequences}", f"--test-sequences {config.test_sequences}"]
    parts += [f"--object {config.object}", f"--seed {config.seed}", f"--supersample {config.supersample}",
              f"--out {out}"]
    return " ".join(parts)


def dataset_card(config: RenderConfig, header: Header, out: Path) -> str:
    """The markdown card written beside the file."""
    shapes = split_shapes(config)
    factor_rows = "\n".join(f"| {i} | `{n}` | {u} |" for i, (n, u) in
                            enumerate(zip(header.factor_names, header.factor_units)))
    object_rows = "\n".join(f"| {o['index']} | {o['name']} | {o['colour']} |" for o in header.objects)
    motion = {
        1: f"one {config.object} turning about the x-axis through a full turn in {config.frames} steps; "
           "the test turn is offset by half a step, so no test image equals a training image",
        2: f"one {config.object} whose rotation about x and y moves in a straight line in angle space "
           f"(random start, random per-axis speed {config.rot_speed_deg[0]}-{config.rot_speed_deg[1]} deg/frame, "
           "angles unwrapped)",
        6: "three objects, each moving in a straight line in the image plane at a random speed "
           f"({config.move_speed[0]}-{config.move_speed[1]} half-widths/frame per axis), reflecting off the borders; "
           "they may overlap and occlude each other (object 1 is in front)",
    }[config.dof]
    return f"""# Dataset card: {out.name}

**What.** Synthetic sequences for image in-betweening (predict frame t from frames t-k and t+k):
{motion}. Preset `{config.preset}` (dof {config.dof}), {config.size}x{config.size} RGB frames with
per-pixel object masks and the ground-truth factor of every object in every frame.

**Splits.**

| split | sequences | frames per sequence | frames |
|---|---|---|---|
| train | {shapes['train'][0]} | {shapes['train'][1]} | {shapes['train'][0] * shapes['train'][1]} |
| test | {shapes['test'][0]} | {shapes['test'][1]} | {shapes['test'][0] * shapes['test'][1]} |

Train and test sequences are drawn from disjoint random streams of seed {config.seed}.

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
(see docs/dataset-format.md of inbetween-bench). The sha256 of the file is in `{out.name}.sha256`.

**Regenerate.** The same command gives identical arrays for any `--workers`:

```
{regenerate_command(config, out)}
```

Full config: `{json.dumps(config.to_json(), sort_keys=True)}`
"""


def render_dataset(config: RenderConfig, out: str | Path | None = None, workers: int = 1,
                   overwrite: bool = False, progress: bool = True) -> Path:
    """Render every sequence of `config` with `workers` processes and write the file atomically."""
    out = Path(out) if out is not None else default_out(config)
    if workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    h5format.check_target(out, overwrite)
    renderer_info = backend.probe_platform()
    names, units = factor_names(config)
    spec = scene_for(config)
    header = Header(
        dof=config.dof, preset=config.preset, image_size=config.size, seed=config.seed,
        factor_names=names, factor_units=units,
        objects=[{"index": k + 1, "name": o.name, "colour": list(o.colour), "scale": o.scale}
                 for k, o in enumerate(spec.objects)],
        config=config.to_json(), generator=GENERATOR, renderer=renderer_info)
    shapes = split_shapes(config)
    tasks = [(split, i) for split, (n_seq, _) in shapes.items() for i in range(n_seq)]
    factors = {task: sequence_factors(config, *task) for task in tasks}  # each (T, F) float64
    total = sum(n * t for n, t in shapes.values())
    start = time.perf_counter()
    pool = backend.render_pool(spec, config.size, config.supersample, renderer_info["platform"], workers)
    try:
        with DatasetWriter(out, header, shapes, dataset_card(config, header, out), overwrite) as writer, \
                tqdm(total=total, unit="frame", desc=f"render dof{config.dof}", disable=not progress) as bar:
            poses = (poses_from_factors(config, factors[task]) for task in tasks)
            # map keeps results in task order, so the writer streams and hashes sequences in order.
            for (split, i), (frames, masks) in zip(tasks, pool.map(backend.render_task, poses)):
                writer.write_sequence(split, i, frames, factors[(split, i)], masks)
                bar.update(len(frames))
    finally:
        # On an error or Ctrl-C, drop queued sequences instead of rendering them to no end.
        pool.shutdown(wait=True, cancel_futures=True)
    if progress:
        elapsed = time.perf_counter() - start
        tqdm.write(f"wrote {out} ({total} frames in {elapsed:.1f} s, {total / elapsed:.0f} frames/s)")
    return out
