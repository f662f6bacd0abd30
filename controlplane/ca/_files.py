"""The CA's files: Istio's ``cacerts`` layout, loaded with checks that name the bad file.

``ca-cert.pem`` signs workload certificates with ``ca-key.pem``; ``root-cert.pem`` is the
trust anchor; ``cert-chain.pem`` is ca-cert up to the root (optional when ca-cert is the root).
A self-signed root generated on first start is stored in the same layout, so one loader
serves both. Keys are written 0600 and replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CaFilesError(Exception):
    """A CA file is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class SigningMaterial:
    """What the CA signs with: key, its certificate, the chain up to and including the root."""

    key: SigningKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # ca-cert first, root last

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]


def _read_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError as exc:
        raise CaFilesError(f"{path.name}: missing in {path.parent}") from exc
    except ValueError as exc:
        raise CaFilesError(f"{path.name}: not PEM certificates ({exc})") from exc
    return certs


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def load_signing_material(directory: Path) -> SigningMaterial:
    """Load and cross-check a ``cacerts`` folder; raise CaFilesError naming the first problem."""
    directory = Path(directory)
    try:
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CaFilesError(f"{CA_KEY}: missing in {directory}") from exc
    except (ValueError, TypeError) as exc:
        raise CaFilesError(f"{CA_KEY}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CaFilesError(f"{CA_KEY}: only EC and RSA signing keys are supported")
    ca_cert = _read_certs(directory / CA_CERT)[0]
    roots = _read_certs(directory / ROOT_CERT)
    if ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CaFilesError(f"{CA_KEY}: does not match the public key of {CA_CERT}")
    if not _is_ca(ca_cert):
        raise CaFilesError(f"{CA_CERT}: basicConstraints CA is not true; it cannot sign certificates")
    chain_path = directory / CERT_CHAIN
    chain = _read_certs(chain_path) if chain_path.exists() else [ca_cert]
    if chain[0] != ca_cert:
        chain.insert(0, ca_cert)
    if chain[-1] not in roots:
        if chain[-1].issuer == chain[-1].subject:
            raise CaFilesError(f"{CERT_CHAIN}: ends in a root that is not in {ROOT_CERT}")
        chain.append(roots[0])
    for child, parent in zip(chain, chain[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except Exception as exc:  # noqa: BLE001 - cryptography raises several types here
            raise CaFilesError(
                f"{CERT_CHAIN}: {child.subject.rfc4514_string()} is not signed by {parent.subject.rfc4514_string()}"
            ) from exc
    return SigningMaterial(key, ca_cert, tuple(chain))


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def save_signing_material(directory: Path, material: SigningMaterial) -> None:
    """Write the material in the ``cacerts`` layout (key 0600, folder 0700)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = serialization.Encoding.PEM
    _write(
        directory / CA_KEY,
        material.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write(directory / CA_CERT, material.cert.public_bytes(pem), 0o644)
    _write(directory / ROOT_CERT, material.root.public_bytes(pem), 0o644)
    _write(directory / CERT_CHAIN, b"".join(c.public_bytes(pem) for c in material.chain), 0o644)


def generate_root(
    trust_domain: str, *, lifetime: dt.timedelta = dt.timedelta(days=3650), org: str = "wasmesh"
) -> SigningMaterial:
    """A self-signed EC P-256 root that signs workload certificates directly."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, trust_domain)]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SigningMaterial(key, cert, (cert,))
