"""The control plane process: config store + sources, service registry, debounced pushes,
the ADS server (xDS, default port 15010) and the operator API (monitoring, default 15014);
with `Settings.security`, also the CA and the secure port (15012: CSR service and xDS over TLS)
and the workload certificates of token-authenticated proxies, renewed at half their lifetime.

Changes (a file edited, a proxy connected or gone) only mark the mesh dirty; a push runs once
the changes have been quiet for `debounce` seconds (or after `max_delay` at most), builds one
`Mesh`, generates each proxy's snapshot (shared between proxies of the same scope) and sends
only the types whose version changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controlplane._ads import Connection, add_to_server
from controlplane._folder import FolderSource
from controlplane._generate import Generator, Snapshot
from controlplane._mesh import ROOT_NAMESPACE, Mesh
from controlplane._meshconfig import MeshConfig
from controlplane._module_cache import ModuleCache
from controlplane._module_config import ModulesConfig
from controlplane._module_placement import module_slots
from controlplane._modules import ModuleResolver
from controlplane._mtls import runs_identity_agent
from controlplane._protos import EXTENSION_CONFIG, TYPE_SHORT_NAMES
from controlplane._proxies import Proxy, labels_match
from controlplane._sds import private_types, trust_bundle_types
from controlplane._secrets import SECRET_KIND, pull_secrets
from controlplane._security import MeshSecurity, SecuritySettings
from controlplane._store import ConfigStore

log = logging.getLogger("wasmesh.controlplane")
XDS_PORT, MONITORING_PORT = 15010, 15014


@dataclass
class Settings:
    host: str = "127.0.0.1"
    xds_port: int = XDS_PORT
    monitoring_host: str = "127.0.0.1"
    monitoring_port: int = MONITORING_PORT
    debounce: float = 0.1
    max_delay: float = 1.0
    watch_interval: float = 0.2
    root_namespace: str = ROOT_NAMESPACE
    security: SecuritySettings | None = None  # the CA and the secure port (15012); None: plaintext only
    mesh_config: MeshConfig = field(default_factory=MeshConfig)
    modules: ModulesConfig = field(default_factory=ModulesConfig)  # Wasm module distribution and trust
    module_cache_dir: Path | None = None  # default: $XDG_CACHE_HOME/wasmesh/controlplane/modules
    module_host: str = ""  # the address proxies fetch modules from (default: the monitoring address)


class Metrics:
    """Istio-named push metrics on a registry owned by one control plane."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pushes = Counter("pilot_xds_pushes", "xDS responses sent", ["type"], registry=self.registry)
        self.nacks = Counter("pilot_total_xds_rejects", "xDS responses rejected by proxies", ["type"],
                             registry=self.registry)
        self.proxies = Gauge("pilot_xds", "connected xDS clients", registry=self.registry)
        self.push_time = Histogram("pilot_proxy_convergence_time", "seconds from change to push sent",
                                   registry=self.registry)
        self.config = Gauge("pilot_resources", "mesh resources in the store", registry=self.registry)


