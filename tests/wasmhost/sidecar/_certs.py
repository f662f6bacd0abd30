"""Test PKI: a CA and leaf certificates written as PEM files (built with ``cryptography``)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Leaf
    client: Leaf
    other_ca: Path  # a CA that signed nothing here: trusting only it must fail


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(directory: Path, name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          sans: list[x509.GeneralName]) -> Leaf:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return Leaf(cert_path, key_path)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("wasmesh test CA")
    other, _ = _ca("unrelated CA")
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "other-ca.crt").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    server = _leaf(directory, "server", ca, ca_key, [
        x509.DNSName("localhost"), x509.DNSName("backend.test"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.UniformResourceIdentifier("spiffe://test/ns/default/sa/server")])
    client = _leaf(directory, "client", ca, ca_key, [
        x509.UniformResourceIdentifier("spiffe://test/ns/default/sa/client")])
    return Pki(directory / "ca.crt", server, client, directory / "other-ca.crt")


def downstream_tls(pki: Pki, require_client: bool = False, alpn: list[str] | None = None,
                   client_sans: list[str] | None = None) -> dict[str, object]:
    common: dict[str, object] = {"tls_certificates": [{"certificate_chain": {"filename": str(pki.server.cert)},
                                                       "private_key": {"filename": str(pki.server.key)}}]}
    if require_client or client_sans:
        validation: dict[str, object] = {"trusted_ca": {"filename": str(pki.ca)}}
        if client_sans:
            validation["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": s}}
                                                           for s in client_sans]
        common["validation_context"] = validation
    if alpn:
        common["alpn_protocols"] = alpn
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": common,
        **({"require_client_certificate": True} if require_client else {})}}


def upstream_tls(pki: Pki, ca: Path | None = None, sni: str = "", sans: list[str] | None = None,
                 client_cert: bool = False) -> dict[str, object]:
    validation: dict[str, object] = {"trusted_ca": {"filename": str(ca or pki.ca)}}
    if sans:
        validation["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": s}} for s in sans]
    common: dict[str, object] = {"validation_context": validation}
    if client_cert:
        common["tls_certificates"] = [{"certificate_chain": {"filename": str(pki.client.cert)},
                                       "private_key": {"filename": str(pki.client.key)}}]
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common, **({"sni": sni} if sni else {})}}
