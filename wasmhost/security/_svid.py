"""A workload's X.509-SVID in memory: its private key, certificate chain and trust bundle.

The key is generated here (EC P-256) and never serialised except for handing it to a TLS
library inside this process; the CSR carries only the public key and the requested SPIFFE ID.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._spiffe import SpiffeId, spiffe_id_of


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key, the key type Istio uses for workload certificates."""
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(key: ec.EllipticCurvePrivateKey, identity: SpiffeId) -> bytes:
    """A PEM CSR asking for ``identity`` as the only URI SAN (the CA ignores the subject)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_pem_certificates(data: bytes | str, *, what: str = "PEM data") -> list[x509.Certificate]:
    """All certificates in a PEM blob; raise ValueError naming ``what`` when there are none."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise ValueError(f"{what}: not PEM certificates ({exc})") from exc
    return certs


def certificates_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def dedupe_roots(roots: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """Roots in first-seen order without duplicates (same DER)."""
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for root in roots:
        der = root.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            out.append(root)
    return out


@dataclass(frozen=True)
class WorkloadSvid:
    """One issued identity: ``chain`` is leaf first (intermediates follow, no root)."""

    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]
    trust_bundle: tuple[x509.Certificate, ...]

    @classmethod
    def from_response(
        cls,
        key: ec.EllipticCurvePrivateKey,
        cert_chain: Sequence[str],
        extra_roots: Iterable[x509.Certificate] = (),
    ) -> WorkloadSvid:
        """Build from a CreateCertificate answer (leaf ... root); the last entry joins the bundle.

        Raises ValueError when the chain is empty, its leaf is not for ``key``, or a self-signed
        root is missing at the end.
        """
        certs: list[x509.Certificate] = []
        for index, pem in enumerate(cert_chain):
            certs.extend(load_pem_certificates(pem, what=f"cert_chain[{index}]"))
        if len(certs) < 2:
            raise ValueError(f"cert_chain has {len(certs)} certificates; expected the leaf and at least the root")
        leaf_key = certs[0].public_key()
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or leaf_key.public_numbers() != (
            key.public_key().public_numbers()
        ):
            raise ValueError("cert_chain[0] does not certify this agent's key")
        root = certs[-1]
        if root.issuer != root.subject:
            raise ValueError("the last entry of cert_chain is not a self-signed root")
        return cls(key, tuple(certs[:-1]), tuple(dedupe_roots([root, *extra_roots])))

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def spiffe_id(self) -> SpiffeId:
        return spiffe_id_of(self.leaf)

    @property
    def not_before(self) -> dt.datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    def chain_pem(self) -> bytes:
        return certificates_pem(self.chain)

    def bundle_pem(self) -> bytes:
        return certificates_pem(self.trust_bundle)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM, for TLS libraries in this process only."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def with_trust_bundle(self, roots: Iterable[x509.Certificate]) -> WorkloadSvid:
        return WorkloadSvid(self.key, self.chain, tuple(dedupe_roots(roots)))
