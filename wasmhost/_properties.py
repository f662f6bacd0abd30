"""Properties: the attribute catalogue (reference §3) and Envoy's value encodings.

A path arrives as components joined by NUL (a trailing NUL is accepted). The first
component names a top-level attribute; later ones index into maps, messages or lists.
Values are encoded as Envoy's ``serializeValue`` does: strings raw, ints as 8-byte
little-endian, bools as one byte, timestamps/durations as int64 nanoseconds, maps as
pairs, lists as pairs with empty values, and the node as protobuf wire bytes.

Values a plugin sets with ``proxy_set_property`` live in the stream's (or root's) filter
state under the raw path, and are read back as Envoy does: only when no attribute of the
catalogue answers the path, and only for a one-component path (Envoy looks up filter state
by the first component, so a value set under ``a\0b`` cannot be read back).

Envoy 1.40 serves configuration attributes only under ``xds.*``: the old top-level names
``cluster_name``, ``route_name``, ``listener_direction`` and ``request_protocol`` are
NOT_FOUND there, and so here. The node is a protobuf message, so every field of
``xds.node`` exists (strings empty, maps empty) even when the proxy did not set it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._abi import Status, encode_list, encode_pairs
from ._context import HttpContext, RootContext, StreamInfo, TcpContext
from ._registry import hostcall

if TYPE_CHECKING:
    from ._vm import WasmVM

OK = int(Status.OK)
NOT_FOUND = int(Status.NOT_FOUND)
INVALID_MEMORY_ACCESS = int(Status.INVALID_MEMORY_ACCESS)
SERIALIZATION_FAILURE = int(Status.SERIALIZATION_FAILURE)


#: an empty map or list property: a pairs blob with count 0 (Envoy 1.40), not zero bytes
_EMPTY_PAIRS = b"\x00\x00\x00\x00"


class Int(int):
    """A signed 64-bit attribute (encoded as 8 bytes LE)."""


class Duration(int):
    """A duration attribute in nanoseconds."""


class Timestamp(int):
    """A timestamp attribute in nanoseconds since the epoch."""


def encode_value(value: Any, *, struct_numbers: bool = False) -> bytes:
    """Serialize one attribute value the way Envoy does."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        if struct_numbers:
            return struct.pack("<d", float(value))
        if value < 0:
            return struct.pack("<q", value)
        return struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, dict):
        if not value:
            return _EMPTY_PAIRS
        return encode_pairs(
            [(str(k).encode(), encode_value(v, struct_numbers=struct_numbers)) for k, v in value.items()]
        )
    if isinstance(value, list | tuple):
        if not value:
            return _EMPTY_PAIRS
        return encode_list([encode_value(v, struct_numbers=struct_numbers) for v in value])
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _header(headers: list[tuple[bytes, bytes]] | None, name: bytes) -> bytes | None:
    if not headers:
        return None
    values = [v for k, v in headers if k == name]
    return b",".join(values) if values else None


def _header_map(headers: list[tuple[bytes, bytes]] | None) -> dict[str, bytes] | None:
    if headers is None:
        return None
    merged: dict[str, bytes] = {}
    for k, v in headers:
        key = k.decode("latin-1")
        merged[key] = merged[key] + b"," + v if key in merged else v
    return merged


def _headers_bytes(headers: list[tuple[bytes, bytes]] | None) -> Int | None:
    if headers is None:
        return None
    return Int(sum(len(k) + len(v) for k, v in headers))


def _path(ctx: HttpContext) -> bytes:
    return _header(ctx.request_headers, b":path") or b""


def _query(ctx: HttpContext) -> bytes:
    path = _path(ctx)
    return path.split(b"?", 1)[1] if b"?" in path else b""


# request.<field> → how to read it (one table, built once: property reads are on the request path)
_REQUEST_FIELDS: dict[str, Callable[[HttpContext], Any]] = {
    "path": _path,
    "url_path": lambda ctx: _path(ctx).split(b"?", 1)[0],
    "host": lambda ctx: _header(ctx.request_headers, b":authority") or _header(ctx.request_headers, b"host"),
    "scheme": lambda ctx: _header(ctx.request_headers, b":scheme") or ctx.info.scheme,
    "method": lambda ctx: _header(ctx.request_headers, b":method"),
    "headers": lambda ctx: _header_map(ctx.request_headers),
    "headers_bytes": lambda ctx: _headers_bytes(ctx.request_headers),
    "referer": lambda ctx: _header(ctx.request_headers, b"referer"),
    "useragent": lambda ctx: _header(ctx.request_headers, b"user-agent"),
    "time": lambda ctx: Timestamp(ctx.info.start_time_ns) if ctx.info.start_time_ns else None,
    "id": lambda ctx: _header(ctx.request_headers, b"x-request-id"),
    "protocol": lambda ctx: ctx.info.protocol,
    "query": _query,
    "size": lambda ctx: _size(ctx.request_headers, ctx.request_body_size),
    "total_size": lambda ctx: Int(ctx.request_body_size + (_headers_bytes(ctx.request_headers) or 0)),
    "duration": lambda ctx: ctx.info.extra.get("request.duration"),
}


