"""Test PKI built with the real CA: issue SVIDs in-process, make foreign/expired/odd certificates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.ca import CertificateAuthority, SigningMaterial
from wasmhost.security import SpiffeId, WorkloadSvid, build_csr, generate_key

TRUST_DOMAIN = "cluster.local"


def spiffe(ns: str = "default", sa: str = "app", td: str = TRUST_DOMAIN) -> SpiffeId:
    return SpiffeId(td, ns, sa)


def make_ca(folder: Path, **kwargs: object) -> CertificateAuthority:
    return CertificateAuthority(folder, TRUST_DOMAIN, **kwargs)  # type: ignore[arg-type]


def issue(ca: CertificateAuthority, identity: SpiffeId, *, seconds: int = 0) -> WorkloadSvid:
    """A real SVID: local key, CSR, CA signature (no network)."""
    key = generate_key()
    issued = ca.sign(build_csr(key, identity), identity, validity_seconds=seconds)
    roots = x509.load_pem_x509_certificates("".join(issued.trust_bundle).encode())
    return WorkloadSvid.from_response(key, issued.cert_chain, roots)


def issue_at(folder: Path, identity: SpiffeId, when: dt.datetime, seconds: int, ca: CertificateAuthority) -> WorkloadSvid:
    """An SVID from ``ca``'s key but with a clock set to ``when`` (for expired certificates)."""
    past = CertificateAuthority(ca.directory, ca.trust_domain, clock=lambda: when, clock_skew=dt.timedelta(0))
    return issue(past, identity, seconds=seconds)


def intermediate_material(root: SigningMaterial, name: str = "intermediate") -> SigningMaterial:
    """An intermediate CA signed by ``root`` (what an operator puts in cacerts)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(root.key, hashes.SHA256())
    )
    return SigningMaterial(key, cert, (cert, *root.chain))
