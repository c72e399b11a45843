"""Measure the v2 metrics on the default datasets: table build time and size, scoring time, ground-truth ceiling;
and the scoring path per metric against an earlier commit's, timed side by side (--compare).

python -m benchmarks.tools.metric_speed --cache .cache/inbetween-bench [--dof 1 --dof 2 --dof 6] [--size 32] [--threads 1]
python -m benchmarks.tools.metric_speed --compare edb3cca --dof 2 [--step 2] [--frames 1000] [--repeats 5]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import cv2
import numpy as np
import torch

# Run as a file by --compare, with an earlier commit's packages first on the path: only names both share are used.
try:
    from benchmarks.scoring import evaluate, metrics, pose, tables
except ImportError:  # a commit from before the folder move (issue 21, e.g. edb3cca): the same modules, one level up
    from benchmarks import metrics, pose, tables
    from benchmarks import scoring as evaluate
try:
    from ibdata import h5format
    from ibdata.frames import to_float
except ImportError:  # ... and from before ibdata (edb3cca): its ibutil lacks what this ibdata imports
    from inbetween.data import to_float
    from render import h5format
from render.dataset import render_dataset
from render.presets import RenderConfig


def _dataset(cache: Path, config: RenderConfig) -> Path:
    # The benchmark's dataset cache naming (sha256 of the config JSON), so its renders are reused.
    path = cache / "data" / f"dof{config.dof}-{tables.key_hash(config.to_json())}.h5"
    if not path.exists():
        render_dataset(config, path, workers=2, overwrite=True)
    return path


def look_alikes(table, queries: int = 2000, apart_deg: float = 30.0) -> dict:
    """How alike two distinct poses can look: for up to `queries` table frames (evenly picked), the cosine
    distance to the nearest table frame more than `apart_deg` away in pose, against the distance to the
    adjacent grid frame. A look-alike closer than a grid step is a pose a small error can flip to."""
    pick = np.linspace(0, len(table.frames) - 1, min(queries, len(table.frames))).astype(int)
    unit = table.unit_rows(torch.device("cpu"))
    apart, partner, step = [], [], []
    for start in range(0, len(pick), 64):  # (64, T, 3, 3) float64 rotations per block
        idx = pick[start:start + 64]
        dist = (1.0 - unit[idx] @ unit.T).double().numpy()  # (B, T)
        angle = pose.geodesic_deg(table.rotations[idx][:, None], table.rotations[None])  # (B, T)
        far = np.where(angle > apart_deg, dist, np.inf)
        apart.append(far.min(axis=1))
        partner.append(far.argmin(axis=1))
        step.append(np.where((angle > 0) & (angle <= table.step_deg * 1.01), dist, np.inf).min(axis=1))
    apart, partner, step = np.concatenate(apart), np.concatenate(partner), np.concatenate(step)
    worst = np.argsort(apart)[:5]
    return {"lookalike_queries": len(pick), "adjacent_step_distance_median": float(np.median(step)),
            "lookalike_distance_min": float(apart.min()), "lookalike_distance_p01": float(np.quantile(apart, 0.01)),
            "lookalike_distance_median": float(np.median(apart)),
            "lookalike_closer_than_a_step": float((apart < step).mean()),
            "lookalike_worst_pairs": [[table.factors[pick[i]].round(1).tolist(),
                                       table.factors[partner[i]].round(1).tolist(), round(float(apart[i]), 5)]
                                      for i in worst]}


def _timed(fn, *args, repeats: int = 3):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def measure(cache: Path, dof: int, size: int, gap: int) -> dict:
    path = _dataset(cache, RenderConfig(dof=dof, size=size))
    start = time.perf_counter()
    table = metrics.table_for(path, cache)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    metrics.table_for(path, cache)
    cached_call = time.perf_counter() - start
    test = h5format.read_split(path, "test")
    s, t = test.factors.shape[:2]
    x = to_float(test.frames).numpy().reshape(s * t, size, size, 3).transpose(0, 3, 1, 2)
    f = test.factors.reshape(s * t, -1).astype(np.float64)
    masks = test.masks.reshape(s * t, size, size)
    truth, seconds = _timed(metrics.table_metrics, x, f, table)
    _, before = _timed(metrics.all_metrics, x, x, masks)  # the five v1 metrics
    _, after = _timed(lambda: metrics.all_metrics(x, x, masks, factors=f, table=table))
    # copy-x0 at `gap`: predict frame t by frame t - gap of the same sequence
    seq = np.arange(s * t).reshape(s, t)
    target, source = seq[:, gap:].ravel(), seq[:, :-gap].ravel()
    copy = metrics.table_metrics(x[source], f[target], table)
    out = {"dof": dof, "size": size, "table_frames": int(table.meta["frames"]),
           "table_build_s": table.meta["build_seconds"], "table_first_call_s": round(first_call, 2),
           "table_cached_call_s": round(cached_call, 3), "table_mib": round(table.nbytes / 2**20, 2),
           "table_file_mib": round(sum(p.stat().st_size for p in (cache / "tables").glob(f"*dof{dof}-*.npz"))
                                   / 2**20, 2),
           "frames_scored": len(x), "table_metrics_s_per_1000": round(seconds / len(x) * 1000, 3),
           "all_metrics_s_per_1000_before": round(before / len(x) * 1000, 3),
           "all_metrics_s_per_1000_after": round(after / len(x) * 1000, 3)}
    if dof in (1, 2):
        err = truth["pose_error_deg"]
        bound = table.step_deg / 2 * (1 if dof == 1 else math.sqrt(2))  # farthest a pose can be from the grid
        blurred = np.stack([cv2.GaussianBlur(im.transpose(1, 2, 0), (0, 0), 1.0) for im in x]).transpose(0, 3, 1, 2)
        blur_err = metrics.table_metrics(blurred, f, table)["pose_error_deg"]
        out.update(step_deg=table.step_deg, grid_bound_deg=round(bound, 3), truth_error_mean=float(err.mean()),
                   truth_error_max=float(err.max()), truth_beyond_grid_bound=float((err > bound + 1e-6).mean()),
                   truth_beyond_10deg=float((err > 10).mean()),
                   truth_worst=sorted(np.round(err, 1).tolist())[-10:],
                   blur1px_error_median=float(np.median(blur_err)), blur1px_beyond_10deg=float((blur_err > 10).mean()),
                   blur1px_worst=sorted(np.round(blur_err, 1).tolist())[-10:],
                   **look_alikes(table),
                   truth_nn_distance_mean=float(truth["nn_distance"].mean()),
                   copy_gap=gap, copy_error_mean=float(copy["pose_error_deg"].mean()),
                   copy_nn_distance_mean=float(copy["nn_distance"].mean()))
    else:
        out.update(truth_error_mean=float(truth["position_error_px"].mean()),
                   truth_error_max=float(truth["position_error_px"].max()),
                   truth_found=float(truth["position_found"].mean()), copy_gap=gap,
                   copy_error_mean=float(copy["position_error_px"].mean()))
    return out


ROWS = 12  # rows a default run scores on the same targets (docs/benchmark.md): the targets' share is paid once for them
PROFILED = ("mse", "psnr", "ssim", "iou", "centroid_error", "sharpness", "table_metrics", "evaluate")


def profile(cache: Path, dof: int, size: int, step: float | None, frames: int, gap: int, repeats: int) -> dict:
    """Milliseconds per 1,000 frames of each metric and of evaluate.evaluate (every metric of a row at one
    (gap, tau): the per-frame price of scoring), median of `repeats`, on copy-x0 predictions at `gap` of the
    test split; with this tree's search also the bare brute-force product and the pose search on the same queries
    (and `search_floor`: the float64 query, its norm, its projection and one exact row, the least it can pay), on the
    blends of the ends as they are, blurred and grey (`pose_search_<set>`), with digests of every set's answers
    (`search_digests`, the shipped models' frames too); and with its shared targets (evaluate.truths) the price of
    each further row scored on the same targets (`*_per_row`) beside the once-per-target-set share (`truths_once`)."""
    path = _dataset(cache, RenderConfig(dof=dof, size=size))
    table = metrics.table_for(path, cache, progress=False, step_deg=step)
    test = h5format.read_split(path, "test")
    seq = np.arange(test.frames.shape[0] * test.frames.shape[1]).reshape(test.frames.shape[:2])
    target, source = seq[:, gap:].ravel()[:frames], seq[:, :-gap].ravel()[:frames]
    x = torch.from_numpy(test.frames.reshape(-1, size, size, 3)).permute(0, 3, 1, 2)  # (S*T, 3, H, W) uint8
    pred, truth = x[source].float() / 255, x[target].float() / 255
    masks = torch.from_numpy(test.masks.reshape(-1, size, size)[target])
    f = test.factors.reshape(len(x), -1)[target].astype(np.float64)
    pairs = {"x0": pred, "x2": pred, "target": truth, "mask": masks}
    jobs = {"mse": lambda: metrics.mse(pred, truth), "psnr": lambda: metrics.psnr(pred, truth),
            "ssim": lambda: metrics.ssim(pred, truth), "iou": lambda: metrics.foreground_iou(pred, masks),
            "centroid_error": lambda: metrics.centroid_error(pred, masks),
            "sharpness": lambda: metrics.sharpness(pred, truth),
            "table_metrics": lambda: metrics.table_metrics(pred, f, table),
            "evaluate": lambda: evaluate.evaluate(lambda x0, x2, tau: x0, pairs, 0.5, f, table)}
    if hasattr(evaluate, "truths"):  # this tree: the targets' share is made once per (split, gap, tau) for every row
        shared, once = evaluate.truths(pairs, f, table), metrics.truth(truth, masks, f, table)
        p64 = pred.double().numpy()
        jobs |= {"truths_once": lambda: evaluate.truths(pairs, f, table),
                 "ssim_per_row": lambda: metrics.ssim(p64, once.frames, once.ssim),
                 "table_metrics_per_row": lambda: metrics.table_metrics(pred, f, table, masses=once.masses),
                 "evaluate_per_row": lambda: evaluate.evaluate(lambda x0, x2, tau: x0, pairs, 0.5, f, table, None, shared)}
    counts = {}  # queries per job where they are not `frames`
    if dof in (1, 2) and hasattr(pose, "nearest"):
        unit, rows = table.unit_rows(torch.device("cpu")), pred.permute(0, 2, 3, 1).reshape(len(pred), -1)
        index = table.index(torch.device("cpu"))

        def brute():  # the bare product: unit queries against every unit table row, batch by batch
            return torch.cat([((r / r.norm(dim=1, keepdim=True)) @ unit.T).argmax(dim=1) for r in rows.split(256)])

        # ... and what learned models draw more often than copies: the blend of the ends 2 `gap` apart, as it is and
        # blurred by 1, 2 and 3 px (near many poses at once: the search's dear cases; the product's price is the same
        # for any query), and the grey of the blend (a flat frame, about as far from every pose)
        blend = ((x[seq[:, :-2 * gap].ravel()].float() + x[seq[:, 2 * gap:].ravel()].float()) / 510)[:frames]
        hwc = blend.permute(0, 2, 3, 1).numpy()  # (n, H, W, 3)
        hedges = {"blend": hwc, **{f"blend_blur{s}": np.stack([cv2.GaussianBlur(im, (0, 0), float(s)) for im in hwc])
                                   for s in (1, 2, 3)}, "grey": np.repeat(hwc.mean(axis=3, keepdims=True), 3, axis=3)}
        hedges = {name: torch.from_numpy(np.ascontiguousarray(v)).reshape(len(v), -1) for name, v in hedges.items()}
        def searched(queries):  # (n, D) float rows -> the search's rows, 256 queries a call
            return lambda: torch.cat([pose.nearest.search(index, r)[0] for r in queries.split(256)])

        jobs |= {"brute_force_product": brute, "pose_search": searched(rows)}
        jobs |= {f"pose_search_{name}": searched(v) for name, v in hedges.items()}
        counts |= {f"pose_search_{name}": len(v) for name, v in hedges.items()}
        found = jobs["pose_search"]()
        same = bool(torch.equal(found, brute()))
        nearest_rows = found.numpy()[:, None]  # (B, 1) each query's nearest row

        def floor():  # the least an exact search pays per query: float64 query and norm, its projection, one exact row
            for start, r in zip(range(0, len(rows), 256), rows.split(256)):
                q = r.double()
                norms = q.norm(dim=1)
                (q @ index.lift[:index.near.shape[1]].T) / norms[:, None]  # the bound's directions (and the mean)
                pose.nearest.exact_distance(index, q.numpy(), norms.numpy(), nearest_rows[start:start + 256])

        jobs["search_floor"] = floor
        # What the search answers, as digests that --compare holds against the other tree's: copies, blurred blends,
        # and what the shipped trained models of this DoF draw at tau 0.5 between the ends 2 `gap` apart.
        sets = {"copy-x0": pred} | {name: v.reshape(len(v), size, size, 3).permute(0, 3, 1, 2)
                                    for name, v in hedges.items()}
        sets |= shipped_predictions(dof, x[seq[:, :-2 * gap].ravel()][:frames], x[seq[:, 2 * gap:].ravel()][:frames])
        digests = {name: answer_digest(*pose.recover(images, table)) for name, images in sets.items()}
    for job in jobs.values():  # once untimed: one-off costs per table (unit rows, the index on a device) are not per frame
        job()
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            seconds[name].append(time.perf_counter() - start)
    out = {"dof": dof, "step_deg": getattr(table, "step_deg", None), "frames": len(pred), "repeats": repeats,
           "ms_per_1000": {name: round(statistics.median(v) / counts.get(name, len(pred)) * 1e6, 1)
                           for name, v in seconds.items()}}
    if dof in (1, 2) and "pose_search" in jobs:
        out["search_equals_brute_force"] = same
        out["search_digests"] = digests
    return out


def answer_digest(index: np.ndarray, distance: np.ndarray) -> str:
    """sha256 of the recovered table rows (N,) and their float64 distances (N,): equal digests, equal bits."""
    return hashlib.sha256(np.asarray(index, np.int64).tobytes() + np.asarray(distance, np.float64).tobytes()).hexdigest()


def shipped_predictions(dof: int, x0: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each trained model in reference/models for `dof` draws at tau 0.5 between x0 and x2 (N, 3, H, W) uint8:
    name -> (N, 3, H, W) float in [0, 1]; none where this tree has no shipped models."""
    folder = Path(__file__).resolve().parents[2] / "reference" / "models"
    try:
        from benchmarks import methods
        from benchmarks.engine.reference_models import read_folder
    except ImportError:  # a commit from before the shipped models
        return {}
    out = {}
    for model in (read_folder(folder) if folder.is_dir() else []):
        if model.dof == dof:
            module = methods.get(model.method)
            loaded = module.load(model.config(), model.folder, "cpu")
            with torch.no_grad():
                out[model.name] = torch.cat([module.predict(loaded, a.float() / 255, b.float() / 255, 0.5).clamp(0, 1)
                                             for a, b in zip(x0.split(512), x2.split(512))])
    return out


def compare(before: str, cache: Path, dof: int, size: int, step: float | None, frames: int, gap: int,
            repeats: int, threads: int) -> dict:
    """profile() of the commit `before` (its packages extracted by git archive) and of this tree, alternating
    one repeat at a time in fresh processes, so both sides see the same machine load: medians and ratios."""
    root = Path(__file__).resolve().parents[2]  # the repository: benchmarks/tools/metric_speed.py
    args = ["--cache", str(cache), "--dof", str(dof), "--size", str(size), "--frames", str(frames), "--gap", str(gap),
            "--threads", str(threads), "--repeats", "1", "--profile-only"] + ([] if step is None else ["--step", str(step)])
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "-C", str(root), "archive", before, "benchmarks", "render", "ibutil",
                                  "inbetween"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        for _ in range(repeats):
            for side, tree in (("before", old), ("after", str(root))):
                env = os.environ | {"PYTHONPATH": tree}
                done = subprocess.run([sys.executable, str(root / "benchmarks" / "tools" / "metric_speed.py"), *args], env=env,
                                      check=True, capture_output=True, text=True)
                runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
    med = {side: {name: statistics.median(r["ms_per_1000"][name] for r in rs) for name in rs[0]["ms_per_1000"]}
           for side, rs in runs.items()}
    out = {"dof": dof, "step_deg": runs["after"][0]["step_deg"], "frames": runs["after"][0]["frames"], "before": before,
           "repeats": repeats, "ms_per_1000_before": med["before"], "ms_per_1000_after": med["after"],
           "speedup": {name: round(med["before"][name] / med["after"][name], 2) for name in med["before"]}}
    if "evaluate_per_row" in med["after"]:  # a further row on the same targets; and a dozen rows with one share
        out["per_row_speedup"] = {name: round(med["before"][name] / med["after"][f"{name}_per_row"], 2)
                                  for name in ("ssim", "table_metrics", "evaluate")}
        per_row = med["after"]["evaluate_per_row"] + med["after"]["truths_once"] / ROWS
        out[f"evaluate_speedup_{ROWS}_rows"] = round(med["before"]["evaluate"] / per_row, 2)
    if "pose_search" in med["after"]:
        out["search_vs_brute_force"] = round(med["after"]["brute_force_product"] / med["after"]["pose_search"], 2)
        out["hedged_search_vs_brute_force"] = {  # per 1,000 queries both: the product's price is the same for any query
            name[len("pose_search_"):]: round(med["after"]["brute_force_product"] / ms, 2)
            for name, ms in med["after"].items() if name.startswith("pose_search_")}
        # the most any search of this design could gain over the product: its fixed float64 price per query alone
        out["floor_vs_brute_force"] = round(med["after"]["brute_force_product"] / med["after"]["search_floor"], 2)
        out["search_equals_brute_force"] = all(r["search_equals_brute_force"] for r in runs["after"])
    if all("search_digests" in r for rs in runs.values() for r in rs):  # both trees answered the same query sets
        before, after = runs["before"][0]["search_digests"], runs["after"][0]["search_digests"]
        out["same_rows_and_distances_as_before"] = {name: before[name] == after[name]
                                                    for name in sorted(set(before) & set(after))}
    return out


@click.command()
@click.option("--cache", default=".cache/inbetween-bench", show_default=True, help="Dataset and table cache folder.")
@click.option("--dof", "dofs", type=click.Choice(["1", "2", "6"]), multiple=True, default=("1", "2", "6"),
              help="DoF presets to measure (repeat the option).")
@click.option("--size", default=32, show_default=True, help="Frame size of the default datasets.")
@click.option("--gap", default=10, show_default=True, help="Gap of the copy-x0 hedge that is scored too.")
@click.option("--threads", default=1, show_default=True,
              help="torch intra-op threads (0 = torch's default); one is fastest on a shared 2-core machine.")
@click.option("--compare", "before", default=None, metavar="REV",
              help="Time the scoring path per metric at git commit REV and here, side by side (medians, ratios).")
@click.option("--step", type=float, default=None, help="Pose-table step in degrees for --compare (default: the DoF's).")
@click.option("--frames", default=1000, show_default=True, help="Predictions scored per repeat by --compare.")
@click.option("--repeats", default=5, show_default=True, help="Repeats per side for --compare (median reported).")
@click.option("--profile-only", is_flag=True, hidden=True)
def main(cache: str, dofs: tuple[str, ...], size: int, gap: int, threads: int, before: str | None,
         step: float | None, frames: int, repeats: int, profile_only: bool) -> None:
    """Print one JSON line per DoF: table build time and size, seconds per 1000 frames, ground-truth scores
    (or, with --compare, milliseconds per 1,000 frames per metric before and after)."""
    if threads:
        torch.set_num_threads(threads)
    for dof in dofs:
        if profile_only:
            click.echo(json.dumps(profile(Path(cache), int(dof), size, step, frames, gap, repeats)))
        elif before is not None:
            click.echo(json.dumps(compare(before, Path(cache), int(dof), size, step, frames, gap, repeats, threads)))
        else:
            click.echo(json.dumps(measure(Path(cache), int(dof), size, gap)))


if __name__ == "__main__":
    main()
