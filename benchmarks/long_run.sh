#!/usr/bin/env bash
# Convergence check (docs/results.md, "Five times the training budget"): the alpha-VAE at alpha 0
# and 100 and the frame CNN on DoF 2 and 6 with 5000 steps instead of 1000, 2 seeds.
#
# Runs through the plan/only/aggregate fan-out of docs/scale.md: the trainings as two
# single-threaded lanes (xargs -P 2), then the evaluations, then the aggregate. On the 2-core VM:
# about 57 minutes for the 8 alpha-VAEs and 52 for the 4 frame CNNs (~0.6 s per step per lane).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"
OUT=${OUT:-results/full}
LONG="--alpha 0 100 --dof 2 6 --methods pixel-average optical-flow frame-cnn alpha-vae --seeds 2 --width 0.125 --latent 32 --steps 5000"

jobs_of() {  # the ids of one kind of job in the plan
    run-benchmark $LONG --plan | python -c "import json, sys; [print(j['id']) for j in map(json.loads, sys.stdin) if j['kind'] == '$1']"
}
for kind in render train eval; do
    jobs_of "$kind" | xargs -r -P 2 -I{} run-benchmark $LONG --threads 1 --quiet --only {}
done
time run-benchmark $LONG --aggregate --quiet --overwrite --out "$OUT/long-5000"
