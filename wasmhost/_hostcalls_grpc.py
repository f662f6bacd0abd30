"""The upstream a plugin names in ``proxy_grpc_call`` / ``proxy_grpc_stream``, as Envoy reads it.

Envoy's rule (``Context::grpcCall``): bytes that parse as a serialized
``envoy.config.core.v3.GrpcService`` are a service; anything else is a cluster name, and an
unknown name answers PARSE_FAILURE. Of a service, Envoy's gRPC async client honours
``envoy_grpc.cluster_name``, ``envoy_grpc.authority`` (the ``:authority`` sent instead of the
cluster name) and ``initial_metadata`` (set on the request before the plugin's own metadata).
``GrpcService.timeout`` is not read on this path: only the call's own timeout argument bounds
a call, whether or not the service has one. A service naming a cluster that does not exist
is accepted by the parser but fails to start: the dispatch answers INTERNAL_FAILURE and the
plugin still gets ``on_grpc_close(UNAVAILABLE, "Cluster not available")`` once its callback
returns.

A stream's token outlives the stream as in Envoy: the remote close releases it only if the
plugin had half-closed it (``proxy_grpc_close``); otherwise one later cancel or close still
answers OK (and a send OK, sending nothing). Such finished tokens no longer count as pending.

Refused with BAD_ARGUMENT and a logged reason (never a crash): ``google_grpc`` services (Envoy's
Google C++ client talks to its target directly, bypassing clusters; this host has no such
client) and metadata this host cannot send verbatim
(pseudo-headers, ``host``, ``%`` substitution formatters, bytes not allowed in a header).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._abi import Pairs
from ._commands import DispatchGrpcCall

if TYPE_CHECKING:
    from ._context import RootContext
    from ._vm import WasmVM

_LOGGER = logging.getLogger("wasmhost.grpc")
#: the text Envoy's async client closes with when a service names a cluster it does not know
CLUSTER_NOT_AVAILABLE = b"Cluster not available"
_FORBIDDEN_VALUE_BYTES = frozenset(b"\r\n\x00")


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """A resolved upstream: the cluster, the ``:authority`` to send ('' = the cluster name), extra metadata."""

    cluster: str
    authority: str = ""
    metadata: tuple[tuple[bytes, bytes], ...] = ()
    #: a service naming an unknown cluster: the call starts and fails at once, as in Envoy
    cluster_missing: bool = False


@dataclass(frozen=True, slots=True)
class GrpcTargetError:
    """Why the upstream cannot be used; ``status`` is the proxy-wasm result to answer."""

    status: Literal["parse_failure", "bad_argument"]
    reason: str


@dataclass(slots=True)
class DispatchGrpcServiceCall(DispatchGrpcCall):
    """A gRPC call or stream whose plugin named a GrpcService: its ``:authority`` and service-wide metadata."""

    authority: str
    service_metadata: Pairs


def resolve_grpc_target(upstream: bytes, has_cluster: Callable[[str], bool]) -> GrpcTarget | GrpcTargetError:
    """Read ``upstream`` as Envoy does: a serialized GrpcService first, else a cluster name."""
    service = _parse_service(upstream)
    if service is None or not service.HasField("target_specifier"):
        # not a service; bytes that parse but name no target (Envoy would crash) read as a name too
        name = upstream.decode("utf-8", "replace")
        if has_cluster(name):
            return GrpcTarget(name)
        return GrpcTargetError("parse_failure", f"unknown cluster {name!r}")
    if service.HasField("google_grpc"):
        return GrpcTargetError(
            "bad_argument", "GrpcService.google_grpc is not supported by this host (use envoy_grpc and a cluster)"
        )
    metadata: list[tuple[bytes, bytes]] = []
    for index, header in enumerate(service.initial_metadata):
        checked = _checked_metadata(header.key, header.value.encode())  # Envoy ignores raw_value here
        if isinstance(checked, str):
            return GrpcTargetError("bad_argument", f"GrpcService.initial_metadata[{index}]: {checked}")
        metadata.append(checked)
    envoy_grpc = service.envoy_grpc
    cluster = envoy_grpc.cluster_name
    return GrpcTarget(cluster, envoy_grpc.authority, tuple(metadata), cluster_missing=not has_cluster(cluster))


def _parse_service(upstream: bytes) -> Any | None:
    from envoy.config.core.v3 import grpc_service_pb2
    from google.protobuf.message import DecodeError

    service = grpc_service_pb2.GrpcService()
    try:
        service.ParseFromString(upstream)
    except (DecodeError, ValueError, RecursionError):
        return None
    return service


def _checked_metadata(key: str, value: bytes) -> tuple[bytes, bytes] | str:
    """One ``initial_metadata`` entry as a header, or why this host will not send it."""
    name = key.lower().encode()
    if not name:
        return "empty key"
    if name.startswith(b":") or name == b"host":
        return f"key {key!r} would replace the request line"
    if any(c <= 0x20 or c >= 0x7F for c in name):
        return f"key {key!r} is not a valid header name"
    if b"%" in value:
        return "substitution formatters (%...%) in values are not supported"
    if not name.endswith(b"-bin") and any(c in _FORBIDDEN_VALUE_BYTES for c in value):
        return "value holds CR, LF or NUL"  # binary values go out base64-encoded
    return name, value


def log_refusal(plugin: str, error: GrpcTargetError) -> None:
    """The dispatch was refused: say why in the proxy's log (the plugin only sees a status)."""
    _LOGGER.warning("plugin %r: gRPC callout refused: %s", plugin, error.reason)


# -- stream token lifetime ---------------------------------------------------------------------------

@dataclass(slots=True)
class _StreamEnds:
    """Per VM, by (root context id, token): live streams the plugin half-closed, and finished
    streams it never closed (oldest first), which still answer one cancel/close with OK."""

    half_closed: set[tuple[int, int]]
    finished: dict[tuple[int, int], None]


_stream_ends: weakref.WeakKeyDictionary[WasmVM, _StreamEnds] = weakref.WeakKeyDictionary()


def _ends(root: RootContext) -> _StreamEnds:
    ends = _stream_ends.get(root.vm)
    if ends is None:
        ends = _stream_ends[root.vm] = _StreamEnds(set(), {})
    return ends


def note_half_close(root: RootContext, token: int) -> None:
    """The plugin half-closed a live stream (``proxy_grpc_close``)."""
    _ends(root).half_closed.add((root.id, token))


def forget_stream(root: RootContext, token: int) -> None:
    """The plugin cancelled a live stream."""
    _ends(root).half_closed.discard((root.id, token))


def end_stream(root: RootContext, token: int, keep: int) -> None:
    """After ``on_grpc_close``: release the token; remember it as finished unless it was half-closed.

    At most ``keep`` finished tokens are remembered per VM (the oldest are forgotten): Envoy keeps
    them until the plugin closes them, which SDKs rarely do, and they must not pile up here.
    """
    root.grpc_calls.pop(token, None)
    ends = _ends(root)
    key = (root.id, token)
    if key in ends.half_closed:
        ends.half_closed.discard(key)
        return
    ends.finished[key] = None
    while len(ends.finished) > keep:
        del ends.finished[next(iter(ends.finished))]


def is_finished_stream(root: RootContext, token: int) -> bool:
    """Whether ``token`` is a finished stream the plugin has not closed yet."""
    return (root.id, token) in _ends(root).finished


def take_finished_stream(root: RootContext, token: int) -> bool:
    """Cancel/close of a finished stream: True (once) when it was still remembered."""
    finished = _ends(root).finished
    if (root.id, token) not in finished:
        return False
    del finished[(root.id, token)]
    return True
