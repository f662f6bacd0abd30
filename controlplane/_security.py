"""The control plane's security runtime: its CA, bootstrap tokens and the secure port (15012).

`MeshSecurity` owns the `CertificateAuthority` (a `cacerts` folder, or a root generated there
on first start), the bootstrap-token secret (`<ca-dir>/token-secret`, 0600) and the secure
port. The secure port serves over TLS, with a certificate the same CA issues and renews:
- Istio's CSR service (`IstioCertificateService/CreateCertificate`) for identity agents that
  keep their own key (wasmesh sidecars);
- ADS for proxies that present `authorization: Bearer <bootstrap token>`: their identity is
  the token's namespace and service account (the node metadata must agree), and they are
  sent SDS secrets minted for them (`_sds.WorkloadCertificates`).

A token is accepted only over TLS: a bearer token on the plaintext port is refused, never
trusted, so a credential never travels in the clear. With a Kubernetes source,
`accept_service_account_tokens` also takes a service-account token (checked by TokenReview,
audience `istio-ca`): the identity is then its `system:serviceaccount:<ns>:<sa>`. When the API
server cannot answer, the caller is told UNAVAILABLE (retry), never given a certificate.

The secure port's certificate (`ca.ServingCertificate`) is re-signed at half its lifetime and
whenever the trust bundle changes, so it always chains to the root currently signing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from controlplane._sds import WorkloadCertificates
from controlplane.ca import (
    DEFAULT_TTL,
    AuthenticationError,
    AuthenticatorUnavailable,
    BootstrapTokens,
    CallerAuthenticator,
    CertificateAuthority,
    CertificateService,
    OwnTokensFirst,
    ServingCertificate,
    TokenReviewAuthenticator,
)
from wasmhost.security import (
    CERTIFICATE_SERVICE_NAME,
    CREATE_CERTIFICATE_METHOD,
    IstioCertificateRequest,
    IstioCertificateResponse,
    SpiffeId,
)

SECURE_PORT = 15012
TOKEN_SECRET_FILE = "token-secret"
SERVER_NAMES = ("istiod.istio-system.svc", "localhost")
DEFAULT_TRUST_DOMAIN = "cluster.local"


@dataclass
class SecuritySettings:
    ca_dir: Path
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    secure_port: int = SECURE_PORT
    workload_lifetime: dt.timedelta = DEFAULT_TTL
    serving_lifetime: dt.timedelta = dt.timedelta(hours=12)


class StreamRefused(Exception):
    """An xDS stream's credentials were refused; `code` is the gRPC status to end it with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def token_secret(path: Path) -> bytes:
    """The bootstrap-token HMAC secret, created (0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    return path.read_bytes()


def bearer_token(metadata: Sequence[tuple[str, Any]]) -> str:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            return value.removeprefix("Bearer ").strip() if value.startswith("Bearer ") else ""
    return ""


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _CallContext:
    """The slice of a synchronous ServicerContext that `CertificateService` uses."""

    def __init__(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._metadata = tuple(metadata)
        self.trailing: tuple[tuple[str, Any], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)

    def set_trailing_metadata(self, metadata: tuple[tuple[str, Any], ...]) -> None:
        self.trailing = metadata


class MeshSecurity:
    """CA, tokens, serving certificate, workload certificates and the secure port's services."""

    def __init__(self, settings: SecuritySettings) -> None:
        self.settings = settings
        lifetime = settings.workload_lifetime
        self.ca = CertificateAuthority(settings.ca_dir, settings.trust_domain, default_ttl=lifetime,
                                       max_ttl=max(lifetime, dt.timedelta(days=90)))
        self.tokens = BootstrapTokens(token_secret(settings.ca_dir / TOKEN_SECRET_FILE))
        self.certificates = WorkloadCertificates(self.ca, lifetime=lifetime)
        self.authenticator: CallerAuthenticator = self.tokens
        self.csr_service = CertificateService(self.ca, self.authenticator)
        self.identity = SpiffeId(settings.trust_domain, "istio-system", "istiod")
        self.serving = ServingCertificate(self.ca, self.identity, SERVER_NAMES, settings.serving_lifetime)

    def accept_service_account_tokens(self, review: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> None:
        """Also authenticate Kubernetes service-account tokens, through `review` (a TokenReview post)."""
        self.authenticator = OwnTokensFirst(self.tokens, TokenReviewAuthenticator(review))
        self.csr_service.authenticator = self.authenticator

    # ---- the secure port ---------------------------------------------------------------------
    def credentials(self) -> grpc.ServerCredentials:
        return self.serving.credentials()

    def add_to(self, server: grpc.aio.Server, host: str) -> int:
        """Register the CSR service and bind the secure port; returns the bound port."""
        server.add_generic_rpc_handlers((self._csr_handler(),))
        port = server.add_secure_port(f"{host}:{self.settings.secure_port}", self.credentials())
        if port == 0:
            raise OSError(f"cannot bind the secure port {host}:{self.settings.secure_port}")
        return port

    def _csr_handler(self) -> grpc.GenericRpcHandler:
        async def create_certificate(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _CallContext(tuple((m.key, m.value) for m in context.invocation_metadata() or ()))
            try:
                response = await asyncio.to_thread(self.csr_service.create_certificate, request, call)
            except _Aborted as aborted:
                await context.abort(aborted.code, aborted.details)
            context.set_trailing_metadata(call.trailing)
            return response

        return grpc.method_handlers_generic_handler(CERTIFICATE_SERVICE_NAME, {
            CREATE_CERTIFICATE_METHOD: grpc.unary_unary_rpc_method_handler(
                create_certificate, request_deserializer=IstioCertificateRequest.FromString,
                response_serializer=IstioCertificateResponse.SerializeToString)})

    # ---- xDS streams -------------------------------------------------------------------------
    def identify(self, metadata: Sequence[tuple[str, Any]], secure: bool, namespace: str,
                 service_account: str) -> SpiffeId | None:
        """The proxy's identity from its bearer token (None without one); raises StreamRefused."""
        token = bearer_token(metadata)
        if not token:
            return None
        if not secure:
            raise StreamRefused(grpc.StatusCode.UNAUTHENTICATED,
                                "a bootstrap token is accepted only over TLS: connect to the secure port")
        try:
            caller = self.authenticator.authenticate(token)
        except AuthenticatorUnavailable as err:
            raise StreamRefused(grpc.StatusCode.UNAVAILABLE, str(err)) from None
        except AuthenticationError as err:
            raise StreamRefused(grpc.StatusCode.UNAUTHENTICATED, str(err)) from None
        if (caller.namespace, caller.service_account) != (namespace, service_account):
            raise StreamRefused(grpc.StatusCode.PERMISSION_DENIED,
                                f"the token is for {caller.namespace}/{caller.service_account} but node.metadata "
                                f"says NAMESPACE={namespace!r}, SERVICE_ACCOUNT={service_account!r}")
        return SpiffeId(self.ca.trust_domain, caller.namespace, caller.service_account)


def is_secure(context: grpc.aio.ServicerContext) -> bool:
    """Whether the stream arrived over TLS."""
    try:
        kind = (context.auth_context() or {}).get("transport_security_type") or []
    except (AttributeError, RuntimeError):
        return False
    return b"ssl" in kind


__all__ = ["DEFAULT_TRUST_DOMAIN", "SECURE_PORT", "TOKEN_SECRET_FILE", "MeshSecurity", "SecuritySettings",
           "StreamRefused", "bearer_token", "is_secure", "token_secret"]
