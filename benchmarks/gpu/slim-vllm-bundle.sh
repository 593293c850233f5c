#!/usr/bin/env bash
# Remove from a vLLM 0.26 CUDA wheel what an SM90 (Hopper) GPU serving a dense model never loads,
# so the wheel bundle travels in fewer parts: the FlashAttention 2 extension (vLLM prefers FA3 on
# SM90 and imports FA2 inside try/except), the Rust frontend binary (used only with
# VLLM_RUST_FRONTEND_PATH), and deep_gemm builds for Pythons other than 3.12.
# Usage: slim-vllm-bundle.sh WHEEL   (edits the wheel in place; keep the original elsewhere)
set -euo pipefail
wheel=${1:?usage: slim-vllm-bundle.sh WHEEL}
zip -q -d "$wheel" 'vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so' 'vllm/vllm-rs' \
  'vllm/third_party/deep_gemm/_C.cpython-31[0134]-x86_64-linux-gnu.so'
ls -la "$wheel"
