"""The scenario catalog renders exactly the vLLM flags, env and EPP configs the seeds describe."""

import json
import textwrap

import pytest

from kvbench.errors import UserError
from kvbench.spec.experiment import load_spec
from kvbench.spec.scenarios import (
    BUILTIN_SCENARIOS,
    Runtime,
    catalog_for_spec,
    engine_overrides,
    experiment_names,
    load_catalog,
    render_scenario,
    resolve_experiment,
    store_maxmemory_bytes,
    validate_scenarios,
)

RUNTIME = Runtime(
    model="Qwen/Qwen3-8B",
    served_model_name="qwen8b",
    block_size=16,
    pod_address="127.0.0.1:8101",
    kv_store_url="redis://127.0.0.1:7001",
    kv_store_address="redis://127.0.0.1:7001",
    kv_events_endpoint="tcp://127.0.0.1:5557",
    kv_events_bind="tcp://127.0.0.1:5557",
)


def flag(rendered, name):
    args = rendered.engine_args
    return args[args.index(name) + 1] if name in args else None


def test_catalog_has_the_seven_scenarios():
    assert load_catalog().names() == list(BUILTIN_SCENARIOS)


def test_unknown_scenario_lists_known_ones():
    with pytest.raises(UserError) as err:
        load_catalog().get("lmcache-disk")
    assert "lmcache-disk" in str(err.value) and "llm-d-valkey" in str(err.value)


def test_no_offload_has_no_connector_and_the_approximate_epp():
    rendered = render_scenario(load_catalog(), "no-offload", {}, RUNTIME)
    assert rendered.engine_args == [] and rendered.engine_env == {} and rendered.kv_store is None
    weights = {
        p["pluginRef"]: p.get("weight")
        for p in rendered.epp_config["schedulingProfiles"][0]["plugins"]
    }
    assert weights == {
        "queue-scorer": 2,
        "kv-cache-utilization-scorer": 2,
        "prefix-cache-scorer": 3,
        "max-score-picker": None,
    }


def test_native_offload_renders_the_seed_json_verbatim():
    rendered = render_scenario(load_catalog(), "native-offload", {}, RUNTIME)
    assert flag(rendered, "--kv-transfer-config") == (
        '{"kv_connector":"OffloadingConnector","kv_role":"kv_both","kv_connector_extra_config":{"num_cpu_blocks":10000}}'
    )


def test_param_sweep_substitutes_typed_values_and_drops_nulls():
    catalog = load_catalog()
    doubled = render_scenario(catalog, "native-offload", {"num_cpu_blocks": 20000}, RUNTIME)
    assert json.loads(flag(doubled, "--kv-transfer-config"))["kv_connector_extra_config"] == {
        "num_cpu_blocks": 20000
    }
    by_bytes = render_scenario(
        catalog,
        "native-offload",
        {"num_cpu_blocks": None, "cpu_bytes_to_use": 107374182400},
        RUNTIME,
    )
    assert json.loads(flag(by_bytes, "--kv-transfer-config"))["kv_connector_extra_config"] == {
        "cpu_bytes_to_use": 107374182400
    }


def test_per_model_param_values_resolve_for_the_cell_model():
    catalog = load_catalog()
    params = {
        "num_cpu_blocks": {"Qwen/Qwen3-0.6B": 39072, "Qwen3-8B": 64000},
        "gpu_memory_utilization": {"default": 0.6},
    }
    rendered = render_scenario(catalog, "native-offload", params, RUNTIME)
    assert (
        json.loads(flag(rendered, "--kv-transfer-config"))["kv_connector_extra_config"][
            "num_cpu_blocks"
        ]
        == 64000
    )
    assert engine_overrides(catalog, "native-offload", params, "Qwen/Qwen3-8B") == {
        "gpu_memory_utilization": 0.6
    }
    with pytest.raises(
        UserError, match="scenario_params.num_cpu_blocks: no value for model 'Qwen/Qwen3-14B'"
    ):
        render_scenario(
            catalog,
            "native-offload",
            {"num_cpu_blocks": {"Qwen3-8B": 1}},
            Runtime("Qwen/Qwen3-14B", "m"),
        )


