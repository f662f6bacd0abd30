"""``envoy.filters.http.ext_authz`` (HTTP service): asks an authorization server before routing.

Istio's CUSTOM AuthorizationPolicy becomes a shadow RBAC filter that marks matching requests in
dynamic metadata, then this filter with ``filter_enabled_metadata`` reading that mark, so only
marked requests are checked. The check is an HTTP callout to ``server_uri.cluster`` with the
request's method, ``path_prefix`` + path, the allowed headers and no body. As in Envoy's HTTP
client: a 200 continues (the allowed upstream headers from the answer are set on the request); a
5xx, a reset or a timeout is an error (``status_on_error``, 403 by default, unless
``failure_mode_allow``); any other status is a denial answered with the server's status, body and
allowed client headers. The gRPC service (``envoy_grpc``) sends ``envoy.service.auth.v3``
``CheckRequest`` as a unary call over the cluster (HTTP/2); an OK status continues with the
``ok_response`` header changes, a ``denied_response`` is answered as given (403 by default), and a
failed call is an error. ``with_request_body`` buffers the body (up to ``max_request_bytes``; more
is a 413 unless ``allow_partial_message``) and sends it with the check.

Counters as Envoy's filter keeps them under the connection manager's prefix,
``http.<stat_prefix>.ext_authz.[<filter stat_prefix>.]``: ``ok``, ``denied``, ``error`` and, for
an error let through, ``failure_mode_allowed`` as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as _ext_authz_pb2  # noqa: F401  (message types)
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf.message import DecodeError

from ._buffer import Buffer
from ._errors import ConfigError
from ._filter_api import (
    DataStatus,
    FilterCallbacks,
    HeadersStatus,
    HttpCallResult,
    HttpFilter,
    ResponseFlag,
    StreamInfo,
    TrailersStatus,
    UnknownClusterError,
)
from ._filter_registry import FilterBuildContext, register_http_filter
from ._headers import HeaderMap, Pair
from ._rbac import compile_value_matcher, peer_principals
from ._route_build import compile_string_matcher, seconds

EXT_AUTHZ_TYPE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_FILTER_NAME = "envoy.filters.http.ext_authz"
# Always in the check request, whatever ``allowed_headers`` says (Envoy's defaults).
DEFAULT_CHECK_HEADERS = (b":authority", b"authorization", b"content-length")
# Always passed to the client on a denial when ``allowed_client_headers`` is set.
DEFAULT_CLIENT_HEADERS = (b"www-authenticate", b"location", b"content-length")
# Never copied from the server's answer: hop-by-hop or the answer's own framing.
NOT_COPIED = {b":status", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"proxy-connection"}

_TOP_LEVEL = {"http_service", "grpc_service", "with_request_body", "transport_api_version", "failure_mode_allow", "status_on_error",
              "filter_enabled_metadata", "stat_prefix"}
_GRPC_SERVICE = {"envoy_grpc", "timeout"}
_ENVOY_GRPC = {"cluster_name", "authority"}
CHECK_PATH = b"/envoy.service.auth.v3.Authorization/Check"
_HTTP_SERVICE = {"server_uri", "path_prefix", "authorization_request", "authorization_response"}
_SERVER_URI = {"uri", "cluster", "timeout"}
_REQUEST = {"allowed_headers", "headers_to_add"}
_RESPONSE = {"allowed_upstream_headers", "allowed_client_headers"}

HeaderPredicate = Callable[[bytes], bool]


def _refuse_others(message: Any, supported: set[str], path: str) -> None:
    """Refuse every set field we do not implement, naming it."""
    for descriptor, _ in message.ListFields():
        if descriptor.name not in supported:
            where = f"{path}.{descriptor.name}" if path else descriptor.name
            raise ConfigError(where, "not supported by the wasmesh sidecar")


def _patterns(message: Any, path: str) -> HeaderPredicate | None:
    """A ``ListStringMatcher`` over lower-case header names (None when unset)."""
    checks = [compile_string_matcher(p, f"{path}.patterns[{i}]") for i, p in enumerate(message.patterns)]
    if not checks:
        return None
    return lambda name: any(check(name) for check in checks)


@dataclass(frozen=True)
class ExtAuthzConfig:
    """One parsed filter config, shared by every stream of a plan."""

    cluster: str
    authority: bytes
    path_prefix: bytes
    timeout: float
    allowed_headers: HeaderPredicate | None
    headers_to_add: tuple[Pair, ...]
    upstream_headers: HeaderPredicate | None
    client_headers: HeaderPredicate | None
    failure_mode_allow: bool
    status_on_error: int
    enabled: Callable[[dict[str, Any]], bool] | None
    grpc: bool = False
    body_limit: int | None = None  # with_request_body.max_request_bytes; None: no body in the check
    allow_partial: bool = False
    pack_as_bytes: bool = False
    stat_root: str = "http.ext_authz."  # ``http.<hcm stat_prefix>.ext_authz.``, set when the filter is built


def _enabled_by(matcher: Any, path: str) -> Callable[[dict[str, Any]], bool]:
    """``filter_enabled_metadata``: a MetadataMatcher over the stream's dynamic metadata."""
    if not matcher.filter:
        raise ConfigError(f"{path}.filter", "must name the metadata namespace")
    keys = [segment.key for segment in matcher.path]
    if not keys or not all(keys):
        raise ConfigError(f"{path}.path", "needs at least one non-empty key")
    check = compile_value_matcher(matcher.value, f"{path}.value")
    namespace, invert = matcher.filter, matcher.invert

    def enabled(metadata: dict[str, Any]) -> bool:
        value: Any = metadata.get(namespace)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return check(value) != invert

    return enabled


