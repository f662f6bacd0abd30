"""The certificate authority: signs workload CSRs into short-lived SPIFFE X.509-SVIDs.

Citadel's job in Istio. State lives in one folder (``cacerts`` layout, see ``_files``):
the current signing material at the top, a staged new root in ``next/`` and a retired one
still trusted in ``previous/``. The trust bundle is every root among the three, so a root
rotation never leaves a workload unable to verify a peer:

1. ``stage_root()``: a new root in ``next/``; the bundle is old + new, signing stays old.
2. wait until every workload has renewed once (it picks up the bundle with its certificate);
3. ``activate_next_root()``: sign with the new root; the old one moves to ``previous/``;
4. wait one maximum certificate lifetime, so no certificate from the old root is valid;
5. ``retire_previous_root()``: the bundle is the new root alone.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from wasmhost.security import SpiffeId, SpiffeIdError

from ._files import (
    CaFilesError,
    SigningMaterial,
    generate_root,
    load_signing_material,
    save_signing_material,
)

DEFAULT_TTL = dt.timedelta(hours=24)
MAX_TTL = dt.timedelta(days=90)
TRUST_BUNDLE_FILE = "trust-bundle.pem"
_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)


class CsrRejected(Exception):
    """The CSR cannot be signed; the message names the field and the reason (safe to return)."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed leaf and what the caller needs to use it, all PEM."""

    cert_chain: list[str]  # leaf, intermediates..., root (IstioCertificateResponse order)
    trust_bundle: list[str]  # every root workloads must trust now
    not_after: dt.datetime


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class CertificateAuthority:
    """Signs CSRs for SPIFFE IDs in one trust domain, from the material in ``directory``."""

    def __init__(
        self,
        directory: Path,
        trust_domain: str,
        *,
        default_ttl: dt.timedelta = DEFAULT_TTL,
        max_ttl: dt.timedelta = MAX_TTL,
        clock_skew: dt.timedelta = dt.timedelta(seconds=60),
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if default_ttl <= dt.timedelta(0) or max_ttl < default_ttl:
            raise ValueError("need 0 < default_ttl <= max_ttl")
        SpiffeId(trust_domain, "x", "x")  # validates the trust domain
        self.directory = Path(directory)
        self.trust_domain = trust_domain
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.clock_skew = clock_skew
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._signing = self._load_or_create()
        self._loaded_stamp = self._stamp()
        self._publish_bundle()

    # --- state on disk -----------------------------------------------------------------------

    def _load_or_create(self) -> SigningMaterial:
        if (self.directory / "ca-key.pem").exists() or (self.directory / "ca-cert.pem").exists():
            return load_signing_material(self.directory)
        material = generate_root(self.trust_domain)
        save_signing_material(self.directory, material)
        return material

    def _stamp(self) -> int:
        try:
            return (self.directory / "ca-cert.pem").stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _current_signing(self) -> SigningMaterial:
        """The signing material, reloaded when another process (``rotate activate``) replaced it."""
        stamp = self._stamp()
        if stamp != self._loaded_stamp:
            self._signing = load_signing_material(self.directory)
            self._loaded_stamp = stamp
        return self._signing

    def _optional(self, name: str) -> SigningMaterial | None:
        folder = self.directory / name
        return load_signing_material(folder) if folder.is_dir() else None

    def trust_bundle(self) -> list[x509.Certificate]:
        """Current root, then staged and retired-but-trusted roots, without duplicates."""
        roots = [self._signing.root]
        for name in ("next", "previous"):
            material = self._optional(name)
            if material is not None and material.root not in roots:
                roots.append(material.root)
        return roots

    def trust_bundle_pem(self) -> str:
        return "".join(_pem(r) for r in self.trust_bundle())

    def _publish_bundle(self) -> None:
        """Write ``trust-bundle.pem`` for distribution (what Istio puts in istio-ca-root-cert)."""
        path = self.directory / TRUST_BUNDLE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.trust_bundle_pem())
        tmp.replace(path)

    @property
    def root(self) -> x509.Certificate:
        return self._signing.root

    # --- rotation ------------------------------------------------------------------------------

    def stage_root(self, material: SigningMaterial | None = None) -> x509.Certificate:
        """Step 1: put a new root (generated unless given) in ``next/``; it is trusted, not yet used."""
        with self._lock:
            new = material or generate_root(self.trust_domain)
            save_signing_material(self.directory / "next", new)
            self._publish_bundle()
            return new.root

    def activate_next_root(self) -> None:
        """Step 3: sign with the staged root; the current one moves to ``previous/`` (still trusted)."""
        with self._lock:
            staged = self._optional("next")
            if staged is None:
                raise CaFilesError("next/: no staged root; call stage_root first")
            previous = self.directory / "previous"
            shutil.rmtree(previous, ignore_errors=True)
            save_signing_material(previous, self._signing)
            save_signing_material(self.directory, staged)
            shutil.rmtree(self.directory / "next")
            self._signing = staged
            self._loaded_stamp = self._stamp()
            self._publish_bundle()

    def retire_previous_root(self) -> None:
        """Step 5: stop trusting the root that signed before the last activation."""
        with self._lock:
            shutil.rmtree(self.directory / "previous", ignore_errors=True)
            self._publish_bundle()

    # --- signing -------------------------------------------------------------------------------

    def _lifetime(self, requested_seconds: int) -> dt.timedelta:
        if requested_seconds < 0:
            raise CsrRejected(f"validity_duration: {requested_seconds} is negative")
        if requested_seconds == 0:
            return self.default_ttl
        return min(dt.timedelta(seconds=requested_seconds), self.max_ttl)

    def _parse_csr(self, csr_pem: bytes | str) -> x509.CertificateSigningRequest:
        raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(raw)
        except ValueError as exc:
            raise CsrRejected(f"csr: not a PEM certificate signing request ({exc})") from exc
        try:
            valid = csr.is_signature_valid
        except (InvalidSignature, ValueError):
            valid = False
        if not valid:
            raise CsrRejected("csr: its signature does not verify with its public key")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise CsrRejected("csr: the public key must be EC P-256")
        return csr

    def _requested_identity(self, csr: x509.CertificateSigningRequest) -> SpiffeId:
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound as exc:
            raise CsrRejected("csr: no subjectAltName; it must request one spiffe:// URI") from exc
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        others = len(list(sans)) - len(uris)
        if len(uris) != 1 or others:
            raise CsrRejected(f"csr: subjectAltName must be exactly one spiffe:// URI, got {len(list(sans))} names")
        try:
            return SpiffeId.parse(uris[0])
        except SpiffeIdError as exc:
            raise CsrRejected(f"csr: {exc}") from exc

    def sign(self, csr_pem: bytes | str, caller: SpiffeId, *, validity_seconds: int = 0) -> IssuedCertificate:
        """Sign ``csr_pem`` if it asks for exactly ``caller`` (the authenticated identity)."""
        csr = self._parse_csr(csr_pem)
        requested = self._requested_identity(csr)
        if caller.trust_domain != self.trust_domain:
            raise CsrRejected(f"caller trust domain {caller.trust_domain!r} is not {self.trust_domain!r}")
        if requested != caller:
            raise CsrRejected(f"csr: requests {requested} but the caller is authenticated as {caller}")
        lifetime = self._lifetime(validity_seconds)
        with self._lock:
            signing = self._current_signing()
            bundle = self.trust_bundle()
        cert = self._build_leaf(signing, csr.public_key(), caller, lifetime)
        return IssuedCertificate(
            cert_chain=[_pem(cert), *(_pem(c) for c in signing.chain)],
            trust_bundle=[_pem(r) for r in bundle],
            not_after=cert.not_valid_after_utc,
        )

    def issue_server_certificate(
        self, identity: SpiffeId, dns_names: list[str], *, lifetime: dt.timedelta | None = None
    ) -> tuple[bytes, bytes]:
        """Key and chain PEM for the control plane's own TLS endpoints (SPIFFE ID + DNS names)."""
        key = ec.generate_private_key(ec.SECP256R1())
        with self._lock:
            signing = self._current_signing()
        cert = self._build_leaf(signing, key.public_key(), identity, lifetime or self.default_ttl, dns_names)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        chain_pem = "".join([_pem(cert), *(_pem(c) for c in signing.chain[:-1])]).encode()
        return key_pem, chain_pem

    def _build_leaf(
        self,
        signing: SigningMaterial,
        public_key: object,
        identity: SpiffeId,
        lifetime: dt.timedelta,
        dns_names: list[str] | None = None,
    ) -> x509.Certificate:
        now = self._clock()
        not_after = min(now + lifetime, signing.cert.not_valid_after_utc)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        names += [x509.DNSName(n) for n in dns_names or []]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(signing.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - min(self.clock_skew, lifetime))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_KEY_USAGE, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing.key.public_key()), critical=False
            )
        )
        return builder.sign(signing.key, hashes.SHA256())
