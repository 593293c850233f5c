"""A tiny fake Kubernetes API server for the k8s target's tests (127.0.0.1, free port).

Implements only what the target uses: GET / POST / PATCH (JSON merge patch, RFC 7386) of
deployments (apps/v1), configmaps and services (v1) in a namespace. A deployment behaves like the
controller: a spec change bumps metadata.generation, and its status catches up (observedGeneration,
updatedReplicas, availableReplicas) only after `rollout_reads` further GETs, so the target's
rollout wait has something to wait for. When a rollout completes, the fake controller replaces the
deployment's pods (`<deployment>-g<generation>-<i>`, template labels and containers, Running + Ready).

Pods: GET a pod list filtered by `labelSelector` (k=v,...). The pod proxy
(`/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/{path}`) answers as the pod would: a port that
no container declares is a 503 (nothing listens); on a `vllm` container POST reset_prefix_cache is
200, or vLLM's 400 "blocks still in use" while `busy_resets[pod]` > 0; GET metrics is a small vLLM
(or, on other containers, EPP) Prometheus page. Every request must carry the kubeconfig's bearer token.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_PATH = re.compile(
    r"^/(?:api/v1|apis/apps/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>deployments|configmaps|services|pods)(?:/(?P<name>[^/?]+))?"
)
_PROXY = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/:]+):(?P<port>\d+)/proxy/(?P<path>[^?]*)"
)
TOKEN = "fake-token"
BLOCKS_IN_USE = {
    "error": {
        "message": "Failed to reset the prefix cache: some blocks are still in use.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
}


def vllm_metrics_text(pod: str) -> str:
    labels = f'engine="0",model_name="Qwen/Qwen3-8B",pod="{pod}"'
    return (
        f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{{labels}}} 0.0\n"
        f"# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total{{{labels}}} 64.0\n"
        f"# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total{{{labels}}} 32.0\n"
    )


def epp_metrics_text(pod: str) -> str:
    return f'# TYPE inference_pool_ready_pods gauge\ninference_pool_ready_pods{{name="pool",pod="{pod}"}} 1\n'


def selector_matches(selector: str, labels: dict) -> bool:
    pairs = [term.split("=", 1) for term in selector.split(",") if term]
    return all(labels.get(key) == value for key, value in pairs)


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKubeApi:
    def __init__(self, rollout_reads: int = 2):
        self.rollout_reads = rollout_reads
        self.objects: dict[tuple[str, str, str], dict] = {}  # (namespace, kind, name) -> object
        self.pending_reads: dict[tuple[str, str, str], int] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, kind, name)
        self.proxied: list[
            tuple[str, str, int, str, str | None]
        ] = []  # (method, pod, port, path, Authorization)
        self.busy_resets: dict[str, int] = {}  # pod -> how many resets still answer "blocks in use"
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        return path

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # ---- deployment controller behaviour

    def _spec_changed(self, key, before: dict, after: dict) -> None:
        if key[1] != "deployments" or before.get("spec") == after.get("spec"):
            return
        meta = after.setdefault("metadata", {})
        meta["generation"] = int(meta.get("generation", 0)) + 1
        self.pending_reads[key] = self.rollout_reads

    def _on_read(self, key, obj: dict) -> None:
        if key[1] != "deployments":
            return
        left = self.pending_reads.get(key, 0)
        if left > 0:
            self.pending_reads[key] = left - 1
            return
        replicas = obj.get("spec", {}).get("replicas", 1)
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "readyReplicas": replicas,
        }
        self._sync_pods(key, obj)

    def _sync_pods(self, key, deployment: dict) -> None:
        """The rolled-out generation's pods replace any older ones of this deployment."""
        ns, _, name = key
        prefix = f"{name}-g{deployment['metadata'].get('generation', 1)}-"
        owned = [k for k in self.objects if k[:2] == (ns, "pods") and k[2].startswith(f"{name}-g")]
        if owned and all(k[2].startswith(prefix) for k in owned):
            return
        for old in owned:
            del self.objects[old]
        template = deployment["spec"]["template"]
        for index in range(deployment["spec"].get("replicas", 1)):
            pod = f"{prefix}{index}"
            self.objects[(ns, "pods", pod)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": ns,
                    "labels": dict(template["metadata"].get("labels") or {}),
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {
                    "phase": "Running",
                    "podIP": f"10.0.0.{index + 1}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }

    def _pod_container(self, ns: str, pod: str, port: int) -> dict | None:
        obj = self.objects.get((ns, "pods", pod))
        for container in (obj or {}).get("spec", {}).get("containers", []):
            if any(p.get("containerPort") == port for p in container.get("ports") or []):
                return container
        return None

    def proxy(
        self, method: str, ns: str, pod: str, port: int, path: str, auth: str | None
    ) -> tuple[int, str, str]:
        """(status, content type, body) the pod would answer."""
        self.proxied.append((method, pod, port, path, auth))
        container = self._pod_container(ns, pod, port)
        if container is None:
            return (
                503,
                "application/json",
                json.dumps(
                    {
                        "kind": "Status",
                        "code": 503,
                        "message": f"error trying to reach service: dial {pod}:{port}",
                    }
                ),
            )
        vllm = container.get("name") == "vllm"
        if method == "POST" and path == "reset_prefix_cache" and vllm:
            if self.busy_resets.get(pod, 0) > 0:
                self.busy_resets[pod] -= 1
                return 400, "application/json", json.dumps(BLOCKS_IN_USE)
            return 200, "text/plain", ""
        if method == "GET" and path == "metrics":
            return (
                200,
                "text/plain; version=0.0.4",
                vllm_metrics_text(pod) if vllm else epp_metrics_text(pod),
            )
        return 404, "application/json", json.dumps({"detail": "Not Found"})

    # ---- HTTP

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                    return True
                self._reply(401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
                return False

            def _proxied(self, method: str) -> bool:
                match = _PROXY.match(urllib.parse.unquote(self.path))
                if not match:
                    return False
                if method == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with api.lock:
                    code, content_type, text = api.proxy(
                        method,
                        match.group("ns"),
                        match.group("pod"),
                        int(match.group("port")),
                        match.group("path"),
                        self.headers.get("Authorization"),
                    )
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return True

            def _list_pods(self, ns: str) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                selector = query.get("labelSelector", [""])[0]
                with api.lock:
                    api.requests.append(("LIST", "pods", selector))
                    items = [
                        copy.deepcopy(obj)
                        for (n, kind, _), obj in sorted(api.objects.items())
                        if n == ns
                        and kind == "pods"
                        and selector_matches(selector, obj["metadata"].get("labels") or {})
                    ]
                self._reply(
                    200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
                )

            def _route(self):
                match = _PATH.match(self.path)
                if not match:
                    self._reply(
                        404, {"kind": "Status", "code": 404, "message": f"no route {self.path}"}
                    )
                    return None
                return match.group("ns"), match.group("kind"), match.group("name")

            def _not_found(self, kind, name):
                self._reply(
                    404,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "NotFound",
                        "code": 404,
                        "message": f'{kind} "{name}" not found',
                    },
                )

            def do_GET(self):
                if not self._authorized() or self._proxied("GET"):
                    return
                route = self._route()
                if route is None:
                    return
                ns, kind, name = route
                if kind == "pods" and name is None:
                    return self._list_pods(ns)
                with api.lock:
                    api.requests.append(("GET", kind, name))
                    obj = api.objects.get((ns, kind, name))
                    if obj is None:
                        return self._not_found(kind, name)
                    api._on_read((ns, kind, name), obj)
                    self._reply(200, obj)

            def do_POST(self):
                if not self._authorized() or self._proxied("POST"):
                    return
                route = self._route()
                if route is None:
                    return
                ns, kind, _ = route
                body = self._body()
                name = body["metadata"]["name"]
                with api.lock:
                    api.requests.append(("POST", kind, name))
                    key = (ns, kind, name)
                    if key in api.objects:
                        return self._reply(
                            409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
                        )
                    body["metadata"].update(
                        {"namespace": ns, "uid": f"uid-{len(api.objects)}", "resourceVersion": "1"}
                    )
                    if kind == "deployments":
                        body["metadata"]["generation"] = 1
                        api.pending_reads[key] = api.rollout_reads
                    api.objects[key] = body
                    self._reply(201, body)

            def do_PATCH(self):
                if not self._authorized():
                    return
                route = self._route()
                if route is None:
                    return
                ns, kind, name = route
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._reply(
                        415,
                        {
                            "kind": "Status",
                            "code": 415,
                            "message": self.headers.get("Content-Type"),
                        },
                    )
                patch = self._body()
                with api.lock:
                    api.requests.append(("PATCH", kind, name))
                    key = (ns, kind, name)
                    before = api.objects.get(key)
                    if before is None:
                        return self._not_found(kind, name)
                    after = merge_patch(before, patch)
                    api._spec_changed(key, before, after)
                    api.objects[key] = after
                    self._reply(200, after)

        return Handler
