"""llm-d EndpointPickerConfig loading: the guides' configs load unchanged; bad input is one line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kvbench.emulator.router.build import build_plugins
from kvbench.emulator.router.config import load_config_file, load_config_text
from kvbench.emulator.router.index_memory import InMemoryIndex
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.emulator.router.metrics import EppMetrics
from kvbench.errors import UserError

CONFIGS = Path(__file__).parent / "configs"


def build(config):
    return build_plugins(
        config, EppMetrics("test"), random.Random(0), lambda: 0.0, {}, lambda pod: pod
    )


def scorer_table(built):
    return [(w.scorer.type, w.scorer.name, w.weight) for w in built.scheduler.scorers]


def test_tiered_prefix_cache_guide_loads_with_its_weights_and_a_default_picker():
    config = load_config_file(CONFIGS / "tiered-prefix-cache-cpu.yaml")
    built = build(config)
    assert scorer_table(built) == [
        ("active-request-scorer", "active-request-scorer", 2.0),
        ("kv-cache-utilization-scorer", "kv-cache-utilization-scorer", 2.0),
        ("prefix-cache-scorer", "gpu-prefix-cache-scorer", 1.0),
        ("prefix-cache-scorer", "cpu-prefix-cache-scorer", 1.0),
    ]
    gpu, cpu = built.scheduler.scorers[2].scorer, built.scheduler.scorers[3].scorer
    assert (gpu.auto_tune, gpu.lru_capacity_per_server, gpu.block_size_chars) == (True, 31250, 64)
    assert (cpu.auto_tune, cpu.lru_capacity_per_server) == (False, 41000)
    assert built.scheduler.picker.type == "max-score-picker"
    assert (
        config.default_profile().plugins[-1].plugin_ref == "max-score-picker"
    )  # added by the loader


def test_precise_config_from_inference_scheduler_loads_passive_plugins_and_in_memory_index():
    built = build(load_config_file(CONFIGS / "epp-precise-prefix-cache-config.yaml"))
    assert scorer_table(built) == [
        ("precise-prefix-cache-scorer", "precise-prefix-cache-scorer", 2.0),
        ("kv-cache-utilization-scorer", "kv-cache-utilization-scorer", 1.0),
        ("queue-scorer", "queue-scorer", 1.0),
    ]
    precise = built.scheduler.scorers[0].scorer
    assert (precise.block_size_tokens, precise.hash_seed) == (64, "42")
    assert isinstance(precise.index, InMemoryIndex)
    assert built.subscribers[0].endpoint == "tcp://*:5557"
    assert built.subscribers[0].topic_filter == "kv@"


def test_minimal_epp_config_defaults_block_size_16_and_empty_seed():
    built = build(load_config_file(CONFIGS / "epp-config.yaml"))
    assert scorer_table(built) == [
        ("precise-prefix-cache-scorer", "precise-prefix-cache-scorer", 2.0)
    ]
    precise = built.scheduler.scorers[0].scorer
    assert (precise.block_size_tokens, precise.hash_seed) == (16, "")


def test_valkey_index_address_is_rewritten_to_redis_scheme():
    built = build(load_config_file(CONFIGS / "valkey-precise.yaml"))
    index = built.scheduler.scorers[0].scorer.index
    assert isinstance(index, RedisIndex)
    assert (index.name, index.url) == ("valkey", "redis://valkey:6379")
    active = built.scheduler.scorers[3].scorer
    assert active.request_timeout_s == 120.0


def test_benchmark_config_with_null_tokenizer_fields_loads():
    built = build(load_config_file(CONFIGS / "llmd-bench-precise.yaml"))
    assert [w.weight for w in built.scheduler.scorers] == [3.0, 2.0, 2.0]


def test_bare_redis_address_gets_redis_scheme():
    text = """
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    indexerConfig: {kvBlockIndexConfig: {redisConfig: {address: "10.0.0.1:6379"}}}
"""
    index = build(load_config_text(text)).scheduler.scorers[0].scorer.index
    assert index.url == "redis://10.0.0.1:6379"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "plugins:\n- type: prefix-cache-scorrer\n",
            "plugin prefix-cache-scorrer: unknown type 'prefix-cache-scorrer'",
        ),
        (
            "plugins:\n- type: prefix-cache-scorer\n  name: p\n  parameters: {lruCapacityPerSever: 10}\n",
            "plugin p: unknown parameter 'lruCapacityPerSever'",
        ),
        (
            "plugins:\n- type: prefix-cache-scorer\n  name: p\n  parameters: {blockSize: big}\n",
            "plugin p: parameter blockSize must be int",
        ),
        (
            "plugins:\n- type: prefix-cache-scorer\n  name: p\n  parameters: {autoTune: 1}\n",
            "plugin p: parameter autoTune must be bool",
        ),
        (
            "plugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: qs\n",
            "pluginRef 'qs' is not a declared plugin",
        ),
        (
            "plugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n    weight: -1\n",
            "weight of queue-scorer must be a number >= 0",
        ),
        ("kind: Deployment\nplugins: []\n", "kind is 'Deployment'"),
        ("plugins: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_field(text, message):
    with pytest.raises(UserError) as err:
        load_config_text(text, "epp.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_nested_precise_parameter_names_its_path():
    text = "plugins:\n- type: precise-prefix-cache-scorer\n  name: ppc\n  parameters: {tokenProcessorConfig: {blockSize: '64'}}\n"
    with pytest.raises(
        UserError, match=r"plugin ppc: parameter tokenProcessorConfig.blockSize must be int"
    ):
        build(load_config_text(text))


def test_missing_config_file_names_the_flag(tmp_path):
    with pytest.raises(UserError, match="--config .*missing.yaml: cannot read"):
        load_config_file(tmp_path / "missing.yaml")


NESTED_TOKEN_PROCESSOR = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    indexerConfig:
      tokenProcessorConfig:
        blockSize: 64
        hashSeed: "42"
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: precise-prefix-cache-scorer
"""


def test_token_processor_inside_indexer_config_is_read_as_kv_cache_manager_v04_does():
    built = build(load_config_text(NESTED_TOKEN_PROCESSOR, "nested.yaml"))
    precise = built.scheduler.scorers[0].scorer
    assert (precise.block_size_tokens, precise.hash_seed) == (64, "42")
