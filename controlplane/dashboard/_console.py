"""The console's server side: scrape loop, JSON API and static files under ``/dashboard`` on 15014.

Targets are the proxies' Prometheus endpoints: every connected proxy whose node metadata
carries Istio's scrape annotations (``ANNOTATIONS`` ``prometheus.io/port`` and
``prometheus.io/path``, at its first INSTANCE_IPS address), plus the URLs listed in
``WASMESH_SCRAPE_TARGETS`` (comma-separated, e.g. sidecars started from static
bootstraps). The loop starts with the first console request and scrapes every
``SCRAPE_INTERVAL_S``; it keeps the last few scrapes per target, enough for rates.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from controlplane.dashboard._model import Sample, merge_plugin_resources, plugin_view, service_graph

if TYPE_CHECKING:
    from controlplane._server import ControlPlane

SCRAPE_INTERVAL_S = 2.0
KEEP_SAMPLES = 4
TARGETS_ENV = "WASMESH_SCRAPE_TARGETS"
STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
MAX_SCRAPE_BYTES = 16 * 1024 * 1024


class Console:
    """Per control plane: targets, scrape history, and the loop task."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = weakref.ref(plane)
        self.history: dict[str, list[Sample]] = {}
        self.health: dict[str, dict[str, Any]] = {}
        self.workloads: dict[str, str] = {}
        self.task: asyncio.Task[None] | None = None

    def targets(self) -> list[str]:
        found = [t.strip() for t in os.environ.get(TARGETS_ENV, "").split(",") if t.strip()]
        plane = self.plane()
        for connection in list(plane.connections.values()) if plane is not None else []:
            proxy = connection.proxy
            annotations = proxy.metadata.get("ANNOTATIONS") or {}
            port = annotations.get("prometheus.io/port") if isinstance(annotations, dict) else None
            if port:
                path = annotations.get("prometheus.io/path") or "/stats/prometheus"
                found.append(f"http://{proxy.address}:{port}{path}")
                self.workloads[found[-1]] = f"{proxy.name}.{proxy.namespace}"
        return [t if "://" in t else "http://" + t for t in dict.fromkeys(found)]

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while self.plane() is not None:
            await self.scrape_once()
            await asyncio.sleep(SCRAPE_INTERVAL_S)

    async def scrape_once(self) -> None:
        targets = self.targets()
        results = await asyncio.gather(*(asyncio.to_thread(_fetch_target, t) for t in targets))
        for target, (text, workload, error) in zip(targets, results, strict=True):
            now = time.time()
            self.health[target] = {"target": target, "up": error == "", "error": error, "scraped_at": now}
            if workload:
                self.workloads[target] = workload
            if error:
                continue
            try:
                sample = Sample.parse(text, now)
            except ValueError as err:
                self.health[target].update(up=False, error=f"unparsable metrics: {err}")
                continue
            samples = self.history.setdefault(target, [])
            samples.append(sample)
            del samples[:-KEEP_SAMPLES]

    # -- views ----------------------------------------------------------------------------------
    def graph(self) -> dict[str, Any]:
        return {**service_graph(self.history), "targets": list(self.health.values())}

    def proxies(self) -> dict[str, Any]:
        plane = self.plane()
        status = plane.proxy_status() if plane is not None else []
        return {"proxies": [dict(p) for p in status], "targets": list(self.health.values())}

    def plugins(self) -> list[dict[str, Any]]:
        plane = self.plane()
        resources = []
        if plane is not None:
            for resource in plane.store.resources("WasmPlugin"):
                spec = resource.spec
                resources.append({"name": f"{resource.namespace}.{resource.name}", "url": spec.get("url", ""),
                                  "sha256": spec.get("sha256", ""), "phase": spec.get("phase", ""),
                                  "selector": (spec.get("selector") or {}).get("matchLabels") or {},
                                  "status": plane.modules.status_of(resource.key)})
        return merge_plugin_resources(plugin_view(self.history, self.workloads), resources)

    def config(self) -> dict[str, Any]:
        plane = self.plane()
        if plane is None:
            return {"resources": [], "diagnostics": []}
        findings = plane.store.findings()
        return {"resources": [{"kind": r.kind, "namespace": r.namespace, "name": r.name}
                              for r in plane.store.resources() if r.kind != "Secret"],
                "diagnostics": [{"level": "error" if d.is_error else "warning", "text": d.render()}
                                for d in findings]}


def _fetch_target(url: str) -> tuple[str, str, str]:
    """(metrics text, workload name from the admin's /server_info if reachable, error)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            text = reply.read(MAX_SCRAPE_BYTES).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError) as err:
        return "", "", str(err)
    workload = ""
    parts = urlparse(url)
    try:
        with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/server_info", timeout=1) as reply:
            node = json.loads(reply.read(1 << 20)).get("node") or {}
        metadata = node.get("metadata") or {}
        name = metadata.get("WORKLOAD_NAME") or metadata.get("NAME") or ""
        workload = f"{name}.{metadata.get('NAMESPACE', 'default')}" if name else ""
    except (OSError, urllib.error.URLError, ValueError, AttributeError):
        pass
    return text, workload, ""


_CONSOLES: weakref.WeakKeyDictionary[Any, Console] = weakref.WeakKeyDictionary()


def console_for(plane: ControlPlane) -> Console:
    console = _CONSOLES.get(plane)
    if console is None:
        console = _CONSOLES[plane] = Console(plane)
    return console


def is_console_path(target: str) -> bool:
    path = urlparse(target).path
    return path == "/" or path == "/dashboard" or path.startswith("/dashboard/")


async def respond(plane: ControlPlane, method: str, target: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for one console request."""
    path = urlparse(target).path
    if method not in ("GET", "HEAD"):
        return 405, "application/json", b'{"error": "the console is read-only"}'
    if path in ("/", "/dashboard"):
        return 302, "text/plain", b"/dashboard/"
    console = console_for(plane)
    console.start()
    api = path.removeprefix("/dashboard/api/") if path.startswith("/dashboard/api/") else None
    if api is not None:
        views = {"graph": console.graph, "proxies": console.proxies, "plugins": console.plugins,
                 "config": console.config}
        view = views.get(api)
        if view is None:
            return 404, "application/json", json.dumps({"error": f"no view {api!r}"}).encode()
        return 200, "application/json", json.dumps(view(), default=str).encode()
    name = path.removeprefix("/dashboard/") or "index.html"
    file = (STATIC / name).resolve()
    if file.parent != STATIC.resolve() or not file.is_file():
        return 404, "text/plain", b"not found"
    return 200, _TYPES.get(file.suffix, "application/octet-stream"), file.read_bytes()


async def serve(plane: ControlPlane, method: str, target: str, writer: asyncio.StreamWriter) -> None:
    status, content_type, body = await respond(plane, method, target)
    extra = f"location: {body.decode()}\r\n" if status == 302 else ""
    writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
                 f"cache-control: no-store\r\n{extra}connection: close\r\n\r\n".encode()
                 + (b"" if method == "HEAD" else body))
    await writer.drain()
