"""A tiny stand-in of the Kubernetes API on loopback, just enough for Helm's install.

helm-sdkpy exposes no ``helm template`` and no dry run: its ``Install`` talks to a
cluster. This server is that cluster. It answers discovery for the kinds the chart uses,
keeps every object it is sent (as JSON, exactly what Helm would apply), says NotFound for
anything it does not have, reports Jobs as complete (so the migration hook "succeeds"),
and serves list/watch so Helm's status watcher can wait on hooks. Nothing runs.

It listens on 127.0.0.1 only and stops with its context manager.
"""

from __future__ import annotations

import copy
import itertools
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# group/version -> [(plural, kind, namespaced)]
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("pods", "Pod", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "networking.k8s.io/v1": [
        ("ingresses", "Ingress", True),
        ("networkpolicies", "NetworkPolicy", True),
    ],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True),
                                 ("prometheusrules", "PrometheusRule", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
WATCH_LIMIT = 30.0  # seconds a watch stays open at most


@dataclass
class Cluster:
    """What the fake API server holds. ``objects`` are keyed (group/version, plural, ns, name)."""

    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    _rv: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    def next_rv(self) -> str:
        return str(next(self._rv))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind`` Helm created, in creation order (hooks included)."""
        return [obj for obj in self.created if obj.get("kind") == kind]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        result: dict[str, Any] = json.loads(raw or b"{}")
        return result

    def _route(self) -> tuple[str, str, str, str | None, str | None] | None:
        """(group/version, plural, namespace, name, subresource) of a resource path."""
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            gv, rest = parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        if gv not in RESOURCES or not rest:
            return None
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (
            rest[2] if len(rest) > 2 else None)
        if plural not in {r[0] for r in RESOURCES[gv]}:
            return None
        return gv, plural, namespace, name, sub

    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    # -- discovery

    def _discovery(self) -> bool:
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/openapi/v2":
            # An empty protobuf document: it describes no kind, so kubectl's client-side
            # validation (which Helm asks for on hooks) finds nothing to check against.
            self.send_response(200)
            self.send_header("Content-Type",
                             "application/octet-stream")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/version":
            self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                             "platform": "linux/amd64"})
        elif path == "/api":
            self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                             "serverAddressByClientCIDRs": [
                                 {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        elif path == "/apis":
            groups = []
            for gv in RESOURCES:
                if gv == "v1":
                    continue
                group, version = gv.split("/")
                entry = {"groupVersion": gv, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        elif path in ("/api/v1",) or (path.startswith("/apis/") and path.count("/") == 3):
            gv = "v1" if path == "/api/v1" else path[len("/apis/"):]
            if gv not in RESOURCES:
                self._send(404, _status(404, "NotFound", "the server could not find it"))
                return True
            self._send(200, {
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": [
                    {"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                     "kind": kind, "verbs": VERBS}
                    for plural, kind, namespaced in RESOURCES[gv]
                ],
            })
        else:
            return False
        return True

    # -- verbs

    def do_GET(self) -> None:
        if self._discovery():
            return
        route = self._route()
        if route is None:
            self._send(404, _status(404, "NotFound", f"no route {self.path}"))
            return
        gv, plural, ns, name, _ = route
        cluster = self.server.cluster
        if name is not None:
            with cluster.lock:
                obj = cluster.objects.get((gv, plural, ns, name))
            if obj is None:
                self._send(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
            else:
                self._send(200, obj)
            return
        query = self._query()
        with cluster.lock:
            items = [copy.deepcopy(o) for (g, p, n, _), o in cluster.objects.items()
                     if g == gv and p == plural and (not ns or n == ns)
                     and _matches(o, query.get("labelSelector", ""))]
            rv = cluster.next_rv()
        kind = next(k for p, k, _ in RESOURCES[gv] if p == plural)
        if query.get("watch") in ("true", "1"):
            self._watch(items, rv, gv, kind, query)
            return
        self._send(200, {"kind": f"{kind}List", "apiVersion": gv,
                         "metadata": {"resourceVersion": rv}, "items": items})

    def _watch(self, items: list[dict[str, Any]], rv: str, gv: str, kind: str,
               query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(event: dict[str, Any]) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            if query.get("sendInitialEvents") == "true":
                for item in items:
                    chunk({"type": "ADDED", "object": item})
                chunk({"type": "BOOKMARK", "object": {
                    "kind": kind, "apiVersion": gv, "metadata": {
                        "resourceVersion": rv,
                        "annotations": {"k8s.io/initial-events-end": "true"}}}})
            deadline = time.monotonic() + min(
                WATCH_LIMIT, float(query.get("timeoutSeconds") or WATCH_LIMIT))
            sock: socket.socket = self.connection
            while time.monotonic() < deadline and not self.server.cluster.stopping.is_set():
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return  # the client went away
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            return
        self.close_connection = True

    def do_POST(self) -> None:
        route = self._route()
        if route is None or route[3] is not None:
            self._send(404, _status(404, "NotFound", f"no route {self.path}"))
            return
        gv, plural, ns, _, _ = route
        obj = self._body()
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            self._send(422, _status(422, "Invalid", "metadata.name is required"))
            return
        cluster = self.server.cluster
        with cluster.lock:
            key = (gv, plural, ns, name)
            if key in cluster.objects:
                self._send(409, _status(409, "AlreadyExists", f'{plural} "{name}" exists'))
                return
            cluster.created.append(copy.deepcopy(obj))
            if ns:
                meta["namespace"] = ns
            meta.update(uid=str(uuid.uuid4()), resourceVersion=cluster.next_rv(), generation=1,
                        creationTimestamp="2026-01-01T00:00:00Z")
            if obj.get("kind") == "Job":
                obj["status"] = {
                    "conditions": [
                        {"type": "SuccessCriteriaMet", "status": "True"},
                        {"type": "Complete", "status": "True"},
                    ],
                    "succeeded": 1, "active": 0,
                    "startTime": "2026-01-01T00:00:00Z",
                    "completionTime": "2026-01-01T00:00:01Z",
                }
            cluster.objects[key] = obj
        self._send(201, obj)

    def do_PUT(self) -> None:
        route = self._route()
        if route is None or route[3] is None:
            self._send(404, _status(404, "NotFound", f"no route {self.path}"))
            return
        gv, plural, ns, name, _ = route
        assert name is not None  # checked above; a tuple's item does not narrow
        obj = self._body()
        cluster = self.server.cluster
        with cluster.lock:
            key = (gv, plural, ns, name)
            if key not in cluster.objects:
                self._send(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
                return
            obj.setdefault("metadata", {})["resourceVersion"] = cluster.next_rv()
            cluster.objects[key] = obj
        self._send(200, obj)

    def do_PATCH(self) -> None:
        route = self._route()
        if route is None or route[3] is None:
            self._send(404, _status(404, "NotFound", f"no route {self.path}"))
            return
        gv, plural, ns, name, _ = route
        assert name is not None  # checked above; a tuple's item does not narrow
        self._body()
        with self.server.cluster.lock:
            obj = self.server.cluster.objects.get((gv, plural, ns, name))
        if obj is None:
            self._send(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
        else:
            self._send(200, obj)

    def do_DELETE(self) -> None:
        route = self._route()
        if route is None or route[3] is None:
            self._send(404, _status(404, "NotFound", f"no route {self.path}"))
            return
        gv, plural, ns, name, _ = route
        assert name is not None  # checked above; a tuple's item does not narrow
        if self.headers.get("Content-Length"):
            self._body()
        with self.server.cluster.lock:
            obj = self.server.cluster.objects.pop((gv, plural, ns, name), None)
        if obj is None:
            self._send(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
        else:
            self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cluster: Cluster


@dataclass
class FakeKube:
    url: str
    kubeconfig: Path
    cluster: Cluster


@contextmanager
def fake_kube(directory: Path, namespace: str = "default") -> Iterator[FakeKube]:
    """Run the fake API server; yields its URL, a kubeconfig file for it and its state."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.cluster = Cluster()
    host, port = server.server_address[:2]
    url = f"http://{host!s}:{port}"
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "contexts": [{"name": "fake", "context": {
            "cluster": "fake", "user": "fake", "namespace": namespace}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
    }))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield FakeKube(url=url, kubeconfig=kubeconfig, cluster=server.cluster)
    finally:
        server.cluster.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
