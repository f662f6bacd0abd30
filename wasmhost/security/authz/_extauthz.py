"""CUSTOM action: ext_authz providers (mesh config ``extensionProviders``) and ``authorize``.

``HttpExtAuthz`` follows Envoy's HTTP ext_authz service contract: the check request repeats
the method and ``pathPrefix`` + path with the allowed headers and no body; a 200 allows (and
``headersToUpstreamOnAllow`` are copied from its response to the upstream request), anything
else denies with that status, body and ``headersToDownstreamOnDeny``. ``GrpcExtAuthz`` calls
``envoy.service.auth.v3.Authorization/Check``. A provider that cannot be reached denies with
``statusOnError`` (403) unless ``failOpen``.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import grpc.aio
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from ._engine import AuthorizationEngine, AuthzDecision
from ._match import StringPattern
from ._request import AuthzRequest

DEFAULT_CHECK_HEADERS = ("host", "authorization", "content-length")


@dataclass(frozen=True)
class ExtAuthzResult:
    allowed: bool
    status: int = 403
    body: bytes = b""
    headers_to_upstream: tuple[tuple[str, str], ...] = ()
    headers_to_downstream: tuple[tuple[str, str], ...] = ()
    reason: str = ""


class ExtAuthzProvider(Protocol):
    name: str

    async def check(self, request: AuthzRequest) -> ExtAuthzResult: ...


def _matching(names: Sequence[str], headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    patterns = [StringPattern(n.lower()) for n in names]
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    return [(k, v) for k, v in pairs if any(p.matches(k.lower()) for p in patterns)]


def _error_result(name: str, fail_open: bool, status_on_error: int, error: str) -> ExtAuthzResult:
    if fail_open:
        return ExtAuthzResult(True, reason=f"{name} unavailable, failOpen: {error}")
    return ExtAuthzResult(False, status=status_on_error, reason=f"{name} unavailable: {error}")


@dataclass
class HttpExtAuthz:
    """``envoyExtAuthzHttp``: ``service`` is host[:port] reachable from the sidecar."""

    name: str
    host: str
    port: int
    path_prefix: str = ""
    include_request_headers_in_check: Sequence[str] = ()
    headers_to_upstream_on_allow: Sequence[str] = ()
    headers_to_downstream_on_deny: Sequence[str] = ()
    timeout: float = 0.6
    fail_open: bool = False
    status_on_error: int = 403

    def _call(self, request: AuthzRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            wanted = [*DEFAULT_CHECK_HEADERS, *self.include_request_headers_in_check]
            connection.putrequest(request.method or "GET", self.path_prefix + (request.path or "/"),
                                  skip_host=True, skip_accept_encoding=True)
            connection.putheader("host", request.host or self.host)
            for key, value in _matching(wanted, request.headers):
                if key.lower() not in ("host", "content-length"):
                    connection.putheader(key, value)
            connection.putheader("content-length", "0")
            connection.endheaders()
            reply = connection.getresponse()
            return reply.status, [(k.lower(), v) for k, v in reply.getheaders()], reply.read()
        finally:
            connection.close()

    async def check(self, request: AuthzRequest) -> ExtAuthzResult:
        try:
            status, headers, body = await asyncio.to_thread(self._call, request)
        except (OSError, http.client.HTTPException) as exc:
            return _error_result(self.name, self.fail_open, self.status_on_error, str(exc))
        if status == 200:
            return ExtAuthzResult(True, 200, headers_to_upstream=tuple(_matching(self.headers_to_upstream_on_allow, headers)))
        return ExtAuthzResult(False, status, body, headers_to_downstream=tuple(
            _matching(self.headers_to_downstream_on_deny, headers)), reason=f"HTTP {status}")


def check_request_for(request: AuthzRequest) -> external_auth_pb2.CheckRequest:
    """The ``CheckRequest`` Envoy would send for this request."""
    ctx = attribute_context_pb2.AttributeContext
    return external_auth_pb2.CheckRequest(attributes=ctx(
        source=ctx.Peer(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=request.source_ip)),
            principal=f"spiffe://{request.source_principal}" if request.source_principal else "",
        ),
        destination=ctx.Peer(address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=request.destination_ip, port_value=request.destination_port))),
        request=ctx.Request(http=ctx.HttpRequest(
            method=request.method, path=request.path, host=request.host,
            headers={k.lower(): v for k, v in request.headers.items()}, protocol="HTTP/1.1",
        )),
    ))


@dataclass
class GrpcExtAuthz:
    """``envoyExtAuthzGrpc``: Envoy's ext_authz v3 gRPC service at ``target`` (host:port)."""

    name: str
    target: str
    timeout: float = 0.6
    fail_open: bool = False
    status_on_error: int = 403
    _channel: grpc.aio.Channel | None = field(default=None, repr=False)

    async def check(self, request: AuthzRequest) -> ExtAuthzResult:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        stub = external_auth_pb2_grpc.AuthorizationStub(self._channel)
        try:
            reply = await stub.Check(check_request_for(request), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            return _error_result(self.name, self.fail_open, self.status_on_error, f"{exc.code().name}: {exc.details()}")
        if reply.status.code == 0:
            upstream = tuple((h.header.key, h.header.value) for h in reply.ok_response.headers)
            return ExtAuthzResult(True, 200, headers_to_upstream=upstream)
        denied = reply.denied_response
        return ExtAuthzResult(
            False, denied.status.code or 403, denied.body.encode(),
            headers_to_downstream=tuple((h.header.key, h.header.value) for h in denied.headers),
            reason=reply.status.message or f"gRPC status {reply.status.code}",
        )

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


@dataclass(frozen=True)
class Authorization:
    """The final answer for the sidecar: the decision and, for CUSTOM, the provider's reply."""

    decision: AuthzDecision
    ext_authz: ExtAuthzResult | None = None

    @property
    def status(self) -> int:
        """HTTP status to answer when denied: the provider's for a CUSTOM deny, else 403."""
        if self.ext_authz is not None and not self.ext_authz.allowed:
            return self.ext_authz.status
        return 403


async def authorize(
    engine: AuthorizationEngine, request: AuthzRequest, providers: Mapping[str, ExtAuthzProvider]
) -> Authorization:
    """Evaluate, calling the CUSTOM provider when a CUSTOM policy matches (the I/O edge)."""
    evaluation = engine.evaluate(request)
    if not evaluation.custom_provider:
        return Authorization(evaluation.decide())
    provider = providers.get(evaluation.custom_provider)
    if provider is None:
        result = ExtAuthzResult(False, 403, reason=f"no extension provider named {evaluation.custom_provider!r}")
    else:
        result = await provider.check(request)
    return Authorization(evaluation.decide(result.allowed, result.reason), result)
