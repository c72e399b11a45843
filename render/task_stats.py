"""Measure a dataset's tasks from factors alone (no GL): well-posed triplets per gap, held-out distances.

    python -m render.task_stats                       # every preset, default and bounce motion
    python -m render.task_stats --file data/x.h5      # a rendered file (v1 or v2)

Without --file the factors come from render.presets exactly as render-dataset draws them, cast to
float32 as the file stores them, so the numbers equal those of the rendered default files.
"""

from __future__ import annotations

import argparse

import numpy as np

from ibdata import h5format
from ibdata.tasks import HeldoutRegion, pairwise_min_distance, well_posed
from render.presets import RenderConfig, heldout_region, sequence_factors, split_shapes

GAPS = (2, 5, 10, 20)


def well_posed_fraction(factors: np.ndarray, units, gap: int) -> float:
    """Fraction of the triplets (t-k, t, t+k) of factors (S, T, F) whose middle frame is well-posed."""
    t = np.arange(gap, factors.shape[1] - gap)
    return float(well_posed(factors[:, t - gap], factors[:, t], factors[:, t + gap], 0.5, units).mean())


def split_factors(config: RenderConfig) -> dict[str, np.ndarray]:
    """Every split's factors (S, T, F) float32, as the file stores them."""
    return {split: np.stack([sequence_factors(config, split, i) for i in range(n)]).astype(np.float32)
            if n else np.zeros((0, t, 1), np.float32) for split, (n, t) in split_shapes(config).items()}


def heldout_distance(region: HeldoutRegion, factors: dict[str, np.ndarray]) -> float:
    """Smallest factor distance between a scored heldout frame and any train or val frame."""
    held = factors["heldout"].reshape(-1, factors["heldout"].shape[-1])
    scored = held[region.contains(held)]
    seen = np.concatenate([factors[s].reshape(-1, held.shape[-1]) for s in ("train", "val")])
    return pairwise_min_distance(region.kind, scored, seen)


def report(name: str, factors: dict[str, np.ndarray], units, region: HeldoutRegion | None) -> str:
    cells = []
    for gap in GAPS:
        cells += [f"{well_posed_fraction(f, units, gap):.3f}" if f.shape[1] > 2 * gap else "-"
                  for f in (factors["test"],)]
    line = f"| {name} | " + " | ".join(cells)
    if region is None:
        return line + " | - | - |"
    n_scored = int(region.contains(factors["heldout"]).sum())
    return line + f" | {heldout_distance(region, factors):.3f} {region.unit} | {n_scored} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=None, help="a rendered .h5 file (default: every preset, from factors)")
    args = parser.parse_args()
    print("| data | " + " | ".join(f"well-posed test triplets, gap {k}" for k in GAPS)
          + " | min. distance scored heldout to train/val | scored heldout frames |")
    print("|---" * (len(GAPS) + 3) + "|")
    if args.file:
        with h5format.open_dataset(args.file) as f:
            h = h5format.read_header(f)
            factors = {s: f[s]["factors"][()] for s in h.splits}
        region = (HeldoutRegion.from_json(h.heldout["region"])
                  if h.heldout and h.heldout["region"] and "heldout" in factors else None)
        print(report(args.file, factors, h.factor_units, region))
        return
    for dof, motion in ((1, "linear"), (2, "linear"), (6, "linear"), (6, "bounce")):
        config = RenderConfig(dof=dof, motion=motion)
        units = ["deg"] * (1 if dof == 1 else 2) if dof != 6 else ["ndc"] * 6
        print(report(f"dof {dof} {motion}", split_factors(config), units, heldout_region(config)))


if __name__ == "__main__":
    main()
