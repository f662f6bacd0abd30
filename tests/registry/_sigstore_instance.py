"""A private, offline Sigstore instance for tests: a fake Fulcio CA, CT log and Rekor log.

No public Sigstore service is reachable here, so tests mint their own trusted root and
sign bundles the way the real services would: a short-lived code-signing certificate
with an embedded SCT (RFC 6962 precertificate signature), and a one-entry transparency
log with a signed checkpoint, inclusion proof and inclusion promise. The ``sigstore``
package then verifies these bundles exactly as it verifies production ones.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw bytes, as Fulcio writes it
ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _canonical_json(doc: dict[str, Any]) -> bytes:
    """RFC 8785 for the flat string/int objects used here: sorted keys, no spaces."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class SigstoreInstance:
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    ct_key: ec.EllipticCurvePrivateKey
    rekor_key: ec.EllipticCurvePrivateKey
    origin: str = "rekor.wasmesh.test - 1"

    @classmethod
    def create(cls) -> SigstoreInstance:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wasmesh-test"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "wasmesh test fulcio")])
        ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
        return cls(ca_key, ca_cert, ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))

    @staticmethod
    def _log_id(key: ec.EllipticCurvePrivateKey) -> bytes:
        return hashlib.sha256(_spki(key.public_key())).digest()

    def trusted_root(self) -> dict[str, Any]:
        def tlog(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": _b64(_spki(key.public_key())), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": {"start": "2020-01-01T00:00:00Z"}},
                    "logId": {"keyId": _b64(self._log_id(key))}}

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [tlog(self.rekor_key, "https://rekor.wasmesh.invalid")],
            "certificateAuthorities": [{
                "subject": {"organization": "wasmesh-test", "commonName": "wasmesh test fulcio"},
                "uri": "https://fulcio.wasmesh.invalid",
                "certChain": {"certificates": [{"rawBytes": _b64(self.ca_cert.public_bytes(serialization.Encoding.DER))}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}}],
            "ctlogs": [tlog(self.ct_key, "https://ct.wasmesh.invalid")],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root()))
        return path

    def _leaf(self, key: ec.EllipticCurvePrivateKey, email: str, issuer: str, when: datetime.datetime) -> x509.Certificate:
        serial = x509.random_serial_number()
        issuer_value = b"\x0c" + _der_length(len(issuer.encode())) + issuer.encode()  # DER UTF8String

        def build(extra: list[x509.ExtensionType]) -> x509.CertificateBuilder:
            builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
                       .public_key(key.public_key()).serial_number(serial)
                       .not_valid_before(when - datetime.timedelta(minutes=1))
                       .not_valid_after(when + datetime.timedelta(minutes=10))
                       .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
                       .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), True)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), False)
                       .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
                       .add_extension(x509.UnrecognizedExtension(ISSUER_V1_OID, issuer.encode()), False)
                       .add_extension(x509.UnrecognizedExtension(ISSUER_V2_OID, issuer_value), False))
            for ext in extra:
                builder = builder.add_extension(ext, False)
            return builder

        precert = build([]).sign(self.ca_key, hashes.SHA256())
        timestamp = int(when.timestamp() * 1000)
        tbs = precert.tbs_certificate_bytes
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key.public_key())).digest()
        signed = struct.pack("!BBQH", 0, 0, timestamp, 1) + issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs \
            + struct.pack("!H", 0)
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (bytes([0]) + self._log_id(self.ct_key) + struct.pack("!QH", timestamp, 0) + bytes([4, 3])
               + struct.pack("!H", len(signature)) + signature)
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        octet = b"\x04" + _der_length(len(sct_list)) + sct_list
        leaf = build([x509.UnrecognizedExtension(SCT_LIST_OID, octet)]).sign(self.ca_key, hashes.SHA256())
        assert leaf.tbs_precertificate_bytes == tbs
        return leaf

    def sign_digest(self, digest_hex: str, email: str, issuer: str) -> bytes:
        """A bundle whose message signature is over the given SHA-256 digest (pre-hashed input)."""
        when = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self._leaf(key, email, issuer, when)
        digest = bytes.fromhex(digest_hex)
        signature = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        cert_pem = leaf.public_bytes(serialization.Encoding.PEM)
        body = _canonical_json({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest_hex}},
            "signature": {"content": _b64(signature), "publicKey": {"content": _b64(cert_pem)}}}})
        return self._bundle(leaf, body, when, {"messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)}, "signature": _b64(signature)}})

    def _bundle(self, leaf: x509.Certificate, body: bytes, when: datetime.datetime, content: dict[str, Any]) -> bytes:
        log_id = self._log_id(self.rekor_key)
        integrated = int(when.timestamp())
        root = hashlib.sha256(b"\x00" + body).digest()
        note = f"{self.origin}\n1\n{_b64(root)}\n"
        note_sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        envelope = note + "\n" + f"\u2014 {self.origin.split()[0]} {_b64(log_id[:4] + note_sig)}\n"
        promise = _canonical_json({"body": _b64(body), "integratedTime": integrated, "logID": log_id.hex(),
                                   "logIndex": 0})
        set_signature = self.rekor_key.sign(promise, ec.ECDSA(hashes.SHA256()))
        entry = {"logIndex": "0", "logId": {"keyId": _b64(log_id)},
                 "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"}, "integratedTime": str(integrated),
                 "inclusionPromise": {"signedEntryTimestamp": _b64(set_signature)},
                 "inclusionProof": {"logIndex": "0", "rootHash": _b64(root), "treeSize": "1", "hashes": [],
                                    "checkpoint": {"envelope": envelope}},
                 "canonicalizedBody": _b64(body)}
        bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                  "verificationMaterial": {"certificate": {"rawBytes": _b64(leaf.public_bytes(serialization.Encoding.DER))},
                                           "tlogEntries": [entry]},
                  **content}
        return json.dumps(bundle).encode()
