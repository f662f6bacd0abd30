"""``istio.metadata_exchange``: Istio's HTTP peer metadata exchange (``io.istio.http.peer_metadata.Config``).

The client sidecar (``upstream_propagation``) adds ``x-envoy-peer-metadata`` and
``-id`` describing itself to the request; the server sidecar (``downstream_discovery``)
reads and strips them, keeps the peer in filter state ``wasm.downstream_peer``, and
(``downstream_propagation``) answers with its own headers on the response; the client
(``upstream_discovery``) reads and strips those into ``wasm.upstream_peer``. The
``istio.stats`` filter and Wasm plugins read the peer from filter state at log time.

Only the ``istio_headers`` method exists here; ``workload_discovery`` and ``baggage`` need
services this sidecar does not have and are refused with the field path.
"""

from __future__ import annotations

from typing import Any

from ..telemetry import (
    PEER_ID_HEADER,
    PEER_METADATA_CONFIG_TYPE,
    PEER_METADATA_HEADER,
    decode_peer_header,
    encode_peer_header,
    shared_metadata,
)
from ._errors import ConfigError
from ._filter_api import FilterCallbacks, HeadersStatus, HttpFilter
from ._filter_registry import FilterBuildContext, register_http_filter
from ._headers import HeaderMap

DOWNSTREAM_PEER = "wasm.downstream_peer"
DOWNSTREAM_PEER_ID = "wasm.downstream_peer_id"
UPSTREAM_PEER = "wasm.upstream_peer"
UPSTREAM_PEER_ID = "wasm.upstream_peer_id"


def _istio_headers_only(methods: Any, path: str) -> bool:
    """True when ``methods`` asks for the istio_headers method; refuses the others."""
    wanted = False
    for index, method in enumerate(methods):
        which = method.WhichOneof("method_specifier")
        if which != "istio_headers":
            raise ConfigError(f"{path}[{index}].{which or 'method_specifier'}",
                              "only the istio_headers method is supported by the wasmesh sidecar")
        wanted = True
    return wanted


class PeerMetadataFilter(HttpFilter):
    """Per stream: strip-and-read the peer's headers, add ours."""

    __slots__ = ("callbacks", "config", "saw_peer")

    def __init__(self, callbacks: FilterCallbacks, config: _PeerConfig) -> None:
        self.callbacks = callbacks
        self.config = config
        self.saw_peer = False

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        config = self.config
        if config.downstream_discovery:
            value, peer_id = headers.get(PEER_METADATA_HEADER), headers.get(PEER_ID_HEADER)
            if value is not None or peer_id is not None:
                headers.remove(PEER_METADATA_HEADER)
                headers.remove(PEER_ID_HEADER)
                self.saw_peer = True
                peer = decode_peer_header(value, peer_id)
                if peer is not None:
                    state = self.callbacks.stream_info.filter_state
                    state[DOWNSTREAM_PEER] = peer
                    state[DOWNSTREAM_PEER_ID] = peer.node_id
        if config.upstream_propagation:
            headers.set(PEER_METADATA_HEADER, config.own_value)
            headers.set(PEER_ID_HEADER, config.own_id)
        return HeadersStatus.Continue

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        config = self.config
        if config.upstream_discovery:
            value, peer_id = headers.get(PEER_METADATA_HEADER), headers.get(PEER_ID_HEADER)
            if value is not None or peer_id is not None:
                headers.remove(PEER_METADATA_HEADER)
                headers.remove(PEER_ID_HEADER)
                peer = decode_peer_header(value, peer_id)
                if peer is not None:
                    state = self.callbacks.stream_info.filter_state
                    state[UPSTREAM_PEER] = peer
                    state[UPSTREAM_PEER_ID] = peer.node_id
        if config.downstream_propagation and self.saw_peer:
            # only a mesh peer (one that sent its own metadata) learns about this workload
            headers.set(PEER_METADATA_HEADER, config.own_value)
            headers.set(PEER_ID_HEADER, config.own_id)
        return HeadersStatus.Continue


class _PeerConfig:
    __slots__ = ("downstream_discovery", "upstream_discovery", "downstream_propagation",
                 "upstream_propagation", "own_value", "own_id")

    def __init__(self, config: Any, context: FilterBuildContext) -> None:
        self.downstream_discovery = _istio_headers_only(config.downstream_discovery, "downstream_discovery")
        self.upstream_discovery = _istio_headers_only(config.upstream_discovery, "upstream_discovery")
        self.downstream_propagation = _istio_headers_only(config.downstream_propagation, "downstream_propagation")
        self.upstream_propagation = _istio_headers_only(config.upstream_propagation, "upstream_propagation")
        node = context.node
        self.own_value = encode_peer_header(shared_metadata(node))
        self.own_id = (node.id if node is not None else "").encode()


def build_peer_metadata(config: Any, context: FilterBuildContext) -> Any:
    settings = _PeerConfig(config, context)

    def create(callbacks: FilterCallbacks) -> HttpFilter:
        return PeerMetadataFilter(callbacks, settings)

    create.filter_class = PeerMetadataFilter  # type: ignore[attr-defined]
    return create


register_http_filter(PEER_METADATA_CONFIG_TYPE, build_peer_metadata)