def test_lmcache_local_uses_lmcache_env_not_the_seed_keys():
    rendered = render_scenario(
        load_catalog(), "lmcache-local", {"lmcache_max_local_cpu_size_gb": 13.1}, RUNTIME
    )
    assert json.loads(flag(rendered, "--kv-transfer-config")) == {
        "kv_connector": "LMCacheConnectorV1",
        "kv_role": "kv_both",
    }
    assert rendered.engine_env == {
        "LMCACHE_CHUNK_SIZE": "256",
        "LMCACHE_LOCAL_CPU": "True",
        "LMCACHE_MAX_LOCAL_CPU_SIZE": "13.1",
        "PYTHONHASHSEED": "42",
    }
    assert "cpu_blocks" in rendered.notes and store_maxmemory_bytes(rendered) is None


@pytest.mark.parametrize("name, kind", [("lmcache-redis", "redis"), ("lmcache-valkey", "valkey")])
def test_lmcache_remote_points_at_the_store(name, kind):
    runtime = Runtime("Qwen/Qwen3-8B", "qwen8b", kv_store_url=f"{kind}://127.0.0.1:7001")
    rendered = render_scenario(load_catalog(), name, {"kv_store_maxmemory_mb": 64}, runtime)
    assert rendered.kv_store.kind == kind and rendered.kv_store.role == "lmcache-remote"
    assert rendered.engine_env["LMCACHE_REMOTE_URL"] == f"{kind}://127.0.0.1:7001"
    assert rendered.engine_env["LMCACHE_REMOTE_SERDE"] == "naive"
    assert store_maxmemory_bytes(rendered) == 64 * 1024 * 1024


@pytest.mark.parametrize(
    "name, config_key", [("llm-d-redis", "redisConfig"), ("llm-d-valkey", "valkeyConfig")]
)
def test_llm_d_precise_routing_keeps_hashes_consistent(name, config_key):
    runtime = Runtime(
        "Qwen/Qwen3-8B",
        "qwen8b",
        block_size=64,
        pod_address="127.0.0.1:8101",
        kv_store_address="redis://127.0.0.1:7001",
        kv_events_endpoint="tcp://127.0.0.1:5557",
        kv_events_bind="tcp://127.0.0.1:5557",
        kv_events_replay_endpoint="tcp://127.0.0.1:5600",
    )
    rendered = render_scenario(load_catalog(), name, {"hash_seed": "123"}, runtime)
    assert flag(rendered, "--prefix-caching-hash-algo") == "sha256_cbor"
    assert rendered.engine_env == {"PYTHONHASHSEED": "123"}
    assert json.loads(flag(rendered, "--kv-events-config")) == {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": "tcp://127.0.0.1:5557",
        "replay_endpoint": "tcp://127.0.0.1:5600",
        "topic": "kv@127.0.0.1:8101@qwen8b",
    }
    plugin = rendered.epp_config["plugins"][1]
    assert plugin["parameters"]["tokenProcessorConfig"] == {"blockSize": 64, "hashSeed": "123"}
    assert plugin["type"] == "precise-prefix-cache-scorer"
    indexer = plugin["parameters"]["indexerConfig"]
    assert indexer["tokenProcessorConfig"] == {"blockSize": 64, "hashSeed": "123"}
    assert indexer["kvBlockIndexConfig"][config_key] == {"address": "redis://127.0.0.1:7001"}
    assert plugin["parameters"]["kvEventsConfig"]["zmqEndpoint"] == "tcp://127.0.0.1:5557"
    weights = [p.get("weight") for p in rendered.epp_config["schedulingProfiles"][0]["plugins"]]
    assert weights == [2, 1, 1, None]


def test_every_rendered_epp_config_loads_in_the_router():
    from kvbench.emulator.router.config import load_config_text

    catalog = load_catalog()
    for name in catalog.names():
        for epp in ("approximate", "tiered-cpu", None):
            params = {"epp_config": epp} if epp and not name.startswith("llm-d") else {}
            rendered = render_scenario(catalog, name, params, RUNTIME)
            assert load_config_text(rendered.epp_config_yaml(), name).plugins


