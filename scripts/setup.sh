#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian's OSMesa (headless MuJoCo videos), a C compiler (the
# reference robot), a venv in .venv, the CPU torch wheel first (so no dependency can pull a CUDA build),
# then robopol and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6 >/dev/null
    else
        echo "warning: libosmesa6 missing and apt-get unavailable; videos will be skipped" >&2
    fi
fi
# A C compiler builds the reference robot (hardware/reference_robot/robot.c) the deploy tests drive.
if ! command -v cc >/dev/null && ! command -v gcc >/dev/null && ! command -v clang >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
    else
        echo "warning: no C compiler and apt-get unavailable; the C reference robot tests will be skipped" >&2
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
    || python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
# robomimic 0.3.0 only for reading our files with its own SequenceDataset in the tests; its declared
# dependencies (torchvision, mujoco_py) would replace the CPU torch, so it comes without them.
python -c "import robomimic" 2>/dev/null || python -m pip install -q --no-deps robomimic==0.3.0 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch was replaced by {v}')"
