#!/usr/bin/env bash
# The committed full run (docs/results.md): main grid, KL-form ablation, paper-width comparison.
# About 80 minutes on a 2-core CPU. Models and datasets are cached in .cache/, so a rerun is fast.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"
OUT=${OUT:-results/full}
COMMON="--width 0.125 --latent 32 --steps 1000 --quiet --overwrite"

# 1. Main grid: every DoF, default gaps 2 5 10 20, all baselines, alpha in {0, 1, 10, 100}, 3 seeds.
time run-benchmark --alpha 0 1 10 100 --seeds 3 $COMMON --out "$OUT/main"
# 2. KL-form ablation at alpha = 100 on DoF 1 and 2 (avg-gaussian models come from the cache).
time run-benchmark --alpha 100 --kl avg-gaussian mixture jensen --dof 1 2 --methods alpha-vae --seeds 3 \
  $COMMON --out "$OUT/kl-ablation"
# 3. Paper width (1.0) against the narrow model on DoF 1, same short budget of 120 steps.
time run-benchmark --alpha 0 100 --dof 1 --methods alpha-vae --width 1.0 --latent 32 --steps 120 --quiet \
  --overwrite --out "$OUT/paper-width"
time run-benchmark --alpha 0 100 --dof 1 --methods alpha-vae --width 0.125 --latent 32 --steps 120 --quiet \
  --overwrite --out "$OUT/narrow-120-steps"
