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

Engine pods are reached through the API server's pod proxy
(`/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/...`), with the kubeconfig's credentials:
- reset_caches: POST reset_prefix_cache to every running model-server pod (vLLM serves it with
  VLLM_SERVER_DEV_MODE=1, which the manifests set), retried while a pod answers that blocks are in
  use; a Redis/Valkey store the scenario deployed is emptied by a rollout restart (it runs without
  persistence); the EPP's approximate prefix index has no reset API: it is reported not reset, or
  the EPP is restarted when the spec's `restart_epp_on_reset` says so.
- metrics_sources: `engine-<i>` per model-server pod (vLLM /metrics) and `router` for the EPP pod
  (its metrics port, 9090 unless a container port is named "metrics"), as pod-proxy URLs that carry
  the bearer token / client certificate / CA of the loaded kubeconfig (collect.scraper.MetricsSource).
  The sources are the pods that exist when `up` (and then each `reset_caches`) returns; a pod
  replaced in between stops answering and its scrapes count as failed. The kubeconfig's
  credentials authenticate to the API server, not to the pod: an EPP that protects /metrics with
  its own authn answers 401/403 and the `router` scrapes count as failed (not fatal).
"""

from __future__ import annotations

import copy
import datetime
import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3

from kvbench.collect.scraper import MetricsSource
from kvbench.errors import EnvironmentFailure, UserError
from kvbench.results.manifest import SystemUnderTest
from kvbench.spec.scenarios import ScenarioCatalog, load_catalog
from kvbench.targets.base import (
    ComponentReset,
    Deployment,
    DeploymentFacts,
    K8sApplyFacts,
    KvStoreFacts,
    ResetResult,
    TargetError,
)
from kvbench.targets.k8s_manifests import (
    MANAGED_BY,
    STORE_IMAGES,
    VLLM_CONTAINER,
    dump_yaml,
    render_manifests,
)

MERGE_PATCH = "application/merge-patch+json"
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
RESET_RETRIES = (
    20  # as the local stack: a reset fails while requests still hold blocks, retry briefly
)
RESET_RETRY_INTERVAL_S = 0.25
RESET_PERMANENT_STATUSES = (
    401,
    403,
    404,
    405,
)  # retrying cannot help (404: VLLM_SERVER_DEV_MODE unset)
VLLM_DEFAULT_PORT = 8000
EPP_METRICS_PORT = 9090  # GIE's EPP --metrics-port default
EPP_NOT_RESET = ComponentReset(
    reset=False, what="the EPP's approximate prefix index has no reset API"
)


def _json(response) -> dict:
    return json.loads(response.data)


# The API server did not answer at all (refused, reset, DNS, TLS, retries exhausted).
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class KubeObjects:
    """create / read / merge-patch of Deployments, ConfigMaps and Services in one namespace, as dicts."""

    def __init__(self, kubeconfig: str | None, namespace: str):
        from kubernetes import client, config

        self.namespace = namespace
        self._api_exception = client.ApiException
        try:
            api_client = config.new_client_from_config(config_file=kubeconfig)
        except Exception as err:  # kubernetes raises ConfigException, FileNotFoundError, ...
            raise UserError(
                f"target.kubeconfig: cannot load {kubeconfig or '~/.kube/config'} ({err})"
            ) from None
        self.configuration = (
            api_client.configuration
        )  # what load_kube_config loaded: host, token, TLS files
        self.host = api_client.configuration.host
        apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
        self._core = core
        # kind -> (read, create, patch) of the kubernetes client (untyped)
        self._ops: dict[str, tuple[Any, Any, Any]] = {
            "Deployment": (
                apps.read_namespaced_deployment,
                apps.create_namespaced_deployment,
                apps.patch_namespaced_deployment,
            ),
            "ConfigMap": (
                core.read_namespaced_config_map,
                core.create_namespaced_config_map,
                core.patch_namespaced_config_map,
            ),
            "Service": (
                core.read_namespaced_service,
                core.create_namespaced_service,
                core.patch_namespaced_service,
            ),
        }

    def read(self, kind: str, name: str) -> dict | None:
        try:
            return _json(self._ops[kind][0](name, self.namespace, _preload_content=False))
        except _TRANSPORT_ERRORS as err:
            raise self._unreachable(err) from None
        except self._api_exception as err:
            if err.status == 404:
                return None
            raise TargetError(
                f"k8s: GET {kind} {name} failed: HTTP {err.status}", str(err.body)[-2000:]
            ) from None

    def create(self, obj: dict) -> dict:
        return self._call(
            obj["kind"],
            "POST",
            obj["metadata"]["name"],
            lambda: self._ops[obj["kind"]][1](self.namespace, obj, _preload_content=False),
        )

    def patch(self, kind: str, name: str, patch: dict) -> dict:
        return self._call(
            kind,
            "PATCH",
            name,
            lambda: self._ops[kind][2](
                name, self.namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
            ),
        )

    def list_pods(self, label_selector: str) -> list[dict]:
        return (
            self._call(
                "Pod",
                "LIST",
                label_selector,
                lambda: self._core.list_namespaced_pod(
                    self.namespace, label_selector=label_selector, _preload_content=False
                ),
            ).get("items")
            or []
        )

    def pod_post(self, pod: str, port: int, path: str) -> tuple[int, str]:
        """POST through the API server's pod proxy: (HTTP status, body); status 0 when unreachable."""
        try:
            response = self._core.connect_post_namespaced_pod_proxy_with_path(
                f"{pod}:{port}", self.namespace, path, _preload_content=False, _request_timeout=10
            )
            reply: Any = response  # the urllib3 response (_preload_content=False)
            return reply.status, reply.data.decode("utf-8", "replace")
        except self._api_exception as err:
            return err.status or 0, str(err.body or err.reason)
        except Exception as err:  # urllib3 connection errors
            return 0, f"{type(err).__name__}: {err}"

    def proxy_url(self, pod: str, port: int, path: str) -> str:
        ns, name = urllib.parse.quote(self.namespace), urllib.parse.quote(pod)
        return f"{self.host.rstrip('/')}/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/{path}"

    def metrics_source(self, pod: str, port: int) -> MetricsSource:
        """The pod's /metrics through the proxy, with the loaded configuration's credentials."""
        conf = self.configuration
        headers: dict[str, str] = {}
        for auth in conf.auth_settings().values():
            if auth.get("in") == "header" and auth.get("key") == "authorization":
                headers["Authorization"] = auth["value"]
        return MetricsSource(
            self.proxy_url(pod, port, "metrics"),
            headers=headers,
            ca_file=conf.ssl_ca_cert,
            cert_file=conf.cert_file,
            key_file=conf.key_file,
            verify_tls=bool(conf.verify_ssl),
        )

    def _unreachable(self, err: Exception) -> EnvironmentFailure:
        reason = getattr(err, "reason", None) or err
        return EnvironmentFailure(
            f"k8s: the API server {self.host} is unreachable ({type(reason).__name__}); "
            f"cells not run stay pending: `--resume` runs them once it answers"
        )

    def _call(self, kind: str, verb: str, name: str, call: Callable) -> dict:
        try:
            return _json(call())
        except _TRANSPORT_ERRORS as err:
            raise self._unreachable(err) from None
        except self._api_exception as err:
            raise TargetError(
                f"k8s: {verb} {kind} {name} failed: HTTP {err.status}", str(err.body)[-2000:]
            ) from None


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
    return {
        "spec": {
            "replicas": desired["spec"]["replicas"],
            "template": {"spec": {"containers": containers}},
        }
    }


