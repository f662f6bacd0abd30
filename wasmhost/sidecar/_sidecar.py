"""Run the sidecar in one process: a worker, the admin endpoint and the config source.

``Sidecar.run()`` loads the bootstrap, serves it, and on each change of the file
builds the new plan in a thread and swaps it in; a bad new config is logged and
the old one keeps serving. A bootstrap with ``dynamic_resources`` gets the rest of
its configuration from the control plane instead (``_xds_client``); the sidecar is
LIVE once the first listeners and clusters were answered. ``--concurrency N`` > 1
runs ``_supervisor`` instead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
from typing import TYPE_CHECKING, Any

from ._admin import AdminServer
from ._errors import ConfigError
from ._identity import start_identity
from ._plan import Plan
from ._plan_build import build_plan
from ._reload import FileWatcher, digest, load_plan, read_config
from ._stats import StatSample
from ._worker import Worker
from ._xds_settings import ads_settings

if TYPE_CHECKING:
    from ._filter_registry import WorkerServices
    from ._identity import SidecarIdentity
    from ._xds_client import XdsClient, XdsSnapshot

log = logging.getLogger("wasmesh.main")


def cluster_views(clusters: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``/clusters`` view of one worker's runtime clusters."""
    views = []
    for name, cluster in clusters.items():
        thresholds = cluster.thresholds
        hosts = []
        for host in cluster.hosts:
            flags = []
            if host.ejected:
                flags.append("/failed_outlier_check")
            if not host.configured_healthy:
                flags.append("/failed_eds_health")
            hosts.append({
                "address": host.address,
                "port": host.port,
                "hostname": host.hostname,
                "weight": host.weight,
                "health_flags": "".join(flags) or "healthy",
                "cx_active": host.cx_active,
                "rq_active": host.active_requests,
                "rq_total": host.rq_total,
                "rq_error": host.rq_error,
                "rq_success": host.rq_total - host.rq_error,
            })
        views.append({
            "name": name,
            "stat_name": cluster.plan.stat_name,
            "thresholds": {
                "max_connections": thresholds.max_connections,
                "max_pending_requests": thresholds.max_pending_requests,
                "max_requests": thresholds.max_requests,
                "max_retries": thresholds.max_retries,
            },
            "hosts": hosts,
        })
    return views


def listener_views(ports: dict[str, int], plan: Plan | None) -> list[dict[str, Any]]:
    """The ``/listeners?format=json`` entries, shaped like Envoy's."""
    addresses = {listener.name: listener.address for listener in plan.listeners} if plan is not None else {}
    return [
        {"name": name, "local_address": {"socket_address": {"address": addresses.get(name, ""), "port_value": port}}}
        for name, port in ports.items()
    ]


