"""The inbound HTTP security steps in Istio's filter order, as one call for the sidecar.

Order (Envoy/Istio): CUSTOM ext_authz, then JWT authentication (RequestAuthentication), then
RBAC (DENY, ALLOW; AUDIT marks). The peer identity comes from the mTLS handshake
(``PeerInfo``), never from a header. The result says whether to continue and how to change
the request, or which local reply to send (401 for a bad token, 403 for a denied request,
the provider's status for a CUSTOM deny).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from .authz import AuthorizationEngine, AuthzDecision, AuthzRequest, ExtAuthzProvider, authorize
from .jwt import JwtAuthenticator


@dataclass
class InboundSecurity:
    """What applies to one workload's inbound HTTP traffic."""

    authz: AuthorizationEngine
    jwt: JwtAuthenticator | None = None
    providers: Mapping[str, ExtAuthzProvider] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundVerdict:
    allowed: bool
    status: int = 200  # the local reply's status when not allowed
    body: bytes = b""
    reason: str = ""
    upstream_headers: tuple[tuple[str, str], ...] = ()  # the request headers to forward when allowed
    response_headers: tuple[tuple[str, str], ...] = ()
    decision: AuthzDecision | None = None
    request: AuthzRequest | None = None


async def check_inbound(security: InboundSecurity, request: AuthzRequest, headers: Sequence[tuple[str, str]]) -> InboundVerdict:
    """Run CUSTOM, JWT and RBAC for ``request`` (whose ``headers`` mirror ``headers``)."""
    upstream = list(headers)
    custom = security.authz.evaluate(request)
    if custom.custom_provider:
        answer = await authorize(security.authz, request, security.providers)
        ext = answer.ext_authz
        if not answer.decision.allowed and ext is not None and not ext.allowed:
            return InboundVerdict(False, answer.status, ext.body, answer.decision.reason,
                                  response_headers=ext.headers_to_downstream, decision=answer.decision, request=request)
        if ext is not None:
            names = {k.lower() for k, _ in ext.headers_to_upstream}
            upstream = [(k, v) for k, v in upstream if k.lower() not in names] + list(ext.headers_to_upstream)
    if security.jwt is not None:
        outcome = await security.jwt.authenticate(upstream, request.path)
        if outcome.http_status is not None:
            return InboundVerdict(False, outcome.http_status, b"Jwt verification fails", outcome.message,
                                  response_headers=(("www-authenticate", "Bearer"),), request=request)
        upstream = outcome.apply(upstream)
        request = replace(request, auth=outcome.auth)
    decision = security.authz.evaluate(request).local
    if not decision.allowed:
        return InboundVerdict(False, 403, b"RBAC: access denied", decision.reason, decision=decision, request=request)
    return InboundVerdict(True, 200, reason=decision.reason, upstream_headers=tuple(upstream), decision=decision,
                          request=request)
