#!/usr/bin/env bash
# Install into .venv and run the main job on a small default: render the 2-DoF dataset and draw it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
render-dataset --dof 2 --out data/dof2-teapot-32px-seed0.h5 --overwrite
inspect-dataset data/dof2-teapot-32px-seed0.h5 --sheet data/dof2-sheet.png --gif data/dof2-seq0.gif
echo "done: dataset, manifest and card in data/; contact sheet data/dof2-sheet.png"