def merge_cluster_views(per_worker: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Sum host counters across workers (health is taken from the first worker)."""
    merged: dict[str, dict[str, Any]] = {}
    for views in per_worker:
        for view in views:
            have = merged.get(view["name"])
            if have is None:
                merged[view["name"]] = {**view, "hosts": [dict(h) for h in view["hosts"]]}
                continue
            index = {(h["address"], h["port"]): h for h in have["hosts"]}
            for host in view["hosts"]:
                target = index.get((host["address"], host["port"]))
                if target is None:
                    have["hosts"].append(dict(host))
                    continue
                for key in ("cx_active", "rq_active", "rq_total", "rq_error", "rq_success"):
                    target[key] += host[key]
    return list(merged.values())


class Sidecar:
    """One process serving a bootstrap file."""

    def __init__(self, config_path: str, watch_interval: float = 0.5, options: dict[str, Any] | None = None,
                 admin_address_path: str = "") -> None:
        self.config_path = config_path
        self.admin_address_path = admin_address_path
        self.watch_interval = watch_interval
        self.options = options or {}
        self.state = "PRE_INITIALIZING"
        self.worker: Worker | None = None
        self.admin: AdminServer | None = None
        self.watcher: FileWatcher | None = None
        self._plan: Plan | None = None
        self._version = 0
        self._started = time.time()
        self._stopped: asyncio.Event | None = None
        self.xds: XdsClient | None = None
        self.identity: SidecarIdentity | None = None
        self._bootstrap: Any = None
        self._snapshot: XdsSnapshot | None = None
        self._plan_versions = itertools.count(2)

    # --- AdminSource ----------------------------------------------------------------------------

    def plan(self) -> Plan | None:
        return self._plan

    def start_time(self) -> float:
        return self._started

    async def stats(self) -> dict[str, StatSample]:
        assert self.worker is not None
        return self.worker.stats.snapshot()

    async def clusters(self) -> list[dict[str, Any]]:
        current = self.worker.current if self.worker is not None else None
        return cluster_views(current.clusters) if current is not None else []

    async def listeners(self) -> list[dict[str, Any]]:
        if self.worker is None:
            return []
        return listener_views(self.worker.bound_ports(), self._plan)

    def command_line(self) -> dict[str, Any]:
        return {"config_path": self.config_path, **self.options}

    def shutdown(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and serve the bootstrap; raise ``ConfigError`` if the first config is bad."""
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        text = read_config(self.config_path)
        self.worker = Worker(loop)
        self._version = 1
        plan = await loop.run_in_executor(None, load_plan, text, self.config_path, self._version, self.worker)
        await self.worker.apply(plan)
        self._plan = plan
        self._bootstrap = plan.bootstrap
        if plan.admin is not None:
            self.admin = AdminServer(self, plan.admin.address, plan.admin.port, plan.admin.access_log_path)
            port = await self.admin.start()
            if self.admin_address_path:
                write_admin_address(self.admin_address_path, f"{plan.admin.address}:{port}")
        self.watcher = FileWatcher(self.config_path, self._reload, self.watch_interval, digest(text))
        self.watcher.start()
        settings = ads_settings(plan.bootstrap)
        if settings is None:
            self.state = "LIVE"
        else:
            from ._xds_client import XdsClient

            self.xds = XdsClient(plan.bootstrap, settings, self)
        self.identity = start_identity(plan.bootstrap, settings, self.options, self.xds)
        if self.xds is not None:
            self.xds.start()
        freeze_startup_objects()
        log.info("serving %s (listeners: %s)", self.config_path,
                 ", ".join(f"{n}={p}" for n, p in self.worker.bound_ports().items()))

    # --- XdsTarget --------------------------------------------------------------------------------

    @property
    def services(self) -> WorkerServices | None:
        return self.worker

    def build(self, bootstrap: Any) -> Plan:
        return build_plan(bootstrap, version=next(self._plan_versions), source="xds", services=self.worker)

    async def activate(self, plan: Plan) -> None:
        assert self.worker is not None
        plan.bootstrap = self._bootstrap
        plan.dynamic = self._snapshot
        await self.worker.apply(plan)
        self._plan = plan
        self._version = plan.version

    def publish(self, snapshot: XdsSnapshot) -> None:
        self._snapshot = snapshot
        if self.identity is not None:
            self.identity.on_xds(snapshot.resources)
        if self._plan is not None:
            self._plan.dynamic = snapshot
        if snapshot.initialized and self.state == "PRE_INITIALIZING":
            self.state = "LIVE"
            log.info("initial xDS configuration applied; serving")

    # --- file reload ----------------------------------------------------------------------------

    async def _reload(self, text: str) -> None:
        if self.xds is not None:
            log.warning("%s changed: a bootstrap with dynamic_resources takes effect on restart", self.config_path)
            return
        loop = asyncio.get_running_loop()
        version = self._version + 1
        try:
            plan = await loop.run_in_executor(None, load_plan, text, self.config_path, version, self.worker)
        except ConfigError as err:
            log.error("config reload rejected, keeping version %d: %s", self._version, err)
            return
        assert self.worker is not None
        old_admin = self._plan.admin if self._plan is not None else None
        try:
            await self.worker.apply(plan)
        except OSError as err:
            log.error("config reload rejected, keeping version %d: cannot bind listener: %s", self._version, err)
            plan.retire()
            return
        if plan.admin != old_admin:
            log.warning("admin address changes take effect on restart only")
        self._version = version
        self._plan = plan
        log.info("config version %d active", version)

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.shutdown)
            except (NotImplementedError, RuntimeError):
                pass
        assert self._stopped is not None
        await self._stopped.wait()
        await self.stop()

    async def stop(self) -> None:
        self.state = "DRAINING"
        if self.watcher is not None:
            self.watcher.stop()
        if self.identity is not None:
            await self.identity.stop()
        if self.xds is not None:
            await self.xds.stop()
        if self.admin is not None:
            await self.admin.close()
        if self.worker is not None:
            drain = 0.0
            if self._plan is not None and self._plan.listeners:
                drain = min(listener.hcm.drain_timeout for listener in self._plan.listeners)
            await self.worker.stop(drain)


def freeze_startup_objects() -> None:
    """Move everything loaded at start-up (modules, protos, plans) out of the cyclic GC's way.

    Requests create short-lived cyclic garbage; without this, every full collection also walks
    the large, immortal start-up heap.
    """
    import gc

    gc.collect()
    gc.freeze()


def write_admin_address(path: str, address: str) -> None:
    """Write ``host:port`` of the admin endpoint atomically (Envoy's ``--admin-address-path``)."""
    import os

    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(address)
    os.replace(temporary, path)


async def run_sidecar(config_path: str, options: dict[str, Any] | None = None, admin_address_path: str = "") -> int:
    sidecar = Sidecar(config_path, options=options, admin_address_path=admin_address_path)
    try:
        await sidecar.start()
    except ConfigError as err:
        log.error("cannot load %s: %s", config_path, err)
        if sidecar.worker is not None:
            await sidecar.worker.stop()
        return 1
    except OSError as err:
        log.error("cannot start: %s", err)
        if sidecar.worker is not None:
            await sidecar.worker.stop()
        return 1
    await sidecar.serve_forever()
    return 0