def rollout_done(obj: dict) -> bool:
    """kubectl rollout status's rule for a Deployment."""
    spec_replicas = obj.get("spec", {}).get("replicas", 1)
    status = obj.get("status") or {}
    return (
        status.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 0)
        and status.get("updatedReplicas", 0) == spec_replicas
        and status.get("replicas", 0) == spec_replicas
        and status.get("availableReplicas", 0) == spec_replicas
    )


def label_selector(deployment: dict) -> str:
    """A Deployment's spec.selector as a label-selector string (matchLabels, then matchExpressions)."""
    selector = deployment.get("spec", {}).get("selector") or {}
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values") or [])
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(terms)


def serving_pods(pods: list[dict]) -> list[dict]:
    """Running, Ready and not terminating; by name, so engine-<i> is stable while the pods live."""

    def ready(pod: dict) -> bool:
        conditions = pod.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    live = [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
        and ready(p)
    ]
    return sorted(live, key=lambda p: p["metadata"]["name"])


def _containers(pod: dict) -> list[dict]:
    return pod.get("spec", {}).get("containers") or []


def vllm_port(pod: dict) -> int:
    """The port vLLM itself listens on: its `--port` arg (llm-d's routing sidecar may own another
    port), else the vllm container's first declared port."""
    container = next((c for c in _containers(pod) if c.get("name") == VLLM_CONTAINER), None)
    container = container or next(iter(_containers(pod)), {})
    args = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    for index, arg in enumerate(args):
        if arg == "--port" and index + 1 < len(args):
            return int(args[index + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    ports = container.get("ports") or []
    return int(ports[0]["containerPort"]) if ports else VLLM_DEFAULT_PORT


def epp_metrics_port(pod: dict) -> int:
    for container in _containers(pod):
        for port in container.get("ports") or []:
            if port.get("name") == "metrics":
                return int(port["containerPort"])
    return EPP_METRICS_PORT


class K8sTarget:
    poll_interval_s = 2.0

    def __init__(
        self,
        target_spec,
        *,
        run_dir: Path,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.spec = target_spec
        self.run_dir = Path(run_dir)
        self.seed = seed
        self._clock, self._sleep = clock, sleep
        if not target_spec.dry_run and not target_spec.gateway_url:
            raise UserError(
                "target.gateway_url: required to send load to the cluster (or set target.dry_run: true)"
            )
        self._kube: KubeObjects | None = None

    def _objects(self) -> KubeObjects:
        if self._kube is None:
            self._kube = KubeObjects(self.spec.kubeconfig, self.spec.namespace)
        return self._kube

    def describe(self) -> SystemUnderTest:
        return SystemUnderTest(
            kind="k8s",
            emulated=False,
            description=f"llm-d on Kubernetes (namespace {self.spec.namespace}), load through {self.spec.gateway_url}",
            details={
                "namespace": self.spec.namespace,
                "model_server": self.spec.model_server_deployment,
                "epp": self.spec.epp_deployment,
                "dry_run": self.spec.dry_run,
            },
        )

    def up(
        self,
        model: str,
        scenario: str,
        scenario_params: dict[str, Any],
        *,
        catalog: ScenarioCatalog | None = None,
    ) -> Deployment:
        catalog = catalog if catalog is not None else load_catalog()
        objects = render_manifests(catalog, self.spec, model, scenario, scenario_params)
        manifests_path = self.run_dir / "k8s" / scenario / "manifests.yaml"
        manifests_path.parent.mkdir(parents=True, exist_ok=True)
        manifests_path.write_text(dump_yaml(objects))
        if self.spec.dry_run:
            sys.stdout.write(dump_yaml(objects))
            raise TargetError(
                f"dry_run: manifests for {scenario} printed and written to {manifests_path}; nothing applied"
            )
        applied = {f"{o['kind']}/{o['metadata']['name']}": self._apply(o) for o in objects}
        epp_changed = applied.get(f"ConfigMap/{self.spec.epp_configmap}") in ("created", "patched")
        if epp_changed:
            self._restart(self.spec.epp_deployment)
        for obj in objects:
            if obj["kind"] == "Deployment":
                self._wait_rollout(obj["metadata"]["name"])
        if epp_changed:
            self._wait_rollout(self.spec.epp_deployment)
        stores = [
            o["metadata"]["name"]
            for o in objects
            if o["kind"] == "Deployment" and o["metadata"]["name"] in STORE_IMAGES
        ]
        return Deployment(
            model=model,
            scenario=scenario,
            served_model_name=model,
            base_url=self.spec.gateway_url,
            api_urls=[self.spec.gateway_url],
            metrics_sources=self._metrics_sources(),
            facts=DeploymentFacts(
                router=f"llm-d EPP (Deployment {self.spec.epp_deployment})",
                store=KvStoreFacts(kind=stores[0], deployment=stores[0]) if stores else None,
                k8s=K8sApplyFacts(
                    namespace=self.spec.namespace,
                    applied=applied,
                    epp_restarted=epp_changed,
                    manifests_path=str(manifests_path),
                ),
            ),
        )

    def _pods_of(self, deployment_name: str) -> list[dict]:
        """The serving pods of a Deployment, found by its live selector (a model server installed by
        someone else keeps its own labels)."""
        kube = self._objects()
        deployment = kube.read("Deployment", deployment_name)
        if deployment is None:
            return []
        return serving_pods(kube.list_pods(label_selector(deployment)))

    def _metrics_sources(self) -> dict[str, str]:
        kube = self._objects()
        sources: dict[str, str] = {}
        for index, pod in enumerate(self._pods_of(self.spec.model_server_deployment)):
            sources[f"engine-{index}"] = kube.metrics_source(
                pod["metadata"]["name"], vllm_port(pod)
            )
        epp_pods = self._pods_of(self.spec.epp_deployment)
        for index, pod in enumerate(epp_pods):
            name = "router" if len(epp_pods) == 1 else f"router-{index}"
            sources[name] = kube.metrics_source(pod["metadata"]["name"], epp_metrics_port(pod))
        return sources

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
        """`kubectl rollout restart`: a new pod-template annotation. The stamp has microseconds so
        that two restarts within one second still change the template."""
        kube = self._objects()
        if kube.read("Deployment", name) is None:
            hint = (
                "install the llm-d InferencePool first (target.epp_deployment names it)"
                if name == self.spec.epp_deployment
                else "it was applied by up(): was it deleted?"
            )
            raise TargetError(
                f"k8s: Deployment {name!r} not found in namespace {self.spec.namespace}: {hint}"
            )
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        kube.patch(
            "Deployment",
            name,
            {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: stamp}}}}},
        )

    def _wait_rollout(self, name: str) -> None:
        deadline = self._clock() + self.spec.rollout_timeout_s
        while True:
            obj = self._objects().read("Deployment", name)
            if obj is not None and rollout_done(obj):
                return
            if self._clock() >= deadline:
                status = json.dumps((obj or {}).get("status"), indent=1)
                raise TargetError(
                    f"k8s: Deployment {name} did not roll out within {self.spec.rollout_timeout_s:g}s",
                    status,
                )
            self._sleep(self.poll_interval_s)

    def reset_caches(self, deployment: Deployment) -> ResetResult:
        """Per component: engine-<i> (every serving model-server pod, listed now), the scenario's
        store (by its kind), router. Engines first, then the store, so that an index kept in the
        store does not keep entries of blocks the engines just dropped. The metrics sources are
        re-listed afterwards and returned (`ResetResult.metrics_sources`): a restarted EPP (or an
        engine pod that was replaced since `up`) has a new pod name, and the cell scrapes what is
        there now."""
        pods = self._pods_of(self.spec.model_server_deployment)
        result = ResetResult()
        for i, pod in enumerate(pods):
            result.components[f"engine-{i}"] = self._reset_engine(pod)
        if not pods:
            result.components["model_server"] = ComponentReset(
                reset=False,
                what="POST /reset_prefix_cache (pod proxy)",
                error=f"no serving pod of {self.spec.model_server_deployment}",
            )
        store = deployment.facts.store
        if store is not None and store.deployment:
            result.components[store.kind] = self._rollout_restart(
                store.deployment, "rollout restart (no persistence)"
            )
        if self.spec.restart_epp_on_reset:
            result.components["router"] = self._rollout_restart(
                self.spec.epp_deployment, "rollout restart of the EPP"
            )
        else:
            result.components["router"] = EPP_NOT_RESET.model_copy()
        result.metrics_sources = self._metrics_sources()
        return result

    def _reset_engine(self, pod: dict) -> ComponentReset:
        name, port = pod["metadata"]["name"], vllm_port(pod)
        what = "POST /reset_prefix_cache (pod proxy)"
        status, body = 0, ""
        attempt = 0
        for attempt in range(1, RESET_RETRIES + 1):
            status, body = self._objects().pod_post(name, port, "reset_prefix_cache")
            if status == 200:
                return ComponentReset(reset=True, what=what, attempts=attempt, pod=name)
            if status in RESET_PERMANENT_STATUSES:
                break
            if attempt < RESET_RETRIES:
                self._sleep(RESET_RETRY_INTERVAL_S)
        return ComponentReset(
            reset=False,
            what=what,
            attempts=attempt,
            pod=name,
            http_status=status,
            error=body[-300:],
            note="vLLM serves /reset_prefix_cache only with VLLM_SERVER_DEV_MODE=1"
            if status == 404
            else None,
        )

    def _rollout_restart(self, name: str, what: str) -> ComponentReset:
        try:
            self._restart(name)
            self._wait_rollout(name)
        except TargetError as err:
            return ComponentReset(reset=False, what=what, error=str(err))
        return ComponentReset(reset=True, what=what)

    def down(self, deployment: Deployment) -> None:
        # Nothing to stop: the next scenario patches the same Deployments (as run-benchmark.sh does).
        return None
