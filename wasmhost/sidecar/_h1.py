"""HTTP/1.1 codec over ``httptools``, both directions, without I/O.

``Http1ServerCodec`` parses requests from a client connection and serialises
responses; ``Http1ClientCodec`` serialises requests to an upstream and parses
its responses. Parsed messages are delivered to a sink as header maps in
Envoy's form (pseudo-headers first, ``host`` as ``:authority``). Pipelined
requests that arrive while a response is still pending are held back and
replayed when ``response_complete()`` is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

import httptools

from ._headers import HeaderMap

_log = logging.getLogger("wasmesh.http")

_REASONS: dict[int, bytes] = {status.value: status.phrase.encode() for status in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in _REASONS.items()
}
_STATUS_TEXT: dict[int, bytes] = {code: b"%d" % code for code in range(100, 600)}
_NO_BODY_STATUS = frozenset({204, 304})
_FRAMING_OR_HOST = frozenset({b"host", b"content-length", b"transfer-encoding"})
_SKIP_ON_WIRE = frozenset({b"transfer-encoding", b"connection", b"keep-alive", b"proxy-connection"})
_FRAMING_ON_WIRE = _SKIP_ON_WIRE | {b"content-length"}


def status_line(status: int, version: bytes = b"1.1") -> bytes:
    if version == b"1.1":
        cached = _STATUS_LINES.get(status)
        if cached is not None:
            return cached
    return b"HTTP/%s %d %s\r\n" % (version, status, _REASONS.get(status, b"Unknown"))


class ServerSink(Protocol):
    def on_request_headers(self, headers: HeaderMap, end_stream: bool, protocol: str, upgrade: bool) -> None: ...

    def on_request_data(self, data: bytes, end_stream: bool) -> None: ...

    def on_request_trailers(self, trailers: HeaderMap) -> None: ...

    def on_codec_error(self, status: int, details: str) -> None: ...


class CodecError(Exception):
    def __init__(self, status: int, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.details = details


class Http1ServerCodec:
    """Request parser + response serialiser for one client connection."""

    __slots__ = ("sink", "_parser", "_url", "_headers", "_host", "_header_bytes", "_in_trailers", "_trailers",
                 "_ended_at_headers", "_has_body", "awaiting_response", "_deferring", "_pending",
                 "_chunked_response", "keep_alive", "_http10", "_head", "_max_header_bytes", "_max_headers",
                 "_underscores", "failed", "_feed", "_body", "in_head", "trailers", "tunnel", "_tunnelling")

    def __init__(self, sink: ServerSink, max_header_bytes: int = 60 * 1024, max_headers: int = 100,
                 underscores: str = "ALLOW") -> None:
        self.sink = sink
        self._parser = httptools.HttpRequestParser(self)
        self._feed = self._parser.feed_data
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._host: bytes | None = None
        self._header_bytes = 0
        self._in_trailers = False
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._ended_at_headers = False
        self._has_body = False
        self.awaiting_response = False
        self._deferring = False
        self._pending: list[tuple[Any, ...]] = []
        self._chunked_response = False
        self.keep_alive = True
        self._http10 = False
        self._head = False
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        # None: names with underscores pass; True: the request is rejected; False: the header is dropped
        self._underscores: bool | None = None if underscores == "ALLOW" else underscores == "REJECT_REQUEST"
        self.failed = False
        self._body: bytes | None = None
        self.in_head = False  # a request head has started and is not complete yet
        # http_protocol_options.enable_trailers; the connection sets it (off by default, as Envoy),
        # else trailers are dropped both ways
        self.trailers = True
        # the Upgrade value of a request the connection manager lets through (upgrade_configs):
        # after its head, every byte from the client is tunnel data
        self.tunnel: bytes | None = None
        self._tunnelling = False

    # --- input ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse bytes from the client; events go to the sink (or are held back while a response is due)."""
        if self.failed:
            return
        if self._tunnelling:
            self.sink.on_request_data(data, False)
            return
        try:
            self._feed(data)
            body = self._body
            if body is not None:
                self._body = None
                self._dispatch(("data", body, False))
        except httptools.HttpParserUpgrade as upgrade:
            # a refused upgrade was already answered; an allowed one tunnels what follows its head
            if self.tunnel is not None:
                self._tunnelling = True
                rest = data[upgrade.args[0]:] if upgrade.args else b""
                if rest:
                    self.sink.on_request_data(rest, False)
        except CodecError as err:
            self._fail(err.status, err.details)
        except httptools.HttpParserError as err:
            cause = err.__context__
            if isinstance(cause, CodecError):
                self._fail(cause.status, cause.details)
            elif cause is not None and not isinstance(cause, httptools.HttpParserError):
                # not a parse error: something downstream of the codec failed while handling the request
                _log.error("request handling failed", exc_info=cause)
                self._fail(500, "internal_error")
            else:
                self._fail(400, "http1.codec_error")

    def _fail(self, status: int, details: str) -> None:
        self.failed = True
        self._dispatch(("error", status, details))

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._host = None
        self._header_bytes = 0
        self._in_trailers = False
        self._has_body = False
        self.in_head = True
        if self.awaiting_response:
            self._deferring = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._header_bytes + len(name) + len(value)
        self._header_bytes = size
        if size > self._max_header_bytes:
            raise CodecError(431, "http1.headers_too_large")
        name = name.lower()
        if self._in_trailers:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name, value))
            return
        headers = self._headers
        if len(headers) >= self._max_headers:
            raise CodecError(431, "http1.too_many_headers")
        if name in _FRAMING_OR_HOST:
            if name == b"host":
                if self._host is None:
                    self._host = value
                return
            if name == b"transfer-encoding" or value.strip() not in (b"0", b""):
                self._has_body = True
        elif self._underscores is not None and b"_" in name:
            if self._underscores:
                raise CodecError(400, "http1.unexpected_underscore")
            return
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        self.in_head = False
        method = parser.get_method()
        http10 = self._http10 = parser.get_http_version() == "1.0"
        self.keep_alive = parser.should_keep_alive()
        self._head = method == b"HEAD"
        self._in_trailers = True
        self._trailers = None
        host = self._host
        if host is not None:
            items = [(b":method", method), (b":scheme", b"http"), (b":path", self._url), (b":authority", host),
                     *self._headers]
        else:
            items = [(b":method", method), (b":scheme", b"http"), (b":path", self._url), *self._headers]
        has_body = self._has_body
        upgrade = parser.should_upgrade()
        self._ended_at_headers = not has_body
        protocol = "HTTP/1.0" if http10 else "HTTP/1.1"
        if self._deferring:
            self._pending.append(("headers", HeaderMap.adopt(items), not has_body, protocol, upgrade))
            return
        self.awaiting_response = True
        self.sink.on_request_headers(HeaderMap.adopt(items), not has_body, protocol, upgrade)

    def on_body(self, body: bytes) -> None:
        # Hold the chunk: if the message ends in this same read, it travels with end_stream.
        pending = self._body
        if pending is not None:
            self._dispatch(("data", pending, False))
        self._body = body

    def on_message_complete(self) -> None:
        body = self._body
        self._body = None
        if self._trailers and self.trailers:
            if body is not None:
                self._dispatch(("data", body, False))
            self._dispatch(("trailers", HeaderMap.adopt(self._trailers)))
        elif not self._ended_at_headers:
            self._dispatch(("data", body if body is not None else b"", True))

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        if self._deferring:
            self._pending.append(event)
            return
        self._deliver(event)

    def _deliver(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        sink = self.sink
        if kind == "headers":
            self.awaiting_response = True
            sink.on_request_headers(event[1], event[2], event[3], event[4])
        elif kind == "data":
            sink.on_request_data(event[1], event[2])
        elif kind == "trailers":
            sink.on_request_trailers(event[1])
        else:
            sink.on_codec_error(event[1], event[2])

    def response_complete(self) -> None:
        """The current response is fully written: release held-back pipelined requests."""
        self.awaiting_response = False
        self._chunked_response = False
        if not self._deferring:
            return
        self._deferring = False
        pending = self._pending
        while pending:
            event = pending[0]
            if event[0] == "headers" and self.awaiting_response:
                self._deferring = True
                return
            pending.pop(0)
            self._deliver(event)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    # --- output ---------------------------------------------------------------------------------

    def encode_headers(self, headers: HeaderMap, end_stream: bool, close: bool) -> bytes:
        """Serialise response headers; chooses content-length, chunked or close-delimited framing."""
        status_value: bytes | None = None
        parts: list[bytes] = [b""]  # the status line goes in front
        extend = parts.extend
        has_length = False
        for name, value in headers.items():
            if name[0] == 58:  # a pseudo-header
                if status_value is None and name == b":status":
                    status_value = value
                continue
            if name in _FRAMING_ON_WIRE:
                if name != b"content-length":
                    continue  # hop-by-hop: the codec frames the message itself
                has_length = True
            extend((name, b": ", value, b"\r\n"))
        status = int(status_value) if status_value is not None and status_value.isdigit() else 502
        append = parts.append
        self._chunked_response = False
        if status == 101 and self.tunnel is not None:
            # the upstream accepted the upgrade: no framing from here on, the connection is a tunnel
            if headers.get(b"upgrade") is None:
                append(b"upgrade: %s\r\n" % self.tunnel)
            append(b"connection: %s\r\n\r\n" % (headers.get(b"connection") or b"upgrade"))
            parts[0] = status_line(status)
            return b"".join(parts)
        if not has_length and status >= 200 and status not in _NO_BODY_STATUS:
            if end_stream:
                if not self._head:
                    append(b"content-length: 0\r\n")
            elif self._http10:
                close = True
            else:
                append(b"transfer-encoding: chunked\r\n")
                self._chunked_response = True
        if close or not self.keep_alive:
            self.keep_alive = False
            append(b"connection: close\r\n")
        elif self._http10:
            append(b"connection: keep-alive\r\n")
        append(b"\r\n")
        parts[0] = status_line(status)
        return b"".join(parts)

    def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._head:
            return b""
        if not self._chunked_response:
            return data
        if data:
            out = b"%x\r\n%s\r\n" % (len(data), data)
            return out + b"0\r\n\r\n" if end_stream else out
        return b"0\r\n\r\n" if end_stream else b""

    def encode_trailers(self, trailers: HeaderMap) -> bytes:
        # HTTP/1 trailers are only forwarded when enabled; Envoy drops them by default.
        if self._chunked_response and not self._head:
            return _last_chunk(trailers) if self.trailers else b"0\r\n\r\n"
        return b""


class ClientSink(Protocol):
    def on_response_headers(self, headers: HeaderMap, end_stream: bool) -> None: ...

    def on_response_data(self, data: bytes, end_stream: bool) -> None: ...

    def on_response_trailers(self, trailers: HeaderMap) -> None: ...


class Http1ClientCodec:
    """Request serialiser + response parser for one upstream connection, one request at a time."""

    __slots__ = ("sink", "_parser", "_headers", "_in_trailers", "_trailers", "_head", "_ended", "_chunked",
                 "keep_alive", "_close_delimited", "_status", "_on_error", "_feed", "_in_message", "_body",
                 "on_end", "trailers", "_upgrade", "_tunnelling")

    def __init__(self, sink: ClientSink | None = None, on_error: Callable[[str], None] | None = None,
                 on_end: Callable[[], None] | None = None) -> None:
        self.sink = sink
        self.on_end = on_end  # told when a response ends, before the sink hears the final event
        self._parser = httptools.HttpResponseParser(self)
        self._feed = self._parser.feed_data
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_trailers = False
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._head = False
        self._ended = False
        self._chunked = False
        self.keep_alive = True
        self._close_delimited = False
        self._status = 0
        self._on_error = on_error
        self._in_message = False
        self._body: bytes | None = None
        self.trailers = True  # the cluster's enable_trailers (set by the connection): else dropped both ways
        self._upgrade = False  # the request asks for an upgrade (it has no framing: a tunnel may follow)
        self._tunnelling = False  # the upstream answered 101: every byte is tunnel data

    def encode_request(self, headers: HeaderMap, end_stream: bool) -> bytes:
        """Serialise request headers (``:authority`` becomes ``host``)."""
        method = path = authority = None
        # request line and host header first: filled in once the pseudo-headers are known
        parts: list[bytes] = [b"", b" ", b"", b" HTTP/1.1\r\nhost: ", b"", b"\r\n"]
        extend = parts.extend
        has_length = False
        for name, value in headers.items():
            if name[0] == 58:  # a pseudo-header: the first of each counts
                if name == b":method":
                    if method is None:
                        method = value
                elif name == b":path":
                    if path is None:
                        path = value
                elif name == b":authority":
                    if authority is None:
                        authority = value
                continue
            if name in _FRAMING_ON_WIRE:
                if name != b"content-length":
                    continue  # hop-by-hop: the codec frames the message itself
                has_length = True
            extend((name, b": ", value, b"\r\n"))
        method = method or b"GET"
        self._chunked = False
        self._tunnelling = False
        self._upgrade = not end_stream and headers.get(b"upgrade") is not None
        if self._upgrade:
            parts.append(b"connection: %s\r\n" % (headers.get(b"connection") or b"upgrade"))
        elif not has_length:
            if end_stream:
                if method in (b"POST", b"PUT", b"PATCH"):
                    parts.append(b"content-length: 0\r\n")
            else:
                parts.append(b"transfer-encoding: chunked\r\n")
                self._chunked = True
        parts.append(b"\r\n")
        self._head = method == b"HEAD"
        self._ended = False
        parts[0] = method
        parts[2] = path or b"/"
        parts[4] = authority or b""
        return b"".join(parts)

    def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        if not self._chunked:
            return data
        if data:
            out = b"%x\r\n%s\r\n" % (len(data), data)
            return out + b"0\r\n\r\n" if end_stream else out
        return b"0\r\n\r\n" if end_stream else b""

    def encode_trailers(self, trailers: HeaderMap) -> bytes:
        if not self._chunked:
            return b""
        return _last_chunk(trailers) if self.trailers else b"0\r\n\r\n"

    # --- input ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._tunnelling:
            if self.sink is not None:
                self.sink.on_response_data(data, False)
            return
        try:
            self._feed(data)
            body = self._body
            if body is not None:
                self._body = None
                if not self._ended and self.sink is not None:
                    self.sink.on_response_data(body, False)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0]:] if upgrade.args else b""
            if self._tunnelling and rest and self.sink is not None:
                self.sink.on_response_data(rest, False)
        except httptools.HttpParserError:
            self.keep_alive = False
            if self._on_error is not None:
                self._on_error("protocol error")

    def eof(self) -> bool:
        """The upstream closed; returns True when that ended a close-delimited response (or a tunnel)."""
        if not self._ended and (self._tunnelling or self._in_message and self._close_delimited):
            self._ended = True
            self._body = None
            self._in_message = False
            sink = self.sink
            if self.on_end is not None:
                self.on_end()
            if sink is not None:
                sink.on_response_data(b"", True)
            return True
        return False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_trailers:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name.lower(), value))
        else:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        self._status = status
        headers = self._headers
        self._headers = []
        if 100 <= status < 200:
            if status == 101 and self._upgrade:
                # the upgrade is accepted: the response goes on as a tunnel until either side closes
                self._tunnelling = True
                self.keep_alive = False
                if self.sink is not None:
                    self.sink.on_response_headers(HeaderMap.adopt([(b":status", b"101"), *headers]), False)
            return  # any other informational response: its headers are dropped
        self._in_trailers = True
        self._in_message = True
        self.keep_alive = parser.should_keep_alive()
        length: bytes | None = None
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                length = value.strip()
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        no_body = self._head or status in _NO_BODY_STATUS or (length == b"0" and not chunked)
        self._close_delimited = not no_body and length is None and not chunked
        if self._close_delimited:
            self.keep_alive = False
        items = [(b":status", _STATUS_TEXT.get(status) or str(status).encode()), *headers]
        self._ended = no_body
        sink = self.sink
        if no_body:
            self._in_message = False
            if self._head:
                # llhttp does not know this answered a HEAD request; start afresh for the next one.
                self._parser = httptools.HttpResponseParser(self)
                self._feed = self._parser.feed_data
                self._in_trailers = False
            if self.on_end is not None:
                self.on_end()
        if sink is not None:
            sink.on_response_headers(HeaderMap.adopt(items), no_body)

    def on_body(self, body: bytes) -> None:
        # Hold the chunk: if the response ends in this same read, it travels with end_stream.
        pending = self._body
        if pending is not None and not self._ended and self.sink is not None:
            self.sink.on_response_data(pending, False)
        self._body = body

    def on_message_complete(self) -> None:
        # ready for the next message (this codec has no on_message_begin: one call less per response)
        self._in_trailers = False
        trailers = self._trailers if self.trailers else None
        self._trailers = None
        if 100 <= self._status < 200:
            return
        self._in_message = False
        body = self._body
        self._body = None
        if self._ended:
            return
        self._ended = True
        sink = self.sink
        if sink is None:
            return
        if trailers and body is not None:
            sink.on_response_data(body, False)
        if self.on_end is not None:
            self.on_end()
        if trailers:
            sink.on_response_trailers(HeaderMap.adopt(trailers))
        else:
            sink.on_response_data(body if body is not None else b"", True)

    @property
    def response_ended(self) -> bool:
        return self._ended


def _last_chunk(trailers: HeaderMap) -> bytes:
    """The terminating chunk carrying the trailers (pseudo-headers never go on the wire)."""
    lines = b"".join(b"%s: %s\r\n" % (k, v) for k, v in trailers.items() if k[:1] != b":")
    return b"0\r\n" + lines + b"\r\n"
