"""Sigstore bundles attached to images, verified offline against a given trusted root.

A bundle is attached as an OCI 1.1 referrer (artifact type and layer
``application/vnd.dev.sigstore.bundle.v0.3+json``). It is accepted for manifest digest D
when either its message signature is over D itself (the signed input is the manifest,
given pre-hashed) or its DSSE envelope carries an in-toto statement with D among its
subjects. The ``sigstore`` package does all certificate, SCT and transparency-log checks;
it is imported only here, and only when a bundle is checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _mediatypes as mt
from ._client import RegistryClient
from ._digest import Digest
from ._manifest import Descriptor
from ._modules import push_artifact
from ._reference import Reference
from ._signing import Signer, VerificationError, build_referrer

IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class SigstoreIdentity:
    """A certificate identity (SAN: e-mail, URI, ...) and the OIDC issuer that vouched for it."""

    subject: str
    issuer: str


def _sigstore() -> Any:
    try:
        import sigstore.hashes
        import sigstore.models
        import sigstore.verify
        import sigstore.verify.policy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise VerificationError(f"Sigstore bundles need the 'sigstore' package: {err}") from None
    return sigstore


def verify_bundle(bundle_json: bytes, digest: Digest, trusted_root: Path | str,
                  identities: list[SigstoreIdentity]) -> Signer:
    """Check one bundle for manifest ``digest``; the signer must be one of ``identities``."""
    sigstore = _sigstore()
    from sigstore.errors import Error as SigstoreError
    from sigstore_models.common.v1 import HashAlgorithm

    if not identities:
        raise VerificationError("no Sigstore identity is trusted for this image")
    try:
        root = sigstore.models.TrustedRoot.from_file(str(trusted_root))
        verifier = sigstore.verify.Verifier(trusted_root=root)
        bundle = sigstore.models.Bundle.from_json(bundle_json)
    except (SigstoreError, ValueError, OSError) as err:
        raise VerificationError(f"cannot load Sigstore material: {err}") from None
    policy = sigstore.verify.policy.AnyOf([
        sigstore.verify.policy.Identity(identity=i.subject, issuer=i.issuer) for i in identities])
    try:
        if bundle._dsse_envelope is not None:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
            _check_statement(payload_type, payload, digest)
        else:
            hashed = sigstore.hashes.Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest.hex))
            verifier.verify_artifact(hashed, bundle, policy)
    except SigstoreError as err:
        raise VerificationError(f"Sigstore bundle rejected: {err}") from None
    cert = bundle.signing_certificate
    for identity in identities:
        try:
            sigstore.verify.policy.Identity(identity=identity.subject, issuer=identity.issuer).verify(cert)
        except SigstoreError:
            continue
        return Signer("sigstore", identity.subject, identity.issuer)
    raise VerificationError("Sigstore bundle verified but matches no trusted identity")  # pragma: no cover


def _check_statement(payload_type: str, payload: bytes, digest: Digest) -> None:
    if payload_type != IN_TOTO_PAYLOAD:
        raise VerificationError(f"DSSE payload type is {payload_type!r}, expected {IN_TOTO_PAYLOAD!r}")
    try:
        subjects = json.loads(payload)["subject"]
        hexes = {s["digest"].get(digest.algorithm) for s in subjects}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise VerificationError("DSSE payload is not an in-toto statement with subjects") from None
    if digest.hex not in hexes:
        raise VerificationError(f"in-toto statement does not name {digest}")


def attach_bundle(client: RegistryClient, ref: Reference, bundle_json: bytes) -> Digest:
    """Attach a bundle to the manifest ``ref`` resolves to, as an OCI 1.1 referrer."""
    data, media_type, digest = client.get_manifest(ref.repository, ref.reference)
    subject = Descriptor(media_type, digest, len(data))
    layer = Descriptor.for_bytes(mt.SIGSTORE_BUNDLE, bundle_json)
    artifact = build_referrer(subject, (layer, bundle_json), mt.SIGSTORE_BUNDLE)
    return push_artifact(client, Reference(ref.registry, ref.repository, None, artifact.digest), artifact)


def find_bundles(client: RegistryClient, repo: str, digest: Digest) -> list[bytes]:
    from ._manifest import parse_manifest

    bundles = []
    for entry in client.referrers(repo, digest, mt.SIGSTORE_BUNDLE):
        data, media_type, _ = client.get_manifest(repo, str(entry.digest))
        manifest = parse_manifest(data, media_type)
        if manifest.subject is None or manifest.subject.digest != digest:
            continue
        for layer in manifest.layers:
            if layer.media_type == mt.SIGSTORE_BUNDLE:
                bundles.append(client.get_blob(repo, layer.digest, layer.size, max_size=4 * 1024 * 1024))
    return bundles
