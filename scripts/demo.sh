#!/usr/bin/env bash
# Set up .venv (see setup_env.sh) and run the demo on the bundled model and sample clip: no download.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
python scripts/demo.py "$@"
