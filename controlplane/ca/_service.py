"""The CSR service: ``IstioCertificateService/CreateCertificate`` over gRPC with TLS.

Served on the secure xDS port (15012 in production; tests pass port 0). The caller sends
``authorization: Bearer <token>``; the authenticator maps it to (namespace, service account),
the CA signs only a CSR for that SPIFFE ID. The answer is Istio's ``cert_chain`` (leaf ...
root); every currently trusted root also goes out as trailing metadata
``wasmesh-trust-bundle-bin`` (PEM), so agents pick up a staged root with their next renewal.
The server's own certificate comes from the same CA; it is renewed at half its lifetime and
re-signed whenever the trust bundle changes (a root staged, activated or retired), so a client
that trusts only the new root can still connect once the old one is retired.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent import futures
from typing import Any

import grpc

from wasmhost.security import (
    CERTIFICATE_SERVICE_NAME,
    CREATE_CERTIFICATE_METHOD,
    TRUST_BUNDLE_METADATA,
    IstioCertificateRequest,
    IstioCertificateResponse,
    SpiffeId,
)

from ._auth import AuthenticationError, AuthenticatorUnavailable, CallerAuthenticator
from ._authority import CertificateAuthority, CsrRejected
from ._files import CaFilesError

log = logging.getLogger(__name__)
SECURE_XDS_PORT = 15012
DEFAULT_SERVER_NAMES = ("istiod.istio-system.svc", "localhost")


def _bearer_token(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return ""


class CertificateService:
    """The servicer: authenticate, check the CSR's identity, sign. Errors map to gRPC codes."""

    def __init__(self, ca: CertificateAuthority, authenticator: CallerAuthenticator) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.issued = 0

    def create_certificate(self, request: Any, context: grpc.ServicerContext) -> Any:
        token = _bearer_token(context)
        if not token:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata")
        try:
            caller = self.authenticator.authenticate(token)
            identity = SpiffeId(self.ca.trust_domain, caller.namespace, caller.service_account)
        except AuthenticatorUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (AuthenticationError, ValueError) as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        try:
            issued = self.ca.sign(request.csr, identity, validity_seconds=int(request.validity_duration))
        except CsrRejected as exc:
            code = grpc.StatusCode.PERMISSION_DENIED if "authenticated as" in str(exc) else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(exc))
        self.issued += 1
        log.info("issued %s until %s", identity, issued.not_after.isoformat())
        context.set_trailing_metadata(((TRUST_BUNDLE_METADATA, "".join(issued.trust_bundle).encode()),))
        return IstioCertificateResponse(cert_chain=issued.cert_chain)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            CERTIFICATE_SERVICE_NAME,
            {
                CREATE_CERTIFICATE_METHOD: grpc.unary_unary_rpc_method_handler(
                    self.create_certificate,
                    request_deserializer=IstioCertificateRequest.FromString,
                    response_serializer=IstioCertificateResponse.SerializeToString,
                )
            },
        )


class ServingCertificate:
    """The secure port's own key and chain, as a gRPC certificate fetcher.

    gRPC asks ``fetch`` at every new handshake; it answers a new configuration once half the
    lifetime has passed or when the CA's trust bundle differs from the one the current
    certificate was issued under (rotation), else None (keep the current one).
    """

    def __init__(self, ca: CertificateAuthority, identity: SpiffeId, names: tuple[str, ...], lifetime: dt.timedelta):
        self._ca, self._identity, self._names, self._lifetime = ca, identity, names, lifetime
        self._lock = threading.Lock()
        self._renew_at = 0.0
        self._bundle = ""
        self._config: grpc.ServerCertificateConfiguration | None = None
        self.renewals = 0

    def initial(self) -> grpc.ServerCertificateConfiguration:
        with self._lock:
            return self._reissue()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.initial(), self.fetch)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher: None keeps the current configuration."""
        with self._lock:
            try:
                same_bundle = self._ca.trust_bundle_pem() == self._bundle
            except (CaFilesError, OSError, ValueError) as exc:  # a rotation step half-written on disk
                log.warning("reading the trust bundle failed, keeping the serving certificate: %s", exc)
                return None
            if self._config is not None and time.time() < self._renew_at and same_bundle:
                return None
            return self._reissue()

    def _reissue(self) -> grpc.ServerCertificateConfiguration:
        bundle = self._ca.trust_bundle_pem()
        key, chain = self._ca.issue_server_certificate(self._identity, list(self._names), lifetime=self._lifetime)
        self._config = grpc.ssl_server_certificate_configuration([(key, chain)])
        self._renew_at = time.time() + self._lifetime.total_seconds() / 2
        self._bundle = bundle
        self.renewals += 1
        return self._config


class CsrServer:
    """A running CSR service; ``port`` is the bound port, ``stop()`` ends it."""

    def __init__(
        self,
        ca: CertificateAuthority,
        authenticator: CallerAuthenticator,
        *,
        host: str = "127.0.0.1",
        port: int = SECURE_XDS_PORT,
        server_names: tuple[str, ...] = DEFAULT_SERVER_NAMES,
        server_identity: SpiffeId | None = None,
        serving_lifetime: dt.timedelta = dt.timedelta(hours=12),
        workers: int = 8,
    ) -> None:
        self.service = CertificateService(ca, authenticator)
        identity = server_identity or SpiffeId(ca.trust_domain, "istio-system", "istiod")
        self.serving = ServingCertificate(ca, identity, server_names, serving_lifetime)
        self.server_names = server_names
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        self._server.add_generic_rpc_handlers((self.service.handler(),))
        self.port = self._server.add_secure_port(f"{host}:{port}", self.serving.credentials())
        if self.port == 0:
            raise OSError(f"could not bind the CSR service to {host}:{port}")
        self.address = f"{host}:{self.port}"

    def start(self) -> CsrServer:
        self._server.start()
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        self._server.stop(grace).wait()

    def __enter__(self) -> CsrServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
