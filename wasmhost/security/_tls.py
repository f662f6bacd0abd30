"""``ssl.SSLContext`` factories over the workload's current SVID, for listeners and clusters.

Rotation: ``update(svid)`` builds fresh contexts; existing connections keep the context (and
certificate) they were made with. A server keeps using one stable "front" context (asyncio
servers take one at start): its ``sni_callback`` moves every new handshake onto the current
inner context, which swaps in the current certificate and trust bundle before the
ServerHello. Clients call ``client_context()`` per new connection.

SPIFFE IDs are not host names, so the contexts verify the chain (OpenSSL, against the trust
bundle only) with hostname checking off, and ``peer_identity`` pins the expected ID right
after the handshake, before any application byte is read or written.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

from cryptography import x509

from ._peer import PeerVerificationError
from ._spiffe import SpiffeId, SpiffeIdError, spiffe_id_of
from ._svid import WorkloadSvid

#: ALPN the mesh's mTLS connections offer, as Istio's sidecars do, before the HTTP protocols.
MESH_ALPN = ("istio", "h2", "http/1.1")
_CIPHERS_TLS12 = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"


@contextlib.contextmanager
def private_pem_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read key material from without it touching disk (memfd on Linux).

    Elsewhere a private temporary file (0600) is the fallback, removed on exit.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("wasmesh-svid", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="wasmesh-svid-") as folder:
        path = Path(folder) / "svid.pem"
        path.touch(mode=0o600)
        path.write_bytes(data)
        yield str(path)


def _base_context(purpose: ssl.Purpose, svid: WorkloadSvid, *, require_peer_cert: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_CIPHERS_TLS12)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED if require_peer_cert else ssl.CERT_OPTIONAL
    with private_pem_file(svid.key_pem() + svid.chain_pem()) as path:
        context.load_cert_chain(path)
    context.load_verify_locations(cadata=svid.bundle_pem().decode())
    return context


def server_context_for(svid: WorkloadSvid, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """A server context for one SVID (no rotation): ``require_client_cert`` is STRICT mTLS."""
    context = _base_context(ssl.Purpose.CLIENT_AUTH, svid, require_peer_cert=require_client_cert)
    context.set_alpn_protocols(list(MESH_ALPN))
    return context


def client_context_for(svid: WorkloadSvid) -> ssl.SSLContext:
    """A client context presenting ``svid`` and verifying the server against its trust bundle."""
    context = _base_context(ssl.Purpose.SERVER_AUTH, svid, require_peer_cert=True)
    context.set_alpn_protocols(list(MESH_ALPN))
    return context


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate | None:
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def peer_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, expected: Collection[SpiffeId] | None = None
) -> SpiffeId | None:
    """The verified peer's SPIFFE ID (None if it sent no certificate and none was expected).

    Call right after the handshake. Raises PeerVerificationError when the certificate has no
    single SPIFFE ID, or ``expected`` is given and the ID is not in it.
    """
    cert = peer_certificate(ssl_object)
    if cert is None:
        if expected:
            raise PeerVerificationError("the peer presented no certificate")
        return None
    try:
        identity = spiffe_id_of(cert)
    except SpiffeIdError as exc:
        raise PeerVerificationError(f"peer certificate: {exc}") from exc
    if expected and identity not in expected:
        wanted = ", ".join(sorted(str(e) for e in expected))
        raise PeerVerificationError(f"peer identity {identity} is not the expected {wanted}")
    return identity


class TlsContexts:
    """Current server/client contexts for the workload; ``update`` on every new SVID."""

    def __init__(self, svid: WorkloadSvid | None = None) -> None:
        self._svid: WorkloadSvid | None = None
        self._server: dict[bool, ssl.SSLContext] = {}
        self._client: ssl.SSLContext | None = None
        self._fronts: dict[bool, ssl.SSLContext] = {}
        self.generation = 0
        if svid is not None:
            self.update(svid)

    @property
    def svid(self) -> WorkloadSvid:
        if self._svid is None:
            raise RuntimeError("no workload certificate yet")
        return self._svid

    def update(self, svid: WorkloadSvid) -> None:
        """Use ``svid`` for every connection made from now on."""
        servers = {required: server_context_for(svid, require_client_cert=required) for required in (True, False)}
        client = client_context_for(svid)
        self._svid, self._server, self._client = svid, servers, client
        self.generation += 1

    def client_context(self) -> ssl.SSLContext:
        """The context for a new outbound mTLS connection."""
        if self._client is None:
            raise RuntimeError("no workload certificate yet")
        return self._client

    def server_context(self, *, require_client_cert: bool = True) -> ssl.SSLContext:
        """A stable server context that always hands out the current certificate.

        Give it once to ``asyncio.start_server``/``create_server`` or ``wrap_socket``; each new
        handshake is moved to the current inner context in the ClientHello callback.
        """
        front = self._fronts.get(require_client_cert)
        if front is None:
            front = server_context_for(self.svid, require_client_cert=require_client_cert)

            def switch(ssl_object: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
                ssl_object.context = self._server[require_client_cert]

            front.sni_callback = switch
            self._fronts[require_client_cert] = front
        return front