def test_tiered_guide_epp_weights_and_cpu_capacity():
    rendered = render_scenario(
        load_catalog(), "native-offload", {"epp_config": "tiered-cpu"}, RUNTIME
    )
    plugins = {p.get("name", p["type"]): p for p in rendered.epp_config["plugins"]}
    assert plugins["cpu-prefix-cache-scorer"]["parameters"] == {
        "autoTune": False,
        "lruCapacityPerServer": 41000,
    }
    weights = [p.get("weight") for p in rendered.epp_config["schedulingProfiles"][0]["plugins"]]
    assert weights == [2, 2, 1, 1, None]


def test_unknown_param_is_rejected_naming_it():
    with pytest.raises(UserError, match=r"scenario_params\.num_cpu_block: unknown parameter"):
        validate_scenarios(load_catalog(), ["native-offload"], {"num_cpu_block": [1]})


def test_user_scenario_file_adds_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        textwrap.dedent("""
        params: {arc_blocks: 500}
        scenarios:
          native-arc:
            description: native offload with ARC eviction
            kind: {offload: native, routing: approximate}
            kv_transfer_config:
              kv_connector: OffloadingConnector
              kv_role: kv_both
              kv_connector_extra_config: {num_cpu_blocks: "${arc_blocks}", eviction_policy: arc}
    """)
    )
    catalog = load_catalog([path])
    assert catalog.names()[-1] == "native-arc" and "no-offload" in catalog.names()
    rendered = render_scenario(catalog, "native-arc", {"arc_blocks": 800}, RUNTIME)
    assert json.loads(flag(rendered, "--kv-transfer-config"))["kv_connector_extra_config"] == {
        "num_cpu_blocks": 800,
        "eviction_policy": "arc",
    }


def test_bad_scenario_file_names_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "scenarios:\n  x:\n    kind: {offload: lmcache-remote, routing: approximate}\n"
        "    kv_store: {kind: memcached, role: lmcache-remote}\n"
    )
    with pytest.raises(UserError, match=r"bad.yaml: scenarios.x.kv_store.kind"):
        load_catalog([path])


def test_a_scenario_must_declare_its_kind(tmp_path):
    path = tmp_path / "nokind.yaml"
    path.write_text("scenarios:\n  x:\n    description: something\n")
    with pytest.raises(UserError, match=r"nokind.yaml: scenarios.x.kind: Field required"):
        load_catalog([path])


def test_remote_offload_kind_needs_a_remote_store(tmp_path):
    path = tmp_path / "mismatch.yaml"
    path.write_text("scenarios:\n  x:\n    kind: {offload: lmcache-remote, routing: approximate}\n")
    with pytest.raises(UserError, match=r"mismatch.yaml: scenarios.x: .*kind.offload"):
        load_catalog([path])


def test_builtin_scenarios_declare_their_kind():
    kinds = load_catalog().kinds(["no-offload", "native-offload", "lmcache-valkey", "llm-d-redis"])
    assert kinds["no-offload"].offload == "none" and not kinds["no-offload"].offloads
    assert kinds["native-offload"].offload == "native"
    assert kinds["lmcache-valkey"].offload == "lmcache-remote"
    assert kinds["lmcache-valkey"].store == "valkey"
    assert (
        kinds["llm-d-redis"].routes_precisely
        and kinds["llm-d-redis"].store_role == "kv-block-index"
    )


def test_unknown_placeholder_is_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(
        "scenarios:\n  t:\n    kind: {offload: none, routing: approximate}\n"
        "    env: {LMCACHE_CHUNK_SIZE: '${chunk}'}\n"
    )
    with pytest.raises(
        UserError, match=r"scenario t.env.LMCACHE_CHUNK_SIZE: unknown placeholder \$\{chunk\}"
    ):
        render_scenario(load_catalog([path]), "t", {}, RUNTIME)


def test_bundled_experiments_load_and_use_known_scenarios_and_params():
    names = experiment_names()
    assert {
        "llm-d-kvcache-eval",
        "llm-d-kvcache-eval-20k-cpu-blocks",
        "vllm-cpu-offload-eval",
        "llm-d-tiered-prefix-cache-high",
        "llm-d-tiered-prefix-cache-low",
        "quickstart",
    } <= set(names)
    for name in names:
        spec = load_spec(resolve_experiment(name))
        catalog = catalog_for_spec(spec)
        validate_scenarios(catalog, spec.scenarios, spec.scenario_params)
        for scenario in spec.scenarios:
            for model in spec.models:
                cell = {key: values[0] for key, values in spec.scenario_params.items()}
                render_scenario(
                    catalog,
                    scenario,
                    cell,
                    Runtime(
                        model,
                        model,
                        kv_store_url="redis://h:1",
                        kv_store_address="redis://h:1",
                        pod_address="p",
                        kv_events_endpoint="tcp://h:2",
                        kv_events_bind="tcp://*:2",
                    ),
                )


