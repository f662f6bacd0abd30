"""The admin endpoint on the bootstrap's ``admin.address`` (Envoy's admin API subset).

``/ready``, ``/server_info``, ``/config_dump``, ``/clusters``, ``/listeners``,
``/stats`` (text or ``?format=json``, ``?filter=regex``), ``/stats/prometheus``,
``/logging`` (GET lists, POST ``?level=`` or ``?paths=name:level`` changes) and
``POST /quitquitquit``. Data comes from an ``AdminSource`` so the same server
works for one process or a supervisor aggregating several workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

import httptools
from google.protobuf import json_format

from ._h1 import status_line
from ._stats import StatSample, render_prometheus, render_text

log = logging.getLogger("wasmesh.sidecar.admin")

VERSION = "wasmesh-sidecar/0.1.0"
LOGGERS = ("admin", "config", "connection", "http", "router", "upstream", "wasm", "main")
_LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL, "off": 100}


def logger_for(name: str) -> logging.Logger:
    return logging.getLogger(f"wasmesh.{name}")


def _level_name(level: int) -> str:
    for name, value in _LEVELS.items():
        if value == level and name != "warn":
            return name
    return logging.getLevelName(level).lower()


class AdminSource(Protocol):
    """What the admin endpoint reports on."""

    state: str  # LIVE | DRAINING | PRE_INITIALIZING

    def plan(self) -> Any: ...

    def start_time(self) -> float: ...

    async def stats(self) -> dict[str, StatSample]: ...

    async def clusters(self) -> list[dict[str, Any]]:
        """Per cluster: name, thresholds, hosts [{address, port, stats..., healthy, weight, hostname}]."""
        ...

    async def listeners(self) -> list[dict[str, Any]]: ...

    def command_line(self) -> dict[str, Any]: ...

    def shutdown(self) -> None: ...


SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _config_dump(plan: Any, include_eds: bool = False) -> dict[str, Any]:
    from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
    from google.protobuf import any_pb2

    dump = config_dump_pb2.ConfigDump()
    bootstrap = plan.bootstrap

    def pack(message: Any) -> Any:
        packed = any_pb2.Any()
        packed.Pack(message)
        return packed

    dump.configs.append(pack(config_dump_pb2.BootstrapConfigDump(bootstrap=bootstrap)))
    snapshot = plan.dynamic
    if snapshot is not None:  # the bootstrap's own parts plus what xDS delivered
        from ._xds_dump import (
            clusters_dump,
            ecds_dump,
            endpoints_dump,
            listeners_dump,
            routes_dump,
            secrets_dump,
        )

        dump.configs.append(pack(clusters_dump(snapshot, bootstrap.static_resources.clusters)))
        if include_eds:
            dump.configs.append(pack(endpoints_dump(snapshot)))
        dump.configs.append(pack(ecds_dump(snapshot)))
        dump.configs.append(pack(listeners_dump(snapshot, bootstrap.static_resources.listeners)))
        dump.configs.append(pack(routes_dump(snapshot)))
        from ._dynamic import AGENT_SECRETS

        if snapshot.resources.get(SECRET_TYPE) or snapshot.resources.get(AGENT_SECRETS):
            dump.configs.append(pack(secrets_dump(snapshot)))
        result: dict[str, Any] = json_format.MessageToDict(dump, preserving_proto_field_name=True)
        return _with_module_status(result)
    clusters = config_dump_shared_pb2.ClustersConfigDump()
    for cluster in bootstrap.static_resources.clusters:
        clusters.static_clusters.append(
            config_dump_shared_pb2.ClustersConfigDump.StaticCluster(cluster=pack(cluster))
        )
    dump.configs.append(pack(clusters))
    listeners = config_dump_shared_pb2.ListenersConfigDump()
    for listener in bootstrap.static_resources.listeners:
        listeners.static_listeners.append(
            config_dump_shared_pb2.ListenersConfigDump.StaticListener(listener=pack(listener))
        )
    dump.configs.append(pack(listeners))
    result = json_format.MessageToDict(dump, preserving_proto_field_name=True)
    return _with_module_status(result)


def _with_module_status(result: dict[str, Any]) -> dict[str, Any]:
    """Add the module agent's last word per Wasm plugin (fetched, verified, or why not)."""
    from ._wasm_module import MODULE_STATUS

    if MODULE_STATUS:
        result["module_status"] = {name: dict(status) for name, status in MODULE_STATUS.items()}
    return result


