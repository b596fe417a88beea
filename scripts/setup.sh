#!/usr/bin/env bash
# Create .venv and install vidssl with everything its tests need, from nothing.
# Usage: ./scripts/setup.sh            (idempotent; re-running only checks)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# torchcodec decodes with the system FFmpeg libraries; PyAV ships its own.
if ! command -v ffmpeg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU machines this project runs on carry these wheels locally; on a GPU box pick the
# torch build for your CUDA first, then the line below keeps it.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test,torchcodec,scenes,anonymize,secat]"
.venv/bin/vidssl --version