def test_seed_experiment_matches_the_report():
    spec = load_spec(resolve_experiment("llm-d-kvcache-eval"))
    assert spec.seed == 889 and spec.load.levels == [1, 50, 100, 150, 300, 400, 500, 650]
    assert (
        spec.load.duration_s == 120
        and spec.target.tensor_parallel_size == 2
        and spec.target.hardware == "L40S"
    )
    assert (spec.workload.prefix_tokens, spec.workload.turns, spec.workload.prompt_tokens) == (
        10000,
        5,
        128,
    )
    assert len(spec.scenarios) == 7


def test_resolve_experiment_prefers_paths_and_lists_bundled_names(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\n")
    assert resolve_experiment(path) == path
    with pytest.raises(UserError) as err:
        resolve_experiment("no-such-experiment")
    assert "quickstart" in str(err.value)


def test_scenario_files_resolve_relative_to_the_spec(tmp_path):
    (tmp_path / "sub").mkdir()
    spec_path = tmp_path / "sub" / "spec.yaml"
    (tmp_path / "sub" / "mine.yaml").write_text("scenarios: {}\n")
    spec_path.write_text(
        textwrap.dedent("""
        name: t
        models: [Qwen/Qwen3-0.6B]
        scenario_files: [mine.yaml]
        target: {kind: emulated}
        workload: {kind: synthetic, prompt_tokens: 8, output_tokens: 4, requests: 2}
        load: {requests_per_level: 2}
    """)
    )
    assert load_spec(spec_path).scenario_files == [tmp_path / "sub" / "mine.yaml"]


def test_vllm_offload_eval_sets_per_model_sizes_through_its_params_file():
    spec = load_spec(resolve_experiment("vllm-cpu-offload-eval"))
    catalog = catalog_for_spec(spec)
    small = render_scenario(catalog, "native-offload", {}, Runtime("Qwen/Qwen3-0.6B", "m"))
    assert json.loads(flag(small, "--kv-transfer-config"))["kv_connector_extra_config"] == {
        "num_cpu_blocks": 39072
    }
    assert engine_overrides(catalog, "native-offload", {}, "Qwen/Qwen3-8B") == {
        "gpu_memory_utilization": 0.6
    }
    assert spec.scenario_params == {}  # nothing swept: scenario labels stay the plain names


def test_tiered_guide_sizes_offload_in_bytes_and_uses_the_guide_epp():
    catalog = catalog_for_spec(load_spec(resolve_experiment("llm-d-tiered-prefix-cache-high")))
    native = render_scenario(catalog, "native-offload", {}, Runtime("Qwen/Qwen3-32B", "m"))
    assert json.loads(flag(native, "--kv-transfer-config"))["kv_connector_extra_config"] == {
        "cpu_bytes_to_use": 107374182400
    }
    lmcache = render_scenario(catalog, "lmcache-local", {}, Runtime("Qwen/Qwen3-32B", "m"))
    assert (
        lmcache.engine_env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "100"
        and lmcache.engine_env["PYTHONHASHSEED"] == "123"
    )
    assert lmcache.epp_config_source.endswith("tiered-cpu.yaml")


def test_params_used_by_names_only_the_knobs_a_scenario_renders():
    from kvbench.spec.scenarios import ENGINE_PARAMS, load_catalog, params_used_by

    catalog = load_catalog()
    native = params_used_by(catalog, "native-offload")
    lmcache = params_used_by(catalog, "lmcache-local")
    plain = params_used_by(catalog, "no-offload")
    assert (
        "num_cpu_blocks" in native
        and "num_cpu_blocks" not in lmcache
        and "num_cpu_blocks" not in plain
    )
    assert (
        "lmcache_max_local_cpu_size_gb" in lmcache and "lmcache_max_local_cpu_size_gb" not in native
    )
    assert "epp_config" in plain  # every scenario's router config is a knob
    assert set(ENGINE_PARAMS) <= plain
