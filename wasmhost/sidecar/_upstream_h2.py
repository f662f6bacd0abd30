"""HTTP/2 (h2c) upstream connections: many requests multiplexed on one connection per host.

The pool keeps ready connections and starts each request as a new stream on one
with a free stream slot (the peer's ``MAX_CONCURRENT_STREAMS``); it opens another
connection only when all are full, within the cluster's ``max_connections``.
Requests wait in the pending queue (``max_pending_requests``) otherwise.

Back-pressure is per stream: a request body the upstream's window holds back
beyond the cluster's ``per_connection_buffer_limit_bytes`` pauses that stream's
client only, and a client that reads slowly holds that stream's window
(``sink_pause``); a full socket pauses every stream of the connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from ._cluster import Cluster, Host
from ._h2 import Http2Codec, SendBacklog
from ._headers import HeaderMap
from ._sockets import set_no_delay
from ._upstream import PoolBase, _Waiting
from ._upstream_sink import CONNECTION_TERMINATION

if TYPE_CHECKING:
    from ._worker import Worker


class Http2UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: Http2HostPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        plan = pool.cluster.plan
        self.codec = Http2Codec(self, client_side=True, max_concurrent_streams=plan.h2_max_concurrent_streams,
                                initial_stream_window=plan.h2_initial_stream_window,
                                initial_connection_window=plan.h2_initial_connection_window,
                                on_settings=pool.capacity_changed)
        self.streams: dict[int, Any] = {}
        self.ids: dict[int, int] = {}  # id(sink) -> stream id
        self.closed = False
        self.usable = True
        self.local_address: tuple[str, int] | None = None
        self._dirty = False
        # request bodies over the cluster's per_connection_buffer_limit_bytes pause that stream's client
        self._backlog = SendBacklog(self.codec, plan.buffer_limit, pool.worker.upstream_write_paused)

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_no_delay(transport)
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.local_address = (sockname[0], sockname[1])
        self.transport.set_write_buffer_limits(high=self._backlog.limit)
        self._mark_dirty()

    def data_received(self, data: bytes) -> None:
        self.pool.worker.runtime.tick()
        self.codec.feed(data)
        if self._backlog.blocked:
            self._backlog.windows_opened(self.streams)
        self._mark_dirty()
        self.pool.worker.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.usable = False
        self.pool.connection_closed(self)
        if self.streams:
            self.pool.worker.runtime.tick()
            streams, self.streams = self.streams, {}
            self.ids.clear()
            for stream_id, sink in streams.items():
                self._backlog.forget(stream_id, sink)
                sink.edge = None
                sink.on_reset(CONNECTION_TERMINATION)
            self.pool.worker.drain()

    def pause_writing(self) -> None:
        self._backlog.socket(True, self.streams)

    def resume_writing(self) -> None:
        self._backlog.socket(False, self.streams)

    # --- requests -------------------------------------------------------------------------------

    @property
    def has_capacity(self) -> bool:
        return self.usable and not self.closed and len(self.streams) < self.codec.remote_max_concurrent_streams

    def start(self, sink: Any, waiting: _Waiting | None) -> None:
        stream_id = self.codec.next_stream_id()
        self.streams[stream_id] = sink
        self.ids[id(sink)] = stream_id
        sink.edge = self
        self.codec.send_headers(stream_id, sink.headers, sink.end_stream)
        if waiting is not None:
            for kind, payload, end_stream in waiting.ops:
                if kind == "data":
                    self.codec.send_data(stream_id, payload, end_stream)
                else:
                    self.codec.send_trailers(stream_id, payload)
            self._backlog.sent(stream_id, sink)
        self._mark_dirty()
        sink.on_pool_ready(self.local_address)

    def _finish(self, stream_id: int) -> Any:
        sink = self.streams.pop(stream_id, None)
        if sink is not None:
            self._backlog.forget(stream_id, sink)
            self.ids.pop(id(sink), None)
            sink.edge = None
            self.pool.capacity_changed()
        return sink

    # --- the edge interface of a sink -----------------------------------------------------------

    def sink_data(self, sink: Any, data: bytes, end_stream: bool) -> None:
        stream_id = self.ids.get(id(sink))
        if stream_id is not None and not self.closed:
            self.codec.send_data(stream_id, data, end_stream)
            self._backlog.sent(stream_id, sink)
            self._mark_dirty()

    def sink_trailers(self, sink: Any, trailers: HeaderMap) -> None:
        stream_id = self.ids.get(id(sink))
        if stream_id is not None and not self.closed:
            self.codec.send_trailers(stream_id, trailers)
            self._mark_dirty()

    def sink_reset(self, sink: Any) -> None:
        stream_id = self.ids.get(id(sink))
        if stream_id is not None:
            self._finish(stream_id)
            if not self.closed:
                self.codec.reset_stream(stream_id)
                self._mark_dirty()

    def sink_pause(self, sink: Any, paused: bool) -> None:
        """The client of ``sink`` reads slowly: hold (or return) this stream's window, not the connection."""
        stream_id = self.ids.get(id(sink))
        if stream_id is not None and not self.closed:
            self.codec.pause_reading(stream_id, paused)
            self._mark_dirty()

    # --- codec events ---------------------------------------------------------------------------

    def on_headers(self, stream_id: int, headers: HeaderMap, end_stream: bool) -> None:
        sink = self.streams.get(stream_id)
        if sink is None:
            return
        if end_stream:
            self._finish(stream_id)
        sink.on_response_headers(headers, end_stream)

    def on_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        sink = self.streams.get(stream_id)
        if sink is None:
            return
        if end_stream:
            self._finish(stream_id)
        sink.on_response_data(data, end_stream)

    def on_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        sink = self._finish(stream_id)
        if sink is not None:
            sink.on_response_trailers(trailers)

    def on_reset(self, stream_id: int, reason: str) -> None:
        sink = self._finish(stream_id)
        if sink is not None:
            sink.on_reset(CONNECTION_TERMINATION)

    def on_connection_error(self, reason: str) -> None:
        self.usable = False  # GOAWAY or protocol error: no new streams here
        if not self.streams:
            self.close()

    # --- writing --------------------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.pool.worker.pending_writes.append(self)

    def flush(self) -> None:
        self._dirty = False
        data = self.codec.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.usable = False
        self.pool.connection_closed(self)
        if self.transport is not None:
            self.transport.abort()


