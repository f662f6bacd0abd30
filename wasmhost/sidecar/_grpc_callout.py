"""gRPC callouts from plugins (``proxy_grpc_call`` / ``proxy_grpc_stream``) over a named cluster.

One ``GrpcCallout`` is one gRPC stream on the cluster's connection pool (HTTP/2 when the
cluster says so): request headers as Envoy's gRPC async client writes them, messages with
the 5-byte length prefix, half-close as an empty end-of-stream DATA frame. The answer is
decoded into stream events (initial metadata, messages, trailing metadata, close with a
gRPC status) with Envoy's status rules:

- a response other than HTTP 200 maps its HTTP status to a gRPC one (503 → UNAVAILABLE, …),
  unless it is a trailers-only answer with ``grpc-status`` (how a proxy's local reply such
  as "no healthy upstream" arrives);
- trailers without ``grpc-status``, or a body ending without trailers, are UNKNOWN;
- a reset once the response has started, or a malformed frame, is INTERNAL;
- no connection, a reset before the response, or the call's own timeout is the router's
  local reply in gRPC form: trailers-only, UNAVAILABLE, the reply text as ``grpc-message``;
- the close message carries the router's response code details as Envoy's async client adds
  them: ``message{details}``, or the details alone (``via_upstream`` for an upstream answer).

``UnaryCollector`` turns the stream events into what a unary call reports in Envoy: only the
(last) message on success, or a close with the failure status; never metadata.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Protocol

from ._callout import ClusterCall
from ._cluster import Cluster
from ._commands import ResetUpstream, SendUpstreamData, Timer
from ._headers import HeaderMap, Pair
from ._upstream_sink import CONNECTION_FAILURE

OK = 0
UNKNOWN = 2
INTERNAL = 13
UNAVAILABLE = 14
#: largest single response message accepted (Envoy has no default cap; one is kept against a hostile upstream)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_PREFIX = 5
_COMPRESSED = 0x01
_SERVICE_TIME = b"x-envoy-upstream-service-time"
#: Envoy's transport failure reason for a refused connection (its details show it, its text does not)
REFUSED_TRANSPORT_FAILURE = "delayed connect error: Connection refused"


class GrpcEvents(Protocol):
    """Where a call reports; ``on_close`` is always the last event and comes exactly once."""

    def on_initial_metadata(self, metadata: list[Pair]) -> None: ...

    def on_message(self, message: bytes) -> None: ...

    def on_trailing_metadata(self, metadata: list[Pair]) -> None: ...

    def on_close(self, status: int, message: bytes) -> None: ...


#: Envoy's ``Grpc::Utility::httpToGrpcStatus`` for a non-200 answer without ``grpc-status``
_HTTP_TO_GRPC = {400: INTERNAL, 401: 16, 403: 7, 404: 12, 429: UNAVAILABLE, 502: UNAVAILABLE,
                 503: UNAVAILABLE, 504: UNAVAILABLE}


def http_to_grpc_status(code: int) -> int:
    """The gRPC status a plain HTTP error answer means (anything unlisted is UNKNOWN)."""
    return _HTTP_TO_GRPC.get(code, UNKNOWN)


def frame(message: bytes) -> bytes:
    """One uncompressed gRPC message with its length prefix."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_timeout(timeout_ms: int) -> bytes:
    """The ``grpc-timeout`` value Envoy writes: the smallest unit whose value fits 8 digits."""
    value = timeout_ms
    for unit in b"mSMH":
        if value <= 99_999_999:
            return str(value).encode() + bytes([unit])
        value //= 1000 if unit == ord("m") else 60
    return b"99999999H"


def request_headers(
    cluster: str, service: str, method: str, metadata: list[Pair], timeout_ms: int | None,
    *, authority: str = "", service_metadata: list[Pair] | None = None,
) -> HeaderMap:
    """Envoy's ``Grpc::Common::prepareHeaders``, then a GrpcService's metadata, then the plugin's.

    ``authority`` (a GrpcService's ``envoy_grpc.authority``) replaces the cluster name as
    ``:authority``; service metadata overwrites what it names, the plugin's is appended; ``-bin``
    values go out base64-encoded, moved to the end, as Envoy's async client sends them.
    """
    headers = HeaderMap([
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", f"/{service}/{method}".encode()),
        (b":authority", (authority or cluster).encode()),
        (b"te", b"trailers"),
    ])
    if timeout_ms is not None:  # a unary call always has one, even 0 ("0m", as Envoy sends it)
        headers.add(b"grpc-timeout", grpc_timeout(timeout_ms))
    headers.add(b"content-type", b"application/grpc")
    for key, value in service_metadata or ():
        headers.set(key, value)
    for key, value in metadata:
        name = key.lower()
        if not name.startswith(b":"):  # metadata cannot replace the request line
            headers.add(name, value)
    binary = [(k, v) for k, v in headers.items() if k.endswith(b"-bin")]
    if binary:
        headers.replace_all([(k, v) for k, v in headers.items() if not k.endswith(b"-bin")])
        for key, value in binary:
            headers.add(key, base64.b64encode(value))
    return headers


