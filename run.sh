#!/usr/bin/env bash
# Train and test a concept-bottleneck model: bash run.sh [hydra overrides]   (-m for multiruns/sweeps)
# First use creates .venv and installs sparsecbm into it (skipped when sparsecbm is already importable).
set -euo pipefail
cd "$(dirname "$0")"
PY=python3
if ! "$PY" -c "import sparsecbm" 2>/dev/null; then
  if [ ! -x .venv/bin/python ]; then
    echo "[run.sh] creating .venv and installing sparsecbm (once)"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    # Linux without an NVIDIA GPU: the CPU build of torch (small) rather than the default CUDA one.
    # Pre-install your own torch into .venv to choose another build.
    if [ "$(uname)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then
      .venv/bin/pip install -q torch --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
        || echo "[run.sh] PyTorch CPU index unreachable; pip will choose the torch build"
    fi
    .venv/bin/pip install -q -e .
  fi
  PY=.venv/bin/python
fi
export TOKENIZERS_PARALLELISM=false
exec "$PY" -m sparsecbm.train "$@"