class Http2HostPool(PoolBase):
    """HTTP/2 connections to one host of one cluster."""

    def __init__(self, worker: Worker, cluster: Cluster, host: Host) -> None:
        super().__init__(worker, cluster, host)
        self.ready: list[Http2UpstreamConnection] = []

    @property
    def busy(self) -> list[Http2UpstreamConnection]:
        return [conn for conn in self.ready if conn.streams]

    def request(self, sink: Any) -> None:
        for conn in self.ready:
            if conn.has_capacity:
                conn.start(sink, None)
                return
        self._enqueue(sink)

    def _wants_connection(self) -> bool:
        return self.connecting == 0  # one connection multiplexes every waiting request

    async def _open(self) -> None:
        conn = await self._dial(lambda: Http2UpstreamConnection(self))
        if isinstance(conn, tuple):
            reason, detail = conn
            while self.pending and self.connecting == 0:
                sink, _ = self.pending.popleft()
                self._pending_done()
                sink.edge = None
                sink.on_pool_failure(reason, detail)
            self.worker.drain()
            return
        self.ready.append(cast(Http2UpstreamConnection, conn))
        self.capacity_changed()
        self.worker.drain()

    def capacity_changed(self) -> None:
        """A stream slot freed up or the peer's settings changed: start waiting requests."""
        while self.pending:
            conn = next((c for c in self.ready if c.has_capacity), None)
            if conn is None:
                cluster = self.cluster
                if self.connecting == 0 and cluster.cx_active + cluster.cx_connecting < \
                        cluster.thresholds.max_connections and all(not c.usable or c.streams for c in self.ready):
                    self._connect()
                return
            sink, waiting = self.pending.popleft()
            self._pending_done()
            conn.start(sink, waiting)

    def connection_closed(self, conn: Http2UpstreamConnection) -> None:
        if conn in self.ready:
            self.ready.remove(conn)
            self.cluster.cx_active -= 1
            self.host.cx_active -= 1
            self.cluster.stats.cx_active.value -= 1
            self.cluster.stats.cx_destroy.value += 1

    def close_idle(self, older_than: float | None) -> None:
        for conn in list(self.ready):
            if not conn.streams and older_than is None:
                conn.close()

    def close_all(self) -> None:
        for conn in list(self.ready):
            conn.close()