class MessageDecoder:
    """Splits a DATA byte stream into gRPC messages; ``error`` says why it gave up."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.error = ""

    def feed(self, data: bytes) -> list[bytes]:
        if self.error:
            return []
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        while len(buffer) >= _PREFIX:
            flags = buffer[0]
            if flags & ~_COMPRESSED:
                self.error = f"invalid gRPC frame flags 0x{flags:02x}"
                return messages
            size = int.from_bytes(buffer[1:_PREFIX], "big")
            if flags & _COMPRESSED and size:
                self.error = "compressed gRPC message (the async client, as Envoy's, does not decompress)"
                return messages
            if size > MAX_MESSAGE_BYTES:
                self.error = f"gRPC message of {size} bytes exceeds {MAX_MESSAGE_BYTES}"
                return messages
            if len(buffer) < _PREFIX + size:
                break
            messages.append(bytes(buffer[_PREFIX:_PREFIX + size]))
            del buffer[:_PREFIX + size]
        return messages

    @property
    def partial(self) -> bool:
        return bool(self._buffer)


class GrpcCallout(ClusterCall):
    """An ``UpstreamSink`` carrying one gRPC call or stream; events go to ``GrpcEvents``."""

    def __init__(self, worker: Any, cluster: Cluster, headers: HeaderMap, events: GrpcEvents) -> None:
        super().__init__(worker, cluster, headers)
        self.end_stream = False
        self.events = events
        self._responded = False
        self._half_closed = False
        self._decoder = MessageDecoder()
        self._details = ""  # the response code details Envoy's router would record

    def start(self, timeout_ms: int) -> None:
        if timeout_ms > 0:
            self._timer = Timer(timeout_ms / 1000.0, self._on_timeout)
            self.out.append(self._timer)
        host = self.cluster.choose_host()
        if host is None:
            # reported from the event loop, never from inside the plugin's dispatch
            self.out.append(Timer(0.0, lambda: self._local_reply(b"no healthy upstream", "no_healthy_upstream")))
            return
        self._begin(host)

    # --- what the plugin does -------------------------------------------------------------------

    def send(self, message: bytes, end_stream: bool) -> None:
        if self.finished or self._half_closed:
            return
        self._half_closed = end_stream
        if self._started:
            self.out.append(SendUpstreamData(self, frame(message), end_stream))

    def half_close(self) -> None:
        if self.finished or self._half_closed:
            return
        self._half_closed = True
        if self._started:
            self.out.append(SendUpstreamData(self, b"", True))

    # --- UpstreamSink ---------------------------------------------------------------------------

    def on_pool_ready(self, local_address: tuple[str, int] | None) -> None:
        pass

    def on_pool_failure(self, reason: str, transport_failure: str) -> None:
        self.cluster.record_response(self.host, 503, self.worker.now)
        text = "upstream connect error or disconnect/reset before headers. reset reason: " + reason
        if transport_failure:
            text += ", transport failure reason: " + transport_failure
        # the pool leaves a refused connection's reason out of the text (as Envoy); the details keep it
        refused = REFUSED_TRANSPORT_FAILURE if reason == CONNECTION_FAILURE else ""
        self._local_reply(text.encode(), _reset_details(reason, transport_failure or refused))

    def on_response_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        if self.finished:
            return
        status = headers.get(b":status") or b"0"
        if status.startswith(b"1"):
            return
        code = int(status) if status.isdigit() else 0
        self._responded = True
        self._details = "via_upstream"
        self.cluster.stats.count_response(code)
        self.cluster.record_response(self.host, code, self.worker.now)
        if headers.get(_SERVICE_TIME) is None:
            # the async client's router adds it, as for any routed response
            elapsed_ms = max(0, int((self.worker.now - self._started_at) * 1000))
            headers.add(_SERVICE_TIME, str(elapsed_ms).encode())
        grpc_status = headers.get(b"grpc-status")
        self.events.on_initial_metadata([] if end_stream else list(headers.items()))
        if self.finished:
            return
        if code != 200 and not (end_stream and grpc_status is not None):
            self._reset_and_close(http_to_grpc_status(code), b"")
        elif end_stream:
            self.on_response_trailers(headers)

    def on_response_data(self, data: bytes, end_stream: bool) -> None:
        if self.finished:
            return
        for message in self._decoder.feed(data):
            self.events.on_message(message)
            if self.finished:
                return
        if self._decoder.error:
            self._reset_and_close(INTERNAL, b"")
        elif end_stream:
            self._close(UNKNOWN, b"")

    def on_response_trailers(self, trailers: HeaderMap) -> None:
        if self.finished:
            return
        raw_status = trailers.get(b"grpc-status")
        message = trailers.get(b"grpc-message") or b""
        self.events.on_trailing_metadata(list(trailers.items()))
        if self.finished:
            return
        status = int(raw_status) if raw_status is not None and raw_status.isdigit() else UNKNOWN
        self._close(status, message)

    def on_reset(self, reason: str) -> None:
        if self._responded:
            self._close(INTERNAL, b"")
        else:
            text = "upstream connect error or disconnect/reset before headers. reset reason: " + reason
            self._local_reply(text.encode(), _reset_details(reason, ""))

    # --- lifecycle ------------------------------------------------------------------------------

    def _on_timeout(self) -> None:
        if self.finished:
            return
        self.cluster.stats.rq_timeout.value += 1
        if self._started:
            self.out.append(ResetUpstream(self))
        if self._responded:
            self._close(UNAVAILABLE, b"upstream request timeout")
        else:
            self._local_reply(b"upstream request timeout", "upstream_response_timeout")

    def _local_reply(self, text: bytes, details: str) -> None:
        """The router's 503/504 local reply in gRPC form (trailers-only): UNAVAILABLE with the text.

        The texts are the router's own printable ASCII, so ``grpc-message`` needs no escaping.
        """
        if self.finished:
            return
        self._details = details
        reply = HeaderMap([(b":status", b"200"), (b"content-type", b"application/grpc"),
                           (b"grpc-status", str(UNAVAILABLE).encode()), (b"grpc-message", text)])
        self.events.on_initial_metadata([])
        if not self.finished:
            self.on_response_trailers(reply)

    def _reset_and_close(self, status: int, message: bytes) -> None:
        if self._started and not self.finished:
            self.out.append(ResetUpstream(self))
        self._close(status, message)

    def _close(self, status: int, message: bytes) -> None:
        if self.finished:
            return
        self._release()
        self.events.on_close(status, self._with_details(message))

    def _with_details(self, message: bytes) -> bytes:
        """Envoy's async client appends the stream's response code details to the close message."""
        details = self._details.encode()
        if not details:
            return message
        return message + b"{" + details + b"}" if message else details


def _reset_details(reason: str, transport_failure: str) -> str:
    """The router's details for a failure before the response, whitespace made ``_``."""
    inner = reason + ("|" + transport_failure if transport_failure else "")
    return "upstream_reset_before_response_started{" + "_".join(inner.split()) + "}"


