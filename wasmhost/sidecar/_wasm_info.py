"""The stream facts a Wasm plugin's properties read, taken live from the filter chain's ``StreamInfo``.

The proxy-wasm core answers ``source.address``, ``connection.mtls``, ``xds.route_name`` ... from
an object with the attributes of ``wasmhost.StreamInfo``. Copying the chain's facts into one at
every callback cost more than most plugins' property reads; this view reads each fact when a
property asks for it, so it is always current (as Envoy's stream info is) and costs nothing for
a plugin that reads none.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, cast

from .. import StreamInfo as PluginStreamInfo
from ._filter_api import StreamInfo
from ._tracing import active_span_properties

_PEER_FACTS = ("subject_peer_certificate", "sha256_peer_certificate_digest")


def _half(pair: str, index: int) -> Any:
    """A property reading the address (0) or the port (1) of one of the chain's address pairs."""
    read = attrgetter(f"_source.{pair}")
    return property(lambda self: read(self)[index])


class ChainStreamInfo:
    """A read-only ``wasmhost.StreamInfo`` over one stream of the chain."""

    __slots__ = ("_source",)

    # facts the sidecar does not track: the core's defaults
    scheme = "http"
    listener_direction = 0
    local_principal = ""
    response_flags = 0

    def __init__(self, source: StreamInfo) -> None:
        self._source = source

    source_address = _half("downstream_remote_address", 0)
    source_port = _half("downstream_remote_address", 1)
    destination_address = _half("downstream_local_address", 0)
    destination_port = _half("downstream_local_address", 1)

    @property
    def start_time_ns(self) -> int:
        return int(self._source.start_time * 1e9)

    # facts kept under the same name: read straight through (attrgetter runs in C)
    connection_id = property(attrgetter("_source.connection_id"))
    protocol = property(attrgetter("_source.protocol"))
    route_name = property(attrgetter("_source.route_name"))
    cluster_name = property(attrgetter("_source.cluster_name"))
    virtual_host_name = property(attrgetter("_source.virtual_host_name"))
    response_code_details = property(attrgetter("_source.response_code_details"))

    @property
    def upstream_address(self) -> str:
        host = self._source.upstream_host
        return host[0] if host is not None else ""

    @property
    def upstream_port(self) -> int:
        host = self._source.upstream_host
        return host[1] if host is not None else 0

    # the connection's TLS facts: connection.* and Istio's source.principal
    def _tls(self, name: str) -> Any:
        tls = self._source.downstream_tls
        return tls.get(name) if tls is not None else None

    @property
    def mtls(self) -> bool:
        return bool(self._tls("peer_certificate_presented"))

    @property
    def tls_version(self) -> str:
        return self._tls("version") or ""

    @property
    def requested_server_name(self) -> str:
        return self._tls("sni") or ""

    @property
    def peer_principal(self) -> str:
        sans = self._tls("uri_san_peer_certificate")
        return sans[0] if sans else ""

    @property
    def extra(self) -> dict[str, Any]:
        """Facts named by their property path: the peer certificate's and the active span's."""
        source = self._source
        extra: dict[str, Any] = {}
        tls = source.downstream_tls
        if tls is not None:
            principal = self.peer_principal
            if principal:
                extra["source.principal"] = principal
            for name in _PEER_FACTS:
                if tls.get(name):
                    extra[f"connection.{name}"] = tls[name]
            if tls.get("dns_san_peer_certificate"):
                extra["connection.dns_san_peer_certificate"] = tls["dns_san_peer_certificate"][0]
        span = active_span_properties(source)
        if span is not None:
            extra.update(span)
        return extra


#: the view's constructor, typed as the core's stream facts (the view has every attribute the core reads)
plugin_stream_info = cast("Callable[[StreamInfo], PluginStreamInfo]", ChainStreamInfo)
