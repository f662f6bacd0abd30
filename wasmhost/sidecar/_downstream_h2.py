"""HTTP/2 client connections (h2c: prior knowledge, or ``codec_type: HTTP2``): many streams per connection.

Each HTTP/2 stream becomes an ``HttpStream`` bound to the listener's current
context; the core's response commands are turned into frames by ``Http2Codec``
and written once per drain.

Back-pressure is per stream: a response body the client's window holds back
beyond ``per_connection_buffer_limit_bytes`` pauses that stream's upstream only,
and an upstream that stops taking a request body holds that stream's window
(``pause_stream_reading``), never the whole connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import h2.errors

from ._h2 import Http2Codec, SendBacklog
from ._headers import HeaderMap
from ._stream import HttpStream

if TYPE_CHECKING:
    from ._worker import ListenerState, Worker

_log = logging.getLogger("wasmesh.http")


class Http2DownstreamConnection(asyncio.Protocol):
    def __init__(self, worker: Worker, listener: ListenerState, transport: asyncio.Transport, ctx: Any,
                 connection_id: int, remote: tuple[str, int], local: tuple[str, int],
                 tls: dict[str, Any] | None = None) -> None:
        self.tls = tls
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = transport
        self.ctx = ctx
        self.connection_id = connection_id
        self.remote = remote
        self.local = local
        self.streams: dict[int, HttpStream] = {}
        self.closed = False
        self.close_after = False
        self.last_activity = worker.runtime.now
        self.head_started = 0.0
        self.codec: Any = None  # the HTTP/1 attributes the worker's maintenance looks at
        self.stream: HttpStream | None = None
        self._dirty = False
        hcm = ctx.hcm
        self.h2 = Http2Codec(self, client_side=False, max_concurrent_streams=hcm.h2_max_concurrent_streams,
                             initial_stream_window=hcm.h2_initial_stream_window,
                             initial_connection_window=hcm.h2_initial_connection_window,
                             enable_connect=hcm.h2_allow_connect)
        self._tunnels: set[int] = set()  # extended CONNECT streams, tunnelled as HTTP/1.1 upgrades
        # response bodies over per_connection_buffer_limit_bytes pause that stream's upstream
        self._backlog = SendBacklog(self.h2, ctx.listener.buffer_limit, worker.downstream_write_paused)
        ctx.stats.cx_http2_total.value += 1
        self._mark_dirty()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.worker.runtime.tick()
        try:
            self.h2.feed(data)
            if self._backlog.blocked:
                self._backlog.windows_opened(self.streams)
        except Exception:  # request handling failed: end this connection, keep the worker
            _log.exception("http2 request handling failed")
            for stream in list(self.streams.values()):
                if not stream.done:
                    stream.reset("internal_error")
            self.close()
        self._mark_dirty()
        self.worker.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        worker = self.worker
        worker.connections.discard(self)
        self.ctx.connection_closed()
        if self.streams:
            worker.runtime.tick()
            for stream in list(self.streams.values()):
                if not stream.done:
                    stream.on_downstream_reset()
            self.streams.clear()
            worker.drain()

    def pause_writing(self) -> None:
        self._backlog.socket(True, self.streams)

    def resume_writing(self) -> None:
        self._backlog.socket(False, self.streams)

    # --- per-stream flow control ----------------------------------------------------------------

    def pause_stream_reading(self, stream: HttpStream, paused: bool) -> None:
        """The upstream of ``stream`` takes no more request body for now: hold (or return) its window."""
        if stream.downstream_id is not None and not self.closed:
            self.h2.pause_reading(stream.downstream_id, paused)
            self._mark_dirty()

    # --- codec sink -----------------------------------------------------------------------------

    def on_headers(self, stream_id: int, headers: HeaderMap, end_stream: bool) -> None:
        ctx = self.listener.ctx
        protocol = headers.get(b":protocol") if headers.get(b":method") == b"CONNECT" else None
        if protocol is not None and not ctx.hcm.h2_allow_connect:
            # extended CONNECT the client was not offered (no SETTINGS_ENABLE_CONNECT_PROTOCOL)
            self.h2.reset_stream(stream_id, code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self._mark_dirty()
            return
        stream = HttpStream(ctx, self.connection_id, self.remote, self.local, "HTTP/2")
        stream.downstream = self
        stream.downstream_id = stream_id
        if self.tls is not None:
            stream.info.downstream_tls = self.tls
        self.streams[stream_id] = stream
        self.stream = stream
        ctx.stats.rq_http2_total.value += 1
        if protocol is not None:
            self._extended_connect(stream, stream_id, headers, protocol, end_stream)
            return
        stream.on_request_headers(headers, end_stream)

    def _extended_connect(self, stream: HttpStream, stream_id: int, headers: HeaderMap, protocol: bytes,
                          end_stream: bool) -> None:
        """RFC 8441 (``allow_connect``): the request goes on as an HTTP/1.1 ``Upgrade`` GET, as in Envoy;
        without a matching ``upgrade_configs`` entry it is refused with 403 like an HTTP/1.1 upgrade."""
        headers.set(b":method", b"GET")
        headers.remove(b":protocol")
        if protocol.lower() not in self.listener.ctx.hcm.upgrade_types:
            stream.dec.headers = headers
            stream.dec.complete = True
            stream.send_local_reply(403, details="upgrade_failed")
            return
        stream.upgrade = [(b"connection", b"upgrade"), (b"upgrade", protocol)]
        self._tunnels.add(stream_id)
        stream.on_request_headers(headers, end_stream)

    def on_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.on_request_data(data, end_stream)

    def on_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.on_request_trailers(trailers)

    def on_reset(self, stream_id: int, reason: str) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and not stream.done:
            stream.on_downstream_reset("http2.remote_reset")

    def on_connection_error(self, reason: str) -> None:
        self.ctx.stats.cx_protocol_error.value += 1
        self._mark_dirty()
        self.flush()
        self.close()

    # --- commands from the core -----------------------------------------------------------------

    def send_headers(self, stream: HttpStream, headers: HeaderMap, end_stream: bool) -> None:
        if self.closed or stream.downstream_id is None:
            return
        if stream.downstream_id in self._tunnels and headers.get(b":status") == b"101":
            headers.set(b":status", b"200")  # the upstream switched protocols: the tunnel is open
        self.h2.send_headers(stream.downstream_id, headers, end_stream)
        self._mark_dirty()

    def send_data(self, stream: HttpStream, data: bytes, end_stream: bool) -> None:
        if self.closed or stream.downstream_id is None:
            return
        self.last_activity = self.worker.runtime.now
        self.h2.send_data(stream.downstream_id, data, end_stream)
        self._backlog.sent(stream.downstream_id, stream)
        self._mark_dirty()

    def send_trailers(self, stream: HttpStream, trailers: HeaderMap) -> None:
        if self.closed or stream.downstream_id is None:
            return
        self.h2.send_trailers(stream.downstream_id, trailers)
        self._mark_dirty()

    def reset(self, stream: HttpStream) -> None:
        if stream.downstream_id is not None:
            self.streams.pop(stream.downstream_id, None)
            self._backlog.forget(stream.downstream_id, stream)
            self._tunnels.discard(stream.downstream_id)
            if not self.closed:
                self.h2.reset_stream(stream.downstream_id)
                self._mark_dirty()

    def stream_ended(self, stream: HttpStream) -> None:
        if stream.downstream_id is not None:
            self.streams.pop(stream.downstream_id, None)
            self._backlog.forget(stream.downstream_id, stream)
            self._tunnels.discard(stream.downstream_id)
        if self.stream is stream:
            self.stream = None
        self.last_activity = self.worker.runtime.now
        if stream.response_complete and not stream.dec.complete and not self.closed:
            # the response ended first: tell the client to stop sending this stream's body
            self.h2.reset_stream(stream.downstream_id, cancel=True)  # type: ignore[arg-type]
            self._mark_dirty()

    # --- writing --------------------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.worker.pending_writes.append(self)

    def flush(self) -> None:
        self._dirty = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self, graceful: bool = False) -> None:
        if self.closed:
            return
        if graceful:
            self.h2.goaway()
            self.flush()
        self.closed = True
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()