class UnaryCollector:
    """Envoy's unary request on top of a stream: the last message on success, else the failure."""

    def __init__(self, on_message: Callable[[bytes], None], on_close: Callable[[int, bytes], None]) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._last: bytes | None = None

    def on_initial_metadata(self, metadata: list[Pair]) -> None:
        pass

    def on_message(self, message: bytes) -> None:
        self._last = message

    def on_trailing_metadata(self, metadata: list[Pair]) -> None:
        pass

    def on_close(self, status: int, message: bytes) -> None:
        if status != OK:
            self._on_close(status, message)
        elif self._last is None:
            self._on_close(INTERNAL, b"")
        else:
            self._on_message(self._last)


def start_grpc_callout(
    worker: Any, cluster: Cluster, service: str, method: str, metadata: list[Pair],
    message: bytes | None, timeout_ms: int, events: GrpcEvents,
    *, authority: str = "", service_metadata: list[Pair] | None = None,
) -> GrpcCallout:
    """Open the stream (and for a unary call send its one message and half-close)."""
    unary_timeout = timeout_ms if message is not None else None  # streams carry no deadline
    headers = request_headers(cluster.name, service, method, metadata, unary_timeout,
                              authority=authority, service_metadata=service_metadata)
    call = GrpcCallout(worker, cluster, headers, events)
    call.start(timeout_ms)
    if message is not None:
        call.send(message, True)
    return call
