#!/usr/bin/env bash
# Install into .venv and run the test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# The example method package (docs/your-method.md): tests/test_plugins.py runs its entry point.
.venv/bin/python -m pip install -q -e examples/external-method --no-deps
.venv/bin/python -m pytest -q "$@"
