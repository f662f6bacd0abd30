"""ECDSA P-256 signing keys in PEM files, as cosign uses them.

Public keys are SubjectPublicKeyInfo PEM, byte-compatible with ``cosign.pub``. Private
keys are PKCS#8 PEM, encrypted with a password when one is given (cosign's own
"ENCRYPTED SIGSTORE PRIVATE KEY" needs NaCl secretbox, which ``cryptography`` lacks;
``cosign import-key-pair`` reads PKCS#8). Signatures are ASN.1 DER ECDSA-SHA256, base64
in cosign's annotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file."""


def generate_keypair(password: bytes | None = None) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) for a new P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return private_pem, public_pem(key.public_key())


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(data: bytes, password: bytes | None = None, source: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=password or None)
    except TypeError as err:
        raise KeyFileError(f"{source}: {'a password is required' if password is None else err}") from None
    except ValueError as err:
        raise KeyFileError(f"{source}: cannot read the key (wrong password or not a PEM private key): {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{source}: expected an ECDSA P-256 key")
    return key


def load_public_key(data: bytes, source: str = "public key") -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise KeyFileError(f"{source}: not a PEM public key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{source}: expected an ECDSA public key")
    return key


def load_public_key_file(path: Path | str) -> PublicKey:
    path = Path(path)
    try:
        return load_public_key(path.read_bytes(), str(path))
    except OSError as err:
        raise KeyFileError(f"{path}: {err.strerror}") from None


def key_id(key: PublicKey) -> str:
    """A stable short name for a key: sha256 of its DER SubjectPublicKeyInfo."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign(key: PrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def verify(key: PublicKey, payload: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