def _status_on_error(config: Any) -> int:
    status = config.status_on_error.code if config.HasField("status_on_error") else 403
    if status and not 200 <= status <= 599:
        raise ConfigError("status_on_error.code", f"{status} is not an HTTP status")
    return status or 403


def _parse_grpc(config: Any) -> ExtAuthzConfig:
    service = config.grpc_service
    _refuse_others(service, _GRPC_SERVICE, "grpc_service")
    if not service.HasField("envoy_grpc"):
        raise ConfigError("grpc_service.envoy_grpc", "only envoy_grpc (a named cluster) is supported")
    target = service.envoy_grpc
    _refuse_others(target, _ENVOY_GRPC, "grpc_service.envoy_grpc")
    if not target.cluster_name:
        raise ConfigError("grpc_service.envoy_grpc.cluster_name", "must name the authorization server's cluster")
    timeout = seconds(service.timeout) if service.HasField("timeout") else 0.2  # Envoy's default
    return ExtAuthzConfig(
        target.cluster_name, (target.authority or target.cluster_name).encode(), b"", timeout, None, (), None, None,
        config.failure_mode_allow, _status_on_error(config),
        _enabled_by(config.filter_enabled_metadata, "filter_enabled_metadata")
        if config.HasField("filter_enabled_metadata") else None, grpc=True)


def parse_ext_authz(config: Any) -> ExtAuthzConfig:
    _refuse_others(config, _TOP_LEVEL, "")
    if config.transport_api_version not in (0, 2):  # AUTO (means V3) or V3
        raise ConfigError("transport_api_version", "only V3 is supported")
    parsed = _parse_grpc(config) if config.HasField("grpc_service") else _parse_http(config)
    if not config.HasField("with_request_body"):
        return parsed
    body = config.with_request_body
    if body.max_request_bytes == 0:
        raise ConfigError("with_request_body.max_request_bytes", "must be greater than 0")
    if body.pack_as_bytes and not parsed.grpc:
        raise ConfigError("with_request_body.pack_as_bytes", "applies to grpc_service only")
    return dataclasses.replace(parsed, body_limit=body.max_request_bytes, allow_partial=body.allow_partial_message,
                               pack_as_bytes=body.pack_as_bytes)


