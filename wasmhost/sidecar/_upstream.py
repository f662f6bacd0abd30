"""Upstream HTTP/1.1 connections and per-host keep-alive pools (the I/O edge).

A pool hands one request at a time to an idle connection, opens new connections
within the cluster's ``max_connections``, queues within ``max_pending_requests``
and reports overflow or connect failures to the request's sink. Responses are
parsed by the sans-io client codec and delivered to the sink; the worker drains
the core's commands after each delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ._cluster import Cluster, Host
from ._h1 import Http1ClientCodec
from ._headers import HeaderMap
from ._sockets import set_no_delay
from ._tls import check_peer, tls_for_host
from ._upstream_sink import (
    CONNECTION_FAILURE,
    CONNECTION_TERMINATION,
    CONNECTION_TIMEOUT,
    OVERFLOW,
    PROTOCOL_ERROR,
)

if TYPE_CHECKING:
    from ._worker import Worker

_log = logging.getLogger("wasmesh.upstream")


class _Waiting:
    """Writes for a sink that has no connection yet (the sink's ``edge`` while it is queued)."""

    __slots__ = ("ops", "pool")

    def __init__(self, pool: Any) -> None:
        self.ops: list[tuple[str, Any, bool]] = []
        self.pool = pool

    def sink_data(self, sink: Any, data: bytes, end_stream: bool) -> None:
        self.ops.append(("data", data, end_stream))

    def sink_trailers(self, sink: Any, trailers: HeaderMap) -> None:
        self.ops.append(("trailers", trailers, True))

    def sink_reset(self, sink: Any) -> None:
        self.pool.cancel(sink)

    def sink_pause(self, sink: Any, paused: bool) -> None:
        pass


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "codec", "sink", "request_done", "requests", "last_used", "closed",
                 "local_address", "_wbuf", "lane")

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.codec = Http1ClientCodec(None, self._on_protocol_error, self.response_finished)
        self.codec.trailers = pool.cluster.plan.http1_trailers
        self.sink: Any = None
        self.request_done = False
        self.requests = 0
        self.last_used = 0.0
        self.closed = False
        self.local_address: tuple[str, int] | None = None
        self._wbuf: list[bytes] = []
        self.lane: Any = None  # a fast-lane exchange (``_lane.pyx``): it parses the response bytes itself

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_no_delay(transport)
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.local_address = (sockname[0], sockname[1])
        self.transport.set_write_buffer_limits(high=self.pool.cluster.plan.buffer_limit)

    def data_received(self, data: bytes) -> None:
        lane = self.lane
        if lane is not None:
            lane.upstream_data(data)
            return
        if self.sink is None:
            # bytes on an idle keep-alive connection: the upstream is misbehaving
            self.close()
            return
        self.pool.worker.runtime.tick()
        try:
            self.codec.feed(data)
        except Exception:  # a failure while handling the response: drop this exchange, keep the worker
            _log.exception("upstream response handling failed")
            sink = self.sink
            self.abort()
            if sink is not None:
                try:
                    sink.on_reset(PROTOCOL_ERROR)
                except Exception:
                    _log.exception("upstream reset handling failed")
        self.pool.worker.drain()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.sink is None:
            return
        self.closed = True
        self.pool.connection_closed(self)
        lane = self.lane
        if lane is not None:
            self.lane = self.sink = None
            lane.upstream_closed()
            return
        sink = self.sink
        if sink is not None:
            self.pool.worker.runtime.tick()
            if not self.codec.eof():  # a close-delimited response ends here; anything else was cut short
                self.sink = None
                self.codec.sink = None
                sink.on_reset(CONNECTION_TERMINATION)
            self.pool.worker.drain()

    def pause_writing(self) -> None:
        self.pool.worker.upstream_write_paused(self.sink, True)

    def resume_writing(self) -> None:
        self.pool.worker.upstream_write_paused(self.sink, False)

    # --- request/response -----------------------------------------------------------------------

    def bind(self, sink: Any, waiting: _Waiting | None) -> None:
        """Start ``sink``'s request on this connection."""
        self.sink = sink
        sink.edge = self
        self.requests += 1
        raw = getattr(sink, "raw_request", None)
        if raw is not None:  # a fast-lane request: its head is already bytes, and it has no body
            self.lane = sink
            self.request_done = True
            if self.transport is not None:
                self.transport.write(raw)
            return
        self.codec.sink = sink
        self.request_done = sink.end_stream
        self._write(self.codec.encode_request(sink.headers, sink.end_stream))
        if waiting is not None:
            for kind, payload, end_stream in waiting.ops:
                if kind == "data":
                    self._write(self.codec.encode_data(payload, end_stream))
                    self.request_done = end_stream
                else:
                    self._write(self.codec.encode_trailers(payload))
                    self.request_done = True
        sink.on_pool_ready(self.local_address)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        wbuf = self._wbuf
        if not wbuf:
            self.pool.worker.pending_writes.append(self)
        wbuf.append(data)

    def flush(self) -> None:
        wbuf = self._wbuf
        if not wbuf:
            return
        data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
        wbuf.clear()
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    # the edge interface every sink's ``edge`` offers (HTTP/1: one sink per connection)
    def sink_data(self, sink: Any, data: bytes, end_stream: bool) -> None:
        self.send_data(data, end_stream)

    def sink_trailers(self, sink: Any, trailers: HeaderMap) -> None:
        self.send_trailers(trailers)

    def sink_reset(self, sink: Any) -> None:
        self.abort()

    def sink_pause(self, sink: Any, paused: bool) -> None:
        if self.transport is not None and not self.closed:
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def send_data(self, data: bytes, end_stream: bool) -> None:
        if self.transport is not None and not self.closed:
            self._write(self.codec.encode_data(data, end_stream))
        if end_stream:
            self.request_done = True
            if self.codec.response_ended and self.sink is None:
                self.pool.release(self)

    def send_trailers(self, trailers: HeaderMap) -> None:
        if self.transport is not None and not self.closed:
            self._write(self.codec.encode_trailers(trailers))
        self.request_done = True

    def response_finished(self) -> None:
        """The response ended: reuse the connection when both sides are complete."""
        self.codec.sink = None
        self.exchange_finished(self.codec.keep_alive and self.request_done)

    def exchange_finished(self, reusable: bool) -> None:
        """The bound exchange is over (a fast-lane exchange says so itself): reuse the connection, or close it."""
        sink = self.sink
        self.sink = self.lane = None
        if sink is not None:
            sink.edge = None
        if not reusable:
            self.close()
            return
        self.pool.release(self)

    def _on_protocol_error(self, reason: str) -> None:
        sink = self.sink
        self.sink = None
        self.close()
        if sink is not None:
            sink.edge = None
            sink.on_reset(PROTOCOL_ERROR)

    def abort(self) -> None:
        """Abandon the bound request (its sink hears nothing more); HTTP/1 cannot cancel, so close."""
        sink = self.sink
        if sink is not None:
            sink.edge = None
        self.sink = self.lane = None
        self.codec.sink = None
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wbuf.clear()
        transport = self.transport
        self.pool.connection_closed(self)
        if transport is not None:
            transport.abort()


