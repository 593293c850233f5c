"""Kubernetes manifests for an llm-d deployment of one scenario, and the kustomize tree in deploy/.

What a scenario changes in the cluster (as the seeds' run-benchmark.sh does by hand):
- the model-server Deployment's `vllm serve` args and env (`--kv-transfer-config`, LMCACHE_*, ...),
- the EPP's EndpointPickerConfig ConfigMap (the EPP Deployment is restarted when it changes),
- a Redis or Valkey Deployment + Service when the scenario needs a store (no persistence: a rollout
  restart empties it, which is how the target flushes it between cells).
Every model server runs with VLLM_SERVER_DEV_MODE=1 so that POST /reset_prefix_cache exists.
The EPP itself (InferencePool chart) and the gateway are installed by llm-d, not here.

`render_manifests` gives complete objects (what the target applies and what dry_run prints);
`kustomize_tree` gives deploy/base + deploy/overlays/<scenario>/ for kubectl users
(`python -m kvbench.targets.k8s_manifests deploy` regenerates the committed tree).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from kvbench.spec.experiment import K8sTarget
from kvbench.spec.scenarios import (
    Runtime,
    ScenarioCatalog,
    engine_overrides,
    load_catalog,
    render_scenario,
    store_maxmemory_bytes,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "kvbench"}
VLLM_CONTAINER = "vllm"
STORE_IMAGES = {"redis": "redis:7.4", "valkey": "valkey/valkey:8.1"}
STORE_PORT = 6379
KV_EVENTS_PORT = 5557
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"


def k8s_runtime(spec: K8sTarget, model: str, store_kind: str | None) -> Runtime:
    """In-cluster addresses: stores by Service DNS, engines publish KV events to the EPP Service
    (whose SUB socket binds), each engine's topic names its pod IP (llm-d v0.4 `kv@<podIP>@<model>`)."""
    svc = f"{spec.namespace}.svc.cluster.local"
    store_url = f"{store_kind}://{store_kind}.{svc}:{STORE_PORT}" if store_kind else None
    return Runtime(
        model=model,
        served_model_name=model,
        block_size=spec.block_size,
        pod_address="$(POD_IP)",
        kv_store_url=store_url,
        kv_store_address=store_url,
        kv_events_endpoint=f"tcp://{spec.epp_deployment}.{svc}:{KV_EVENTS_PORT}",
        kv_events_bind=f"tcp://*:{KV_EVENTS_PORT}",
    )


def _engine_settings(spec: K8sTarget, overrides: dict[str, Any]) -> dict[str, Any]:
    return {
        "replicas": int(overrides.get("engines", spec.engines)),
        "tensor_parallel_size": int(
            overrides.get("tensor_parallel_size", spec.tensor_parallel_size)
        ),
        "max_num_seqs": int(overrides.get("max_num_seqs", spec.max_num_seqs)),
        "gpu_memory_utilization": overrides.get("gpu_memory_utilization"),
        "max_model_len": overrides.get("max_model_len"),
    }


def vllm_container(
    spec: K8sTarget,
    model: str,
    settings: dict[str, Any],
    engine_args: list[str],
    env: dict[str, str],
) -> dict:
    args = [
        model,
        "--port",
        "8000",
        "--tensor-parallel-size",
        str(settings["tensor_parallel_size"]),
        "--max-num-seq",
        str(settings["max_num_seqs"]),
        "--block-size",
        str(spec.block_size),
    ]
    if settings.get("gpu_memory_utilization") is not None:
        args += ["--gpu-memory-utilization", str(settings["gpu_memory_utilization"])]
    if settings.get("max_model_len") is not None:
        args += ["--max-model-len", str(settings["max_model_len"])]
    args += list(engine_args) + list(spec.extra_args)
    env_list = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HF_HOME", "value": "/data"},
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "llm-d-hf-token", "key": "HF_TOKEN"}},
        },
    ]
    # VLLM_SERVER_DEV_MODE=1: vLLM serves POST /reset_prefix_cache only in dev mode, and the target
    # resets every engine pod's prefix cache through it (the vllm target sets it too).
    env = {"VLLM_SERVER_DEV_MODE": "1", **env}
    env_list += [{"name": key, "value": value} for key, value in sorted(env.items())]
    return {
        "name": VLLM_CONTAINER,
        "image": spec.image,
        "command": ["vllm", "serve"],
        "args": args,
        "env": env_list,
        "ports": [{"containerPort": 8000, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5},
        "resources": {"limits": {"nvidia.com/gpu": str(settings["tensor_parallel_size"])}},
        "volumeMounts": [{"name": "model-cache", "mountPath": "/data"}],
    }


def model_server(spec: K8sTarget, model: str, settings: dict[str, Any], container: dict) -> dict:
    labels = {
        "app": spec.model_server_deployment,
        "llm-d.ai/inferenceServing": "true",
        "llm-d.ai/model": model.split("/")[-1],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.model_server_deployment, "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "replicas": settings["replicas"],
            "strategy": {
                "type": "Recreate"
            },  # single-node clusters: the old pod must free the GPUs first
            "selector": {"matchLabels": {"app": spec.model_server_deployment}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "model-cache",
                            "persistentVolumeClaim": {"claimName": "llm-d-model-cache"},
                        }
                    ],
                },
            },
        },
    }