def _parse_http(config: Any) -> ExtAuthzConfig:
    if not config.HasField("http_service"):
        raise ConfigError("http_service", "needs http_service or grpc_service")
    service = config.http_service
    _refuse_others(service, _HTTP_SERVICE, "http_service")
    uri = service.server_uri
    _refuse_others(uri, _SERVER_URI, "http_service.server_uri")
    if not uri.cluster:
        raise ConfigError("http_service.server_uri.cluster", "must name the authorization server's cluster")
    if not uri.HasField("timeout"):
        raise ConfigError("http_service.server_uri.timeout", "is required")
    authority = uri.uri.split("://", 1)[-1].split("/", 1)[0]
    request, response = service.authorization_request, service.authorization_response
    _refuse_others(request, _REQUEST, "http_service.authorization_request")
    _refuse_others(response, _RESPONSE, "http_service.authorization_response")
    added = []
    for index, header in enumerate(request.headers_to_add):
        if not header.key:
            raise ConfigError(f"http_service.authorization_request.headers_to_add[{index}].key", "must not be empty")
        added.append((header.key.lower().encode(), header.value.encode()))
    return ExtAuthzConfig(
        uri.cluster, authority.encode(), service.path_prefix.encode(), seconds(uri.timeout),
        _patterns(request.allowed_headers, "http_service.authorization_request.allowed_headers"), tuple(added),
        _patterns(response.allowed_upstream_headers, "http_service.authorization_response.allowed_upstream_headers"),
        _patterns(response.allowed_client_headers, "http_service.authorization_response.allowed_client_headers"),
        config.failure_mode_allow, _status_on_error(config),
        _enabled_by(config.filter_enabled_metadata, "filter_enabled_metadata")
        if config.HasField("filter_enabled_metadata") else None)


def check_request(config: ExtAuthzConfig, headers: HeaderMap, body: bytes = b"", partial: bool = False
                  ) -> list[Pair]:
    """The headers of the check request for a client request (``body`` goes with it)."""
    out: list[Pair] = [(b":method", headers.get(b":method") or b"GET"),
                       (b":path", config.path_prefix + (headers.get(b":path") or b"/")),
                       (b":scheme", b"http"), (b":authority", headers.get(b":authority") or config.authority)]
    for name, value in headers:
        if name.startswith(b":") or name in (b"host", b"content-length"):
            continue
        if name in DEFAULT_CHECK_HEADERS or (config.allowed_headers is not None and config.allowed_headers(name)):
            out.append((name, value))
    out.extend(config.headers_to_add)
    if config.body_limit is not None:
        out.append((b"x-envoy-auth-partial-body", b"true" if partial else b"false"))
    out.append((b"content-length", str(len(body)).encode()))
    return out


def grpc_check_call(config: ExtAuthzConfig, headers: HeaderMap, info: StreamInfo, body: bytes = b""
                    ) -> tuple[list[Pair], bytes]:
    """The unary ``Check`` call for a client request: HTTP/2 headers and the framed ``CheckRequest``."""
    context = attribute_context_pb2.AttributeContext
    raw_path = (headers.get(b":path") or b"/").decode("latin-1")
    fields: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1")
        fields[key] = f"{fields[key]},{value.decode('latin-1')}" if key in fields else value.decode("latin-1")
    source, destination = info.downstream_remote_address, info.downstream_local_address
    principals = peer_principals(info)
    message = external_auth_pb2.CheckRequest(attributes=context(
        source=context.Peer(address=_address(source), principal=principals[0] if principals else ""),
        destination=context.Peer(address=_address(destination)),
        request=context.Request(http=context.HttpRequest(
            method=(headers.get(b":method") or b"GET").decode("latin-1"), path=raw_path,
            host=(headers.get(b":authority") or b"").decode("latin-1"),
            scheme=(headers.get(b":scheme") or b"http").decode("latin-1"),
            protocol=info.protocol, headers=fields, id=(headers.get(b"x-request-id") or b"").decode("latin-1"),
            **_body_fields(config, body)))))
    payload = message.SerializeToString()
    call = [(b":method", b"POST"), (b":path", CHECK_PATH), (b":scheme", b"http"), (b":authority", config.authority),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            (b"grpc-timeout", f"{max(1, int(config.timeout * 1000))}m".encode())]
    return call, b"\x00" + len(payload).to_bytes(4, "big") + payload


