"""What the emulator shows a test: plain records with ``str`` names and ``bytes`` payloads."""

from __future__ import annotations

from dataclasses import dataclass, field

from wasmhost import LogLevel

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line the plugin logged (``proxy_log`` or WASI stdout/stderr)."""

    level: LogLevel
    message: str


@dataclass(frozen=True, slots=True)
class LocalResponse:
    """A ``proxy_send_local_response`` exactly as the plugin sent it (before Envoy's framing).

    ``grpc_status`` is None when the plugin passed none (-1). A plugin that traps under
    FAIL_CLOSED gets the host's own reply: 503, details ``wasm_fail_stream``.
    """

    status: int
    headers: Headers
    body: bytes
    details: str
    grpc_status: int | None


@dataclass(frozen=True, slots=True)
class Callout:
    """An HTTP callout (``proxy_http_call``) waiting for :meth:`HostEmulator.answer_callout`."""

    token: int
    cluster: str
    headers: Headers
    body: bytes
    trailers: Headers
    timeout_ms: int


@dataclass(slots=True)
class GrpcCall:
    """A gRPC call or stream the plugin opened and the emulator has not closed yet.

    ``messages`` lists what the plugin sent (the request of a unary call, then every
    ``proxy_grpc_send``); ``half_closed`` is set by ``proxy_grpc_close`` on a stream.
    A call naming an unknown cluster is never recorded: it closes at once with UNAVAILABLE.
    """

    token: int
    cluster: str
    service: str
    method: str
    initial_metadata: Headers
    is_stream: bool
    messages: list[bytes] = field(default_factory=list)
    half_closed: bool = False
    #: from a serialized GrpcService: the ``:authority`` sent ('' = the cluster name) and its metadata
    authority: str = ""
    service_metadata: Headers = field(default_factory=list)
