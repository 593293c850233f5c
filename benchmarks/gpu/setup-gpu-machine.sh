#!/usr/bin/env bash
# On the GPU machine, after every part of the bundle is in PARTS (default /var/tmp/parts): install
# vLLM 0.26.0, LMCache 0.5.6 and the small packages they need into /var/tmp/site, kvbench's own
# wheel beside them, Debian's redis-server (unpacked from its .deb files, not installed) into
# /var/tmp/redis, and make the Qwen3 model folders for --load-format dummy. Prints one line per
# check (vllm, lmcache adapter, redis-server, valkey-server) so a later failure has its cause here.
# Then `source benchmarks/gpu/gpu-env.sh` gives every command the same environment.
set -uo pipefail
parts=${1:-/var/tmp/parts}
site=/var/tmp/site
work=$(mktemp -d /var/tmp/bundle.XXXX)
cat "$parts"/part.* > "$work/bundle.tar"
(cd "$work" && sha256sum -c "$parts/SHA256SUMS") || exit 1
tar -C "$work" -xf "$work/bundle.tar" && rm "$work/bundle.tar"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
  "$work"/wheels/*.whl "$parts"/kvbench-*.whl || exit 1
mkdir -p /var/tmp/redis
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" /var/tmp/redis; done
rm -rf "$work"
source "$(dirname "$0")/gpu-env.sh"
for size in 0.6B 8B 14B; do
  dir=/var/tmp/models/qwen3-$(echo "$size" | tr 'B' 'b')
  [ -f "$dir/config.json" ] || python3 "$parts/make-qwen3-dummy-model.py" "$dir" "$size" >/dev/null
done
python3 -c "import vllm, vllm.v1.engine.core; print('check vllm', vllm.__version__)"
python3 -c "import lmcache.integration.vllm.vllm_v1_adapter; print('check lmcache ok')" 2>&1 | tail -2
python3 -c "import glide_sync; print('check valkey-glide-sync ok')" 2>&1 | tail -1
redis-server --version | sed 's/^/check /'
valkey-server --version | sed 's/^/check /'
ls /var/tmp/models
