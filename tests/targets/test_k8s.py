"""k8s target: manifests per scenario, applied through the Kubernetes API of a local fake server."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_kube_api import TOKEN, FakeKubeApi  # noqa: E402

from kvbench.collect.collector import Collector, snapshot  # noqa: E402
from kvbench.errors import UserError  # noqa: E402
from kvbench.spec.experiment import K8sTarget as K8sSpec  # noqa: E402
from kvbench.spec.scenarios import load_catalog  # noqa: E402
from kvbench.targets.base import (
    ComponentReset,
    KvStoreFacts,
    TargetError,  # noqa: E402
)
from kvbench.targets.k8s import RESTART_ANNOTATION, K8sTarget, label_selector, vllm_port  # noqa: E402
from kvbench.targets.k8s_manifests import committed_spec, kustomize_tree, render_manifests  # noqa: E402

NS = "bench"
REPO = Path(__file__).resolve().parents[2]


def container_of(objects, name="llm-d-model-server"):
    server = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    return server["spec"]["template"]["spec"]["containers"][0]


def test_native_offload_manifest_carries_the_connector_json():
    spec = K8sSpec(kind="k8s", namespace=NS, tensor_parallel_size=2)
    objects = render_manifests(
        load_catalog(), spec, "Qwen/Qwen3-14B", "native-offload", {"num_cpu_blocks": 20000}
    )
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment"]
    args = container_of(objects)["args"]
    assert args[:5] == ["Qwen/Qwen3-14B", "--port", "8000", "--tensor-parallel-size", "2"]
    assert args[args.index("--kv-transfer-config") + 1] == (
        '{"kv_connector":"OffloadingConnector","kv_role":"kv_both","kv_connector_extra_config":{"num_cpu_blocks":20000}}'
    )


def test_llm_d_redis_manifests_wire_store_events_and_index():
    spec = K8sSpec(kind="k8s", namespace=NS)
    objects = render_manifests(load_catalog(), spec, "Qwen/Qwen3-8B", "llm-d-redis", {})
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("Deployment", "redis"),
        ("Service", "redis"),
        ("ConfigMap", "llm-d-infpool-epp"),
        ("Deployment", "llm-d-model-server"),
    ]
    args = container_of(objects)["args"]
    events = json.loads(args[args.index("--kv-events-config") + 1])
    assert events["endpoint"] == f"tcp://llm-d-infpool-epp.{NS}.svc.cluster.local:5557"
    assert events["topic"] == "kv@$(POD_IP)@Qwen/Qwen3-8B" and "replay_endpoint" not in events
    epp = yaml.safe_load(objects[2]["data"]["default-plugins.yaml"])
    params = epp["plugins"][1]["parameters"]
    assert (
        params["indexerConfig"]["kvBlockIndexConfig"]["redisConfig"]["address"]
        == f"redis://redis.{NS}.svc.cluster.local:6379"
    )
    assert params["kvEventsConfig"]["zmqEndpoint"] == "tcp://*:5557"
    assert (
        "--maxmemory" not in objects[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    )  # an index never evicts


def test_committed_deploy_tree_is_what_the_generator_writes():
    files = kustomize_tree(load_catalog(), committed_spec())
    on_disk = {
        str(p.relative_to(REPO / "deploy")): p.read_text()
        for p in (REPO / "deploy").rglob("*.yaml")
    }
    assert on_disk == files
    assert len([f for f in files if f.endswith("kustomization.yaml")]) == 8


@pytest.fixture
def cluster(tmp_path):
    with FakeKubeApi(rollout_reads=2) as api:
        epp = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "llm-d-infpool-epp", "namespace": NS, "generation": 1},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "epp"}},
                "template": {
                    "metadata": {"labels": {"app": "epp"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "epp",
                                "image": "epp",
                                "ports": [
                                    {"containerPort": 9002, "name": "grpc"},
                                    {"containerPort": 9090, "name": "metrics"},
                                ],
                            }
                        ]
                    },
                },
            },
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "availableReplicas": 1,
            },
        }
        api.objects[(NS, "deployments", "llm-d-infpool-epp")] = epp
        yield api, str(api.write_kubeconfig(tmp_path / "kubeconfig"))


def make_target(kubeconfig, tmp_path, sleeps=None, **extra):
    spec = K8sSpec(
        kind="k8s", namespace=NS, kubeconfig=kubeconfig, gateway_url="http://gw:80", **extra
    )
    target = K8sTarget(
        spec,
        run_dir=tmp_path,
        seed=1,
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
    )
    target.poll_interval_s = 0.0
    return target


def test_apply_creates_then_patches_and_restarts_the_epp_only_on_config_change(cluster, tmp_path):
    api, kubeconfig = cluster
    target = make_target(kubeconfig, tmp_path)

    first = target.up("Qwen/Qwen3-8B", "no-offload", {})
    assert first.facts.k8s.applied == {
        "ConfigMap/llm-d-infpool-epp": "created",
        "Deployment/llm-d-model-server": "created",
    }
    assert first.base_url == "http://gw:80" and first.facts.k8s.epp_restarted
    epp_template = api.objects[(NS, "deployments", "llm-d-infpool-epp")]["spec"]["template"]
    first_stamp = epp_template["metadata"]["annotations"][RESTART_ANNOTATION]
    # the rollout wait read the model server until the fake controller caught up (2 pending reads)
    reads = [r for r in api.requests if r == ("GET", "deployments", "llm-d-model-server")]
    assert len(reads) >= 4

    api.requests.clear()
    second = target.up("Qwen/Qwen3-8B", "native-offload", {})
    assert second.facts.k8s.applied == {
        "ConfigMap/llm-d-infpool-epp": "unchanged",
        "Deployment/llm-d-model-server": "patched",
    }
    assert not second.facts.k8s.epp_restarted
    assert ("PATCH", "deployments", "llm-d-infpool-epp") not in api.requests
    server = api.objects[(NS, "deployments", "llm-d-model-server")]
    assert (
        server["metadata"]["generation"] == 2
        and "--kv-transfer-config" in server["spec"]["template"]["spec"]["containers"][0]["args"]
    )

    third = target.up("Qwen/Qwen3-8B", "llm-d-valkey", {})
    assert third.facts.k8s.applied["Deployment/valkey"] == "created"
    assert (
        third.facts.k8s.applied["ConfigMap/llm-d-infpool-epp"] == "patched"
        and third.facts.k8s.epp_restarted
    )
    epp = api.objects[(NS, "deployments", "llm-d-infpool-epp")]
    assert (
        epp["metadata"]["generation"] >= 2
        and RESTART_ANNOTATION in epp["spec"]["template"]["metadata"]["annotations"]
    )
    assert first_stamp  # restarted twice: once per EPP config change
    env = {
        e["name"]: e.get("value")
        for e in api.objects[(NS, "deployments", "llm-d-model-server")]["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["PYTHONHASHSEED"] == "42" and "LMCACHE_CHUNK_SIZE" not in env


def test_a_model_server_installed_by_someone_else_keeps_its_image(cluster, tmp_path):
    api, kubeconfig = cluster
    api.objects[(NS, "deployments", "llm-d-model-server")] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm-d-model-server", "generation": 1},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "ms"}},
            "template": {
                "metadata": {"labels": {"app": "ms"}},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "my/vllm:custom",
                            "args": ["old", "--stale-flag"],
                            "env": [{"name": "LMCACHE_REMOTE_URL", "value": "redis://old"}],
                        }
                    ]
                },
            },
        },
    }
    make_target(kubeconfig, tmp_path).up("Qwen/Qwen3-8B", "lmcache-local", {})
    container = api.objects[(NS, "deployments", "llm-d-model-server")]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["image"] == "my/vllm:custom"
    assert "--stale-flag" not in container["args"] and container["args"][0] == "Qwen/Qwen3-8B"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "LMCACHE_REMOTE_URL" not in env and env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "5.0"


def test_rollout_that_never_finishes_is_a_target_error_with_status(cluster, tmp_path):
    api, kubeconfig = cluster
    api.rollout_reads = 10**9
    ticks = iter(range(0, 10**6, 100))
    spec = K8sSpec(
        kind="k8s",
        namespace=NS,
        kubeconfig=kubeconfig,
        gateway_url="http://gw",
        rollout_timeout_s=250,
    )
    target = K8sTarget(spec, run_dir=tmp_path, clock=lambda: next(ticks), sleep=lambda s: None)
    with pytest.raises(TargetError) as err:
        target.up("Qwen/Qwen3-8B", "no-offload", {})
    assert "llm-d-model-server did not roll out within 250s" in str(err.value)
    assert err.value.log_tail is not None


def test_dry_run_prints_and_applies_nothing(tmp_path, capsys):
    target = K8sTarget(K8sSpec(kind="k8s", namespace=NS, dry_run=True), run_dir=tmp_path)
    with pytest.raises(TargetError, match="dry_run"):
        target.up("Qwen/Qwen3-8B", "lmcache-redis", {})
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [o["metadata"]["name"] for o in printed] == [
        "redis",
        "redis",
        "llm-d-infpool-epp",
        "llm-d-model-server",
    ]
    assert (tmp_path / "k8s" / "lmcache-redis" / "manifests.yaml").is_file()


def test_missing_gateway_url_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="target.gateway_url"):
        K8sTarget(K8sSpec(kind="k8s"), run_dir=tmp_path)


# ----------------------------------------------------------------------------- cache reset, metrics

RESET = "POST /reset_prefix_cache (pod proxy)"
SERVER_PODS = ["llm-d-model-server-g1-0", "llm-d-model-server-g1-1"]


def pods_of(api, prefix):
    return sorted(
        name for (ns, kind, name) in api.objects if kind == "pods" and name.startswith(prefix)
    )


def test_model_server_env_enables_the_reset_endpoint():
    objects = render_manifests(
        load_catalog(), K8sSpec(kind="k8s", namespace=NS), "Qwen/Qwen3-8B", "lmcache-local", {}
    )
    env = {e["name"]: e.get("value") for e in container_of(objects)["env"]}
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "5.0"


def test_reset_resets_every_engine_pod_retrying_a_busy_one_and_restarts_the_store(
    cluster, tmp_path
):
    api, kubeconfig = cluster
    target = make_target(kubeconfig, tmp_path, engines=2)
    deployment = target.up("Qwen/Qwen3-8B", "lmcache-redis", {})
    assert deployment.facts.store == KvStoreFacts(kind="redis", deployment="redis")
    assert pods_of(api, "llm-d-model-server-") == SERVER_PODS and pods_of(api, "redis-") == [
        "redis-g1-0"
    ]
    api.busy_resets[SERVER_PODS[1]] = 1  # vLLM's 400 "blocks still in use" once
    api.proxied.clear()

    result = target.reset_caches(deployment)

    assert result.model_dump(exclude_defaults=True)["components"] == {
        "engine-0": {"reset": True, "what": RESET, "attempts": 1, "pod": SERVER_PODS[0]},
        "engine-1": {"reset": True, "what": RESET, "attempts": 2, "pod": SERVER_PODS[1]},
        "redis": {"reset": True, "what": "rollout restart (no persistence)"},
        "router": {"reset": False, "what": "the EPP's approximate prefix index has no reset API"},
    }
    assert api.proxied == [
        ("POST", SERVER_PODS[0], 8000, "reset_prefix_cache", f"Bearer {TOKEN}"),
        ("POST", SERVER_PODS[1], 8000, "reset_prefix_cache", f"Bearer {TOKEN}"),
        ("POST", SERVER_PODS[1], 8000, "reset_prefix_cache", f"Bearer {TOKEN}"),
    ]
    store = api.objects[(NS, "deployments", "redis")]
    assert (
        store["metadata"]["generation"] == 2
        and RESTART_ANNOTATION in store["spec"]["template"]["metadata"]["annotations"]
    )
    assert pods_of(api, "redis-") == [
        "redis-g2-0"
    ]  # the rollout replaced the pod: the store is empty
    assert pods_of(api, "llm-d-infpool-epp-") == [
        "llm-d-infpool-epp-g2-0"
    ]  # untouched by the reset (g2: up's restart)

    second = target.reset_caches(deployment)  # a second reset within the same second still restarts
    assert second.components["redis"].reset and pods_of(api, "redis-") == ["redis-g3-0"]


def test_a_pod_that_stays_busy_or_lacks_dev_mode_is_reported_not_reset(cluster, tmp_path):
    api, kubeconfig = cluster
    sleeps = []
    target = make_target(kubeconfig, tmp_path, sleeps=sleeps)
    deployment = target.up("Qwen/Qwen3-8B", "no-offload", {})
    pod = "llm-d-model-server-g1-0"
    api.busy_resets[pod] = 10**6
    sleeps.clear()
    entry = target.reset_caches(deployment).components["engine-0"]
    assert (entry.reset, entry.attempts, entry.http_status) == (False, 20, 400)
    assert "blocks are still in use" in str(entry.error) and sleeps == [0.25] * 19
    assert api.busy_resets[pod] == 10**6 - 20

    # a model server whose vLLM answers 404 (no VLLM_SERVER_DEV_MODE): one attempt, with the reason
    api.objects[(NS, "pods", pod)]["spec"]["containers"][0]["name"] = "server"
    entry = target.reset_caches(deployment).components["engine-0"]
    assert (entry.reset, entry.attempts, entry.http_status) == (False, 1, 404)
    assert "VLLM_SERVER_DEV_MODE=1" in str(entry.note)


def test_restart_epp_on_reset_restarts_the_router(cluster, tmp_path):
    api, kubeconfig = cluster
    target = make_target(kubeconfig, tmp_path, restart_epp_on_reset=True)
    deployment = target.up("Qwen/Qwen3-8B", "no-offload", {})
    epp_pods = pods_of(api, "llm-d-infpool-epp-")
    before = dict(deployment.metrics_sources)
    result = target.reset_caches(deployment)
    assert result.components["router"] == ComponentReset(
        reset=True, what="rollout restart of the EPP"
    )
    assert set(result.components) == {"engine-0", "router"}
    assert epp_pods == ["llm-d-infpool-epp-g2-0"] and pods_of(api, "llm-d-infpool-epp-") == [
        "llm-d-infpool-epp-g3-0"
    ]
    # the reset returns the new sources (the cell scrapes the new EPP pod) and mutates nothing
    assert deployment.metrics_sources == before
    assert result.metrics_sources is not None
    assert result.metrics_sources["router"].endswith(
        "/pods/llm-d-infpool-epp-g3-0:9090/proxy/metrics"
    )


def test_metrics_sources_are_pod_proxy_urls_the_collector_scrapes_with_the_token(cluster, tmp_path):
    api, kubeconfig = cluster
    deployment = make_target(kubeconfig, tmp_path, engines=2).up("Qwen/Qwen3-8B", "no-offload", {})
    base = f"{api.url}/api/v1/namespaces/{NS}/pods"
    assert deployment.metrics_sources == {
        "engine-0": f"{base}/{SERVER_PODS[0]}:8000/proxy/metrics",
        "engine-1": f"{base}/{SERVER_PODS[1]}:8000/proxy/metrics",
        "router": f"{base}/llm-d-infpool-epp-g2-0:9090/proxy/metrics",
    }
    assert deployment.metrics_sources["engine-0"].headers == {"Authorization": f"Bearer {TOKEN}"}

    rows = []
    collector = Collector(
        deployment.metrics_sources,
        {},
        0.05,
        lambda: 7.0,
        rows.extend,
        lambda r: None,
        system_metrics=False,
    )
    collector.start()
    stats = collector.stop()
    assert stats["scrapes_failed"] == {} and set(stats["scrapes_ok"]) == {
        "engine-0",
        "engine-1",
        "router",
    }
    hits = {
        (r["source"], r["value"]) for r in rows if r["metric"] == "vllm:prefix_cache_hits_total"
    }
    assert hits == {("engine-0", 32.0), ("engine-1", 32.0)}
    assert {r["metric"] for r in rows if r["source"] == "router"} == {"inference_pool_ready_pods"}
    assert {auth for (_, _, _, path, auth) in api.proxied if path == "metrics"} == {
        f"Bearer {TOKEN}"
    }


async def test_without_the_token_the_api_server_refuses_the_scrape(cluster, tmp_path):
    api, kubeconfig = cluster
    deployment = make_target(kubeconfig, tmp_path).up("Qwen/Qwen3-8B", "no-offload", {})
    plain = {name: str(url) for name, url in deployment.metrics_sources.items()}
    scraped = await snapshot(plain)
    assert scraped == {"engine-0": "RuntimeError: HTTP 401", "router": "RuntimeError: HTTP 401"}
    with_token = await snapshot(deployment.metrics_sources)
    assert [s.name for s in with_token["engine-0"]] == [
        "vllm:num_requests_running",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
    ]


def test_ports_and_selectors_of_a_model_server_installed_by_someone_else():
    sidecar = {
        "spec": {
            "containers": [
                {"name": "routing-proxy", "ports": [{"containerPort": 8000}]},
                {
                    "name": "vllm",
                    "args": ["--model", "m", "--port", "8200"],
                    "ports": [{"containerPort": 8200}],
                },
            ]
        }
    }
    assert vllm_port(sidecar) == 8200
    assert vllm_port({"spec": {"containers": [{"name": "vllm", "args": ["--port=8300"]}]}}) == 8300
    assert (
        vllm_port({"spec": {"containers": [{"name": "x", "ports": [{"containerPort": 8100}]}]}})
        == 8100
    )
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "gone", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector({"spec": {"selector": selector}}) == "a=1,b=2,tier in (x,y),!gone"
