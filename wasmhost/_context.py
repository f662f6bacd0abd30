"""Context state: what each proxy-wasm context can see and change right now.

Rules (the whole lifecycle lives in :mod:`wasmhost._plugin`; this module only holds
state):

1. Context ids are per VM, start at 1 (0 is the VM itself) and are never reused.
2. A root context is a configured plugin; HTTP and TCP contexts hang off one root.
3. A map or buffer is readable/writable only inside the callbacks where Envoy allows
   it; outside its window a getter answers OK with nothing (SDKs panic on other
   statuses) and a setter answers BAD_ARGUMENT.
4. Header maps are lists of ``(name, value)`` byte pairs, names lower-cased, order kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._abi import Pairs

if TYPE_CHECKING:
    from ._plugin import PluginSpec
    from ._vm import WasmVM


@dataclass(slots=True)
class StreamInfo:
    """What the embedder knows about a stream or connection, for properties."""

    source_address: str = "127.0.0.1"
    source_port: int = 0
    destination_address: str = "127.0.0.1"
    destination_port: int = 0
    connection_id: int = 0
    protocol: str = "HTTP/1.1"
    scheme: str = "http"
    start_time_ns: int = 0
    route_name: str = ""
    cluster_name: str = ""
    virtual_host_name: str = ""
    listener_direction: int = 0
    upstream_address: str = ""
    upstream_port: int = 0
    mtls: bool = False
    tls_version: str = ""
    requested_server_name: str = ""
    peer_principal: str = ""
    local_principal: str = ""
    response_code_details: str = ""
    response_flags: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CalloutResponse:
    """An HTTP callout's answer, readable only during ``proxy_on_http_call_response``."""

    headers: Pairs
    body: bytes
    trailers: Pairs


@dataclass(eq=False, slots=True)
class RootContext:
    """A plugin instance: one root context on one VM."""

    id: int
    vm: WasmVM
    spec: PluginSpec
    configuring: bool = False
    vm_starting: bool = False
    tick_period_ms: int = 0
    pending_done: bool = False
    deleted: bool = False
    next_token: int = 1
    http_calls: dict[int, str] = field(default_factory=dict)
    grpc_calls: dict[int, bool] = field(default_factory=dict)  # token -> is_stream
    callout: CalloutResponse | None = None
    grpc_metadata: Pairs | None = None
    grpc_message: bytes | None = None
    status: tuple[int, bytes] = (0, b"")
    foreign_args: bytes | None = None
    filter_state: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def root(self) -> RootContext:
        return self


@dataclass(eq=False, slots=True)
class HttpContext:
    """One HTTP stream as the plugin sees it."""

    id: int
    root: RootContext
    info: StreamInfo
    request_headers: Pairs | None = None
    request_trailers: Pairs | None = None
    response_headers: Pairs | None = None
    response_trailers: Pairs | None = None
    request_body: bytearray | None = None
    response_body: bytearray | None = None
    # which maps/buffers are open to the plugin in the current callback
    request_headers_writable: bool = False
    response_headers_writable: bool = False
    request_trailers_writable: bool = False
    response_trailers_writable: bool = False
    request_body_open: bool = False
    response_body_open: bool = False
    in_log: bool = False
    local_reply_sent: bool = False
    response_headers_sent: bool = False
    created: bool = False
    done: bool = False
    filter_state: dict[bytes, bytes] = field(default_factory=dict)
    request_body_size: int = 0
    response_body_size: int = 0
    #: the embedder's object for this stream (e.g. the sidecar filter), so commands find it
    embedder: Any = None


@dataclass(eq=False, slots=True)
class TcpContext:
    """One TCP connection as a network-filter plugin sees it."""

    id: int
    root: RootContext
    info: StreamInfo
    downstream_data: bytearray | None = None
    upstream_data: bytearray | None = None
    downstream_open: bool = False
    upstream_open: bool = False
    created: bool = False
    downstream_closed: bool = False
    upstream_closed: bool = False
    done: bool = False
    filter_state: dict[bytes, bytes] = field(default_factory=dict)
    embedder: Any = None


AnyContext = RootContext | HttpContext | TcpContext
