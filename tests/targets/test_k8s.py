"""k8s target: manifests per scenario, applied through the Kubernetes API of a local fake server."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_kube_api import FakeKubeApi  # noqa: E402

from kvbench.errors import UserError  # noqa: E402
from kvbench.spec.experiment import K8sTarget as K8sSpec  # noqa: E402
from kvbench.spec.scenarios import load_catalog  # noqa: E402
from kvbench.targets.base import TargetError  # noqa: E402
from kvbench.targets.k8s import RESTART_ANNOTATION, K8sTarget  # noqa: E402
from kvbench.targets.k8s_manifests import committed_spec, kustomize_tree, render_manifests  # noqa: E402

NS = "bench"
REPO = Path(__file__).resolve().parents[2]


def container_of(objects, name="llm-d-model-server"):
    server = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    return server["spec"]["template"]["spec"]["containers"][0]


def test_native_offload_manifest_carries_the_connector_json():
    spec = K8sSpec(kind="k8s", namespace=NS, tensor_parallel_size=2)
    objects = render_manifests(load_catalog(), spec, "Qwen/Qwen3-14B", "native-offload", {"num_cpu_blocks": 20000})
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment"]
    args = container_of(objects)["args"]
    assert args[:5] == ["Qwen/Qwen3-14B", "--port", "8000", "--tensor-parallel-size", "2"]
    assert args[args.index("--kv-transfer-config") + 1] == (
        '{"kv_connector":"OffloadingConnector","kv_role":"kv_both","kv_connector_extra_config":{"num_cpu_blocks":20000}}')


def test_llm_d_redis_manifests_wire_store_events_and_index():
    spec = K8sSpec(kind="k8s", namespace=NS)
    objects = render_manifests(load_catalog(), spec, "Qwen/Qwen3-8B", "llm-d-redis", {})
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [("Deployment", "redis"), ("Service", "redis"), ("ConfigMap", "llm-d-infpool-epp"),
                     ("Deployment", "llm-d-model-server")]
    args = container_of(objects)["args"]
    events = json.loads(args[args.index("--kv-events-config") + 1])
    assert events["endpoint"] == f"tcp://llm-d-infpool-epp.{NS}.svc.cluster.local:5557"
    assert events["topic"] == "kv@$(POD_IP)@Qwen/Qwen3-8B" and "replay_endpoint" not in events
    epp = yaml.safe_load(objects[2]["data"]["default-plugins.yaml"])
    params = epp["plugins"][1]["parameters"]
    assert params["indexerConfig"]["kvBlockIndexConfig"]["redisConfig"]["address"] == f"redis://redis.{NS}.svc.cluster.local:6379"
    assert params["kvEventsConfig"]["zmqEndpoint"] == "tcp://*:5557"
    assert "--maxmemory" not in objects[0]["spec"]["template"]["spec"]["containers"][0]["args"]  # an index never evicts


def test_committed_deploy_tree_is_what_the_generator_writes():
    files = kustomize_tree(load_catalog(), committed_spec())
    on_disk = {str(p.relative_to(REPO / "deploy")): p.read_text() for p in (REPO / "deploy").rglob("*.yaml")}
    assert on_disk == files
    assert len([f for f in files if f.endswith("kustomization.yaml")]) == 8


@pytest.fixture
def cluster(tmp_path):
    with FakeKubeApi(rollout_reads=2) as api:
        epp = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "llm-d-infpool-epp", "namespace": NS, "generation": 1},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "epp"}},
                        "template": {"metadata": {"labels": {"app": "epp"}}, "spec": {"containers": [{"name": "epp", "image": "epp"}]}}},
               "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}
        api.objects[(NS, "deployments", "llm-d-infpool-epp")] = epp
        yield api, str(api.write_kubeconfig(tmp_path / "kubeconfig"))


def make_target(kubeconfig, tmp_path, **extra):
    spec = K8sSpec(kind="k8s", namespace=NS, kubeconfig=kubeconfig, gateway_url="http://gw:80", **extra)
    target = K8sTarget(spec, run_dir=tmp_path, seed=1, sleep=lambda s: None)
    target.poll_interval_s = 0.0
    return target


def test_apply_creates_then_patches_and_restarts_the_epp_only_on_config_change(cluster, tmp_path):
    api, kubeconfig = cluster
    target = make_target(kubeconfig, tmp_path)

    first = target.up("Qwen/Qwen3-8B", "no-offload", {})
    assert first.details["applied"] == {"ConfigMap/llm-d-infpool-epp": "created", "Deployment/llm-d-model-server": "created"}
    assert first.base_url == "http://gw:80" and first.details["epp_restarted"]
    epp_template = api.objects[(NS, "deployments", "llm-d-infpool-epp")]["spec"]["template"]
    first_stamp = epp_template["metadata"]["annotations"][RESTART_ANNOTATION]
    # the rollout wait read the model server until the fake controller caught up (2 pending reads)
    reads = [r for r in api.requests if r == ("GET", "deployments", "llm-d-model-server")]
    assert len(reads) >= 4

    api.requests.clear()
    second = target.up("Qwen/Qwen3-8B", "native-offload", {})
    assert second.details["applied"] == {"ConfigMap/llm-d-infpool-epp": "unchanged", "Deployment/llm-d-model-server": "patched"}
    assert not second.details["epp_restarted"]
    assert ("PATCH", "deployments", "llm-d-infpool-epp") not in api.requests
    server = api.objects[(NS, "deployments", "llm-d-model-server")]
    assert server["metadata"]["generation"] == 2 and "--kv-transfer-config" in server["spec"]["template"]["spec"]["containers"][0]["args"]

    third = target.up("Qwen/Qwen3-8B", "llm-d-valkey", {})
    assert third.details["applied"]["Deployment/valkey"] == "created"
    assert third.details["applied"]["ConfigMap/llm-d-infpool-epp"] == "patched" and third.details["epp_restarted"]
    epp = api.objects[(NS, "deployments", "llm-d-infpool-epp")]
    assert epp["metadata"]["generation"] >= 2 and RESTART_ANNOTATION in epp["spec"]["template"]["metadata"]["annotations"]
    assert first_stamp  # restarted twice: once per EPP config change
    env = {e["name"]: e.get("value") for e in api.objects[(NS, "deployments", "llm-d-model-server")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PYTHONHASHSEED"] == "42" and "LMCACHE_CHUNK_SIZE" not in env


def test_a_model_server_installed_by_someone_else_keeps_its_image(cluster, tmp_path):
    api, kubeconfig = cluster
    api.objects[(NS, "deployments", "llm-d-model-server")] = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm-d-model-server", "generation": 1},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ms"}}, "template": {"metadata": {"labels": {"app": "ms"}}, "spec": {
            "containers": [{"name": "vllm", "image": "my/vllm:custom", "args": ["old", "--stale-flag"],
                            "env": [{"name": "LMCACHE_REMOTE_URL", "value": "redis://old"}]}]}}},
    }
    make_target(kubeconfig, tmp_path).up("Qwen/Qwen3-8B", "lmcache-local", {})
    container = api.objects[(NS, "deployments", "llm-d-model-server")]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "my/vllm:custom"
    assert "--stale-flag" not in container["args"] and container["args"][0] == "Qwen/Qwen3-8B"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "LMCACHE_REMOTE_URL" not in env and env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "5.0"


def test_rollout_that_never_finishes_is_a_target_error_with_status(cluster, tmp_path):
    api, kubeconfig = cluster
    api.rollout_reads = 10**9
    ticks = iter(range(0, 10**6, 100))
    spec = K8sSpec(kind="k8s", namespace=NS, kubeconfig=kubeconfig, gateway_url="http://gw", rollout_timeout_s=250)
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
    assert [o["metadata"]["name"] for o in printed] == ["redis", "redis", "llm-d-infpool-epp", "llm-d-model-server"]
    assert (tmp_path / "k8s" / "lmcache-redis" / "manifests.yaml").is_file()


def test_missing_gateway_url_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="target.gateway_url"):
        K8sTarget(K8sSpec(kind="k8s"), run_dir=tmp_path)