class PoolBase:
    """What the HTTP/1.1 and HTTP/2 pools share: the pending queue with its circuit-breaker
    accounting, and dialling one connection with Envoy's failure reasons."""

    def __init__(self, worker: Worker, cluster: Cluster, host: Host) -> None:
        self.worker = worker
        self.cluster = cluster
        self.host = host
        self.pending: deque[tuple[Any, _Waiting]] = deque()
        self.connecting = 0

    def _wants_connection(self) -> bool:
        """Whether a newly queued request should start a connection attempt."""
        raise NotImplementedError

    def _enqueue(self, sink: Any) -> None:
        """No connection can take ``sink`` now: queue it (or refuse it past max_pending_requests)."""
        cluster = self.cluster
        if cluster.rq_pending >= cluster.thresholds.max_pending_requests:
            cluster.stats.rq_pending_overflow.value += 1
            sink.on_pool_failure(OVERFLOW, "")
            return
        waiting = _Waiting(self)
        sink.edge = waiting
        self.pending.append((sink, waiting))
        cluster.rq_pending += 1
        cluster.stats.rq_pending_total.value += 1
        cluster.stats.rq_pending_active.value += 1
        if self._wants_connection():
            if cluster.cx_active + cluster.cx_connecting < cluster.thresholds.max_connections:
                self._connect()
            else:
                cluster.stats.cx_overflow.value += 1

    def cancel(self, sink: Any) -> None:
        for index, (queued, _) in enumerate(self.pending):
            if queued is sink:
                del self.pending[index]
                self._pending_done()
                return

    def _pending_done(self) -> None:
        self.cluster.rq_pending -= 1
        self.cluster.stats.rq_pending_active.value -= 1

    def _connect(self) -> None:
        self.connecting += 1
        self.cluster.cx_connecting += 1
        self.worker.spawn(self._open())

    async def _open(self) -> None:
        raise NotImplementedError

    async def _dial(self, protocol: Callable[[], asyncio.Protocol]) -> asyncio.BaseProtocol | tuple[str, str]:
        """Open one connection to the host: the protocol object, or (reason, transport failure)."""
        loop = asyncio.get_running_loop()
        cluster = self.cluster
        host = self.host
        failure: tuple[str, str] | None = None
        try:
            tls = tls_for_host(cluster.plan, host.metadata)
            _, conn = await asyncio.wait_for(
                loop.create_connection(protocol, host.address, host.port,
                                       ssl=tls.context if tls is not None else None,
                                       server_hostname=(tls.sni or None) if tls is not None else None),
                timeout=cluster.plan.connect_timeout,
            )
            check_peer(conn, tls)
        except TimeoutError:
            failure = (CONNECTION_TIMEOUT, "")
        except OSError as err:
            failure = (CONNECTION_FAILURE, "" if err.errno == 111 else (err.strerror or str(err)))
        self.worker.runtime.tick()
        self.connecting -= 1
        cluster.cx_connecting -= 1
        if failure is not None:
            cluster.stats.cx_connect_fail.value += 1
            return failure
        cluster.cx_active += 1
        host.cx_active += 1
        cluster.stats.cx_total.value += 1
        cluster.stats.cx_active.value += 1
        return conn


