"""The immutable runtime plan built from a bootstrap: what every worker serves.

A ``Plan`` is built off the request path (``_plan_build.build_plan``) and swapped
in atomically; streams keep a reference to the plan they started on, so a reload
never changes a request half-way. Only plain values and compiled tables live here;
mutable per-worker state (load balancers, connection pools, stats) is created
from it by the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._routes import RouteTable

if TYPE_CHECKING:
    from ._filter_api import FilterCallbacks, HttpFilter

HttpFilterFactory = Callable[["FilterCallbacks"], "HttpFilter"]


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    address: str
    port: int
    weight: int = 1
    hostname: str = ""
    healthy: bool = True
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True, slots=True)
class OutlierPlan:
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    name: str
    stat_name: str
    discovery: str  # STATIC | STRICT_DNS | LOGICAL_DNS
    endpoints: tuple[EndpointPlan, ...]
    lb_policy: str  # ROUND_ROBIN | LEAST_REQUEST | RANDOM | RING_HASH
    connect_timeout: float = 5.0
    thresholds: Thresholds = Thresholds()
    outlier: OutlierPlan | None = None
    max_requests_per_connection: int = 0
    idle_timeout: float | None = 3600.0
    dns_refresh_rate: float = 5.0
    dns_family: str = "AUTO"
    ring_min_size: int = 1024
    ring_max_size: int = 8 * 1024 * 1024
    choice_count: int = 2
    panic_threshold: float = 50.0
    buffer_limit: int = 1024 * 1024
    http2: bool = False  # talk HTTP/2 to the endpoints (h2c, or h2 over TLS)
    http1_trailers: bool = False  # explicit_http_config.http_protocol_options.enable_trailers
    tls: Any = field(default=None, compare=False)  # _tls.TlsPlan when the cluster has a TLS transport socket
    # transport_socket_matches: ((wanted endpoint labels, TlsPlan or None for raw_buffer), ...)
    tls_matches: tuple[Any, ...] = field(default=(), compare=False)
    h2_max_concurrent_streams: int = 1024  # Envoy's http2_protocol_options defaults
    h2_initial_stream_window: int = 16 * 1024 * 1024
    h2_initial_connection_window: int = 24 * 1024 * 1024
    metadata: Any = field(default=None, compare=False)
    fingerprint: bytes = b""  # serialized config: equal fingerprints keep runtime state across reloads


@dataclass(frozen=True, slots=True)
class FilterEntry:
    """One configured HTTP filter: its name, type and per-stream factory."""

    name: str
    type_name: str
    create: HttpFilterFactory
    terminal: bool
    wants_complete: bool = True  # the filter overrides on_stream_complete
    wants_log: bool = True  # the filter overrides on_log


@dataclass(frozen=True, slots=True)
class AccessLogPlan:
    """Where access-log lines go (``"stdout"``, ``"stderr"`` or a file path) and how they look."""

    target: str
    formatter: Any  # Formatter | JsonFormatter
    filter: Any = None  # a compiled wasmhost.telemetry Expression: log only when true


@dataclass(frozen=True, slots=True)
class HcmPlan:
    stat_prefix: str
    codec: str  # AUTO | HTTP1 | HTTP2
    route_table: RouteTable
    filters: tuple[FilterEntry, ...]
    access_logs: tuple[AccessLogPlan, ...] = ()
    stream_idle_timeout: float | None = 300.0
    request_timeout: float | None = None
    request_headers_timeout: float | None = None
    idle_timeout: float | None = 3600.0
    drain_timeout: float = 5.0
    delayed_close_timeout: float = 1.0
    max_requests_per_connection: int = 0
    max_headers_count: int = 100
    max_request_headers_kb: int = 60
    headers_with_underscores: str = "ALLOW"  # ALLOW | REJECT_REQUEST | DROP_HEADER
    accept_http_10: bool = False
    default_host_for_http_10: bytes = b""
    http1_trailers: bool = False  # http_protocol_options.enable_trailers (else HTTP/1 trailers are dropped)
    upgrade_types: frozenset[bytes] = frozenset()  # upgrade_configs enabled (lower-case), e.g. b"websocket"
    server_name: bytes = b"envoy"
    server_header: str = "OVERWRITE"  # OVERWRITE | APPEND_IF_ABSENT | PASS_THROUGH
    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    via: bytes = b""
    generate_request_id: bool = True
    preserve_external_request_id: bool = False
    always_set_request_id_in_response: bool = False
    normalize_path: bool = False
    merge_slashes: bool = False
    strip_port: str = ""  # "" | "any" | "matching"
    h2_max_concurrent_streams: int = 1024  # Envoy's http2_protocol_options defaults
    h2_initial_stream_window: int = 16 * 1024 * 1024
    h2_initial_connection_window: int = 24 * 1024 * 1024
    h2_allow_connect: bool = False  # http2_protocol_options.allow_connect: extended CONNECT (RFC 8441)


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    name: str
    address: str
    port: int
    stat_prefix: str
    hcm: HcmPlan
    buffer_limit: int = 1024 * 1024
    direction: int = 0
    metadata: Any = field(default=None, compare=False)
    reuse_port: bool = True
    tls: Any = field(default=None, compare=False)  # _tls.TlsPlan when the filter chain has a TLS transport socket
    tls_fingerprint: bytes = b""
    bind: bool = True  # False: configured (bind_to_port: false) but not listening, as Envoy
    # several filter chains or a filter_chain_match: chosen per connection (``_filter_chains``)
    chains: tuple[Any, ...] = field(default=(), compare=False)
    inspect_timeout: float = 15.0  # listener_filters_timeout


@dataclass(frozen=True, slots=True)
class AdminPlan:
    address: str
    port: int
    access_log_path: str = ""


@dataclass(slots=True)
class Plan:
    """Everything one configuration version serves. ``retire()`` runs filter cleanups once unused."""

    version: int
    source: str
    bootstrap: Any  # the parsed Bootstrap message, for /config_dump
    node: Any
    admin: AdminPlan | None
    listeners: tuple[ListenerPlan, ...]
    clusters: dict[str, ClusterPlan]
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    dynamic: Any = None  # what xDS delivered (``_xds_client.XdsSnapshot``), for /config_dump

    def retire(self) -> None:
        cleanups, self.cleanups = self.cleanups, []
        for cleanup in reversed(cleanups):
            cleanup()