def _body_fields(config: ExtAuthzConfig, body: bytes) -> dict[str, Any]:
    """``HttpRequest`` body fields, set only under ``with_request_body``."""
    if config.body_limit is None:
        return {}
    if config.pack_as_bytes:
        return {"raw_body": body, "size": len(body)}
    return {"body": body.decode("utf-8", "replace"), "size": len(body)}


def _address(pair: tuple[str, int]) -> Any:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=pair[0], port_value=pair[1]))


@dataclass(frozen=True)
class Verdict:
    """``kind``: ok, denied or error."""

    kind: str
    status: int = 200
    headers: tuple[Pair, ...] = ()
    body: bytes = b""
    appended: tuple[Pair, ...] = ()
    removed: tuple[bytes, ...] = ()


def judge(config: ExtAuthzConfig, result: HttpCallResult) -> Verdict:
    """Envoy's reading of the server's answer."""
    raw = result.headers.get(b":status") if result.headers is not None else None
    try:
        status = int(raw or b"")
    except ValueError:
        status = 0
    if result.failure or result.headers is None or status < 100 or status >= 500:
        return Verdict("error")
    answer = [(k, v) for k, v in result.headers if k not in NOT_COPIED]
    if status == 200:
        wanted = config.upstream_headers
        return Verdict("ok", 200, tuple((k, v) for k, v in answer
                                        if wanted is not None and not k.startswith(b":") and wanted(k)))
    client = config.client_headers
    kept = tuple((k, v) for k, v in answer if not k.startswith(b":") and k not in (b"content-length", b"host") and (
        client is None or k in DEFAULT_CLIENT_HEADERS or client(k)))
    return Verdict("denied", status, kept, result.body)


def judge_grpc(result: HttpCallResult) -> Verdict:
    """Envoy's reading of a ``Check`` answer: a failed call is an error, else the ``CheckResponse``."""
    if result.failure or result.headers is None or result.headers.get(b":status") != b"200":
        return Verdict("error")
    grpc_status = (result.trailers.get(b"grpc-status") if result.trailers is not None else None) \
        or result.headers.get(b"grpc-status")
    body = result.body
    if grpc_status != b"0" or len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        return Verdict("error")
    reply = external_auth_pb2.CheckResponse()
    try:
        reply.ParseFromString(body[5:])
    except DecodeError:
        return Verdict("error")
    if reply.status.code == 0:
        ok = reply.ok_response
        replaced = tuple((h.header.key.lower().encode(), h.header.value.encode()) for h in ok.headers
                         if not (h.HasField("append") and h.append.value))
        appended = tuple((h.header.key.lower().encode(), h.header.value.encode()) for h in ok.headers
                         if h.HasField("append") and h.append.value)
        return Verdict("ok", 200, replaced, b"", appended, tuple(n.lower().encode() for n in ok.headers_to_remove))
    denied = reply.denied_response
    headers = tuple((h.header.key.lower().encode(), h.header.value.encode()) for h in denied.headers)
    return Verdict("denied", denied.status.code or 403, headers, denied.body.encode())