class HostPool(PoolBase):
    """Keep-alive HTTP/1.1 connections to one upstream host of one cluster."""

    def __init__(self, worker: Worker, cluster: Cluster, host: Host) -> None:
        super().__init__(worker, cluster, host)
        self.idle: list[UpstreamConnection] = []
        self.busy: set[UpstreamConnection] = set()

    def request(self, sink: Any) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            self.busy.add(conn)
            conn.bind(sink, None)
            return
        self._enqueue(sink)

    def _wants_connection(self) -> bool:
        return self.connecting < len(self.pending)

    async def _open(self) -> None:
        conn = await self._dial(lambda: UpstreamConnection(self))
        if isinstance(conn, tuple):
            self._connect_failed(*conn)
            return
        assert isinstance(conn, UpstreamConnection)
        conn.last_used = asyncio.get_running_loop().time()
        self.release(conn)
        self.worker.drain()

    def _connect_failed(self, reason: str, transport_failure: str) -> None:
        # Fail the requests no remaining connection attempt can serve.
        while len(self.pending) > self.connecting + len(self.busy):
            sink, _ = self.pending.popleft()
            self._pending_done()
            sink.edge = None
            sink.on_pool_failure(reason, transport_failure)
        self.worker.drain()

    def release(self, conn: UpstreamConnection) -> None:
        """A connection is free: serve the next waiting request or park it."""
        self.busy.discard(conn)
        if conn.closed:
            return
        max_requests = self.cluster.plan.max_requests_per_connection
        if max_requests and conn.requests >= max_requests:
            conn.close()
            if self.pending and self.connecting < len(self.pending):
                self._connect()
            return
        conn.last_used = self.worker.loop.time()
        if self.pending:
            sink, waiting = self.pending.popleft()
            self._pending_done()
            self.busy.add(conn)
            conn.bind(sink, waiting)
            return
        self.idle.append(conn)

    def connection_closed(self, conn: UpstreamConnection) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        if conn.transport is not None:
            self.cluster.cx_active -= 1
            self.host.cx_active -= 1
            self.cluster.stats.cx_active.value -= 1
            self.cluster.stats.cx_destroy.value += 1
            conn.transport = None

    def close_idle(self, older_than: float | None) -> None:
        now = self.worker.loop.time()
        for conn in list(self.idle):
            if older_than is None or now - conn.last_used >= older_than:
                conn.close()

    def close_all(self) -> None:
        for conn in list(self.idle) + list(self.busy):
            conn.close()
