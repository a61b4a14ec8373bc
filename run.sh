#!/usr/bin/env bash
# Train and test a concept-bottleneck model: bash run.sh [hydra overrides]   (-m for multiruns/sweeps)
# First use creates .venv and installs sparsecbm into it (skipped when sparsecbm is already importable).
# Offline: pip makes one short attempt per index (no retries), so a machine without network gets pip's
# one-line error or, with the packages already available locally, goes straight on to training.
set -euo pipefail
cd "$(dirname "$0")"
PY=python3
PIP_FAST=(--disable-pip-version-check --retries 0 --timeout 5)
# (import the trainer, not just the package: run from this folder, `import sparsecbm` finds ./sparsecbm
# even where none of its dependencies are installed)
if ! "$PY" -c "import sparsecbm.train" 2>/dev/null; then
  if [ ! -f .venv/.sparsecbm-installed ]; then
    echo "[run.sh] creating .venv and installing sparsecbm (once)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q "${PIP_FAST[@]}" --upgrade pip 2>/dev/null \
      || echo "[run.sh] could not upgrade pip (offline?); using the venv's own"
    # Linux without an NVIDIA GPU: the CPU build of torch (small) rather than the default CUDA one.
    # Pre-install your own torch into .venv to choose another build.
    if [ "$(uname)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1 \
        && ! .venv/bin/python -c "import torch" 2>/dev/null; then
      .venv/bin/pip install -q "${PIP_FAST[@]}" torch --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
        || echo "[run.sh] PyTorch CPU index unreachable; pip will choose the torch build"
    fi
    if ! .venv/bin/pip install -q "${PIP_FAST[@]}" -e . 2>.venv/pip-error.log; then
      echo "[run.sh] installing sparsecbm failed: $(grep -m1 -i 'error' .venv/pip-error.log || tail -n1 .venv/pip-error.log)" >&2
      echo "[run.sh] without network, install its dependencies from a local wheel folder" \
           "(pip install --no-index --find-links DIR -e .) and run bash run.sh again; details: .venv/pip-error.log" >&2
      exit 2
    fi
    touch .venv/.sparsecbm-installed
  fi
  PY=.venv/bin/python
fi
export TOKENIZERS_PARALLELISM=false
exec "$PY" -m sparsecbm.train "$@"