def epp_configmap(spec: K8sTarget, epp_yaml: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": spec.epp_configmap, "labels": dict(MANAGED_BY)},
        "data": {spec.epp_config_key: epp_yaml},
    }


def store_objects(kind: str, maxmemory_bytes: int | None) -> list[dict]:
    args = ["--save", "", "--appendonly", "no"]
    if maxmemory_bytes:
        args += ["--maxmemory", str(maxmemory_bytes), "--maxmemory-policy", "allkeys-lru"]
    labels = {"app": kind}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": kind, "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": kind,
                            "image": STORE_IMAGES[kind],
                            "args": args,
                            "ports": [{"containerPort": STORE_PORT, "name": kind}],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": kind, "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "selector": labels,
            "ports": [{"name": kind, "port": STORE_PORT, "targetPort": STORE_PORT}],
        },
    }
    return [deployment, service]


def render_manifests(
    catalog: ScenarioCatalog, spec: K8sTarget, model: str, scenario: str, params: dict[str, Any]
) -> list[dict]:
    """Stores first (engines need them at start), then the EPP config, then the model server."""
    store = catalog.get(scenario).kv_store
    rendered = render_scenario(
        catalog, scenario, params, k8s_runtime(spec, model, store.kind if store else None)
    )
    settings = _engine_settings(spec, engine_overrides(catalog, scenario, params, model))
    container = vllm_container(spec, model, settings, rendered.engine_args, rendered.engine_env)
    objects = store_objects(store.kind, store_maxmemory_bytes(rendered)) if store else []
    return objects + [
        epp_configmap(spec, rendered.epp_config_yaml()),
        model_server(spec, model, settings, container),
    ]


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(
        self, data: Any
    ) -> bool:  # shared label dicts must not become &id001 anchors
        return True


def _str_representer(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None  # the EPP config reads as YAML inside the ConfigMap
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_NoAliasDumper.add_representer(str, _str_representer)


def dump_yaml(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_NoAliasDumper, sort_keys=False)


# ----------------------------------------------------------------------------- kustomize tree


def _find(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def kustomize_tree(
    catalog: ScenarioCatalog, spec: K8sTarget, model: str = DEFAULT_MODEL
) -> dict[str, str]:
    """deploy/ as {relative path: text}: base = no-offload; one overlay per scenario patching the
    model server's container args/env and the EPP ConfigMap, adding the store it needs."""
    files: dict[str, str] = {}
    base = render_manifests(catalog, spec, model, "no-offload", {})
    files["base/model-server.yaml"] = dump_yaml(
        [_find(base, "Deployment", spec.model_server_deployment)]
    )
    files["base/epp-config.yaml"] = dump_yaml([_find(base, "ConfigMap", spec.epp_configmap)])
    files["base/kustomization.yaml"] = yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["model-server.yaml", "epp-config.yaml"],
        },
        sort_keys=False,
    )
    for name in catalog.names():
        objects = render_manifests(catalog, spec, model, name, {})
        server = _find(objects, "Deployment", spec.model_server_deployment)
        container = server["spec"]["template"]["spec"]["containers"][0]
        patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": spec.model_server_deployment},
            "spec": {
                "replicas": server["spec"]["replicas"],
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": VLLM_CONTAINER,
                                "args": container["args"],
                                "env": container["env"],
                            }
                        ]
                    }
                },
            },
        }
        stores = [o for o in objects if o["metadata"]["name"] in STORE_IMAGES]
        prefix = f"overlays/{name}/"
        resources = ["../../base"] + (["store.yaml"] if stores else [])
        if stores:
            files[prefix + "store.yaml"] = dump_yaml(stores)
        files[prefix + "model-server-patch.yaml"] = dump_yaml([patch])
        files[prefix + "epp-config.yaml"] = dump_yaml(
            [_find(objects, "ConfigMap", spec.epp_configmap)]
        )
        files[prefix + "kustomization.yaml"] = yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": resources,
                "patches": [{"path": "model-server-patch.yaml"}, {"path": "epp-config.yaml"}],
            },
            sort_keys=False,
        )
    return files


def committed_spec() -> K8sTarget:
    """The settings deploy/ is generated with: the seed's 2-GPU TP=2 model server."""
    return K8sTarget(kind="k8s", tensor_parallel_size=2)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if (
    __name__ == "__main__"
):  # regenerate the committed tree: python -m kvbench.targets.k8s_manifests deploy
    write_tree(
        Path(sys.argv[1] if len(sys.argv) > 1 else "deploy"),
        kustomize_tree(load_catalog(), committed_spec()),
    )