class ControlPlane:
    """Owns the store, the sources, the connections and the push loop."""

    def __init__(self, store: ConfigStore | None = None, settings: Settings | None = None,
                 folder: Path | None = None) -> None:
        self.store = store or ConfigStore()
        self.settings = settings or Settings()
        self.folder = FolderSource(folder, self.store) if folder is not None else None
        self.connections: dict[int, Connection] = {}
        self.metrics = Metrics()
        self.push_count = 0
        self._generator: Generator | None = None
        self._dirty = asyncio.Event()
        self._first_change = 0.0
        self._last_change = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grpc: grpc.aio.Server | None = None
        self._api: Any = None
        self.xds_port = 0
        self.monitoring_port = 0
        self.secure_port = 0
        self.security = MeshSecurity(self.settings.security) if self.settings.security is not None else None
        self.modules = ModuleResolver(self.settings.modules, ModuleCache(self.settings.module_cache_dir
                                                                         or default_module_cache()))
        self.modules.on_change = self.request_push
        self.store.subscribe(self.request_push)

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> ControlPlane:
        self._loop = asyncio.get_running_loop()
        if self.folder is not None:
            self.folder.scan()
        self._grpc = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100_000),
                                              ("grpc.so_reuseport", 0)])
        add_to_server(self._grpc, self)
        self.xds_port = self._grpc.add_insecure_port(f"{self.settings.host}:{self.settings.xds_port}")
        if self.xds_port == 0:
            raise OSError(f"cannot bind xDS port {self.settings.host}:{self.settings.xds_port}")
        if self.security is not None:
            self.secure_port = self.security.add_to(self._grpc, self.settings.host)
        await self._grpc.start()
        from controlplane._api import start_api

        self._api = await start_api(self, self.settings.monitoring_host, self.settings.monitoring_port)
        self.monitoring_port = self._api.sockets[0].getsockname()[1]
        wildcard = self.settings.monitoring_host in ("", "0.0.0.0", "::")
        self.modules.host = self.settings.module_host or ("127.0.0.1" if wildcard else self.settings.monitoring_host)
        self.modules.port = self.monitoring_port
        self.modules.start()
        if self.security is not None:  # with a mesh CA, proxies fetch modules over HTTPS
            await self.modules.serve_tls(self.security)
        self._tasks.append(self._loop.create_task(self._push_loop()))
        if self.folder is not None:
            self._tasks.append(self._loop.create_task(self.folder.watch(self.settings.watch_interval)))
        if self.security is not None:
            self._tasks.append(self._loop.create_task(self._renewal_loop()))
        log.info("xDS on %s:%d, monitoring on %s:%d", self.settings.host, self.xds_port,
                 self.settings.monitoring_host, self.monitoring_port)
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        self._tasks.clear()
        await self.modules.stop()
        for connection in list(self.connections.values()):
            connection.outbox.put_nowait(None)
        if self._api is not None:
            self._api.close()
            await self._api.wait_closed()
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)

    # ---- changes and pushes ---------------------------------------------------------------------
    def request_push(self) -> None:
        """Mark the mesh dirty; safe to call from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._mark_dirty()
        else:
            loop.call_soon_threadsafe(self._mark_dirty)

    def _mark_dirty(self) -> None:
        now = time.monotonic()
        if not self._dirty.is_set():
            self._first_change = now
        self._last_change = now
        self._generator = None
        self._dirty.set()

    async def _push_loop(self) -> None:
        while True:
            await self._dirty.wait()
            while True:  # debounce: wait for quiet, but never longer than max_delay in total
                now = time.monotonic()
                quiet_at = self._last_change + self.settings.debounce
                latest = self._first_change + self.settings.max_delay
                if now >= min(quiet_at, latest):
                    break
                await asyncio.sleep(min(quiet_at, latest) - now)
            self._dirty.clear()
            started = self._first_change
            try:
                self.push_all()
            except Exception:  # noqa: BLE001 - a bad push must not stop future pushes
                log.exception("push failed")
            self.metrics.push_time.observe(time.monotonic() - started)

    def mesh(self) -> Mesh:
        return Mesh(self.store.resources(), [c.proxy for c in self.connections.values()],
                    self.settings.root_namespace, self.settings.mesh_config)

    def generator(self) -> Generator:
        if self._generator is None:
            mesh = self.mesh()
            self.modules.track(module_slots(mesh, pull_secrets(mesh.of_kind(SECRET_KIND))))
            self._generator = Generator(mesh, modules=self.modules.placements())
            self.metrics.config.set(len(self._generator.mesh.resources))
        return self._generator

    def push_all(self) -> int:
        """Send every connection what changed for it; returns the number of responses sent."""
        generator = self.generator()
        sent = 0
        for connection in list(self.connections.values()):
            snapshot = self._snapshot_for(connection, generator)
            connection.snapshot = snapshot
            responses = connection.session.on_snapshot(snapshot)
            for response in responses:
                self.metrics.pushes.labels(TYPE_SHORT_NAMES.get(response.type_url, response.type_url)).inc()
            connection.send_all(responses)
            sent += len(responses)
        self.push_count += 1
        return sent

    # ---- the Plane protocol used by the ADS endpoint ---------------------------------------------
    def _snapshot_for(self, connection: Connection, generator: Generator) -> Snapshot:
        """The proxy's scope snapshot, plus its own SDS secrets when it has an identity."""
        snapshot = generator.snapshot(connection.proxy)
        if self.security is None or connection.identity is None:
            return snapshot
        if runs_identity_agent(connection.proxy):
            return snapshot.with_private(trust_bundle_types(self.security.ca.trust_bundle_pem()))
        return snapshot.with_private(private_types(self.security.certificates.get(connection.id)))

    async def _renewal_loop(self) -> None:
        """Re-issue workload certificates at half their lifetime (or on a new trust bundle) and push them."""
        assert self.security is not None
        certificates = self.security.certificates
        bundle = self.security.ca.trust_bundle_pem()
        while True:
            await asyncio.sleep(1.0)
            current = self.security.ca.trust_bundle_pem()
            if current != bundle:  # identity agents get the new ROOTCA at once
                bundle = current
                for agent in list(self.connections.values()):
                    if agent.identity is not None and runs_identity_agent(agent.proxy):
                        agent.snapshot = self._snapshot_for(agent, self.generator())
                        agent.send_all(agent.session.on_snapshot(agent.snapshot))
            for connection_id in certificates.due():
                connection = self.connections.get(connection_id)
                if connection is None or connection.identity is None:
                    certificates.forget(connection_id)
                    continue
                try:
                    certificates.issue(connection_id, connection.identity)
                except Exception:  # noqa: BLE001 - retried on the next tick
                    log.exception("renewing the certificate of %s failed", connection.proxy.id)
                    continue
                snapshot = self._snapshot_for(connection, self.generator())
                connection.snapshot = snapshot
                connection.send_all(connection.session.on_snapshot(snapshot))

    async def authenticate(self, connection: Connection) -> None:
        """Check the stream's credentials off the event loop: a TokenReview may wait on the API server."""
        if self.security is not None:
            proxy = connection.proxy
            connection.identity = await asyncio.to_thread(
                self.security.identify, connection.metadata, connection.secure, proxy.namespace, proxy.service_account)

    def connected(self, connection: Connection) -> Snapshot:
        """A stream ``authenticate`` let in joins the mesh: its certificate (unless its agent keeps its
        own key) and its first snapshot."""
        if self.security is not None:
            proxy = connection.proxy
            if connection.identity is not None and not runs_identity_agent(proxy):
                self.security.certificates.issue(connection.id, connection.identity)  # its agent keeps its own key
        self.connections[connection.id] = connection
        self.metrics.proxies.set(len(self.connections))
        log.info("proxy %s connected (%s/%s)", connection.proxy.id, connection.proxy.namespace, connection.proxy.name)
        if self._is_workload(connection.proxy):
            self._mark_dirty()  # its workload joined a service: everyone's endpoints change
        return self._snapshot_for(connection, self.generator())

    def disconnected(self, connection: Connection) -> None:
        if self.security is not None:
            self.security.certificates.forget(connection.id)
        if self.connections.pop(connection.id, None) is not None:
            self.metrics.proxies.set(len(self.connections))
            if self._is_workload(connection.proxy):
                self._mark_dirty()

    def _is_workload(self, proxy: Proxy) -> bool:
        """Whether some service selects this proxy's workload (only then do others care it came or went)."""
        return any(service.selector is not None and service.namespace == proxy.namespace
                   and labels_match(service.selector, proxy.labels)
                   for service in self.generator().mesh.registry.services)

    def nacked(self, connection: Connection, type_url: str, message: str) -> None:
        self.metrics.nacks.labels(TYPE_SHORT_NAMES.get(type_url, type_url)).inc()
        log.warning("proxy %s rejected %s: %s", connection.proxy.id, TYPE_SHORT_NAMES.get(type_url, type_url), message)

    # ---- views for the operator API ---------------------------------------------------------------
    def find_connection(self, name: str) -> Connection | None:
        """A proxy by id, `name.namespace`, or name alone (the newest connection wins)."""
        for connection in sorted(self.connections.values(), key=lambda c: -c.id):
            proxy = connection.proxy
            if name in (proxy.id, f"{proxy.name}.{proxy.namespace}", proxy.name):
                return connection
        return None

    def proxy_status(self) -> list[Mapping[str, Any]]:
        return [{"id": c.proxy.id, "name": c.proxy.name, "namespace": c.proxy.namespace,
                 "protocol": "delta" if c.delta else "sotw", "connected_at": c.connected_at,
                 "types": c.session.status(), "modules": self._modules_of(c)}
                for c in sorted(self.connections.values(), key=lambda c: c.proxy.id)]

    def _modules_of(self, connection: Connection) -> list[dict[str, str]]:
        snapshot = connection.snapshot
        names = snapshot.resources(EXTENSION_CONFIG) if snapshot is not None else {}
        return self.modules.proxy_view(names)


def default_module_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wasmesh" / "controlplane" / "modules"


__all__ = ["MONITORING_PORT", "XDS_PORT", "ControlPlane", "SecuritySettings", "Settings"]
