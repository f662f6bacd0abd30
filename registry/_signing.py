"""cosign-compatible signatures of image manifests: create, attach, find and check.

A signature is a "simple signing" JSON payload naming the manifest digest, signed with
ECDSA P-256; it travels as a layer whose annotation holds the base64 signature. It is
attached twice: in the manifest at tag ``sha256-<hex>.sig`` (what cosign writes and
reads) and as an OCI 1.1 referrer whose ``subject`` is the signed manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _keys
from . import _mediatypes as mt
from ._client import RegistryClient
from ._digest import Digest
from ._errors import RegistryError
from ._manifest import Descriptor, Manifest, parse_manifest
from ._modules import push_artifact, resolve
from ._reference import Reference
from ._wasm import Artifact

SIGNATURE_TYPE = "cosign container image signature"


class VerificationError(Exception):
    """No acceptable signature; the message lists what was found and why each was refused."""


@dataclass(frozen=True)
class Signer:
    """Who signed: a key id (``sha256:`` of the public key) or a Sigstore identity."""

    kind: str
    identity: str
    issuer: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.identity}" + (f" ({self.issuer})" if self.issuer else "")


@dataclass(frozen=True)
class SignedPayload:
    """One candidate signature found in a registry."""

    payload: bytes
    signature: str
    source: str
    annotations: dict[str, str] = field(default_factory=dict)


def simple_signing_payload(docker_reference: str, digest: Digest, optional: dict[str, Any] | None = None) -> bytes:
    doc = {"critical": {"identity": {"docker-reference": docker_reference},
                        "image": {"docker-manifest-digest": str(digest)}, "type": SIGNATURE_TYPE},
           "optional": optional}
    return json.dumps(doc, separators=(",", ":")).encode()


def check_payload(payload: bytes, digest: Digest) -> None:
    """Raise ``VerificationError`` unless the payload is a cosign claim about ``digest``."""
    try:
        doc = json.loads(payload)
        critical = doc["critical"]
        claimed = critical["image"]["docker-manifest-digest"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        raise VerificationError("signature payload is not a cosign simple-signing document") from None
    if kind != SIGNATURE_TYPE:
        raise VerificationError(f"signature payload type is {kind!r}, expected {SIGNATURE_TYPE!r}")
    if claimed != str(digest):
        raise VerificationError(f"signature is for {claimed}, not for {digest}")


def _signature_config(layers: Sequence[Descriptor]) -> bytes:
    doc = {"architecture": "", "os": "", "config": {}, "created": "0001-01-01T00:00:00Z",
           "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]}}
    return json.dumps(doc, separators=(",", ":")).encode()


def build_signature_image(layers: list[tuple[Descriptor, bytes]]) -> Artifact:
    """The manifest cosign stores at ``sha256-<hex>.sig``: one layer per signature."""
    config_json = _signature_config([d for d, _ in layers])
    config = Descriptor.for_bytes(mt.OCI_CONFIG, config_json)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_json(),
           "layers": [d.to_json() for d, _ in layers]}
    blobs = [(config, config_json)] + layers
    return Artifact(json.dumps(doc, separators=(",", ":")).encode(), mt.OCI_MANIFEST, blobs)


def build_referrer(subject: Descriptor, layer: tuple[Descriptor, bytes], artifact_type: str) -> Artifact:
    """An OCI 1.1 artifact manifest pointing at ``subject``, with an empty config."""
    empty = Descriptor.for_bytes(mt.OCI_EMPTY, mt.EMPTY_JSON)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": artifact_type,
           "config": empty.to_json(), "layers": [layer[0].to_json()],
           "subject": {"mediaType": subject.media_type, "digest": str(subject.digest), "size": subject.size}}
    return Artifact(json.dumps(doc, separators=(",", ":")).encode(), mt.OCI_MANIFEST,
                    [(empty, mt.EMPTY_JSON), layer])


@dataclass(frozen=True)
class SignResult:
    digest: Digest
    signature_tag: str
    referrer_digest: Digest | None
    key_id: str


def sign_image(client: RegistryClient, ref: Reference, key: _keys.PrivateKey, *, referrer: bool = True,
               annotations: dict[str, Any] | None = None) -> SignResult:
    """Sign the manifest ``ref`` resolves to and attach the signature both ways."""
    data, media_type, digest = resolve(client, ref)
    payload = simple_signing_payload(ref.name, digest, annotations)
    signature = _keys.sign(key, payload)
    layer_desc = Descriptor.for_bytes(mt.COSIGN_SIMPLESIGNING, payload, {mt.COSIGN_SIGNATURE_ANNOTATION: signature})
    sig_tag = f"{digest.algorithm}-{digest.hex}.sig"
    layers: list[tuple[Descriptor, bytes]] = []
    if client.head_manifest(ref.repository, sig_tag) is not None:
        old, old_type, _ = client.get_manifest(ref.repository, sig_tag)
        for desc in parse_manifest(old, old_type).layers:
            layers.append((desc, client.get_blob(ref.repository, desc.digest, desc.size)))
    layers.append((layer_desc, payload))
    push_artifact(client, ref.with_tag(sig_tag), build_signature_image(layers))
    referrer_digest = None
    if referrer:
        subject = Descriptor(media_type, digest, len(data))
        artifact = build_referrer(subject, (layer_desc, payload), mt.COSIGN_ARTIFACT_TYPE)
        referrer_digest = push_artifact(client, Reference(ref.registry, ref.repository, None, artifact.digest), artifact)
    return SignResult(digest, sig_tag, referrer_digest, _keys.key_id(key.public_key()))


def find_signatures(client: RegistryClient, repo: str, digest: Digest) -> list[SignedPayload]:
    """Every cosign signature layer attached to ``digest``, from the .sig tag and the referrers."""
    found: dict[tuple[Digest, str], SignedPayload] = {}

    def collect(manifest: Manifest, source: str) -> None:
        for desc in manifest.layers:
            if desc.media_type != mt.COSIGN_SIMPLESIGNING:
                continue
            signature = desc.annotations.get(mt.COSIGN_SIGNATURE_ANNOTATION, "")
            if (desc.digest, signature) in found:
                continue
            payload = client.get_blob(repo, desc.digest, desc.size, max_size=1024 * 1024)
            found[(desc.digest, signature)] = SignedPayload(payload, signature, source, dict(desc.annotations))

    sig_tag = f"{digest.algorithm}-{digest.hex}.sig"
    if client.head_manifest(repo, sig_tag) is not None:
        data, media_type, _ = client.get_manifest(repo, sig_tag)
        collect(parse_manifest(data, media_type), f"tag {sig_tag}")
    for entry in client.referrers(repo, digest, mt.COSIGN_ARTIFACT_TYPE):
        data, media_type, _ = client.get_manifest(repo, str(entry.digest))
        manifest = parse_manifest(data, media_type)
        if manifest.subject is None or manifest.subject.digest != digest:
            continue  # a referrers index that lies about its entries
        collect(manifest, f"referrer {entry.digest}")
    return list(found.values())


def verify_signatures(candidates: Sequence[SignedPayload], digest: Digest,
                      keys: Sequence[_keys.PublicKey]) -> list[Signer]:
    """Signers among ``keys`` with a valid signature over a payload naming ``digest``."""
    signers: list[Signer] = []
    reasons: list[str] = []
    for candidate in candidates:
        matching = [k for k in keys if _keys.verify(k, candidate.payload, candidate.signature)]
        if not matching:
            reasons.append(f"{candidate.source}: not signed by any trusted key")
            continue
        try:
            check_payload(candidate.payload, digest)
        except VerificationError as err:
            reasons.append(f"{candidate.source}: {err}")
            continue
        for key in matching:
            signer = Signer("key", _keys.key_id(key))
            if signer not in signers:
                signers.append(signer)
    if not signers:
        if not candidates:
            raise VerificationError(f"{digest} is not signed (no cosign signature at its .sig tag or referrers)")
        raise VerificationError(f"no acceptable signature for {digest}: " + "; ".join(reasons))
    return signers


def verify_image(client: RegistryClient, ref: Reference, keys: Sequence[_keys.PublicKey]) -> tuple[Digest, list[Signer]]:
    """Resolve ``ref`` and check it carries a signature by one of ``keys``."""
    _, _, digest = resolve(client, ref)
    try:
        candidates = find_signatures(client, ref.repository, digest)
    except RegistryError as err:
        raise VerificationError(f"cannot read the signatures of {ref}: {err}") from None
    return digest, verify_signatures(candidates, digest, keys)
