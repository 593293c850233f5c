"""A tiny fake Kubernetes API server for the k8s target's tests (127.0.0.1, free port).

Implements only what the target uses: GET / POST / PATCH (JSON merge patch, RFC 7386) of
deployments (apps/v1), configmaps and services (v1) in a namespace. A deployment behaves like the
controller: a spec change bumps metadata.generation, and its status catches up (observedGeneration,
updatedReplicas, availableReplicas) only after `rollout_reads` further GETs, so the target's
rollout wait has something to wait for.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_PATH = re.compile(r"^/(?:api/v1|apis/apps/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>deployments|configmaps|services)(?:/(?P<name>[^/?]+))?")


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
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
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
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": replicas,
                         "updatedReplicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas}

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

            def _route(self):
                match = _PATH.match(self.path)
                if not match:
                    self._reply(404, {"kind": "Status", "code": 404, "message": f"no route {self.path}"})
                    return None
                return match.group("ns"), match.group("kind"), match.group("name")

            def _not_found(self, kind, name):
                self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                  "code": 404, "message": f'{kind} "{name}" not found'})

            def do_GET(self):
                route = self._route()
                if route is None:
                    return
                ns, kind, name = route
                with api.lock:
                    api.requests.append(("GET", kind, name))
                    obj = api.objects.get((ns, kind, name))
                    if obj is None:
                        return self._not_found(kind, name)
                    api._on_read((ns, kind, name), obj)
                    self._reply(200, obj)

            def do_POST(self):
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
                        return self._reply(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                    body["metadata"].update({"namespace": ns, "uid": f"uid-{len(api.objects)}", "resourceVersion": "1"})
                    if kind == "deployments":
                        body["metadata"]["generation"] = 1
                        api.pending_reads[key] = api.rollout_reads
                    api.objects[key] = body
                    self._reply(201, body)

            def do_PATCH(self):
                route = self._route()
                if route is None:
                    return
                ns, kind, name = route
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._reply(415, {"kind": "Status", "code": 415, "message": self.headers.get("Content-Type")})
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
