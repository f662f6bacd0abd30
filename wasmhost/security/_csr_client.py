"""The agent's side of the CSR protocol: one ``CreateCertificate`` call over gRPC+TLS.

``CertificateSigner`` is the seam the agent depends on; ``GrpcCertificateClient`` is the
real one (grpc.aio). The channel trusts the CA's roots and is rebuilt when they change (a
root rotation re-signs the control plane's serving certificate too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import grpc.aio

from ._certservice import CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse

#: Trailing metadata carrying every root the CA wants trusted (PEM), a wasmesh extension.
TRUST_BUNDLE_METADATA = "wasmesh-trust-bundle-bin"
DEFAULT_CA_SERVER_NAME = "istiod.istio-system.svc"


class SigningError(Exception):
    """The CA did not issue a certificate; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class SignedChain:
    cert_chain: list[str]
    trust_bundle_pem: bytes  # empty when the CA sent none


class CertificateSigner(Protocol):
    async def sign(self, csr_pem: bytes, validity_seconds: int) -> SignedChain: ...


_FINAL = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT}


class GrpcCertificateClient:
    """Calls IstioCertificateService on ``address`` with ``authorization: Bearer <token()>``."""

    def __init__(
        self,
        address: str,
        *,
        ca_roots_pem: bytes,
        token: Callable[[], str],
        server_name: str = DEFAULT_CA_SERVER_NAME,
        timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.server_name = server_name
        self.timeout = timeout
        self._token = token
        self._roots = ca_roots_pem
        self._channel: grpc.aio.Channel | None = None

    def update_roots(self, ca_roots_pem: bytes) -> None:
        """Trust these roots for the CA's serving certificate from the next call on."""
        if ca_roots_pem and ca_roots_pem != self._roots:
            self._roots = ca_roots_pem
            self._channel = None  # the old one is closed by close() or garbage collection

    def _get_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._roots)
            self._channel = grpc.aio.secure_channel(
                self.address, credentials, options=[("grpc.ssl_target_name_override", self.server_name)]
            )
        return self._channel

    async def sign(self, csr_pem: bytes, validity_seconds: int) -> SignedChain:
        channel = self._get_channel()
        call = channel.unary_unary(
            CREATE_CERTIFICATE_PATH,
            request_serializer=IstioCertificateRequest.SerializeToString,
            response_deserializer=IstioCertificateResponse.FromString,
        )
        request = IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=validity_seconds)
        try:
            pending = call(request, metadata=(("authorization", f"Bearer {self._token()}"),), timeout=self.timeout)
            response = await pending
            trailing = await pending.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise SigningError(
                f"CreateCertificate: {exc.code().name}: {exc.details()}", retryable=exc.code() not in _FINAL
            ) from exc
        bundle = b""
        for key, value in trailing or ():
            if key == TRUST_BUNDLE_METADATA and isinstance(value, bytes):
                bundle = value
        return SignedChain(list(response.cert_chain), bundle)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
