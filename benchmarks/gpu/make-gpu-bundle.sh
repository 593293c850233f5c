#!/usr/bin/env bash
# Here (network to PyPI and Debian's mirror): build what setup-gpu-machine.sh installs on the GPU
# machine, split so that each part travels with one `run` call under its 64 MiB carry limit.
#   wheels/  vLLM 0.26.0 (slimmed by slim-vllm-bundle.sh), the packages it needs beyond the PyTorch
#            2.11 image (../shared/gpu/vllm-0.26-gpu-requirements.txt), LMCache 0.5.6 and the
#            packages its vLLM adapter imports that the image lacks (checked on the H200:
#            aiofile, then cryptography; see results/gpu-h200/lmcache-check.txt; valkey-glide-sync
#            for its valkey:// connector, without which LMCache ran degraded, bypassing its tiers)
#   debs/    Debian 12's redis-server and what its binary links (unpacked there, not installed)
# Output: DIR/r0 ... DIR/rN, each one part.K of the tar (24 MiB, so a part plus the ~36 MiB
# checkout stays under the limit); r0 also holds SHA256SUMS (of the whole tar), the model-folder
# script and kvbench's own wheel. Usage: make-gpu-bundle.sh DIR [SHARED_GPU_DIR]
set -euo pipefail
out=${1:?usage: make-gpu-bundle.sh DIR [SHARED_GPU_DIR]}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
shared=${2:-$repo/../shared/gpu}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels" "$work/debs" "$out"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp)
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/wheels" vllm==0.26.0 \
  -r "$shared/vllm-0.26-gpu-requirements.txt" \
  lmcache==0.5.6 aiofile==3.12.3 caio==0.12.10 httptools==0.9.0 cufile-python==0.2.0 awscrt==0.38.1 \
  cryptography==46.0.3 cffi==2.0.0 pycparser==2.23 valkey-glide-sync==2.6.0
bash "$here/slim-vllm-bundle.sh" "$work"/wheels/vllm-0.26.0-*.whl >/dev/null
(cd "$work/debs" && apt-get download -q redis-server redis-tools liblzf1 libjemalloc2 >/dev/null)
tar -C "$work" -cf "$work/bundle.tar" wheels debs
(cd "$work" && sha256sum bundle.tar > SHA256SUMS && split -b 24M -d -a 2 bundle.tar part.)
rm -rf "$out"/r[0-9]*
i=0
for f in "$work"/part.*; do mkdir -p "$out/r$i"; mv "$f" "$out/r$i/"; i=$((i+1)); done
cp "$work/SHA256SUMS" "$shared/make-qwen3-dummy-model.py" "$out/r0/"
(cd "$repo" && python3 -m pip wheel -q --no-deps . -w "$out/r0" >/dev/null)
du -sh "$out"/r*
