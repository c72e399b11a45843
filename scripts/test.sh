#!/usr/bin/env bash
# Install into .venv and run the test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
