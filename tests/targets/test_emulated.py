"""The emulated target brings real local stacks up (engines, router, Redis/Valkey) and takes them down."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from kvbench.spec.experiment import EmulatedTarget as EmulatedSpec
from kvbench.targets.base import ComponentReset, TargetError
from kvbench.targets.emulated import EmulatedTarget

sys.path.insert(0, str(Path(__file__).parent))
from process_checks import assert_gone  # noqa: E402

MODEL = "Qwen/Qwen3-0.6B"


def spec(**extra):
    base = dict(
        kind="emulated", hardware="L40S", engines=2, num_gpu_blocks_override=256, max_model_len=4096
    )
    return EmulatedSpec(**{**base, **extra})


def complete(url, prompt_ids, max_tokens=4):
    body = json.dumps({"model": MODEL, "prompt": prompt_ids, "max_tokens": max_tokens}).encode()
    request = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_no_offload_stack_serves_through_the_router_and_leaves_nothing(tmp_path):
    target = EmulatedTarget(spec(), run_dir=tmp_path, seed=3)
    deployment = target.up(MODEL, "no-offload", {})
    try:
        assert set(deployment.pids) == {"router", "engine-0", "engine-1"}
        assert set(deployment.metrics_sources) == {"engine-0", "engine-1", "router"}
        facts = deployment.facts
        assert facts.gpu_kv_capacity_tokens == 2 * 256 * 16
        assert facts.gpu_kv_capacity_tokens_per_engine == [256 * 16, 256 * 16]
        assert facts.cpu_kv_capacity_tokens is None and facts.max_model_len == 4096
        assert facts.kv_tiers == ["gpu"] and facts.engines == 2 and facts.router is not None
        prompt = list(range(1000, 1100))  # 100 tokens: 6 full 16-token blocks
        assert (
            complete(deployment.base_url, prompt)["usage"]["prompt_tokens_details"]["cached_tokens"]
            == 0
        )
        # the approximate prefix scorer sends the repeat to the same engine: 96 tokens hit
        assert (
            complete(deployment.base_url, prompt)["usage"]["prompt_tokens_details"]["cached_tokens"]
            == 96
        )
        reset = target.reset_caches(deployment)
        assert reset.components == {
            f"engine-{i}": ComponentReset(reset=True, what="POST /reset_prefix_cache", attempts=1)
            for i in range(2)
        }
        assert reset.metrics_sources is None  # the local stack's endpoints do not change
        assert (tmp_path / "logs" / "01-Qwen3-0.6B__no-offload" / "engine-0.log").is_file()
    finally:
        target.down(deployment)
    assert_gone(deployment.pids)
    target.down(deployment)  # idempotent


def test_llm_d_redis_stack_feeds_the_index_and_reset_flushes_it(tmp_path):
    target = EmulatedTarget(spec(), run_dir=tmp_path, seed=3)
    deployment = target.up(MODEL, "llm-d-redis", {})
    try:
        store = deployment.facts.store
        assert store is not None and store.url is not None
        assert (store.kind, store.role, store.maxmemory_bytes) == ("redis", "kv-block-index", None)
        assert "--kv-events-config" in deployment.facts.engine_args
        prompt = list(range(2000, 2100))
        complete(deployment.base_url, prompt)
        index = redis.Redis.from_url(store.url)
        deadline = time.monotonic() + 10
        while (
            index.dbsize() == 0 and time.monotonic() < deadline
        ):  # events reach the index asynchronously
            time.sleep(0.05)
        keys = index.dbsize()
        assert keys == 6  # the 6 full blocks of the prompt, one index entry each
        # precise routing: the index predicts the 96 cached tokens and the repeat goes where they are
        assert (
            complete(deployment.base_url, prompt)["usage"]["prompt_tokens_details"]["cached_tokens"]
            == 96
        )
        reset = target.reset_caches(deployment)
        assert reset.components["redis"] == ComponentReset(
            reset=True, what="FLUSHALL (kv-block-index)", keys_removed=keys
        )
        assert index.dbsize() == 0
        index.close()
        decisions = [
            json.loads(line)
            for line in Path(str(deployment.facts.decision_log_path)).read_text().splitlines()
        ]
        assert [
            d["predicted_hit_tokens"] for d in decisions if d["request_id"] != "kvbench-probe"
        ] == [0, 96]
    finally:
        target.down(deployment)
    assert_gone(deployment.pids)


def test_lmcache_remote_store_is_sized_and_capacities_reported(tmp_path):
    target = EmulatedTarget(spec(engines=1), run_dir=tmp_path)
    deployment = target.up(
        MODEL,
        "lmcache-valkey",
        {"kv_store_maxmemory_mb": 1024, "lmcache_max_local_cpu_size_gb": 1.0},
    )
    try:
        facts = deployment.facts
        # LMCache's 1 GiB per rank over Qwen3-0.6B's 114,688 bytes per token (TP=1)
        assert facts.cpu_kv_capacity_tokens == 1024**3 // 114688
        assert facts.remote_kv_capacity_tokens == 1024**3 // 114688
        assert facts.kv_tiers == ["gpu", "cpu", "remote"]
        # the emulator writes 1/4096 of the true bytes: maxmemory is scaled alike (+8 MiB for keys)
        assert facts.store is not None
        assert facts.store.maxmemory_bytes == 1024**3 // 4096 + 8 * 1024 * 1024
        assert facts.engine_env["LMCACHE_REMOTE_URL"] == facts.store.url
    finally:
        target.down(deployment)
    assert_gone(deployment.pids)


def test_a_stack_that_fails_to_start_is_a_target_error_with_the_log_tail(tmp_path):
    target = EmulatedTarget(spec(num_gpu_blocks_override=8, max_model_len=None), run_dir=tmp_path)
    with pytest.raises(TargetError) as err:
        target.up(MODEL, "no-offload", {})
    assert "engine-" in str(err.value) and "exited with code 2" in str(err.value)
    assert "--max-model-len" in err.value.log_tail
    children = [
        p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE
    ]
    assert children == []


def test_servers_die_with_a_parent_that_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from kvbench.spec.experiment import EmulatedTarget as S
        from kvbench.targets.emulated import EmulatedTarget
        t = EmulatedTarget(S(kind="emulated", engines=1, num_gpu_blocks_override=256, max_model_len=4096),
                           run_dir=Path({str(tmp_path)!r}))
        d = t.up("{MODEL}", "lmcache-redis", {{}})
        print(json.dumps(d.pids), flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        assert set(pids) == {"router", "engine-0", "redis"}
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    # router and engine: PR_SET_PDEATHSIG; the store (started by KVStoreServer) has no such guard
    assert_gone({k: v for k, v in pids.items() if k != "redis"})
    os.kill(pids["redis"], signal.SIGTERM)
