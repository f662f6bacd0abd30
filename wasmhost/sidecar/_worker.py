"""One worker: an event loop serving every listener of the current plan.

The worker owns the I/O edge — listening sockets, client connections, upstream
pools, the timer wheel, DNS refresh — and executes the commands the sans-io core
leaves in its outbox (``drain``). ``apply(plan)`` swaps plans: new streams use
the new plan, in-flight streams finish on the old one, and the old plan's
filter resources are released when its last stream ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ._access_log import AccessLogWriter
from ._callout import start_callout
from ._cluster import Cluster, Host
from ._commands import (
    CloseAfterResponse,
    ResetDownstream,
    ResetUpstream,
    SendData,
    SendHeaders,
    SendTrailers,
    SendUpstreamData,
    SendUpstreamTrailers,
    StartUpstream,
    StreamEnded,
    Timer,
)
from ._context import ListenerContext, PlanRuntime, WorkerRuntime
from ._downstream import DownstreamConnection
from ._filter_api import HttpCallCallback, UnknownClusterError
from ._filter_chains import ChainAcceptor
from ._hcm_headers import host_address
from ._headers import Pair
from ._plan import ListenerPlan, Plan
from ._stats import StatsStore
from ._timers import TimerWheel
from ._upstream import HostPool

log = logging.getLogger("wasmesh.sidecar")

MAINTENANCE_INTERVAL = 0.5


def _fast_lane() -> Any:
    """The fast lane's connection class when ``make native`` built it (``WASMESH_FAST_LANE=0``: never)."""
    if os.environ.get("WASMESH_FAST_LANE", "1") == "0":
        return None
    try:
        from ._lane import LaneConnection
    except ImportError:  # not compiled: every connection takes the full path
        return None
    return LaneConnection


LANE = _fast_lane()


class ListenerBindError(OSError):
    """A listener of a new plan cannot listen on its address (the plan is not applied)."""

    def __init__(self, name: str, address: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, f"listener {name!r} cannot bind {address}:{port}: {cause.strerror or cause}")
        self.name = name


class ListenerState:
    """A bound listening socket and the context new streams on it use."""

    def __init__(self, plan: ListenerPlan, ctx: ListenerContext) -> None:
        self.plan = plan
        self.ctx = ctx
        self.server: asyncio.base_events.Server | None = None
        self.port = plan.port


class _TimerHandle:
    def __init__(self, wheel: TimerWheel, timer: Timer) -> None:
        self._wheel = wheel
        self._timer = timer

    def cancel(self) -> None:
        self._wheel.cancel(self._timer)


