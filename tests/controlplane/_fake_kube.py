"""FakeKubeApiServer: an in-process stand-in for kube-apiserver (none is installable here).

It implements only what the Kubernetes source uses, the way the real server answers it:
cluster-wide LIST of a collection (items plus the list's resourceVersion) and WATCH from a
resourceVersion (chunked JSON lines of ADDED/MODIFIED/DELETED events, ending after
timeoutSeconds; 410 Gone when the version is older than the history kept), and a JSON merge
PATCH of a custom object's `status` subresource — answered 404 for kinds whose CRD in `crds/`
declares no status subresource, as the real server does; the write is a MODIFIED event.
Tests change objects with `put` / `delete`, as a controller or kubectl would, and can make the
next status writes fail (`fail_status_writes`).

It also answers TokenReview (POST `/apis/authentication.k8s.io/v1/tokenreviews`) from a table of
service-account tokens registered with `issue_service_account_token`, the way kube-apiserver's
token authenticator does: an unknown token or one issued for none of the requested audiences is
`authenticated: false` with an error; `fail_token_reviews` makes the next reviews fail.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def status_subresources(crd_dir: Path = CRD_DIR) -> frozenset[str]:
    """`group/plural` of every CRD whose served versions declare the status subresource."""
    out = set()
    for path in crd_dir.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = crd["spec"]
        if all("status" in (v.get("subresources") or {}) for v in spec["versions"]):
            out.add(f"{spec['group']}/{spec['names']['plural']}")
    return frozenset(out)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeKubeApiServer:
    def __init__(self, history: int = 1000, with_status: Iterable[str] | None = None) -> None:
        self._lock = threading.Condition()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {}
        self._events: list[tuple[int, str, str, dict[str, Any]]] = []
        self._version = 100
        self._history = history
        self._stopping = False
        self._compacted = 0
        self._epoch = 0
        self.gone = 0
        self.requests: list[str] = []
        self.with_status = frozenset(with_status) if with_status is not None else status_subresources()
        self.status_writes: list[tuple[str, dict[str, Any]]] = []  # (namespace/name, patch) accepted
        self._failures: list[int] = []
        self._tokens: dict[str, tuple[str, tuple[str, ...]]] = {}  # token -> (username, audiences)
        self._review_failures: list[int] = []
        self.token_reviews: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-kube-apiserver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    # ---- what tests call -----------------------------------------------------------------------------
    def put(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object in `collection` (an API path such as /api/v1/services)."""
        with self._lock:
            self._version += 1
            obj = json.loads(json.dumps(obj))
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            key = f"{meta['namespace']}/{meta['name']}"
            items = self._objects.setdefault(collection, {})
            event = "MODIFIED" if key in items else "ADDED"
            meta.setdefault("creationTimestamp",
                            (items.get(key) or {}).get("metadata", {}).get("creationTimestamp")
                            or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta["resourceVersion"] = str(self._version)
            items[key] = obj
            self._record(collection, event, obj)
            return obj

    def delete(self, collection: str, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._objects.get(collection, {}).pop(f"{namespace}/{name}")
            self._version += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._version)}}
            self._record(collection, "DELETED", obj)

    def fail_status_writes(self, *codes: int) -> None:
        """Answer the next status writes with these HTTP statuses (409 conflict, 500, ...)."""
        with self._lock:
            self._failures.extend(codes)

    def issue_service_account_token(self, token: str, namespace: str, account: str,
                                    audiences: Iterable[str] = ("istio-ca",)) -> str:
        """Make `token` authenticate as system:serviceaccount:<namespace>:<account> for `audiences`."""
        with self._lock:
            self._tokens[token] = (f"system:serviceaccount:{namespace}:{account}", tuple(audiences))
        return token

    def fail_token_reviews(self, *codes: int) -> None:
        """Answer the next TokenReviews with these HTTP statuses (500, 503, ...)."""
        with self._lock:
            self._review_failures.extend(codes)

    def _token_review(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path.rstrip("/") != "/apis/authentication.k8s.io/v1/tokenreviews":
            return 404, _status(404, "NotFound", f"no route {path}")
        review = json.loads(body)
        spec = review.get("spec") or {}
        with self._lock:
            self.token_reviews.append(review)
            if self._review_failures:
                code = self._review_failures.pop(0)
                return code, _status(code, "InternalError", "injected failure")
            known = self._tokens.get(str(spec.get("token") or ""))
        wanted = list(spec.get("audiences") or [])
        status: dict[str, Any]
        if known is None:
            status = {"authenticated": False, "error": "[invalid bearer token, token lookup failed]"}
        elif wanted and not set(wanted) & set(known[1]):
            status = {"authenticated": False, "error": "[invalid bearer token, token audiences is invalid]"}
        else:
            audiences = [a for a in wanted if a in known[1]] if wanted else list(known[1])
            status = {"authenticated": True, "audiences": audiences,
                      "user": {"username": known[0], "groups": ["system:serviceaccounts"]}}
        return 201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                     "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    def status_of(self, collection: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get(collection, {}).get(f"{namespace}/{name}")
            return json.loads(json.dumps(obj["status"])) if obj is not None and "status" in obj else None

    def _patch_status(self, path: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")  # apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME/status
        if len(parts) != 8 or parts[0] != "apis" or parts[3] != "namespaces" or parts[7] != "status":
            return 404, _status(404, "NotFound", f"no route {path}")
        _, group, version, _, namespace, plural, name, _ = parts
        if f"{group}/{plural}" not in self.with_status:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource ({plural}/status)")
        if content_type.split(";")[0].strip() != "application/merge-patch+json":
            return 415, _status(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
        collection = f"/apis/{group}/{version}/{plural}"
        with self._lock:
            if self._failures:
                code = self._failures.pop(0)
                return code, _status(code, "Conflict" if code == 409 else "InternalError", "injected failure")
            obj = self._objects.get(collection, {}).get(f"{namespace}/{name}")
            if obj is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
            patch = json.loads(body)
            status = merge_patch(obj.get("status"), patch.get("status"))
            self._version += 1
            obj = {**obj, "status": status, "metadata": {**obj["metadata"], "resourceVersion": str(self._version)}}
            self._objects[collection][f"{namespace}/{name}"] = obj
            self._record(collection, "MODIFIED", obj)
            self.status_writes.append((f"{namespace}/{name}", patch))
            return 200, obj

    def compact(self) -> None:
        """Forget history as etcd compaction does: open watches end, older versions get 410."""
        with self._lock:
            self._compacted = self._version
            self._events.clear()
            self._epoch += 1
            self._lock.notify_all()

    def _record(self, collection: str, event: str, obj: dict[str, Any]) -> None:
        self._events.append((self._version, collection, event, obj))
        del self._events[: max(0, len(self._events) - self._history)]
        self._lock.notify_all()

    # ---- the HTTP side --------------------------------------------------------------------------------
    def _list(self, collection: str) -> dict[str, Any]:
        with self._lock:
            items = [self._objects.get(collection, {})[k] for k in sorted(self._objects.get(collection, {}))]
            return {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._version)},
                    "items": items}

    def _watch(self, collection: str, since: int, timeout: float) -> Iterator[dict[str, Any]] | None:
        with self._lock:
            oldest = self._events[0][0] if self._events else self._version + 1
            if since < self._compacted or (len(self._events) >= self._history and since < oldest - 1):
                self.gone += 1
                return None
            epoch = self._epoch

        def events() -> Iterator[dict[str, Any]]:
            seen = since
            deadline = time.monotonic() + timeout
            while True:
                with self._lock:
                    if self._stopping or self._epoch != epoch:
                        return
                    pending = [(v, e, o) for v, c, e, o in self._events if c == collection and v > seen]
                    if not pending:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        self._lock.wait(min(remaining, 0.2))
                        continue
                for version, event, obj in pending:
                    seen = version
                    yield {"type": event, "object": obj}

        return events()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PATCH(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fake.requests.append(f"{urlparse(self.path).path} patch")
                self._json(*fake._patch_status(urlparse(self.path).path, self.headers.get("content-type", ""), body))

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fake.requests.append(f"{urlparse(self.path).path} post")
                self._json(*fake._token_review(urlparse(self.path).path, body))

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.requests.append(f"{url.path}{' watch' if query.get('watch') in ('true', 'True', '1') else ''}")
                collection = url.path.rstrip("/")
                if query.get("watch") not in ("true", "True", "1"):
                    self._json(200, fake._list(collection))
                    return
                stream = fake._watch(collection, int(query.get("resourceVersion") or 0),
                                     float(query.get("timeoutSeconds") or 30))
                if stream is None:
                    self._json(410, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "Expired", "code": 410, "message": "too old resource version"})
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    for event in stream:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
            "message": message}
