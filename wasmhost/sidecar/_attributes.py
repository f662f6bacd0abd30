"""Envoy's attribute names over one stream, for telemetry expressions (metric dimensions, span tags).

``StreamAttributes.lookup(("request", "headers", "x-id"))`` answers what CEL's
``request.headers['x-id']`` means in Envoy: request/response/source/destination/connection/
upstream/xds/node attributes, plus filter state (``filter_state['wasm.upstream_peer']`` and
the peers' fields as ``upstream_peer.workload`` ...). Absent values are None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from ._filter_api import StreamInfo
from ._headers import HeaderMap


def _header(headers: HeaderMap | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name.lower().encode("latin-1"))
    return value.decode("latin-1") if value is not None else None


def _path_only(path: str | None) -> str | None:
    return path.split("?", 1)[0] if path is not None else None


class StreamAttributes:
    """Attribute lookups for one stream (built at log time; cheap to create)."""

    __slots__ = ("info", "request", "response", "trailers", "node")

    def __init__(self, info: StreamInfo, request: HeaderMap | None, response: HeaderMap | None,
                 trailers: HeaderMap | None, node: Any) -> None:
        self.info = info
        self.request = request
        self.response = response
        self.trailers = trailers
        self.node = node

    def lookup(self, path: tuple[str, ...]) -> Any:
        if not path:
            return None
        handler = _ROOTS.get(path[0])
        return handler(self, path[1:]) if handler is not None else self._filter_state(path)

    def _filter_state(self, path: tuple[str, ...]) -> Any:
        state = self.info._filter_state
        if not state:
            return None
        name = path[0]
        if name in ("upstream_peer", "downstream_peer"):
            peer = state.get("wasm." + name)
            if peer is None or len(path) < 2:
                return None
            return _peer_field(peer, path[1:])
        return None


def _peer_field(peer: Any, rest: tuple[str, ...]) -> Any:
    field = rest[0]
    if field == "labels" and len(rest) == 2:
        return peer.labels.get(rest[1])
    return {"workload": peer.workload_name, "workload_name": peer.workload_name, "namespace": peer.namespace,
            "app": peer.app, "version": peer.version, "service": peer.canonical_service,
            "revision": peer.canonical_revision, "cluster": peer.cluster_id, "id": peer.node_id}.get(field)


def _request(a: StreamAttributes, rest: tuple[str, ...]) -> Any:
    if not rest:
        return None
    field, request = rest[0], a.request
    if field == "headers":
        return _header(request, rest[1]) if len(rest) == 2 else None
    simple = {"host": ":authority", "method": ":method", "path": ":path", "scheme": ":scheme",
              "id": "x-request-id", "useragent": "user-agent", "referer": "referer"}
    if field in simple:
        return _header(request, simple[field])
    if field == "url_path":
        return _path_only(_header(request, ":path"))
    if field == "protocol":
        return a.info.protocol
    if field == "size":
        return a.info.bytes_received
    if field == "total_size":
        return a.info.bytes_received + (request.byte_size() if request is not None else 0)
    if field == "duration" and a.info.last_downstream_tx_at is not None:
        return int((a.info.last_downstream_tx_at - a.info.start_monotonic) * 1000)
    return None


def _response(a: StreamAttributes, rest: tuple[str, ...]) -> Any:
    if not rest:
        return None
    field = rest[0]
    if field == "headers":
        return _header(a.response, rest[1]) if len(rest) == 2 else None
    if field == "trailers":
        return _header(a.trailers, rest[1]) if len(rest) == 2 else None
    if field == "code":
        return a.info.response_code
    if field == "code_details":
        return a.info.response_code_details
    if field == "flags":
        return a.info.flags_string()
    if field == "grpc_status":
        value = _header(a.trailers, "grpc-status") or _header(a.response, "grpc-status")
        return int(value) if value is not None and value.isdigit() else None
    if field == "size":
        return a.info.bytes_sent
    if field == "total_size":
        return a.info.bytes_sent + (a.response.byte_size() if a.response is not None else 0)
    return None


def _address(value: tuple[str, int] | None, rest: tuple[str, ...]) -> Any:
    if value is None or not rest:
        return None
    if rest[0] == "address":
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if rest[0] == "port":
        return value[1]
    return None


def _connection(a: StreamAttributes, rest: tuple[str, ...]) -> Any:
    if not rest:
        return None
    tls = a.info.downstream_tls
    field = rest[0]
    if field == "mtls":
        return bool(tls and tls.get("peer_certificate_presented"))
    if field == "id":
        return a.info.connection_id
    if tls is None:
        return None
    if field in ("uri_san_peer_certificate", "dns_san_peer_certificate"):
        sans = tls.get(field) or []
        return sans[0] if sans else None
    if field in ("subject_peer_certificate", "sha256_peer_certificate_digest"):
        return tls.get(field) or None
    if field in ("tls_version", "requested_server_name"):
        return tls.get("version" if field == "tls_version" else "sni")
    return None


def _source_principal(a: StreamAttributes) -> Any:
    """Istio's ``source.principal``: the peer certificate's first URI SAN (its SPIFFE id) on mTLS."""
    tls = a.info.downstream_tls
    sans = (tls.get("uri_san_peer_certificate") or []) if tls and tls.get("peer_certificate_presented") else []
    return sans[0] if sans else None


def _xds(a: StreamAttributes, rest: tuple[str, ...]) -> Any:
    if not rest:
        return None
    return {"cluster_name": a.info.cluster_name, "route_name": a.info.route_name,
            "listener_name": a.info.listener_name, "virtual_host_name": a.info.virtual_host_name}.get(rest[0])


def _node(a: StreamAttributes, rest: tuple[str, ...]) -> Any:
    node = a.node
    if node is None or not rest:
        return None
    if rest[0] == "id":
        return node.id
    if rest[0] == "cluster":
        return node.cluster
    if rest[0] == "metadata" and len(rest) == 2 and node.HasField("metadata"):
        value = json_format.MessageToDict(node.metadata).get(rest[1])
        return value if isinstance(value, str | int | float | bool) else None
    return None


_ROOTS: dict[str, Callable[[StreamAttributes, tuple[str, ...]], Any]] = {
    "request": _request,
    "response": _response,
    "source": lambda a, rest: _source_principal(a) if rest == ("principal",)
    else _address(a.info.downstream_remote_address, rest),
    "destination": lambda a, rest: _address(a.info.downstream_local_address, rest),
    "upstream": lambda a, rest: _address(a.info.upstream_host, rest),
    "connection": _connection,
    "xds": _xds,
    "node": _node,
}
