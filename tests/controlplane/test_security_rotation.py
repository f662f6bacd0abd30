"""Root rotation and the secure port's own certificate: each change of the trust bundle re-signs
the certificate served on the secure port, so once the old root is retired a client that trusts
only the new root still connects (real gRPC+TLS on 127.0.0.1, the real CSR client)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from controlplane._security import SecuritySettings
from controlplane._server import ControlPlane, Settings
from controlplane.ca import CertificateAuthority, ServingCertificate
from wasmhost.security import GrpcCertificateClient, SigningError, SpiffeId, build_csr, generate_key

WEB = SpiffeId("cluster.local", "shop", "web")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


async def _connects(address: str, roots: bytes, token: str) -> bool:
    """Whether a client trusting only `roots` completes a CSR call (a fresh TLS handshake)."""
    client = GrpcCertificateClient(address, ca_roots_pem=roots, token=lambda: token, timeout=5)
    try:
        await client.sign(build_csr(generate_key(), WEB), 3600)
        return True
    except SigningError as err:
        assert "UNAVAILABLE" in str(err), err  # a TLS failure, never a refused credential
        return False
    finally:
        await client.close()


def test_secure_port_certificate_follows_stage_activate_retire(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[tuple[str, bool, bool]], int]:
        plane = ControlPlane(settings=Settings(xds_port=0, monitoring_port=0,
                                               security=SecuritySettings(tmp_path / "ca", secure_port=0)))
        await plane.start()
        try:
            assert plane.security is not None
            ca, address = plane.security.ca, f"127.0.0.1:{plane.secure_port}"
            token = plane.security.tokens.issue("shop", "web")
            old_root = _pem(ca.root)
            seen = [("initial", await _connects(address, old_root, token), False)]
            new_root = _pem(ca.stage_root())
            seen.append(("staged", await _connects(address, old_root, token),
                         await _connects(address, new_root, token)))
            ca.activate_next_root()
            seen.append(("activated", await _connects(address, old_root, token),
                         await _connects(address, new_root, token)))
            ca.retire_previous_root()
            seen.append(("retired", await _connects(address, old_root, token),
                         await _connects(address, new_root, token)))
            return seen, plane.security.serving.renewals
        finally:
            await plane.stop()

    seen, renewals = asyncio.run(scenario())
    # (step, a client trusting only the old root connects, one trusting only the new root connects)
    assert seen == [
        ("initial", True, False),
        ("staged", True, False),  # the staged root is trusted but does not sign yet
        ("activated", False, True),  # re-signed by the new root at once, not in 6 hours
        ("retired", False, True),
    ]
    assert renewals == 4  # the first certificate, then one per trust-bundle change


def test_the_fetcher_keeps_its_certificate_until_the_bundle_changes(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca", "cluster.local")
    serving = ServingCertificate(ca, SpiffeId("cluster.local", "istio-system", "istiod"), ("localhost",),
                                 dt.timedelta(hours=12))
    assert serving.initial() is not None
    assert serving.fetch() is None and serving.fetch() is None  # handshakes reuse it
    ca.stage_root()
    assert serving.fetch() is not None
    assert serving.fetch() is None
    ca.retire_previous_root()  # nothing retired: the bundle is unchanged
    assert serving.fetch() is None
    assert serving.renewals == 2
