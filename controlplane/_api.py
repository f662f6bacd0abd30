"""The operator API on the monitoring port: a small HTTP/1.1 JSON API plus /metrics.

`wasmesh apply/get/delete/proxy-status/proxy-config/analyze` talk to these routes:

  GET    /ready                                  liveness
  GET    /metrics                                Prometheus text
  GET    /api/v1/resources?kind=K&namespace=N    resources as manifests
  POST   /api/v1/apply?namespace=N               YAML body; 422 with findings when invalid
  DELETE /api/v1/resources/KIND/NAMESPACE/NAME   remove an applied resource
  GET    /api/v1/analyze                         findings over the current set
  GET    /api/v1/proxies                         push status of every connected proxy
  GET    /api/v1/proxies/NAME/config/TYPE        what that proxy was sent (listeners, routes,
                                                 clusters, endpoints, ecds, all; secret: the
                                                 certificates it was sent, without keys)
  GET    /api/v1/proxies/NAME/authz              security policies that apply to its workload
  GET    /modules/sha256/HEX                     a verified Wasm module, for proxies (`_module_server`)
  GET    /dashboard/ (and /dashboard/api/VIEW)   the mesh console (`controlplane.dashboard`)

Requests are small and trusted to the loopback interface; bodies are capped and every
failure answers a JSON `{"error": ...}` instead of dropping the connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from prometheus_client import generate_latest

from controlplane._module_server import is_module_path, respond, write_reply
from controlplane._protos import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE, to_dict
from controlplane._resources import DEFAULT_NAMESPACE, ResourceKey
from controlplane._schemas import lookup_kind
from controlplane._secrets import SECRET_KIND
from controlplane._validation import analyze_text, check_references
from controlplane.dashboard import is_console_path
from controlplane.dashboard import serve as serve_console

if TYPE_CHECKING:
    from controlplane._server import ControlPlane

MAX_BODY = 4 * 1024 * 1024
CONFIG_TYPES = {"listeners": LISTENER, "routes": ROUTE, "clusters": CLUSTER, "endpoints": ENDPOINT,
                "ecds": EXTENSION_CONFIG}
API_SOURCE = "api"


class HttpError(Exception):
    def __init__(self, status: int, message: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.extra = dict(extra or {})


async def start_api(plane: ControlPlane, host: str, port: int) -> asyncio.Server:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve(plane, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_connection, host, port)


async def _serve(plane: ControlPlane, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        return await _reply(writer, 400, {"error": "bad request line"})
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if is_module_path(target):
        reply = respond(method, target, headers, plane.modules.module_bytes)
        return await write_reply(writer, reply, head_only=method == "HEAD")
    if is_console_path(target):  # the mesh console (controlplane.dashboard)
        return await serve_console(plane, method, target, writer)
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        return await _reply(writer, 413, {"error": f"body over {MAX_BODY} bytes"})
    body = await reader.readexactly(length) if length else b""
    try:
        status, payload = route(plane, method, target, body)
    except HttpError as err:
        status, payload = err.status, {"error": str(err), **err.extra}
    except Exception as err:  # noqa: BLE001 - report, never drop the connection
        status, payload = 500, {"error": f"{type(err).__name__}: {err}"}
    await _reply(writer, status, payload)


async def _reply(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
    if isinstance(payload, bytes):
        body, content_type = payload, "text/plain; version=0.0.4"
    else:
        body, content_type = json.dumps(payload, indent=1, sort_keys=False).encode(), "application/json"
    writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
                 "connection: close\r\n\r\n".encode() + body)
    await writer.drain()


def route(plane: ControlPlane, method: str, target: str, body: bytes) -> tuple[int, Any]:
    """Dispatch one request (sans-io: also what the unit tests call)."""
    url = urlparse(target)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
    if method == "GET" and parts == ["ready"]:
        return 200, {"status": "ready"}
    if method == "GET" and parts == ["metrics"]:
        return 200, generate_latest(plane.metrics.registry)
    if parts[:2] != ["api", "v1"]:
        raise HttpError(404, f"no route {url.path}")
    rest = parts[2:]
    if method == "GET" and rest == ["resources"]:
        return 200, {"items": _list(plane, query.get("kind"), query.get("namespace"))}
    if method == "POST" and rest == ["apply"]:
        return _apply(plane, body, query.get("namespace") or DEFAULT_NAMESPACE)
    if method == "DELETE" and len(rest) == 4 and rest[0] == "resources":
        return _delete(plane, rest[1], rest[2], rest[3])
    if method == "GET" and rest == ["analyze"]:
        return 200, {"diagnostics": [d.render() for d in plane.store.findings()],
                     "errors": sum(1 for d in plane.store.findings() if d.is_error)}
    if method == "GET" and rest == ["proxies"]:
        return 200, {"proxies": plane.proxy_status()}
    if method == "GET" and len(rest) == 4 and rest[0] == "proxies" and rest[2:] == ["config", "secret"]:
        from controlplane._security_views import secret_view

        return 200, secret_view(plane, _connection(plane, rest[1]))
    if method == "GET" and len(rest) == 3 and rest[0] == "proxies" and rest[2] == "authz":
        from controlplane._security_views import authz_view

        return 200, authz_view(plane.generator().mesh, _connection(plane, rest[1]).proxy)
    if method == "GET" and len(rest) == 4 and rest[0] == "proxies" and rest[2] == "config":
        return 200, _proxy_config(plane, rest[1], rest[3])
    raise HttpError(404, f"no route {method} {url.path}")


def _kind_name(text: str) -> str:
    kind = lookup_kind(text)
    if kind is None:
        raise HttpError(400, f"unknown kind {text!r}")
    return kind.kind


def _list(plane: ControlPlane, kind: str | None, namespace: str | None) -> list[dict[str, Any]]:
    wanted = _kind_name(kind) if kind else None
    items = []
    for resource in plane.store.resources(wanted):
        if namespace not in (None, "", resource.namespace) or resource.kind == SECRET_KIND:
            continue  # never hand out credentials
        manifest = resource.to_manifest()
        status = plane.modules.status_of(resource.key)
        if status is not None:
            manifest["status"] = status  # module resolution: Resolved, Verified, Distributed
        items.append(manifest)
    return items


def _apply(plane: ControlPlane, body: bytes, namespace: str) -> tuple[int, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "body is not UTF-8") from None
    analysis = analyze_text(text, "<apply>", namespace)
    if analysis.has_errors:
        raise HttpError(422, "invalid manifests", {"diagnostics": [d.render() for d in analysis.diagnostics]})
    if not analysis.resources:
        raise HttpError(422, "no mesh resources in the body")
    applied = []
    folder = plane.folder
    for resource in analysis.resources:
        if folder is not None:
            owner = folder.owner_file(resource.key)
            if owner is not None and owner != folder.applied_path(resource.key):
                raise HttpError(409, f"{resource.key} is defined in {owner.name}; edit that file instead")
            folder.write(resource)
        applied.append(str(resource.key))
    if folder is not None:
        folder.scan()
    else:
        current = {r.key: r for r in plane.store.resources() if plane.store.source_of(r.key) == API_SOURCE}
        current.update({r.key: r for r in analysis.resources})
        plane.store.replace_source(API_SOURCE, current.values())
    warnings = [d.render() for d in analysis.diagnostics + check_references(plane.store.resources())]
    return 200, {"applied": applied, "diagnostics": warnings}


def _delete(plane: ControlPlane, kind: str, namespace: str, name: str) -> tuple[int, Any]:
    key = ResourceKey(_kind_name(kind), namespace, name)
    if plane.folder is not None:
        try:
            plane.folder.remove(key)
        except KeyError:
            raise HttpError(404, f"{key} not found") from None
        except PermissionError as err:
            raise HttpError(409, str(err)) from None
        plane.folder.scan()
    else:
        current = [r for r in plane.store.resources() if plane.store.source_of(r.key) == API_SOURCE]
        if key not in {r.key for r in current}:
            raise HttpError(404, f"{key} not found")
        plane.store.replace_source(API_SOURCE, [r for r in current if r.key != key])
    return 200, {"deleted": str(key)}


def _connection(plane: ControlPlane, name: str) -> Any:
    connection = plane.find_connection(name)
    if connection is None:
        raise HttpError(404, f"no connected proxy {name!r}")
    return connection


def _proxy_config(plane: ControlPlane, name: str, kind: str) -> dict[str, Any]:
    connection = _connection(plane, name)
    wanted = CONFIG_TYPES if kind == "all" else {kind: CONFIG_TYPES.get(kind, "")}
    if not all(wanted.values()):
        raise HttpError(400, f"unknown config type {kind!r} (use {', '.join(CONFIG_TYPES)} or all)")
    out: dict[str, Any] = {"proxy": connection.proxy.id}
    snapshot = connection.snapshot
    for label, type_url in wanted.items():
        names = connection.session.sent_names(type_url)
        resources = snapshot.resources(type_url) if snapshot is not None else {}
        out[label] = [to_dict(resources[n]) for n in names if n in resources]
    return out


__all__ = ["CONFIG_TYPES", "HttpError", "route", "start_api"]