def _request(ctx: HttpContext, field: str) -> Any:
    getter = _REQUEST_FIELDS.get(field)
    return getter(ctx) if getter is not None else None


def _size(headers: list[tuple[bytes, bytes]] | None, seen: int) -> Int:
    length = _header(headers, b"content-length")
    if length is not None and length.isdigit():
        return Int(int(length))
    return Int(seen)


def _response(ctx: HttpContext, field: str) -> Any:
    headers = ctx.response_headers
    info = ctx.info
    if field == "code":
        status = _header(headers, b":status")
        return Int(int(status)) if status and status.isdigit() else None
    if field == "code_details":
        return info.response_code_details or None
    if field == "flags":
        return Int(info.response_flags)
    if field == "grpc_status":
        value = _header(headers, b"grpc-status") or _header(ctx.response_trailers, b"grpc-status")
        return Int(int(value)) if value and value.isdigit() else None
    if field == "headers":
        return _header_map(headers)
    if field == "trailers":
        return _header_map(ctx.response_trailers)
    if field == "headers_bytes":
        return _headers_bytes(headers)
    if field == "size":
        return Int(ctx.response_body_size)
    if field == "total_size":
        return Int(ctx.response_body_size + (_headers_bytes(headers) or 0))
    if field == "backend_latency":
        return info.extra.get("response.backend_latency")
    return None


def _connection(info: StreamInfo, field: str) -> Any:
    values: dict[str, Any] = {
        "id": info.connection_id,
        "mtls": info.mtls,
        "requested_server_name": info.requested_server_name,
        "tls_version": info.tls_version or None,
        "uri_san_peer_certificate": info.peer_principal or None,
        "uri_san_local_certificate": info.local_principal or None,
        "termination_details": info.extra.get("connection.termination_details"),
    }
    if field in values:
        return values[field]
    return info.extra.get(f"connection.{field}")


#: envoy.config.core.v3.Node fields and the value an unset one reads as
_NODE_DEFAULTS: dict[str, Any] = {
    "id": "",
    "cluster": "",
    "metadata": {},
    "dynamic_parameters": {},
    "user_agent_name": "",
    "user_agent_version": "",
    "extensions": [],
    "client_features": [],
    "listening_addresses": [],
}


def _node(vm: WasmVM) -> _Node:
    node = _Node(_NODE_DEFAULTS)
    node.update(vm.environment.node_properties())
    return node


def _xds(vm: WasmVM, info: StreamInfo | None, field: str) -> Any:
    if field == "node":
        return _node(vm)
    if info is None:
        return None
    values: dict[str, Any] = {
        "cluster_name": info.cluster_name,
        "route_name": info.route_name,
        "virtual_host_name": info.virtual_host_name,
        "listener_direction": Int(info.listener_direction),
    }
    if field in values:
        return values[field]
    extra = info.extra.get(f"xds.{field}")
    if extra is None and field in ("filter_chain_name", "listener_metadata", "cluster_metadata", "route_metadata"):
        return b""  # present in Envoy (an unnamed chain, an empty Metadata message)
    return extra


class _Node(dict[str, Any]):
    """The proxy's node: indexable like a map, serialized whole as envoy.config.core.v3.Node."""


def _encode_node(node: _Node) -> bytes | None:
    try:
        from envoy.config.core.v3 import base_pb2
        from google.protobuf import json_format

        message = base_pb2.Node()
        given = {k: v for k, v in node.items() if not (k in _NODE_DEFAULTS and v == _NODE_DEFAULTS[k])}
        json_format.ParseDict(given, message, ignore_unknown_fields=True)
        return bytes(message.SerializeToString())
    except Exception:  # noqa: BLE001 - a node that does not fit the proto cannot be serialized
        return None


