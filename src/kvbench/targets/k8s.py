"""The k8s target: configure an llm-d deployment per scenario through the Kubernetes API.

Per scenario (`up`): create-or-patch the store Deployment/Service it needs, the EPP ConfigMap and the
model-server Deployment; restart the EPP Deployment when its config changed (a pod-template
annotation, as `kubectl rollout restart` does: the EPP reads its config only at start); wait for
every touched Deployment's rollout (observedGeneration >= generation, updated == available ==
replicas). `dry_run: true` prints the manifests and applies nothing.

Patching rule: objects kvbench created (label app.kubernetes.io/managed-by=kvbench) are patched with
their whole spec; a model server someone else installed keeps its image, resources and volumes, and
only gets replicas and the vLLM container's command/args/env replaced. Patches are JSON merge
patches, so lists (args, env) are replaced, never merged with stale entries.
"""

from __future__ import annotations

import copy
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from kvbench.errors import UserError
from kvbench.results.layout import SystemUnderTest
from kvbench.spec.scenarios import catalog_for_run
from kvbench.targets.base import Deployment, TargetError
from kvbench.targets.k8s_manifests import MANAGED_BY, VLLM_CONTAINER, dump_yaml, render_manifests

MERGE_PATCH = "application/merge-patch+json"
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


def _json(response) -> dict:
    return json.loads(response.data)


class KubeObjects:
    """create / read / merge-patch of Deployments, ConfigMaps and Services in one namespace, as dicts."""

    def __init__(self, kubeconfig: str | None, namespace: str):
        from kubernetes import client, config

        self.namespace = namespace
        self._api_exception = client.ApiException
        try:
            api_client = config.new_client_from_config(config_file=kubeconfig)
        except Exception as err:  # kubernetes raises ConfigException, FileNotFoundError, ...
            raise UserError(f"target.kubeconfig: cannot load {kubeconfig or '~/.kube/config'} ({err})") from None
        self.host = api_client.configuration.host
        apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
        self._ops = {
            "Deployment": (apps.read_namespaced_deployment, apps.create_namespaced_deployment, apps.patch_namespaced_deployment),
            "ConfigMap": (core.read_namespaced_config_map, core.create_namespaced_config_map, core.patch_namespaced_config_map),
            "Service": (core.read_namespaced_service, core.create_namespaced_service, core.patch_namespaced_service),
        }

    def read(self, kind: str, name: str) -> dict | None:
        try:
            return _json(self._ops[kind][0](name, self.namespace, _preload_content=False))
        except self._api_exception as err:
            if err.status == 404:
                return None
            raise TargetError(f"k8s: GET {kind} {name} failed: HTTP {err.status}", str(err.body)[-2000:]) from None

    def create(self, obj: dict) -> dict:
        return self._call(obj["kind"], "POST", obj["metadata"]["name"], lambda: self._ops[obj["kind"]][1](
            self.namespace, obj, _preload_content=False))

    def patch(self, kind: str, name: str, patch: dict) -> dict:
        return self._call(kind, "PATCH", name, lambda: self._ops[kind][2](
            name, self.namespace, patch, _content_type=MERGE_PATCH, _preload_content=False))

    def _call(self, kind: str, verb: str, name: str, call: Callable) -> dict:
        try:
            return _json(call())
        except self._api_exception as err:
            raise TargetError(f"k8s: {verb} {kind} {name} failed: HTTP {err.status}", str(err.body)[-2000:]) from None


def _changed(kind: str, before: dict, after: dict) -> bool:
    field = "data" if kind == "ConfigMap" else "spec"
    return before.get(field) != after.get(field)


def _is_managed(obj: dict) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


def model_server_patch(existing: dict, desired: dict) -> dict:
    """Replicas + the vLLM container's command/args/env on a model server installed by someone else."""
    ours = desired["spec"]["template"]["spec"]["containers"][0]
    containers = copy.deepcopy(existing["spec"]["template"]["spec"].get("containers") or [])
    index = next((i for i, c in enumerate(containers) if c.get("name") == VLLM_CONTAINER), 0)
    if not containers:
        containers = [ours]
    else:
        containers[index].update({key: ours[key] for key in ("command", "args", "env")})
    return {"spec": {"replicas": desired["spec"]["replicas"], "template": {"spec": {"containers": containers}}}}


def rollout_done(obj: dict) -> bool:
    """kubectl rollout status's rule for a Deployment."""
    spec_replicas = obj.get("spec", {}).get("replicas", 1)
    status = obj.get("status") or {}
    return (status.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 0)
            and status.get("updatedReplicas", 0) == spec_replicas
            and status.get("replicas", 0) == spec_replicas
            and status.get("availableReplicas", 0) == spec_replicas)


