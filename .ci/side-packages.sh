#!/usr/bin/env bash
# Put the other trainers llmenv integrates with in side folders under .side-packages/, then print that path.
#
#   .side-packages/trl   TRL 1.16.0 (its requirements, transformers, accelerate, datasets, are in .venv)
#   .side-packages/verl  verl 0.9.1 and the few packages its reward code imports (tensordict, ray, ...)
#
# Neither is a dependency of llmenv: llmenv.integrations.{trl,verl} speak their contracts without importing
# them. The tests that run llmenv's tasks through the real trainers (tests/integrations/) find them through
# LLMENV_SIDE_PACKAGES, which .ci/run sets to what this prints, and run them in subprocesses with the folder
# on PYTHONPATH. `--no-deps` keeps their own pins (a CUDA torch, vllm, ...) out. Cached: a folder that
# already holds its package is left alone.
# Usage: bash .ci/side-packages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIDE="$PWD/.side-packages"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -f "$SIDE/trl/trl-1.16.0.dist-info/METADATA" ] ||
  .venv/bin/pip install -q --no-deps --target "$SIDE/trl" trl==1.16.0 >&2
[ -f "$SIDE/verl/verl-0.9.1.dist-info/METADATA" ] ||
  .venv/bin/pip install -q --no-deps --target "$SIDE/verl" \
    verl==0.9.1 tensordict==0.15.3 ray==2.60.0 msgpack==1.2.4 pyvers==0.2.3 omegaconf==2.4.0 >&2
echo "$SIDE"
