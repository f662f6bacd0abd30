"""The receiving end of one upstream request, as the I/O edge sees it.

The router's retry attempts, mirror (shadow) requests and filter callouts all
implement this interface; the edge's connection pools deliver events to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ._headers import HeaderMap

if TYPE_CHECKING:
    from ._cluster import Cluster, Host

# reasons for on_pool_failure / on_reset, with the wording Envoy uses in local replies
OVERFLOW = "overflow"
CONNECTION_FAILURE = "remote connection failure"
CONNECTION_TIMEOUT = "connection timeout"
CONNECTION_TERMINATION = "connection termination"
PROTOCOL_ERROR = "protocol error"
LOCAL_RESET = "local reset"


class UpstreamSink(Protocol):
    cluster: Cluster
    host: Host
    headers: HeaderMap  # request headers to send (pseudo-headers included)
    end_stream: bool  # True when the request has no body
    edge: Any  # slot the I/O edge uses to remember the connection (or the queue) serving this sink
    raw_request: bytes | None  # a request head already serialised (the fast lane's); None: from ``headers``

    def on_pool_ready(self, local_address: tuple[str, int] | None) -> None:
        """A connection is assigned; the request headers are being written."""
        ...

    def on_pool_failure(self, reason: str, transport_failure: str) -> None:
        """No connection could be had (``OVERFLOW``, ``CONNECTION_FAILURE``, ``CONNECTION_TIMEOUT``)."""
        ...

    def on_response_headers(self, headers: HeaderMap, end_stream: bool) -> None: ...

    def on_response_data(self, data: bytes, end_stream: bool) -> None: ...

    def on_response_trailers(self, trailers: HeaderMap) -> None: ...

    def on_reset(self, reason: str) -> None:
        """The upstream stream ended abnormally after the pool assigned a connection."""
        ...