class K8sTarget:
    poll_interval_s = 2.0

    def __init__(self, target_spec, *, run_dir: Path, seed: int = 0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.spec = target_spec
        self.run_dir = Path(run_dir)
        self.seed = seed
        self._clock, self._sleep = clock, sleep
        if not target_spec.dry_run and not target_spec.gateway_url:
            raise UserError("target.gateway_url: required to send load to the cluster (or set target.dry_run: true)")
        self._kube: KubeObjects | None = None

    def _objects(self) -> KubeObjects:
        if self._kube is None:
            self._kube = KubeObjects(self.spec.kubeconfig, self.spec.namespace)
        return self._kube

    def describe(self) -> SystemUnderTest:
        return SystemUnderTest(
            kind="k8s", emulated=False,
            description=f"llm-d on Kubernetes (namespace {self.spec.namespace}), load through {self.spec.gateway_url}",
            details={"namespace": self.spec.namespace, "model_server": self.spec.model_server_deployment,
                     "epp": self.spec.epp_deployment, "dry_run": self.spec.dry_run},
        )

    def up(self, model: str, scenario: str, scenario_params: dict[str, Any]) -> Deployment:
        objects = render_manifests(catalog_for_run(self.run_dir), self.spec, model, scenario, scenario_params)
        manifests_path = self.run_dir / "k8s" / scenario / "manifests.yaml"
        manifests_path.parent.mkdir(parents=True, exist_ok=True)
        manifests_path.write_text(dump_yaml(objects))
        if self.spec.dry_run:
            sys.stdout.write(dump_yaml(objects))
            raise TargetError(f"dry_run: manifests for {scenario} printed and written to {manifests_path}; nothing applied")
        applied = {f"{o['kind']}/{o['metadata']['name']}": self._apply(o) for o in objects}
        epp_changed = applied.get(f"ConfigMap/{self.spec.epp_configmap}") in ("created", "patched")
        if epp_changed:
            self._restart(self.spec.epp_deployment)
        for obj in objects:
            if obj["kind"] == "Deployment":
                self._wait_rollout(obj["metadata"]["name"])
        if epp_changed:
            self._wait_rollout(self.spec.epp_deployment)
        return Deployment(
            model=model, scenario=scenario, served_model_name=model, base_url=self.spec.gateway_url,
            api_urls=[self.spec.gateway_url],
            details={"namespace": self.spec.namespace, "applied": applied, "epp_restarted": epp_changed,
                     "manifests": str(manifests_path)},
        )

    def _apply(self, obj: dict) -> str:
        """create-or-patch; returns created | patched | unchanged."""
        kube = self._objects()
        kind, name = obj["kind"], obj["metadata"]["name"]
        existing = kube.read(kind, name)
        if existing is None:
            kube.create(obj)
            return "created"
        if kind == "Deployment" and not _is_managed(existing):
            patch = model_server_patch(existing, obj)
        else:
            patch = {key: obj[key] for key in ("metadata", "spec", "data") if key in obj}
        after = kube.patch(kind, name, patch)
        return "patched" if _changed(kind, existing, after) else "unchanged"

    def _restart(self, name: str) -> None:
        kube = self._objects()
        if kube.read("Deployment", name) is None:
            raise TargetError(f"k8s: EPP Deployment {name!r} not found in namespace {self.spec.namespace}: "
                              "install the llm-d InferencePool first (target.epp_deployment names it)")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        kube.patch("Deployment", name, {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: stamp}}}}})

    def _wait_rollout(self, name: str) -> None:
        deadline = self._clock() + self.spec.rollout_timeout_s
        while True:
            obj = self._objects().read("Deployment", name)
            if obj is not None and rollout_done(obj):
                return
            if self._clock() >= deadline:
                status = json.dumps((obj or {}).get("status"), indent=1)
                raise TargetError(f"k8s: Deployment {name} did not roll out within {self.spec.rollout_timeout_s:g}s", status)
            self._sleep(self.poll_interval_s)

    def reset_caches(self, deployment: Deployment) -> dict[str, Any]:
        # The pods are behind the gateway: /reset_prefix_cache would reach one engine only. Caches are
        # fresh after a scenario's rollout; between load levels they are not reset here.
        return {"model_server": "not reset: engine pods are not addressable from the client",
                "kv_store": "not reset"}

    def down(self, deployment: Deployment) -> None:
        # Nothing to stop: the next scenario patches the same Deployments (as run-benchmark.sh does).
        return None
