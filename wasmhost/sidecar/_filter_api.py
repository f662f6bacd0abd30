"""The HTTP filter interface, modelled on Envoy's stream decoder/encoder filters.

A filter is created per stream by a factory registered for its ``typed_config``
type (see ``_filter_registry``). The filter chain calls ``decode_*`` in
configuration order for the request and ``encode_*`` in reverse order for the
response; each call returns a status that says whether iteration continues.
A filter talks back to the stream through the ``FilterCallbacks`` it was built
with (continue, local reply, buffering, route, stream info, HTTP callouts).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._buffer import Buffer
from ._headers import HeaderMap, Pair

if TYPE_CHECKING:
    from ._routes import Route


class HeadersStatus(enum.IntEnum):
    """What ``decode_headers``/``encode_headers`` return (Envoy ``FilterHeadersStatus``)."""

    Continue = 0
    StopIteration = 1
    ContinueAndEndStream = 2
    StopAllIterationAndBuffer = 3
    StopAllIterationAndWatermark = 4


class DataStatus(enum.IntEnum):
    """What ``decode_data``/``encode_data`` return (Envoy ``FilterDataStatus``)."""

    Continue = 0
    StopIterationAndBuffer = 1
    StopIterationAndWatermark = 2
    StopIterationNoBuffer = 3


class TrailersStatus(enum.IntEnum):
    """What ``decode_trailers``/``encode_trailers`` return."""

    Continue = 0
    StopIteration = 1


class ResponseFlag(enum.Enum):
    """Envoy response flags (short names appear in access logs as ``%RESPONSE_FLAGS%``)."""

    NO_HEALTHY_UPSTREAM = "UH"
    UPSTREAM_CONNECTION_FAILURE = "UF"
    UPSTREAM_OVERFLOW = "UO"
    NO_ROUTE_FOUND = "NR"
    UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
    UPSTREAM_REQUEST_TIMEOUT = "UT"
    LOCAL_RESET = "LR"
    UPSTREAM_REMOTE_RESET = "UR"
    UPSTREAM_CONNECTION_TERMINATION = "UC"
    DELAY_INJECTED = "DI"
    FAULT_INJECTED = "FI"
    DOWNSTREAM_CONNECTION_TERMINATION = "DC"
    STREAM_IDLE_TIMEOUT = "SI"
    DOWNSTREAM_PROTOCOL_ERROR = "DPE"
    NO_CLUSTER_FOUND = "NC"
    UPSTREAM_PROTOCOL_ERROR = "UPE"
    NO_FILTER_CONFIG_FOUND = "NFCF"
    UNAUTHORIZED_EXTERNAL_SERVICE = "UAEX"


class StreamInfo:
    """What is known about one request; read by access logs, stats and plugin properties.

    Times ending in ``_at`` are monotonic seconds (``start_monotonic`` is the
    reference); ``start_time`` is wall-clock seconds. ``filter_state`` and
    ``dynamic_metadata`` are created on first use.
    """

    # Defaults live on the class: a new stream stores only what it sets (cheaper per request).
    route_name = ""
    virtual_host_name = ""
    cluster_name = ""
    upstream_host: tuple[str, int] | None = None
    upstream_local_address: tuple[str, int] | None = None
    upstream_transport_failure_reason = ""
    response_code = 0
    response_code_details = ""
    response_flags: set[ResponseFlag] | None = None
    bytes_received = 0
    bytes_sent = 0
    attempt_count = 0
    request_complete_at: float | None = None
    first_upstream_tx_at: float | None = None
    first_upstream_rx_at: float | None = None
    last_upstream_rx_at: float | None = None
    first_downstream_tx_at: float | None = None
    last_downstream_tx_at: float | None = None
    downstream_tls: dict[str, Any] | None = None  # see _tls.peer_tls_info; None for plaintext
    _filter_state: dict[str, Any] | None = None
    _dynamic_metadata: dict[str, dict[str, Any]] | None = None

    def __init__(
        self,
        start_time: float,
        start_monotonic: float,
        connection_id: int,
        downstream_remote_address: tuple[str, int],
        downstream_local_address: tuple[str, int],
        protocol: str = "HTTP/1.1",
        listener_name: str = "",
    ) -> None:
        self.start_time = start_time
        self.start_monotonic = start_monotonic
        self.connection_id = connection_id
        self.downstream_remote_address = downstream_remote_address  # may come from x-forwarded-for
        self.downstream_direct_remote_address = downstream_remote_address  # always the socket peer
        self.downstream_local_address = downstream_local_address
        self.protocol = protocol
        self.listener_name = listener_name

    def add_flag(self, flag: ResponseFlag) -> None:
        if self.response_flags is None:
            self.response_flags = {flag}
        else:
            self.response_flags.add(flag)

    def has_flag(self, flag: ResponseFlag) -> bool:
        return self.response_flags is not None and flag in self.response_flags

    @property
    def filter_state(self) -> dict[str, Any]:
        if self._filter_state is None:
            self._filter_state = {}
        return self._filter_state

    @property
    def dynamic_metadata(self) -> dict[str, dict[str, Any]]:
        if self._dynamic_metadata is None:
            self._dynamic_metadata = {}
        return self._dynamic_metadata

    def flags_string(self) -> str:
        if not self.response_flags:
            return "-"
        return ",".join(sorted(flag.value for flag in self.response_flags))


@dataclass(frozen=True, slots=True)
class HttpCallResult:
    """The outcome of ``dispatch_http_call``: a full response, or ``failure`` (e.g. ``"reset"``, ``"timeout"``)."""

    headers: HeaderMap | None
    body: bytes
    trailers: HeaderMap | None
    failure: str = ""


HttpCallCallback = Callable[[HttpCallResult], None]


class FilterCallbacks(Protocol):
    """What a filter may ask of its stream. One instance per filter per stream."""

    @property
    def stream_info(self) -> StreamInfo: ...

    @property
    def buffer_limit(self) -> int:
        """Bytes a filter may hold per direction (the listener's ``per_connection_buffer_limit_bytes``)."""
        ...

    @property
    def request_headers(self) -> HeaderMap | None: ...

    @property
    def request_trailers(self) -> HeaderMap | None: ...

    @property
    def response_headers(self) -> HeaderMap | None: ...

    @property
    def response_trailers(self) -> HeaderMap | None: ...

    def route(self) -> Route | None:
        """The route for the current request headers (cached until ``clear_route_cache``)."""
        ...

    def clear_route_cache(self) -> None: ...

    def continue_decoding(self) -> None:
        """Resume request iteration after this filter returned a Stop status."""
        ...

    def continue_encoding(self) -> None:
        """Resume response iteration after this filter returned a Stop status."""
        ...

    def send_local_reply(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[Pair] = (),
        details: str = "",
        grpc_status: int | None = None,
    ) -> None:
        """Answer the request from the proxy; the reply runs through the encoder filters."""
        ...

    def reset_stream(self, reason: str = "filter_reset") -> None:
        """Abort the stream: the client sees a reset (HTTP/1: the connection closes)."""
        ...

    def decoding_buffer(self) -> Buffer | None:
        """The request body buffered so far by this chain (None when nothing is buffered)."""
        ...

    def encoding_buffer(self) -> Buffer | None: ...

    def add_decoded_data(self, data: bytes) -> None:
        """Append to the buffered request body (as if it had been buffered by a Stop status)."""
        ...

    def add_encoded_data(self, data: bytes) -> None: ...

    def add_decoded_trailers(self) -> HeaderMap:
        """Create request trailers; only valid in the last ``decode_data`` with end_stream."""
        ...

    def add_encoded_trailers(self) -> HeaderMap: ...

    def dispatch_http_call(
        self,
        cluster: str,
        headers: Iterable[Pair],
        body: bytes,
        trailers: Iterable[Pair],
        timeout: float,
        on_result: HttpCallCallback,
    ) -> int:
        """Send a request to ``cluster``; ``on_result`` runs later, through the stream's event loop.

        Returns a positive token, or raises ``UnknownClusterError``.
        """
        ...

    def cancel_http_call(self, token: int) -> None: ...


class UnknownClusterError(LookupError):
    """An HTTP callout named a cluster the current configuration does not define."""


class HttpFilter:
    """Base class: every callback passes through. Override what you need.

    ``decodes``/``encodes`` let a filter opt out of a direction entirely, which
    keeps it off that direction's hot path.
    """

    decodes: bool = True
    encodes: bool = True

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        return HeadersStatus.Continue

    def decode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        return DataStatus.Continue

    def decode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        return TrailersStatus.Continue

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        return HeadersStatus.Continue

    def encode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        return DataStatus.Continue

    def encode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        return TrailersStatus.Continue

    def on_stream_complete(self) -> None:
        """Both directions are done (or the stream was reset); runs before ``on_log``."""

    def on_log(self) -> None:
        """Access-log time: headers, trailers and stream info are final and readable."""

    def on_destroy(self) -> None:
        """Last call; release per-stream resources (upstream requests, plugin contexts)."""