def resolve(vm: WasmVM, ctx: RootContext | HttpContext | TcpContext | None, parts: list[str]) -> Any:
    """The value at ``parts`` for this context, or None when it does not exist."""
    if not parts:
        return None
    head, rest = parts[0], parts[1:]
    root = ctx.root if ctx is not None else None
    spec = root.spec if root is not None else vm.log_spec
    info = ctx.info if isinstance(ctx, HttpContext | TcpContext) else None
    value: Any = None
    consumed = 1
    if head == "plugin_name" and spec is not None:
        value = spec.name
    elif head == "plugin_root_id" and spec is not None:
        value = spec.root_id
    elif head == "plugin_vm_id":
        value = vm.vm_id
    elif head in ("connection_id",) and info is not None:
        value = info.connection_id
    elif head == "request" and isinstance(ctx, HttpContext) and rest:
        value, consumed = _request(ctx, rest[0]), 2
    elif head == "response" and isinstance(ctx, HttpContext) and rest:
        value, consumed = _response(ctx, rest[0]), 2
    elif head in ("source", "destination", "upstream") and info is not None and rest:
        consumed = 2
        value = _address(info, head, rest[0])
    elif head == "connection" and info is not None and rest:
        value, consumed = _connection(info, rest[0]), 2
    elif head == "xds" and rest:
        value, consumed = _xds(vm, info, rest[0]), 2
    elif head == "node":
        value = _node(vm)
    if value is None and info is not None:
        value = info.extra.get(".".join(parts))
        consumed = len(parts)
    if value is None:
        return None
    for part in parts[consumed:]:
        if isinstance(value, dict):
            if part not in value:
                return None
            value = value[part]
        elif isinstance(value, list | tuple):
            if not part.isdigit() or int(part) >= len(value):
                return None
            value = value[int(part)]
        else:
            return None
    return value


def _address(info: StreamInfo, side: str, field: str) -> Any:
    if side == "source":
        host, port = info.source_address, info.source_port
    elif side == "destination":
        host, port = info.destination_address, info.destination_port
    else:
        host, port = info.upstream_address, info.upstream_port
        if field == "request_attempt_count":
            return info.extra.get("upstream.request_attempt_count")
    if not host:
        return info.extra.get(f"{side}.{field}")
    if field == "address":
        return f"{host}:{port}" if port else host
    if field == "port":
        return Int(port)
    return info.extra.get(f"{side}.{field}")


def _split(raw: bytes) -> list[str]:
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [p.decode("utf-8", "replace") for p in raw.split(b"\0")] if raw else []


_REQUEST_PATHS = {f"request\0{name}".encode(): getter for name, getter in _REQUEST_FIELDS.items()}
_REQUEST_PATHS.update({key + b"\0": getter for key, getter in list(_REQUEST_PATHS.items())})


@hostcall("proxy_get_property", "iiii")
def get_property(vm: WasmVM, path_ptr: int, path_len: int, ret_ptr: int, ret_size: int) -> int:
    raw = vm.memory.read(path_ptr, path_len)
    if raw is None:
        return INVALID_MEMORY_ACCESS
    ctx = vm.effective or vm.current
    getter = _REQUEST_PATHS.get(raw)
    if getter is not None and isinstance(ctx, HttpContext):
        value = getter(ctx)
        if value is not None:
            return vm.return_bytes(value if isinstance(value, bytes) else encode_value(value), ret_ptr, ret_size)
    key = raw[:-1] if raw.endswith(b"\0") else raw
    parts = _split(raw)
    value = resolve(vm, ctx, parts)
    if value is None:
        if ctx is not None and b"\0" not in key:
            for state in (ctx.filter_state, ctx.root.filter_state):
                if key in state:
                    return vm.return_bytes(state[key], ret_ptr, ret_size)
        return NOT_FOUND
    if isinstance(value, _Node):
        encoded = _encode_node(value)
        if encoded is None:
            return SERIALIZATION_FAILURE
        return vm.return_bytes(encoded, ret_ptr, ret_size)
    struct_numbers = parts[:1] == ["node"] or parts[:2] == ["xds", "node"]
    try:
        data = encode_value(value, struct_numbers=struct_numbers)
    except TypeError:
        return SERIALIZATION_FAILURE
    return vm.return_bytes(data, ret_ptr, ret_size)


@hostcall("proxy_set_property", "iiii")
def set_property(vm: WasmVM, path_ptr: int, path_len: int, val_ptr: int, val_len: int) -> int:
    """Envoy keeps the bytes in filter state; we do too (per stream, or per root outside one)."""
    raw = vm.read(path_ptr, path_len)
    value = vm.read(val_ptr, val_len)
    if raw is None or value is None:
        return INVALID_MEMORY_ACCESS
    ctx = vm.effective or vm.current
    if ctx is None:
        return OK  # never NOT_FOUND: Rust plugins panic on it
    key = raw[:-1] if raw.endswith(b"\0") else raw
    ctx.filter_state[key] = value
    return OK
