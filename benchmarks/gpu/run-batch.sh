#!/usr/bin/env bash
# On the GPU machine: run kvbench specs one after another, each bounded in time, and leave each run
# directory as $OUT/NAME.tgz with its console log $OUT/NAME.log (what the device tool brings back).
# Usage: run-batch.sh TIMEOUT_S NAME=SPEC [NAME=SPEC ...]   (after setup-gpu-machine.sh)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/gpu-env.sh"
timeout_s=$1; shift
out=${OUT:-/var/tmp/out}
for job in "$@"; do
  name=${job%%=*}; spec=${job#*=}
  dir=/var/tmp/runs/$name
  started=$(date +%s)
  timeout --signal=INT --kill-after=30 "$timeout_s" kvbench run "$spec" --out "$dir" >"$out/$name.log" 2>&1
  echo "$name: rc=$? $(( $(date +%s) - started )) s" | tee -a "$out/$name.log"
  tar -C /var/tmp/runs -czf "$out/$name.tgz" "$name" 2>/dev/null
done
