"""``--concurrency N``: N worker processes sharing each listen port through SO_REUSEPORT.

The supervisor (parent) validates the bootstrap, fixes the port of every listener
configured with port 0 (so all workers bind the same one), starts the workers,
serves the admin endpoint with figures merged from all of them, watches the
config file and tells every worker to reload. A worker that dies is restarted
with the current configuration. Messages travel over one pipe per worker.

With ``dynamic_resources`` the supervisor runs the xDS client: each update is validated and
built here, and every worker receives the assembled bootstrap (static parts plus the xDS
resources inlined) as its new configuration, so all workers serve the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from .._shared import STATE_ENV
from .._shared_mmap import create_state_file
from ._admin import AdminServer
from ._errors import ConfigError
from ._identity import start_identity
from ._plan import Plan
from ._plan_build import build_plan
from ._reload import FileWatcher, digest, load_plan, read_config
from ._sidecar import (
    cluster_views,
    freeze_startup_objects,
    listener_views,
    merge_cluster_views,
    write_admin_address,
)
from ._stats import StatSample, merge_snapshots
from ._xds_settings import ads_settings

if TYPE_CHECKING:
    from ._identity import SidecarIdentity
    from ._xds_client import XdsClient, XdsSnapshot

log = logging.getLogger("wasmesh.main")

Connection = multiprocessing.connection.Connection


def _reserve_ports(plan: Plan, known: dict[str, int], held: list[socket.socket]) -> dict[str, int]:
    """Concrete ports for listeners configured with port 0 (kept stable across reloads)."""
    ports: dict[str, int] = {}
    for listener in plan.listeners:
        if listener.port != 0:
            ports[listener.name] = listener.port
            continue
        if listener.name in known:
            ports[listener.name] = known[listener.name]
            continue
        sock = socket.socket(socket.AF_INET6 if ":" in listener.address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listener.address, 0))
        held.append(sock)  # keeps the port ours until the workers have bound it too
        ports[listener.name] = sock.getsockname()[1]
    return ports


def with_ports(plan: Plan, ports: dict[str, int]) -> Plan:
    plan.listeners = tuple(
        dataclasses.replace(listener, port=ports.get(listener.name, listener.port), reuse_port=True)
        for listener in plan.listeners
    )
    return plan


def _whole(conn: Connection, operation: Callable[..., Any], *args: Any) -> Any:
    """Send or receive one whole message on a worker pipe.

    The event loop watching the pipe leaves it non-blocking, and a message larger than the
    socket buffer (an assembled bootstrap with its inlined certificates) would otherwise fail
    half-way with BlockingIOError; the other side always reads promptly, so blocking is brief.
    """
    fd = conn.fileno()
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, True)
    try:
        return operation(*args)
    finally:
        os.set_blocking(fd, blocking)


# --- worker process -----------------------------------------------------------------------------


def worker_main(conn: Connection, text: str, source: str, version: int, ports: dict[str, int],
                log_level: int, index: int = 0) -> None:
    """Entry point of one worker process."""
    import uvloop

    # a spawned worker starts with no logging set up: give it the supervisor's format on stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[%(asctime)s][%(levelname)s][%(name)s][worker {index}] %(message)s"))
    root = logging.getLogger("wasmesh")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(_worker_loop(conn, text, source, version, ports, index))


async def _worker_loop(conn: Connection, text: str, source: str, version: int, ports: dict[str, int],
                       index: int) -> None:
    from ._worker import Worker

    loop = asyncio.get_running_loop()
    worker = Worker(loop, index=index)
    stopped = asyncio.Event()
    try:
        plan = with_ports(load_plan(text, source, version, worker), ports)
        await worker.apply(plan)
    except (ConfigError, OSError) as err:
        conn.send(("failed", str(err)))
        return
    current = {"plan": plan}
    freeze_startup_objects()
    conn.send(("ready", worker.bound_ports()))
    pending: set[asyncio.Task[Any]] = set()

    async def reload(request_id: int, new_text: str, new_version: int, new_ports: dict[str, int]) -> None:
        try:
            new_plan = await loop.run_in_executor(None, load_plan, new_text, source, new_version, worker)
            await worker.apply(with_ports(new_plan, new_ports))
            current["plan"] = new_plan
            _whole(conn, conn.send, ("reply", request_id, None))
        except (ConfigError, OSError) as err:
            _whole(conn, conn.send, ("reply", request_id, str(err)))

    def on_message() -> None:
        try:
            message = _whole(conn, conn.recv)
        except (EOFError, OSError):
            stopped.set()
            return
        kind = message[0]
        if kind == "stats":
            _whole(conn, conn.send, ("reply", message[1], worker.stats.snapshot()))
        elif kind == "clusters":
            clusters = worker.current.clusters if worker.current is not None else {}
            _whole(conn, conn.send, ("reply", message[1], cluster_views(clusters)))
        elif kind == "reload":
            task = loop.create_task(reload(message[1], message[2], message[3], message[4]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        elif kind == "stop":
            stopped.set()

    loop.add_reader(conn.fileno(), on_message)
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    loop.remove_reader(conn.fileno())
    plan_now = current["plan"]
    drain = min((listener.hcm.drain_timeout for listener in plan_now.listeners), default=0.0)
    await worker.stop(drain)


# --- supervisor ---------------------------------------------------------------------------------


class _WorkerHandle:
    def __init__(self, index: int, process: Any, conn: Connection) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.ready = False


class Supervisor:
    """Parent of the worker processes; also the admin endpoint's ``AdminSource``."""

    def __init__(self, config_path: str, concurrency: int, options: dict[str, Any], admin_address_path: str = "",
                 watch_interval: float = 0.5) -> None:
        self.config_path = config_path
        self.concurrency = concurrency
        self.options = options
        self.admin_address_path = admin_address_path
        self.watch_interval = watch_interval
        self.state = "PRE_INITIALIZING"
        self._context = multiprocessing.get_context("spawn")
        self._shared_state = ""  # the state file this supervisor created for its workers, if any
        self._workers: list[_WorkerHandle] = []
        self._plan: Plan | None = None
        self._text = ""
        self._version = 0
        self._ports: dict[str, int] = {}
        self._held: list[socket.socket] = []
        self._requests = itertools.count(1)
        self._waiting: dict[tuple[int, int], asyncio.Future[Any]] = {}
        self._started = time.time()
        self._stopped: asyncio.Event | None = None
        self._admin: AdminServer | None = None
        self._watcher: FileWatcher | None = None
        self._log_level = logging.getLogger("wasmesh").getEffectiveLevel()
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

    def command_line(self) -> dict[str, Any]:
        return {"config_path": self.config_path, **self.options}

    def shutdown(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def stats(self) -> dict[str, StatSample]:
        replies = await self._ask_all("stats")
        return merge_snapshots(replies)

    async def clusters(self) -> list[dict[str, Any]]:
        return merge_cluster_views(await self._ask_all("clusters"))

    async def listeners(self) -> list[dict[str, Any]]:
        return listener_views(self._ports, self._plan)

    # --- messaging ------------------------------------------------------------------------------

    def _on_message(self, handle: _WorkerHandle) -> None:
        try:
            message = _whole(handle.conn, handle.conn.recv)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(handle.conn.fileno())
            return
        if message[0] == "reply":
            future = self._waiting.pop((handle.index, message[1]), None)
            if future is not None and not future.done():
                future.set_result(message[2])

    async def _ask(self, handle: _WorkerHandle, kind: str, *args: Any, timeout: float = 30.0) -> Any:
        request_id = next(self._requests)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[(handle.index, request_id)] = future
        _whole(handle.conn, handle.conn.send, (kind, request_id, *args))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop((handle.index, request_id), None)

    async def _ask_all(self, kind: str, *args: Any) -> list[Any]:
        live = [h for h in self._workers if h.ready and h.process.is_alive()]
        results = await asyncio.gather(*(self._ask(h, kind, *args) for h in live), return_exceptions=True)
        return [r for r in results if not isinstance(r, BaseException)]

    # --- workers --------------------------------------------------------------------------------

    async def _spawn(self, index: int) -> _WorkerHandle:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=worker_main,
            args=(child_end, self._text, self.config_path, self._version, self._ports, self._log_level, index),
            name=f"wasmesh-worker-{index}",
            daemon=True,
        )
        process.start()
        child_end.close()
        handle = _WorkerHandle(index, process, parent_end)
        loop = asyncio.get_running_loop()
        # wait for the worker's first message ("ready" or "failed") without blocking the loop
        first = await loop.run_in_executor(None, _recv_with_timeout, parent_end, 60.0)
        if first is None or first[0] != "ready":
            process.terminate()
            reason = first[1] if first is not None else "no answer"
            raise ConfigError("", f"worker {index} failed to start: {reason}")
        handle.ready = True
        loop.add_reader(parent_end.fileno(), self._on_message, handle)
        return handle

    async def _watch_workers(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for position, handle in enumerate(list(self._workers)):
                if handle.ready and not handle.process.is_alive():
                    log.error("worker %d exited with %s; restarting it", handle.index, handle.process.exitcode)
                    asyncio.get_running_loop().remove_reader(handle.conn.fileno())
                    handle.ready = False
                    try:
                        self._workers[position] = await self._spawn(handle.index)
                    except ConfigError as err:
                        log.error("%s", err)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._text = read_config(self.config_path)
        self._version = 1
        plan = await loop.run_in_executor(None, load_plan, self._text, self.config_path, self._version)
        self._ports = _reserve_ports(plan, {}, self._held)
        self._plan = plan
        if not os.environ.get(STATE_ENV):
            # one vm_id = one store across the workers: proxy-wasm shared data and queues live
            # in a state file every worker maps (workers inherit the variable when spawned)
            self._shared_state = create_state_file()
            os.environ[STATE_ENV] = self._shared_state
        try:
            for index in range(self.concurrency):
                self._workers.append(await self._spawn(index))
        finally:
            for sock in self._held:
                sock.close()
            self._held.clear()
        if plan.admin is not None:
            self._admin = AdminServer(self, plan.admin.address, plan.admin.port, plan.admin.access_log_path)
            port = await self._admin.start()
            if self.admin_address_path:
                write_admin_address(self.admin_address_path, f"{plan.admin.address}:{port}")
        self._watcher = FileWatcher(self.config_path, self._reload, self.watch_interval, digest(self._text))
        self._watcher.start()
        self._monitor = loop.create_task(self._watch_workers())
        self._bootstrap = plan.bootstrap
        settings = ads_settings(plan.bootstrap)
        if settings is None:
            self.state = "LIVE"
        else:
            from ._xds_client import XdsClient

            self.xds = XdsClient(plan.bootstrap, settings, self)
        # one agent for all workers: they get its secrets inlined in what they serve, over their pipes
        self.identity = start_identity(plan.bootstrap, settings, self.options, self.xds)
        if self.xds is not None:
            self.xds.start()
        log.info("serving %s with %d workers (listeners: %s)", self.config_path, self.concurrency,
                 ", ".join(f"{n}={p}" for n, p in self._ports.items()))

    # --- XdsTarget --------------------------------------------------------------------------------

    @property
    def services(self) -> None:
        return None  # plans are only checked here; the workers serve them

    def build(self, bootstrap: Any) -> Plan:
        return build_plan(bootstrap, version=next(self._plan_versions), source="xds")

    async def activate(self, plan: Plan) -> None:
        """Send the assembled bootstrap to every worker; they build and serve it themselves."""
        text = json_format.MessageToJson(plan.bootstrap, preserving_proto_field_name=True)
        ports = _reserve_ports(plan, self._ports, self._held)
        try:
            errors = [e for e in await self._ask_all("reload", text, plan.version, ports) if e]
        finally:
            for sock in self._held:
                sock.close()
            self._held.clear()
        plan.retire()
        if errors:
            raise OSError(f"a worker refused the update: {errors[0]}")
        plan.bootstrap = self._bootstrap
        plan.dynamic = self._snapshot
        self._text = text
        self._version = plan.version
        self._ports = ports
        self._plan = plan

    def publish(self, snapshot: XdsSnapshot) -> None:
        self._snapshot = snapshot
        if self.identity is not None:
            self.identity.on_xds(snapshot.resources)
        if self._plan is not None:
            self._plan.dynamic = snapshot
        if snapshot.initialized and self.state == "PRE_INITIALIZING":
            self.state = "LIVE"
            log.info("initial xDS configuration applied in %d workers; serving", len(self._workers))

    async def _reload(self, text: str) -> None:
        if self.xds is not None:
            log.warning("%s changed: a bootstrap with dynamic_resources takes effect on restart", self.config_path)
            return
        loop = asyncio.get_running_loop()
        version = self._version + 1
        try:
            plan = await loop.run_in_executor(None, load_plan, text, self.config_path, version)
        except ConfigError as err:
            log.error("config reload rejected, keeping version %d: %s", self._version, err)
            return
        ports = _reserve_ports(plan, self._ports, self._held)
        try:
            errors = [e for e in await self._ask_all("reload", text, version, ports) if e]
        finally:
            for sock in self._held:
                sock.close()
            self._held.clear()
        plan.retire()
        if errors:
            log.error("config reload failed in a worker: %s", errors[0])
            return
        self._text = text
        self._version = version
        self._ports = ports
        self._plan = plan
        log.info("config version %d active in %d workers", version, len(self._workers))

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.shutdown)
        assert self._stopped is not None
        await self._stopped.wait()
        await self.stop()

    async def stop(self) -> None:
        self.state = "DRAINING"
        if self._watcher is not None:
            self._watcher.stop()
        if self.identity is not None:
            await self.identity.stop()
        if self.xds is not None:
            await self.xds.stop()
        if self._admin is not None:
            await self._admin.close()
        for handle in self._workers:
            try:
                _whole(handle.conn, handle.conn.send, ("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for handle in self._workers:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.get_running_loop().run_in_executor(None, handle.process.join, remaining)
            if handle.process.is_alive():
                handle.process.terminate()
        if self._shared_state:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._shared_state)
            os.environ.pop(STATE_ENV, None)
            self._shared_state = ""


def _recv_with_timeout(conn: Connection, timeout: float) -> Any:
    if conn.poll(timeout):
        try:
            return conn.recv()
        except EOFError:
            return None
    return None


def run_supervisor(config_path: str, concurrency: int, options: dict[str, Any], admin_address_path: str = "") -> int:
    import uvloop

    async def main() -> int:
        supervisor = Supervisor(config_path, concurrency, options, admin_address_path)
        try:
            await supervisor.start()
        except (ConfigError, OSError) as err:
            log.error("cannot start: %s", err)
            await supervisor.stop()
            return 1
        await supervisor.serve_forever()
        return 0

    return uvloop.run(main())
