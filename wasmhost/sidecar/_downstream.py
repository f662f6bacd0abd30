"""Client connections (the I/O edge): bytes in through the HTTP/1 codec, streams out.

Each connection feeds its bytes to ``Http1ServerCodec``; parsed requests become
``HttpStream`` objects bound to the listener's *current* context, so a reload
affects only streams that start after it. Response commands from the core are
serialised by the codec and written here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from ._h1 import Http1ServerCodec, status_line
from ._h2 import PREFACE
from ._headers import HeaderMap
from ._sockets import close_transport, set_no_delay
from ._stream import HttpStream
from ._tls import peer_tls_info

if TYPE_CHECKING:
    from ._worker import ListenerState, Worker


class DownstreamConnection(asyncio.Protocol):
    def __init__(self, worker: Worker, listener: ListenerState) -> None:
        self.tls: dict[str, Any] | None = None
        self._sniff: bytes | None = None
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.codec: Http1ServerCodec | None = None
        self.stream: HttpStream | None = None
        self.connection_id = 0
        self.remote: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.close_after = False
        self.closed = False
        self.last_activity = 0.0
        self.requests = 0
        self.ctx: Any = None
        self._wbuf: list[bytes] = []
        self.paused = False
        self.head_started = 0.0

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        worker = self.worker
        ctx = self.listener.ctx
        self.ctx = ctx
        self._make_codec(ctx)
        self.connection_id = worker.runtime.new_connection_id()
        self._addresses(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = None
        if ssl_object is not None:
            tls_plan = self.listener.plan.tls
            if tls_plan is not None and not tls_plan.peer_allowed(ssl_object):
                ctx.stats.cx_protocol_error.value += 1
                self.closed = True
                self.transport.abort()
                return
            self.tls = peer_tls_info(ssl_object)
            alpn = ssl_object.selected_alpn_protocol()
        set_no_delay(transport)
        # per_connection_buffer_limit_bytes: above it, writing pauses the upstream feeding this client
        self.transport.set_write_buffer_limits(high=ctx.listener.buffer_limit)
        self.last_activity = worker.runtime.tick()
        ctx.connection_opened()
        worker.connections.add(self)
        codec = ctx.hcm.codec
        self._sniff = b"" if codec == "AUTO" else None
        if codec == "HTTP2" or (alpn == "h2" and codec == "AUTO"):
            self._switch_to_http2(b"")
        elif codec == "HTTP1":
            ctx.stats.cx_http1_total.value += 1

    def _make_codec(self, ctx: Any) -> None:
        hcm = ctx.hcm
        self.codec = Http1ServerCodec(self, hcm.max_request_headers_kb * 1024, hcm.max_headers_count,
                                      hcm.headers_with_underscores)
        self.codec.trailers = hcm.http1_trailers

    def _addresses(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        sock_name = transport.get_extra_info("sockname")
        self.remote = (peer[0], peer[1]) if peer else ("", 0)
        self.local = (sock_name[0], sock_name[1]) if sock_name else ("", 0)

    @classmethod
    def adopt(cls, worker: Worker, listener: ListenerState, transport: asyncio.BaseTransport, ctx: Any,
              connection_id: int, last_activity: float, sniffed: bool) -> DownstreamConnection:
        """Take over a plain-TCP connection the fast lane (``_lane.pyx``) accepted and counted.

        The caller switches the transport's protocol to the result and feeds it the bytes not
        yet served; a connection that was still to be sniffed is sniffed here.
        """
        conn = cls(worker, listener)
        conn.transport = cast(asyncio.Transport, transport)
        conn.ctx = ctx
        conn._make_codec(ctx)
        conn.connection_id = connection_id
        conn._addresses(transport)
        conn.last_activity = last_activity
        conn._sniff = None if sniffed else b""
        worker.connections.add(conn)
        if ctx.hcm.codec == "HTTP2":
            conn._switch_to_http2(b"")
        return conn

    def answer(self, headers: HeaderMap, status: int, body: bytes, details: str,
               extra: list[tuple[bytes, bytes]] | None, close_after: bool) -> None:
        """A local reply to a request the fast lane read (its failures are answered here, as ours are)."""
        stream = self._reply_stream()
        self.requests += 1
        self.listener.ctx.stats.rq_http1_total.value += 1
        self.close_after = self.close_after or close_after
        assert self.codec is not None
        self.codec.awaiting_response = True
        self.codec.keep_alive = not close_after
        stream.dec.headers = headers
        stream.send_local_reply(status, body, extra or (), details=details)
        self.worker.drain()

    def _reply_stream(self) -> HttpStream:
        """A stream for a local reply to a request no stream was made for (its head is already read)."""
        stream = HttpStream(self.listener.ctx, self.connection_id, self.remote, self.local)
        stream.downstream = self
        self.stream = stream
        stream.dec.complete = True
        return stream

    def _switch_to_http2(self, data: bytes) -> None:
        """Hand the connection to the HTTP/2 protocol object (prior-knowledge h2c)."""
        from ._downstream_h2 import Http2DownstreamConnection

        assert self.transport is not None
        h2conn = Http2DownstreamConnection(self.worker, self.listener, self.transport, self.ctx,
                                           self.connection_id, self.remote, self.local, self.tls)
        self.worker.connections.discard(self)
        self.worker.connections.add(h2conn)  # type: ignore[arg-type]
        self.closed = True  # this object is done; the transport now talks to h2conn
        self.transport.set_protocol(h2conn)
        if data:
            h2conn.data_received(data)
        else:
            self.worker.drain()

    def data_received(self, data: bytes) -> None:
        if self._sniff is not None:
            seen = self._sniff + data
            if PREFACE.startswith(seen[: len(PREFACE)]):
                if len(seen) < len(PREFACE):
                    self._sniff = seen
                    return
                self._sniff = None
                self._switch_to_http2(seen)
                return
            self._sniff = None
            self.ctx.stats.cx_http1_total.value += 1
            data = seen
        now = self.last_activity = self.worker.runtime.tick()
        codec = self.codec
        assert codec is not None
        was_in_head = codec.in_head
        codec.feed(data)
        if codec.in_head and not was_in_head:
            self.head_started = now
        if codec.has_pending and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # pipelined requests wait for the current response
        self.worker.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        worker = self.worker
        worker.connections.discard(self)
        ctx = self.ctx
        if ctx is not None:
            ctx.connection_closed()
        stream = self.stream
        if stream is not None and not stream.done:
            worker.runtime.tick()
            stream.on_downstream_reset()
            worker.drain()
        self.stream = None

    def pause_writing(self) -> None:
        self.worker.downstream_write_paused(self.stream, True)

    def resume_writing(self) -> None:
        self.worker.downstream_write_paused(self.stream, False)

    # --- codec sink -----------------------------------------------------------------------------

    def on_request_headers(self, headers: HeaderMap, end_stream: bool, protocol: str, upgrade: bool) -> None:
        ctx = self.listener.ctx
        stream = HttpStream(ctx, self.connection_id, self.remote, self.local, protocol)
        stream.downstream = self
        if self.tls is not None:
            stream.info.downstream_tls = self.tls
        self.stream = stream
        self.requests += 1
        ctx.stats.rq_http1_total.value += 1
        if upgrade:
            kind = headers.get(b"upgrade")
            if kind is not None and kind.lower() in ctx.hcm.upgrade_types:
                # upgrade_configs allows it: proxied, and after a 101 the connection is a byte tunnel
                stream.upgrade = [(b"connection", headers.get(b"connection") or b"upgrade"), (b"upgrade", kind)]
                self.codec.tunnel = kind  # type: ignore[union-attr]
                self.close_after = True
                stream.on_request_headers(headers, False)
                return
            stream.dec.headers = headers
            stream.dec.complete = True
            self.close_after = True
            stream.send_local_reply(403, details="upgrade_failed")
            return
        stream.on_request_headers(headers, end_stream)

    def on_request_data(self, data: bytes, end_stream: bool) -> None:
        stream = self.stream
        if stream is not None:
            stream.on_request_data(data, end_stream)

    def on_request_trailers(self, trailers: HeaderMap) -> None:
        stream = self.stream
        if stream is not None:
            stream.on_request_trailers(trailers)

    def on_codec_error(self, status: int, details: str) -> None:
        self.ctx.stats.cx_protocol_error.value += 1
        self.close_after = True
        stream = self.stream
        if stream is not None and not stream.done:
            if stream.response_started:
                stream.on_downstream_reset(details)
                self.close()
                return
            stream.send_local_reply(status, _codec_error_body(status), details=details)
            return
        # no stream to answer on (the request line itself was bad): answer directly
        stream = self._reply_stream()
        stream.send_local_reply(status, _codec_error_body(status), details=details)

    # --- commands from the core -----------------------------------------------------------------

    def send_headers(self, stream: HttpStream, headers: HeaderMap, end_stream: bool) -> None:
        if self.closed or self.transport is None or stream is not self.stream:
            return
        codec = self.codec
        assert codec is not None
        max_requests = stream.ctx.hcm.max_requests_per_connection
        if max_requests and self.requests >= max_requests:
            self.close_after = True
        if self.worker.draining:
            self.close_after = True
        self._write(codec.encode_headers(headers, end_stream, self.close_after))

    def send_data(self, stream: HttpStream, data: bytes, end_stream: bool) -> None:
        if self.closed or self.transport is None or stream is not self.stream:
            return
        self.last_activity = self.worker.runtime.now  # a streaming response is activity too
        payload = self.codec.encode_data(data, end_stream)  # type: ignore[union-attr]
        if payload:
            self._write(payload)

    def send_trailers(self, stream: HttpStream, trailers: HeaderMap) -> None:
        if self.closed or self.transport is None or stream is not self.stream:
            return
        payload = self.codec.encode_trailers(trailers)  # type: ignore[union-attr]
        if payload:
            self._write(payload)

    def reset(self, stream: HttpStream) -> None:
        if stream is self.stream:
            self.flush()  # as Envoy, what was already encoded (e.g. the response head) still goes out
            self.close()

    def stream_ended(self, stream: HttpStream) -> None:
        if stream is not self.stream:
            return
        self.stream = None
        self.last_activity = self.worker.runtime.now
        if self.closed:
            return
        codec = self.codec
        assert codec is not None
        if self.close_after or not codec.keep_alive or not stream.response_complete:
            self.close(graceful=stream.response_complete)
            return
        codec.response_complete()
        if self.paused and not codec.has_pending and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        """Queue bytes; the worker flushes every connection once per drain (one syscall per batch)."""
        wbuf = self._wbuf
        if not wbuf:
            self.worker.pending_writes.append(self)
        wbuf.append(data)

    def flush(self) -> None:
        wbuf = self._wbuf
        if not wbuf:
            return
        data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
        wbuf.clear()
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def close(self, graceful: bool = False) -> None:
        """Close; a graceful close flushes, half-closes and lets the client finish for delayed_close_timeout."""
        if self.closed:
            return
        if graceful:
            self.flush()
        self.closed = True
        self._wbuf.clear()
        transport = self.transport
        if transport is None:
            return
        delay = self.ctx.hcm.delayed_close_timeout if self.ctx is not None else 0.0
        close_transport(transport, graceful, delay, self.worker.loop)


def _codec_error_body(status: int) -> bytes:
    return status_line(status).split(b" ", 2)[2].strip()
