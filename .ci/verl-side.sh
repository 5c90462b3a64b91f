#!/usr/bin/env bash
# Put verl (and the few packages its reward code imports) in a side folder, .verl-side, then print its path.
#
# verl is not a dependency of llmenv: llmenv.integrations.verl speaks verl's contracts without importing it.
# The test that runs llmenv's reward functions through verl's own loader and reward managers
# (tests/integrations/test_verl.py) finds verl through LLMENV_VERL_PATH, which .ci/run sets to what this
# prints. `--no-deps` keeps verl's own requirements (a CUDA torch, vllm, ...) out; the project's .venv
# supplies torch, transformers, numpy, pyarrow. Cached: does nothing when the folder already holds verl.
# Usage: bash .ci/verl-side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIDE="$PWD/.verl-side"
if [ ! -f "$SIDE/verl-0.9.1.dist-info/METADATA" ]; then
  PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/pip install -q --no-deps --target "$SIDE" \
    verl==0.9.1 tensordict==0.15.3 ray==2.60.0 msgpack==1.2.4 pyvers==0.2.3 omegaconf==2.4.0 >&2
fi
echo "$SIDE"
