"""What ``wasmesh plugin run`` tells the host: captured logs, a virtual clock, callout
clusters, and the properties given with ``--property PATH=VALUE``.

Properties are served through the ordinary property catalogue, never beside it: a path
that names a :class:`StreamInfo` field (``source.address``, ``connection.mtls``,
``xds.route_name`` ...) sets that field with the type Envoy reports (ints as ints, bools
as bools), ``node.*`` / ``xds.node.*`` build the proxy's node, and every other path is
kept as a string in ``StreamInfo.extra``, which the catalogue consults for paths it has
no value for.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._abi import LogLevel
from ._context import StreamInfo
from ._environment import Environment

if TYPE_CHECKING:
    from ._plugin import PluginSpec


#: How the VM announces its own failure through the log channel (not a plugin line).
HOST_FAILURE_PREFIX = "VM failed: "


class PropertyError(ValueError):
    """A ``--property`` value does not fit the property's type."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One plugin log line (``proxy_log``, WASI stdout/stderr) or host warning about the module."""

    level: LogLevel
    message: str

    @property
    def level_name(self) -> str:
        """The proxy-wasm spelling: trace, debug, info, warn, error, critical."""
        return self.level.name.lower()


class RunEnvironment(Environment):
    """Records logs, answers clusters from a fixed set and runs a clock that ticks can move."""

    def __init__(
        self,
        *,
        log_level: LogLevel = LogLevel.TRACE,
        clusters: Iterable[str] = (),
        node: Mapping[str, Any] | None = None,
    ) -> None:
        self.log_level = log_level
        self.logs: list[LogRecord] = []
        self._clusters = frozenset(clusters)
        self._node = dict(node or {})
        self.clock_offset_ns = 0

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        if level == LogLevel.CRITICAL and message.startswith(HOST_FAILURE_PREFIX):
            return  # the host's own report of the failure; it is the run's ``trap``, as in Envoy
        self.logs.append(LogRecord(LogLevel(level), message))

    def has_cluster(self, name: str) -> bool:
        return name in self._clusters

    def now_ns(self) -> int:
        return time.time_ns() + self.clock_offset_ns

    def monotonic_ns(self) -> int:
        return time.monotonic_ns() + self.clock_offset_ns

    def node_properties(self) -> dict[str, object]:
        return dict(self._node)

    def advance(self, ms: int) -> None:
        """Move both clocks forward, as if ``ms`` milliseconds had passed."""
        self.clock_offset_ns += ms * 1_000_000


_ADDRESS_WITH_PORT = re.compile(r"^(.+):(\d{1,5})$")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

# property path -> (StreamInfo field, type)
_INFO_FIELDS: dict[str, tuple[str, type]] = {
    "source.port": ("source_port", int),
    "destination.port": ("destination_port", int),
    "upstream.port": ("upstream_port", int),
    "connection.id": ("connection_id", int),
    "connection_id": ("connection_id", int),
    "connection.mtls": ("mtls", bool),
    "connection.requested_server_name": ("requested_server_name", str),
    "connection.tls_version": ("tls_version", str),
    "connection.uri_san_peer_certificate": ("peer_principal", str),
    "connection.uri_san_local_certificate": ("local_principal", str),
    "request.protocol": ("protocol", str),
    "request.scheme": ("scheme", str),
    "request.time": ("start_time_ns", int),
    "response.code_details": ("response_code_details", str),
    "response.flags": ("response_flags", int),
    "xds.cluster_name": ("cluster_name", str),
    "xds.route_name": ("route_name", str),
    "xds.virtual_host_name": ("virtual_host_name", str),
    "xds.listener_direction": ("listener_direction", int),
}
_ADDRESSES = {
    "source.address": ("source_address", "source_port"),
    "destination.address": ("destination_address", "destination_port"),
    "upstream.address": ("upstream_address", "upstream_port"),
}


def _typed(path: str, value: object, kind: type) -> Any:
    """A value for a typed StreamInfo field; text (from a command line) is parsed."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        lowered = str(value).lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise PropertyError(f"property {path}: {value!r} is not a boolean (true/false)")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value), 0)
        except ValueError:
            raise PropertyError(f"property {path}: {value!r} is not an integer") from None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def apply_properties(properties: Mapping[str, object], info: StreamInfo) -> dict[str, Any]:
    """Set ``info`` from ``path -> value`` properties; returns the node they describe.

    Values may be text (parsed where the property is typed: ``"8080"``, ``"true"``) or
    Python ints, bools, bytes and strings. Raises PropertyError naming the bad one.
    """
    node: dict[str, Any] = {}
    for path, value in properties.items():
        if not path or path.startswith(".") or path.endswith(".") or ".." in path:
            raise PropertyError(f"property path {path!r} is not dot-separated components")
        node_path = path.removeprefix("xds.") if path.startswith("xds.node.") else path
        if node_path.startswith("node."):
            _set_nested(node, node_path.split(".")[1:], value)
        elif path in _ADDRESSES:
            host_field, port_field = _ADDRESSES[path]
            text = _typed(path, value, str)
            match = _ADDRESS_WITH_PORT.match(text)
            if match is not None:
                setattr(info, host_field, match.group(1))
                setattr(info, port_field, int(match.group(2)))
            else:
                setattr(info, host_field, text)
        elif path in _INFO_FIELDS:
            name, kind = _INFO_FIELDS[path]
            setattr(info, name, _typed(path, value, kind))
        elif isinstance(value, str | bytes | int | float):
            info.extra[path] = value
        else:
            raise PropertyError(f"property {path}: a {type(value).__name__} cannot be served as a property")
    return node


def _set_nested(target: dict[str, Any], parts: list[str], value: object) -> None:
    for part in parts[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise PropertyError(f"property node.{'.'.join(parts)} conflicts with a value set on {part!r}")
        target = child
    if isinstance(target.get(parts[-1]), dict):
        raise PropertyError(f"property node.{'.'.join(parts)} conflicts with a map set below it")
    target[parts[-1]] = value
