#!/usr/bin/env bash
# Set up .venv (see setup_env.sh) and run the test suite: CPU only, no downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
python -m pytest tests -q "$@"
