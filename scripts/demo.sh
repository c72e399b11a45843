#!/usr/bin/env bash
# Install into .venv and run the main job on a small default: the quick benchmark (renders tiny
# 1-, 2- and 6-DoF datasets, trains tiny models, evaluates every method), then draws a dataset.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
run-benchmark --quick --alpha 0 100 --out results/quick --overwrite
inspect-dataset "$(ls .cache/inbetween-bench/data/dof2-*.h5 | head -n 1)" --sheet results/quick/dof2-sheet.png
echo "done: tables in results/quick/results.md, figures and raw numbers beside it"