class ExtAuthzFilter(HttpFilter):
    """Holds the request until the authorization server has answered."""

    encodes = False

    def __init__(self, config: ExtAuthzConfig, callbacks: FilterCallbacks) -> None:
        self.config = config
        self.callbacks = callbacks
        self.headers: HeaderMap | None = None
        self.token = 0
        self.waiting = False
        self.buffering = False  # collecting the body before the check is sent

    def _count(self, name: str) -> None:
        """One of Envoy's ext_authz counters, in the worker's stats store (when the stream has one)."""
        stream = getattr(self.callbacks, "stream", None)
        if stream is not None:
            stream.ctx.worker.stats.counter(self.config.stat_root + name).inc()

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        config = self.config
        if config.enabled is not None and not config.enabled(self.callbacks.stream_info.dynamic_metadata):
            return HeadersStatus.Continue
        self.headers = headers
        if config.body_limit is not None and not end_stream:
            self.buffering = True
            return HeadersStatus.StopIteration
        return self._check(b"", False)

    def decode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        if self.waiting:
            return DataStatus.StopIterationAndBuffer
        if not self.buffering:
            return DataStatus.Continue
        limit = self.config.body_limit
        assert limit is not None
        held = self.callbacks.decoding_buffer()
        body = (held.to_bytes() if held is not None else b"") + data.to_bytes()
        if len(body) > limit and not self.config.allow_partial:
            self.buffering = False
            self.callbacks.send_local_reply(413, b"Payload Too Large", (), "request_payload_too_large")
            return DataStatus.StopIterationNoBuffer
        if not end_stream and len(body) < limit:
            return DataStatus.StopIterationAndBuffer
        self.buffering = False
        if self._check(body[:limit], len(body) > limit or (len(body) == limit and not end_stream)) \
                == HeadersStatus.Continue:
            return DataStatus.Continue
        return DataStatus.StopIterationAndBuffer if self.waiting else DataStatus.StopIterationNoBuffer

    def decode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        if self.waiting:
            return TrailersStatus.StopIteration
        if not self.buffering:
            return TrailersStatus.Continue
        self.buffering = False
        held = self.callbacks.decoding_buffer()
        body = held.to_bytes() if held is not None else b""
        if self._check(body, False) == HeadersStatus.Continue:
            return TrailersStatus.Continue
        return TrailersStatus.StopIteration

    def _check(self, body: bytes, partial: bool) -> HeadersStatus:
        config = self.config
        assert self.headers is not None
        if config.grpc:
            call, payload = grpc_check_call(config, self.headers, self.callbacks.stream_info, body)
        else:
            call, payload = check_request(config, self.headers, body, partial), body
        try:
            self.token = self.callbacks.dispatch_http_call(
                config.cluster, call, payload, (), config.timeout, self._on_result)
        except UnknownClusterError:
            return self._apply(Verdict("error"))
        self.waiting = True
        return HeadersStatus.StopAllIterationAndWatermark

    def _on_result(self, result: HttpCallResult) -> None:
        if not self.waiting:
            return
        self.waiting = False
        if self._apply(judge_grpc(result) if self.config.grpc else judge(self.config, result)) == HeadersStatus.Continue:
            self.callbacks.continue_decoding()

    def _apply(self, verdict: Verdict) -> HeadersStatus:
        self._count(verdict.kind)
        if verdict.kind == "error":
            if self.config.failure_mode_allow:
                self._count("failure_mode_allowed")
                return HeadersStatus.Continue
            self.callbacks.stream_info.add_flag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)
            self.callbacks.send_local_reply(self.config.status_on_error, b"", (), "ext_authz_error")
            return HeadersStatus.StopIteration
        if verdict.kind == "denied":
            self.callbacks.stream_info.add_flag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)
            self.callbacks.send_local_reply(verdict.status, verdict.body, verdict.headers, "ext_authz_denied")
            return HeadersStatus.StopIteration
        if self.headers is not None:
            for name, value in verdict.headers:
                self.headers.set(name, value)
            for name, value in verdict.appended:
                self.headers.add(name, value)
            for name in verdict.removed:
                if not name.startswith(b":") and name != b"host":
                    self.headers.remove(name)
        return HeadersStatus.Continue

    def on_destroy(self) -> None:
        if self.waiting:
            self.waiting = False
            self.callbacks.cancel_http_call(self.token)


def build_ext_authz(config: Any, context: FilterBuildContext) -> Any:
    """Config factory for ``envoy.extensions.filters.http.ext_authz.v3.ExtAuthz``."""
    own = f"{config.stat_prefix}." if config.stat_prefix else ""
    parsed = dataclasses.replace(parse_ext_authz(config),  # an unknown cluster is an error at request time
                                 stat_root=f"http.{context.stat_prefix}.ext_authz.{own}")

    def create(callbacks: FilterCallbacks) -> ExtAuthzFilter:
        return ExtAuthzFilter(parsed, callbacks)

    create.filter_class = ExtAuthzFilter  # type: ignore[attr-defined]
    return create


register_http_filter(EXT_AUTHZ_TYPE, build_ext_authz)