class Worker:
    """Serves plans on one event loop; also the ``WorkerServices`` handed to filter factories."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stats: StatsStore | None = None, index: int = 0) -> None:
        self.loop = loop
        self.index = index
        self.runtime = WorkerRuntime(stats=stats, services=self, worker_index=index)
        self.runtime.local_ip = host_address()
        self.current: PlanRuntime | None = None
        self.listeners: dict[str, ListenerState] = {}
        self.connections: set[DownstreamConnection] = set()
        self.pools: dict[tuple[int, tuple[str, int]], Any] = {}
        self.access_log = AccessLogWriter()
        self.wheel = TimerWheel(loop, self.drain, self.runtime.tick)
        self.draining = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.TimerHandle | None = None
        self._next_outlier: dict[int, float] = {}
        self._next_dns: dict[int, float] = {}
        self._root_callouts: dict[int, Any] = {}
        self._draining_out = False
        self.pending_writes: list[Any] = []
        self._handlers: dict[type, Callable[[Any], None]] = {
            SendHeaders: self._send_headers,
            SendData: self._send_data,
            SendTrailers: self._send_trailers,
            StreamEnded: self._stream_ended,
            StartUpstream: self._start_upstream,
            SendUpstreamData: self._send_upstream_data,
            SendUpstreamTrailers: self._send_upstream_trailers,
            ResetUpstream: self._reset_upstream,
            Timer: self._timer,
            ResetDownstream: self._reset_downstream,
            CloseAfterResponse: self._close_after_response,
        }

    # --- WorkerServices -------------------------------------------------------------------------

    @property
    def stats(self) -> StatsStore:
        return self.runtime.stats

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _TimerHandle:
        timer = Timer(delay, callback)
        self.wheel.add(timer)
        return _TimerHandle(self.wheel, timer)

    def call_soon(self, callback: Callable[[], None]) -> None:
        def run() -> None:
            self.runtime.tick()
            callback()
            self.drain()

        self.loop.call_soon(run)

    def dispatch_http_call(
        self,
        cluster: str,
        headers: Iterable[Pair],
        body: bytes,
        trailers: Iterable[Pair],
        timeout: float,
        on_result: HttpCallCallback,
    ) -> int:
        """A callout not tied to a stream (e.g. from a plugin's root context)."""
        current = self.current
        target = current.clusters.get(cluster) if current is not None else None
        if target is None:
            raise UnknownClusterError(cluster)
        calls = self._root_callouts

        def deliver(token: int, result: Any) -> None:
            if calls.pop(token, None) is not None:
                on_result(result)

        call = start_callout(self.runtime, target, headers, body, trailers, timeout, deliver)
        calls[call.token] = call
        self.loop.call_soon(self.drain)
        return int(call.token)

    def cancel_http_call(self, token: int) -> None:
        call = self._root_callouts.pop(token, None)
        if call is not None:
            call.cancel()
            self.drain()

    # --- command execution ----------------------------------------------------------------------

    def drain(self) -> None:
        """Execute every pending core command, including ones produced while executing."""
        if self._draining_out:
            return
        self._draining_out = True
        out = self.runtime.out
        handlers = self._handlers
        try:
            for command in out:  # the iterator also reaches commands appended while executing
                try:
                    handlers[type(command)](command)
                except Exception:  # a failing command must not take the worker down
                    log.exception("command %s failed", type(command).__name__)
            out.clear()
            writes = self.pending_writes
            if writes:
                for conn in writes:
                    conn.flush()
                writes.clear()
        finally:
            self._draining_out = False

    def _send_headers(self, command: SendHeaders) -> None:
        command.stream.downstream.send_headers(command.stream, command.headers, command.end_stream)

    def _send_data(self, command: SendData) -> None:
        command.stream.downstream.send_data(command.stream, command.data, command.end_stream)

    def _send_trailers(self, command: SendTrailers) -> None:
        command.stream.downstream.send_trailers(command.stream, command.trailers)

    def _reset_downstream(self, command: ResetDownstream) -> None:
        downstream = command.stream.downstream
        if downstream is not None:
            downstream.reset(command.stream)

    def _close_after_response(self, command: CloseAfterResponse) -> None:
        downstream = command.stream.downstream
        if downstream is not None:
            downstream.close_after = True

    def _stream_ended(self, command: StreamEnded) -> None:
        stream = command.stream
        logs = stream.ctx.hcm.access_logs
        if logs:
            self.access_log.log(logs, stream)
        downstream = stream.downstream
        if downstream is not None:
            downstream.stream_ended(stream)
        stream.release()

    def _pool(self, cluster: Cluster, host: Host) -> Any:
        pool: Any = host.edge_pool
        if pool is not None and pool.cluster is cluster and pool.worker is self:
            return pool
        key = (id(cluster), host.key)
        found = self.pools.get(key)
        if found is None or found.cluster is not cluster:
            if cluster.plan.http2:
                from ._upstream_h2 import Http2HostPool

                found = Http2HostPool(self, cluster, host)
            else:
                found = HostPool(self, cluster, host)
            self.pools[key] = found
        host.edge_pool = found
        return found

    def _start_upstream(self, command: StartUpstream) -> None:
        sink = command.sink
        self._pool(sink.cluster, sink.host).request(sink)

    def _send_upstream_data(self, command: SendUpstreamData) -> None:
        sink = command.sink
        edge = sink.edge
        if edge is not None:
            edge.sink_data(sink, command.data, command.end_stream)

    def _send_upstream_trailers(self, command: SendUpstreamTrailers) -> None:
        sink = command.sink
        edge = sink.edge
        if edge is not None:
            edge.sink_trailers(sink, command.trailers)

    def _reset_upstream(self, command: ResetUpstream) -> None:
        sink = command.sink
        edge = sink.edge
        sink.edge = None
        if edge is not None:
            edge.sink_reset(sink)

    def _timer(self, timer: Timer) -> None:
        if timer.cancelled:
            self.wheel.cancel(timer)
        elif timer.handle is None:
            self.wheel.add(timer)

    # --- flow control ---------------------------------------------------------------------------

    def downstream_write_paused(self, stream: Any, paused: bool) -> None:
        """The client reads slowly: stop reading the upstream that feeds it (and resume later)."""
        if stream is None:
            return
        for callbacks in stream.callbacks:
            slot = callbacks.dec
            attempt = getattr(slot.filter, "attempt", None) if slot is not None else None
            edge = getattr(attempt, "edge", None)
            if edge is not None:
                edge.sink_pause(attempt, paused)

    def upstream_write_paused(self, sink: Any, paused: bool) -> None:
        """The upstream reads slowly: stop reading the client's request body for a while."""
        router = getattr(sink, "router", None)
        stream = getattr(router, "stream", None)
        downstream = getattr(stream, "downstream", None)
        pause_stream = getattr(downstream, "pause_stream_reading", None)
        if pause_stream is not None:  # HTTP/2: hold this stream's window, the connection keeps flowing
            pause_stream(stream, paused)
            return
        transport = getattr(downstream, "transport", None)
        if transport is not None and downstream is not None and not downstream.closed:
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # --- tasks ----------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- plans ----------------------------------------------------------------------------------

    async def apply(self, plan: Plan) -> None:
        """Make ``plan`` current: resolve DNS clusters, bind new listeners, swap, retire the old plan.

        Every new socket is bound before anything changes; if one cannot be bound,
        ``ListenerBindError`` names its listener and the current plan keeps serving untouched.
        """
        runtime = PlanRuntime(plan, self.runtime, previous=self.current)
        await self._resolve_all(runtime, only_new=True)
        wanted = {listener.name: listener for listener in plan.listeners if listener.bind}
        fresh: dict[str, ListenerState] = {}
        try:
            for name, listener_plan in wanted.items():
                state = self.listeners.get(name)
                if state is not None and (state.plan.address, state.plan.port) == (listener_plan.address,
                                                                                  listener_plan.port) \
                        and state.plan.tls_fingerprint == listener_plan.tls_fingerprint:
                    continue
                # a new socket (TLS settings are fixed per socket); SO_REUSEPORT lets both coexist briefly
                new_state = ListenerState(listener_plan, runtime.listeners[name])
                if state is not None and listener_plan.port in (0, state.port):
                    new_state.plan = dataclasses.replace(listener_plan, port=state.port)
                try:
                    await self._bind(new_state)
                except OSError as err:
                    raise ListenerBindError(name, listener_plan.address, listener_plan.port, err) from None
                fresh[name] = new_state
        except BaseException:
            for new_state in fresh.values():
                await self._close_listener(new_state)
            raise
        for name, listener_plan in wanted.items():
            ctx = runtime.listeners[name]
            state = fresh.get(name)
            if state is not None:
                old_state = self.listeners.get(name)
                if old_state is not None:
                    await self._close_listener(old_state)
                self.listeners[name] = state
            else:
                state = self.listeners[name]
                state.plan = listener_plan
                state.ctx = ctx
            ctx.bind_listener_stats(state.port)
        for name in list(self.listeners):
            if name not in wanted:
                await self._close_listener(self.listeners.pop(name))
        old = self.current
        self.current = runtime
        if old is not None:
            old.retire()
            self._forget_pools(old, runtime)
        if self._maintenance is None:
            self._maintenance = self.loop.call_later(MAINTENANCE_INTERVAL, self._maintain)

    async def _bind(self, state: ListenerState) -> None:
        plan = state.plan
        sock = socket.socket(socket.AF_INET6 if ":" in plan.address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if plan.reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((plan.address, plan.port))
        sock.setblocking(False)
        state.port = sock.getsockname()[1]
        if plan.chains:  # the chain (and its TLS context) is chosen per connection
            state.server = ChainAcceptor(self, state, sock, DownstreamConnection)  # type: ignore[assignment]
            return
        tls = plan.tls
        protocol: Callable[[Worker, ListenerState], asyncio.Protocol] = DownstreamConnection
        if tls is None and LANE is not None:
            protocol = LANE  # plain TCP: the fast lane takes the connection, and hands over what it cannot serve
        state.server = await self.loop.create_server(
            lambda: protocol(self, state), sock=sock, backlog=4096,
            ssl=tls.context if tls is not None else None,
        )

    async def _close_listener(self, state: ListenerState) -> None:
        if state.server is not None:
            state.server.close()
            state.server = None

    def _forget_pools(self, old: PlanRuntime, new: PlanRuntime) -> None:
        kept = {id(cluster) for cluster in new.clusters.values()}
        for key, pool in list(self.pools.items()):
            if key[0] not in kept and id(pool.cluster) not in kept:
                pool.close_idle(None)
                if not pool.busy and not pool.pending:
                    del self.pools[key]

    async def _resolve_all(self, runtime: PlanRuntime, only_new: bool) -> None:
        previous = self.current
        jobs = []
        for cluster in runtime.clusters.values():
            if cluster.plan.discovery == "STATIC":
                continue
            if only_new and previous is not None and previous.clusters.get(cluster.name) is cluster:
                continue
            jobs.append(self._resolve(cluster))
        if jobs:
            await asyncio.gather(*jobs)

    async def _resolve(self, cluster: Cluster) -> None:
        family = {"V4_ONLY": socket.AF_INET, "V6_ONLY": socket.AF_INET6}.get(cluster.plan.dns_family, 0)
        results = []
        for endpoint in cluster.plan.endpoints:
            try:
                infos = await self.loop.getaddrinfo(endpoint.address, endpoint.port, family=family,
                                                    type=socket.SOCK_STREAM)
            except OSError as err:
                log.warning("cluster %s: cannot resolve %s: %s", cluster.name, endpoint.address, err)
                infos = []
            addresses: list[str] = []
            for info in infos:
                address = str(info[4][0])
                if address not in addresses:
                    addresses.append(address)
            if cluster.plan.dns_family == "V4_PREFERRED":
                addresses.sort(key=lambda a: ":" in a)
            results.append((endpoint, addresses))
        cluster.set_resolved(results)
        self._next_dns[id(cluster)] = self.loop.time() + cluster.plan.dns_refresh_rate

    # --- periodic work --------------------------------------------------------------------------

    def _maintain(self) -> None:
        self._maintenance = self.loop.call_later(MAINTENANCE_INTERVAL, self._maintain)
        self.access_log.flush()
        current = self.current
        if current is None:
            return
        now = self.loop.time()
        clock = self.runtime.tick()
        for cluster in current.clusters.values():
            outlier = cluster.plan.outlier
            if outlier is not None:
                due = self._next_outlier.get(id(cluster))
                if due is None:
                    self._next_outlier[id(cluster)] = now + outlier.interval
                elif now >= due:
                    self._next_outlier[id(cluster)] = now + outlier.interval
                    cluster.tick(clock)
            if cluster.plan.discovery != "STATIC" and now >= self._next_dns.get(id(cluster), now):
                self._next_dns[id(cluster)] = now + cluster.plan.dns_refresh_rate
                self.spawn(self._resolve(cluster))
        for pool in list(self.pools.values()):
            idle_timeout = pool.cluster.plan.idle_timeout
            if idle_timeout is not None:
                pool.close_idle(idle_timeout)
        for conn in list(self.connections):
            hcm = conn.ctx.hcm if conn.ctx is not None else None
            if hcm is None:
                continue
            streams = getattr(conn, "streams", None)
            if streams is not None:  # HTTP/2: many streams, one connection
                if not streams:
                    if hcm.idle_timeout is not None and clock - conn.last_activity >= hcm.idle_timeout:
                        conn.ctx.stats.cx_idle_timeout.value += 1
                        conn.close(graceful=True)
                    elif self.draining:
                        conn.close(graceful=True)
                elif hcm.stream_idle_timeout is not None and clock - conn.last_activity >= hcm.stream_idle_timeout:
                    for h2_stream in list(streams.values()):
                        if not h2_stream.done:
                            h2_stream.ctx.stats.rq_idle_timeout.value += 1
                            h2_stream.reset("stream_idle_timeout")
                continue
            stream = conn.stream
            codec = conn.codec
            if hcm.request_headers_timeout is not None and codec is not None and codec.in_head \
                    and clock - conn.head_started >= hcm.request_headers_timeout:
                conn.ctx.stats.rq_timeout.value += 1
                conn.close()
                continue
            if stream is None:
                if hcm.idle_timeout is not None and clock - conn.last_activity >= hcm.idle_timeout:
                    conn.ctx.stats.cx_idle_timeout.value += 1
                    conn.close(graceful=True)
                elif self.draining:
                    conn.close(graceful=True)
                continue
            if hcm.stream_idle_timeout is not None and clock - conn.last_activity >= hcm.stream_idle_timeout \
                    and not stream.done:
                stream.ctx.stats.rq_idle_timeout.value += 1
                if stream.response_started:
                    stream.reset("stream_idle_timeout")
                else:
                    conn.close_after = True
                    stream.send_local_reply(408, b"stream timeout", details="stream_idle_timeout")
            elif hcm.request_timeout is not None and not stream.dec.complete and not stream.done \
                    and clock - stream.info.start_monotonic >= hcm.request_timeout:
                stream.ctx.stats.rq_timeout.value += 1
                conn.close_after = True
                stream.send_local_reply(408, b"request timeout", details="request_overall_timeout")
        self.drain()

    # --- shutdown -------------------------------------------------------------------------------

    def bound_ports(self) -> dict[str, int]:
        return {name: state.port for name, state in self.listeners.items()}

    async def stop(self, drain_time: float = 0.0) -> None:
        """Stop accepting, let in-flight streams finish for up to ``drain_time``, then close everything."""
        self.draining = True
        for state in self.listeners.values():
            if state.server is not None:
                state.server.close()
        deadline = self.loop.time() + drain_time
        while drain_time > 0 and any(conn.stream is not None for conn in self.connections) \
                and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for pool in self.pools.values():
            pool.close_all()
        if self._maintenance is not None:
            self._maintenance.cancel()
            self._maintenance = None
        self.wheel.close()
        self.access_log.close()
        for task in list(self._tasks):
            task.cancel()
        if self.current is not None:
            self.current.retire()
