#!/usr/bin/env bash
# Create (or reuse) .venv with torch and everything the demo and the tests need. Safe to run repeatedly.
# TORCH_SPEC overrides the torch requirement (default: torch==2.13.0, a CPU build on our machines; on a GPU machine
# install your CUDA build of torch into .venv first and this script leaves it alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
pip install --quiet -r requirements-dev.txt
