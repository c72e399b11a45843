#!/usr/bin/env bash
# Install into .venv and run the main job: the --demo benchmark (dof 1 and 2 at 32 px, every method,
# the alpha-VAE at alpha 0 and 100; about 5 minutes on 2 cores). It ends with a five-line summary
# that names the figure to open; tables, raw numbers and figures are in results/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
run-benchmark --demo --out results/demo --overwrite
