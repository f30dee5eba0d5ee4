#!/usr/bin/env bash
# The test suite on a fresh machine: set up (idempotent), then pytest with headless MuJoCo rendering.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL="${MUJOCO_GL:-osmesa}"
# One pytest worker per core (pytest-xdist): the suite is mostly single-threaded CPU work.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n auto --durations=15 "$@"