def _clusters_text(clusters: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for cluster in clusters:
        name = cluster["name"]
        lines.append(f"{name}::observability_name::{cluster.get('stat_name', name)}")
        for key, value in cluster["thresholds"].items():
            lines.append(f"{name}::default_priority::{key}::{value}")
        lines.append(f"{name}::added_via_api::false")
        for host in cluster["hosts"]:
            prefix = f"{name}::{host['address']}:{host['port']}"
            for key in ("cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error", "rq_success",
                        "rq_timeout", "rq_total"):
                lines.append(f"{prefix}::{key}::{host.get(key, 0)}")
            lines.append(f"{prefix}::hostname::{host.get('hostname', '')}")
            lines.append(f"{prefix}::health_flags::{host['health_flags']}")
            lines.append(f"{prefix}::weight::{host['weight']}")
            lines.append(f"{prefix}::priority::0")
            lines.append(f"{prefix}::success_rate::-1")
    return "\n".join(lines) + "\n"


class AdminServer:
    def __init__(self, source: AdminSource, address: str, port: int, access_log_path: str = "") -> None:
        self.source = source
        self.address = address
        self.port = port
        self.access_log_path = access_log_path
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _AdminConnection(self), self.address, self.port,
                                               reuse_address=True)
        sockets: list[Any] = list(self.server.sockets or [])
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for one admin request."""
        parts = urlsplit(target)
        path = parts.path
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        source = self.source
        try:
            if path == "/ready":
                live = source.state == "LIVE"
                return (200 if live else 503), "text/plain", (source.state + "\n").encode()
            if path == "/server_info":
                return 200, "application/json", json.dumps(self._server_info(), indent=2).encode()
            if path == "/config_dump":
                dumped = _config_dump(source.plan(), include_eds="include_eds" in query)
                return 200, "application/json", json.dumps(dumped, indent=2).encode()
            if path == "/clusters":
                clusters = await source.clusters()
                if query.get("format") == "json":
                    return 200, "application/json", json.dumps({"cluster_statuses": clusters}, indent=2).encode()
                return 200, "text/plain", _clusters_text(clusters).encode()
            if path == "/listeners":
                listeners = await source.listeners()
                if query.get("format") == "json":
                    return 200, "application/json", json.dumps({"listener_statuses": listeners}, indent=2).encode()
                text = "".join(
                    f"{item['name']}::{item['local_address']['socket_address']['address']}:"
                    f"{item['local_address']['socket_address']['port_value']}\n"
                    for item in listeners
                )
                return 200, "text/plain", text.encode()
            if path == "/stats/prometheus" or (path == "/stats" and query.get("format") == "prometheus"):
                return 200, "text/plain; version=0.0.4", render_prometheus(await self._all_stats())
            if path == "/stats":
                return await self._stats(query)
            if path == "/logging":
                return self._logging(method, query)
            if path == "/quitquitquit":
                if method != "POST":
                    return 405, "text/plain", b"This endpoint requires POST\n"
                asyncio.get_running_loop().call_later(0.05, source.shutdown)
                return 200, "text/plain", b"OK\n"
            if path in ("/", "/help"):
                return 200, "text/plain", _HELP.encode()
        except Exception as err:  # the admin endpoint must answer, whatever broke
            log.exception("admin %s failed", path)
            return 500, "text/plain", f"{type(err).__name__}: {err}\n".encode()
        return 404, "text/plain", b"invalid path. admin commands are:\n" + _HELP.encode()

    def _server_info(self) -> dict[str, Any]:
        source = self.source
        uptime = int(time.time() - source.start_time())
        plan = source.plan()
        node = json_format.MessageToDict(plan.node, preserving_proto_field_name=True) if plan is not None else {}
        return {
            "version": VERSION,
            "state": source.state,
            "uptime_current_epoch": f"{uptime}s",
            "uptime_all_epochs": f"{uptime}s",
            "hot_restart_version": "disabled",
            "command_line_options": source.command_line(),
            "node": node,
        }

    async def _all_stats(self) -> dict[str, StatSample]:
        """The source's stats plus Envoy's ``server.*`` gauges."""
        snapshot = dict(await self.source.stats())
        source = self.source
        snapshot["server.live"] = StatSample("gauge", 1 if source.state == "LIVE" else 0)
        snapshot["server.state"] = StatSample("gauge", {"LIVE": 0, "DRAINING": 1}.get(source.state, 2))
        snapshot["server.uptime"] = StatSample("gauge", int(time.time() - source.start_time()))
        snapshot["server.concurrency"] = StatSample("gauge", int(source.command_line().get("concurrency", 1)))
        return snapshot

    async def _stats(self, query: dict[str, str]) -> tuple[int, str, bytes]:
        snapshot = await self._all_stats()
        pattern = query.get("filter")
        if pattern:
            try:
                regex = re.compile(pattern)
            except re.error as err:
                return 400, "text/plain", f"invalid regex: {err}\n".encode()
            snapshot = {name: sample for name, sample in snapshot.items() if regex.search(name)}
        if query.get("usedonly") is not None:
            snapshot = {name: sample for name, sample in snapshot.items()
                        if sample.kind == "histogram" and sample.value[2] or sample.kind != "histogram" and sample.value}
        if query.get("format") == "json":
            stats = []
            for name in sorted(snapshot):
                sample = snapshot[name]
                if sample.kind != "histogram":
                    stats.append({"name": name, "value": sample.value})
            return 200, "application/json", json.dumps({"stats": stats}, indent=2).encode()
        return 200, "text/plain", render_text(snapshot).encode()

    def _logging(self, method: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        if query and method != "POST":
            return 405, "text/plain", b"This endpoint requires POST\n"
        if "level" in query:
            level = _LEVELS.get(query["level"].lower())
            if level is None:
                return 404, "text/plain", f"unknown logger level {query['level']!r}\n".encode()
            for name in LOGGERS:
                logger_for(name).setLevel(level)
            logging.getLogger("wasmesh").setLevel(level)
        elif "paths" in query:
            for item in query["paths"].split(","):
                name, _, level_name = item.partition(":")
                level = _LEVELS.get(level_name.strip().lower())
                if name.strip() not in LOGGERS or level is None:
                    return 404, "text/plain", f"unknown logger or level in {item!r}\n".encode()
                logger_for(name.strip()).setLevel(level)
        elif query:
            for name, level_name in query.items():
                level = _LEVELS.get(level_name.lower())
                if name not in LOGGERS or level is None:
                    return 404, "text/plain", f"unknown logger or level: {name}={level_name}\n".encode()
                logger_for(name).setLevel(level)
        lines = ["active loggers:"]
        for name in LOGGERS:
            lines.append(f"  {name}: {_level_name(logger_for(name).getEffectiveLevel())}")
        return 200, "text/plain", ("\n".join(lines) + "\n").encode()

    def write_access_log(self, method: str, target: str, status: int) -> None:
        if not self.access_log_path:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        try:
            with open(self.access_log_path, "a", encoding="utf-8") as handle:
                handle.write(f'[{stamp}] "{method} {target}" {status}\n')
        except OSError:
            pass


_HELP = """admin commands are:
  /: this help
  /clusters: upstream cluster status (?format=json)
  /config_dump: dump current Envoy configs
  /listeners: listener names and addresses (?format=json)
  /logging: query/change logging levels (POST ?level= or ?paths=name:level)
  /quitquitquit: exit the server (POST)
  /ready: print server state, 200 if LIVE
  /server_info: print server version/status information
  /stats: print server stats (?format=json, ?filter=regex, ?usedonly)
  /stats/prometheus: print server stats in prometheus format
"""


class _AdminConnection(asyncio.Protocol):
    def __init__(self, server: AdminServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(status_line(400) + b"content-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        self.keep_alive = self.parser.should_keep_alive()
        target = self.url.decode("latin-1")
        task = asyncio.get_running_loop().create_task(self._respond(method, target, b"".join(self.body)))
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    async def _respond(self, method: str, target: str, body: bytes) -> None:
        status, content_type, payload = await self.server.handle(method, target, body)
        self.server.write_access_log(method, target, status)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        head = status_line(status) + b"content-type: %s\r\ncontent-length: %d\r\ncache-control: no-cache, max-age=0\r\n" \
            b"x-content-type-options: nosniff\r\n" % (content_type.encode(), len(payload))
        if not self.keep_alive:
            head += b"connection: close\r\n"
        transport.write(head + b"\r\n" + payload)
        if not self.keep_alive:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


_pending: set[asyncio.Task[Any]] = set()
