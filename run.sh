#!/usr/bin/env bash
# Every sparsecbm command, without activating anything:  bash run.sh [COMMAND] [hydra overrides]
#   bash run.sh                        train the default model (CEBaB ships in data/cebab: works offline)
#   bash run.sh experiment=smoke       a quick check (-m for multiruns/sweeps: bash run.sh -m seed=1,2,3)
#   bash run.sh evaluate ckpt_path=... (also: intervene, explain, serve, serve-bench, annotate, bench, tables,
#                                       aggregate, label-refit, causal; `bash run.sh help` lists them)
#   bash run.sh test [pytest options]  the test suite (installs the dev extras into .venv once)
# The first use creates .venv and installs sparsecbm into it; an existing .venv (or a python that already
# imports sparsecbm) is used as it is. Offline: pip makes one short attempt per index (no retries), so a
# machine without network gets pip's one-line error and how to install from local wheels.
set -euo pipefail
cd "$(dirname "$0")"
PIP_FAST=(--disable-pip-version-check --retries 0 --timeout 5)

command_module() {  # the python module a command runs ("" for an unknown name)
  case "$1" in
    train) echo sparsecbm.train ;;
    evaluate) echo sparsecbm.evaluate ;;
    intervene) echo sparsecbm.intervene ;;
    explain) echo sparsecbm.explain ;;
    serve) echo sparsecbm.serve ;;
    serve-bench) echo sparsecbm.serve.bench ;;
    annotate) echo sparsecbm.annotate ;;
    bench) echo sparsecbm.bench ;;
    tables) echo sparsecbm.tables ;;
    aggregate) echo sparsecbm.aggregate ;;
    label-refit) echo sparsecbm.label_refit ;;
    causal) echo sparsecbm.causal ;;
    *) echo "" ;;
  esac
}
COMMANDS="train evaluate intervene explain serve serve-bench annotate bench tables aggregate label-refit causal test help"

# the command: a first argument that is a plain word (not key=value, not -m/--help); none = train
cmd=train
if [ $# -gt 0 ] && [[ "$1" != -* && "$1" != *=* ]]; then
  cmd=$1
  shift
  if [ "$cmd" = help ]; then
    echo "usage: bash run.sh [COMMAND] [key=value ...]   (no COMMAND: train)"
    echo "commands: $COMMANDS"
    echo "each takes --help (its options); docs/guides/getting-started.md walks through them"
    exit 0
  fi
  if [ "$cmd" != test ] && [ -z "$(command_module "$cmd")" ]; then
    echo "error: unknown command '$cmd'; expected one of: $COMMANDS (or key=value overrides for train)" >&2
    exit 2
  fi
fi

# the python to use: one that imports sparsecbm with its dependencies (import the trainer, not just the
# package: run from this folder, `import sparsecbm` finds ./sparsecbm even where nothing else is installed)
PY=""
for candidate in .venv/bin/python python3; do
  if [ -x "$(command -v "$candidate" 2>/dev/null || true)" ] && "$candidate" -c "import sparsecbm.train" 2>/dev/null; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
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
  PY=.venv/bin/python
fi
export TOKENIZERS_PARALLELISM=false
# how a killed training run prints its resume command
if [ "$cmd" = train ]; then export SPARSECBM_LAUNCHER="bash run.sh"; else export SPARSECBM_LAUNCHER="bash run.sh $cmd"; fi

if [ "$cmd" = test ]; then
  # the test suite as a normal user: offline, the dev extras (pytest, hypothesis, playwright...) in the venv;
  # the browser test skips, saying why, where Chromium is missing (CI=true makes it mandatory)
  if ! "$PY" -c "import pytest, xdist, hypothesis, httpx" 2>/dev/null; then
    echo "[run.sh] installing the test dependencies (sparsecbm[dev], once)"
    if ! "$PY" -m pip install -q "${PIP_FAST[@]}" -e ".[dev]" 2>/tmp/sparsecbm-pip-dev.log; then
      echo "[run.sh] installing sparsecbm[dev] failed: $(grep -m1 -i 'error' /tmp/sparsecbm-pip-dev.log || true);" \
           "offline, install them from a local wheel folder: $PY -m pip install --no-index --find-links DIR -e '.[dev]'" >&2
      exit 2
    fi
  fi
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  exec "$PY" -m pytest -q -n "${SPARSECBM_TEST_WORKERS:-2}" "$@"
fi
exec "$PY" -m "$(command_module "$cmd")" "$@"
