"""Envoy v3 protobuf types (from `xds-protos`): names, Any packing, dict conversion.

Generated configuration is written as dicts in Envoy's JSON shape and parsed into the real
message types here, so a typo fails loudly at generation time and EnvoyFilter patches (which
arrive as YAML) go through exactly the same parser. Types referenced by `@type` are imported
on first use, so any Envoy extension named in a patch is understood.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import any_pb2, json_format, message, symbol_database
from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
EXTENSION_CONFIG = TYPE_PREFIX + "envoy.config.core.v3.TypedExtensionConfig"
SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
HCM_TYPE = TYPE_PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WASM_HTTP_TYPE = TYPE_PREFIX + "envoy.extensions.filters.http.wasm.v3.Wasm"
WASM_NETWORK_TYPE = TYPE_PREFIX + "envoy.extensions.filters.network.wasm.v3.Wasm"
RBAC_HTTP_TYPE = TYPE_PREFIX + "envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_NETWORK_TYPE = TYPE_PREFIX + "envoy.extensions.filters.network.rbac.v3.RBAC"
TYPED_STRUCT_TYPES = (TYPE_PREFIX + "udpa.type.v1.TypedStruct", TYPE_PREFIX + "xds.type.v3.TypedStruct")
HCM_NAME = "envoy.filters.network.http_connection_manager"
ROUTER_NAME = "envoy.filters.http.router"

# Short names used by operators (`proxy-config listeners`) and in push status.
TYPE_SHORT_NAMES: dict[str, str] = {
    LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", EXTENSION_CONFIG: "ECDS", SECRET: "SDS",
}
RESOURCE_CLASSES: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    EXTENSION_CONFIG: extension_pb2.TypedExtensionConfig,
}
HttpConnectionManager = http_connection_manager_pb2.HttpConnectionManager


class ProtoError(ValueError):
    """A dict could not be turned into the Envoy type it claims to be."""


@cache
def _import_package(package: str) -> None:
    """Import every `_pb2` module of a proto package so its messages are in the pool."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def message_class(type_name: str) -> type[Message]:
    """The message class of a full proto name or type URL, importing its package when needed."""
    full_name = type_name.rsplit("/", 1)[-1]
    database = symbol_database.Default()
    try:
        return database.GetSymbol(full_name)
    except KeyError:
        _import_package(full_name.rsplit(".", 1)[0])
    try:
        return database.GetSymbol(full_name)
    except KeyError:
        raise ProtoError(f"unknown type {full_name!r}") from None


def _prepare(value: Any) -> Any:
    """Import every `@type` named inside `value` and unwrap TypedStruct into its real type."""
    if isinstance(value, Mapping):
        type_url = value.get("@type")
        if isinstance(type_url, str) and type_url in TYPED_STRUCT_TYPES:
            inner_url = str(value.get("type_url") or value.get("typeUrl") or "")
            message_class(inner_url)
            return {"@type": inner_url, **_prepare(dict(value.get("value") or {}))}
        if isinstance(type_url, str):
            message_class(type_url)
        return {key: _prepare(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_prepare(item) for item in value]
    return value


def from_dict(cls: type[Message], data: Mapping[str, Any]) -> Message:
    """Parse Envoy-JSON-shaped `data` (snake_case or camelCase) into `cls`."""
    try:
        return json_format.ParseDict(_prepare(data), cls())
    except (json_format.ParseError, ProtoError, TypeError, ValueError) as err:
        raise ProtoError(f"not a valid {cls.DESCRIPTOR.full_name}: {err}") from None


def to_dict(msg: Message) -> dict[str, Any]:
    """Envoy's JSON shape of a message (snake_case names, as `config_dump` prints)."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def pack(msg: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, type_url_prefix="type.googleapis.com/")
    return out


def unpack(value: any_pb2.Any) -> Message:
    msg = message_class(value.type_url)()
    if not value.Unpack(msg):
        raise ProtoError(f"cannot unpack {value.type_url}")
    return msg


def typed(type_url: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A `typed_config` dict: `{"@type": type_url, **data}`."""
    return {"@type": type_url, **data}


def digest(messages: list[Message]) -> str:
    """A short stable version string of a list of messages (deterministic serialization)."""
    hasher = hashlib.sha256()
    for msg in messages:
        hasher.update(msg.SerializeToString(deterministic=True))
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def resource_name(msg: Message) -> str:
    if isinstance(msg, endpoint_pb2.ClusterLoadAssignment):
        return str(msg.cluster_name)
    return str(msg.name)


__all__ = [
    "CLUSTER", "ENDPOINT", "EXTENSION_CONFIG", "HCM_NAME", "HCM_TYPE", "LISTENER", "RBAC_HTTP_TYPE",
    "RESOURCE_CLASSES", "ROUTE", "ROUTER_NAME", "TYPE_SHORT_NAMES", "WASM_HTTP_TYPE", "WASM_NETWORK_TYPE",
    "HttpConnectionManager", "ProtoError", "digest", "from_dict", "message", "message_class", "pack",
    "resource_name", "to_dict", "typed", "unpack",
]


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration(text: Any) -> str:
    """An Istio duration ("1h30m", "0.5s", "100ms") in protobuf JSON form ("5400s", "0.100s")."""
    import re as _re

    raw = str(text).strip()
    parts = _re.findall(r"([0-9]+(?:\.[0-9]+)?)(h|ms|us|µs|ns|m|s)", raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise ProtoError(f"invalid duration {raw!r}")
    seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
