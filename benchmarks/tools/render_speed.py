"""Rendering throughput: the naive pyrender loop against render-dataset's pipeline, side by side in one run.

Naive loop: one process, one reused OffscreenRenderer with pyrender's stock settings (4x MSAA),
one `render` call per frame, RGB only at the target size, nothing written. Timed after the
renderer is built.

Pipeline: `render.dataset.render_dataset` end to end (GL platform probe, spawned workers, 4x4
supersampled RGB + object masks, HDF5 writing, hashing), timed from the call to the renamed file.

Both draw the same frames: the first sequences of the default 2-DoF training split. Repeats
alternate the two and the medians are compared. With --scaling it also times the pipeline with
1 worker, and two --shard processes (1 worker each) run side by side, for docs/scale.md.

    python -m benchmarks.tools.render_speed --frames 10000 --repeats 3 --workers 2 --scaling
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from render import backend
from render.dataset import render_dataset
from render.presets import RenderConfig, poses_from_factors, scene_for, sequence_factors, split_shapes


def _naive_loop(config: RenderConfig, poses: np.ndarray, platform: str) -> float:
    """Frames/s of the naive loop, run in a fresh spawned process (stock pyrender, MSAA on)."""
    renderer = backend.SceneRenderer(scene_for(config), config.size, 1, platform, msaa=True)
    renderer.renderer.render(renderer.scene)  # warm-up: compiles shaders, uploads meshes
    start = time.perf_counter()
    for frame_poses in poses:
        renderer.scene.set_pose(renderer.nodes[0], frame_poses[0])
        renderer.renderer.render(renderer.scene)
    return len(poses) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000, help="frames per timing (multiple of 50)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians are reported")
    parser.add_argument("--workers", type=int, default=2, help="render-dataset worker processes")
    parser.add_argument("--scaling", action="store_true", help="also time 1 worker and 2 side-by-side shards")
    args = parser.parse_args()

    n_seq = max(1, args.frames // 50)
    config = RenderConfig(dof=2, train_sequences=n_seq, test_sequences=2)  # 2 (and val, heldout): one per shard
    poses = np.concatenate([poses_from_factors(config, sequence_factors(config, "train", i)) for i in range(n_seq)])
    platform = backend.probe_platform()["platform"]
    # The pipeline also renders the val, test and heldout sequences (2 each: one per shard).
    n_frames = sum(n * t for n, t in split_shapes(config).values())

    naive, ours, one, shards = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                naive.append(pool.submit(_naive_loop, config, poses, platform).result())
            start = time.perf_counter()
            render_dataset(config, Path(tmp) / f"r{r}.h5", workers=args.workers, progress=False)
            ours.append(n_frames / (time.perf_counter() - start))
            line = f"repeat {r}: naive {naive[-1]:7.1f}   pipeline ({args.workers} workers) {ours[-1]:7.1f}"
            if args.scaling:
                start = time.perf_counter()
                render_dataset(config, Path(tmp) / f"one{r}.h5", workers=1, progress=False)
                one.append(n_frames / (time.perf_counter() - start))
                start = time.perf_counter()
                with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
                    jobs = [pool.submit(render_dataset, config, Path(tmp) / f"s{r}-{i}.h5", 1, False, False, (i, 2))
                            for i in range(2)]
                    for job in jobs:
                        job.result()
                shards.append(n_frames / (time.perf_counter() - start))
                line += f"   1 worker {one[-1]:7.1f}   2 shards side by side {shards[-1]:7.1f}"
            print(line + " frames/s", flush=True)
    med_naive, med_ours = statistics.median(naive), statistics.median(ours)
    print(f"\n2-DoF teapot {config.size}x{config.size}, {len(poses)} naive frames / {n_frames} pipeline frames, "
          f"median of {args.repeats}:")
    print(f"  naive loop (1 process, stock pyrender, RGB only)          {med_naive:7.1f} frames/s")
    print(f"  render-dataset --workers {args.workers} (RGB {config.supersample}x{config.supersample} supersampled + masks + HDF5) "
          f"{med_ours:7.1f} frames/s")
    print(f"  ratio                                                      {med_ours / med_naive:7.2f}x")
    if args.scaling:
        med_one, med_shards = statistics.median(one), statistics.median(shards)
        print(f"  render-dataset --workers 1                                 {med_one:7.1f} frames/s")
        print(f"  2 x render-dataset --shard I/2 --workers 1, side by side   {med_shards:7.1f} frames/s")
        print(f"  workers 2 / workers 1 = {med_ours / med_one:.2f}x;  2 shards / workers 1 = {med_shards / med_one:.2f}x")


if __name__ == "__main__":
    main()
