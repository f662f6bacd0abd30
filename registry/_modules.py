"""Push, pull and inspect Wasm modules (and any artifact) with a ``RegistryClient``.

Pull resolves tag -> manifest digest (the digest Istio's ``sha256`` pins), follows an
index to the Wasm platform, fetches only the blob that holds the module and checks
every digest on the way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import _mediatypes as mt
from ._client import RegistryClient
from ._credentials import CredentialStore
from ._digest import Digest
from ._errors import RegistryError
from ._manifest import Descriptor, Manifest, parse_manifest
from ._reference import Reference
from ._wasm import Artifact, build_artifact, extract_module, pick_platform


@dataclass(frozen=True)
class PulledModule:
    """A module read from a registry: bytes, the manifest it came from and the image format."""

    module: bytes
    reference: Reference
    manifest_digest: Digest
    manifest: Manifest
    variant: str

    @property
    def module_digest(self) -> Digest:
        return Digest.of(self.module)


def client_for(ref: Reference, store: CredentialStore | None = None, **options: Any) -> RegistryClient:
    """A client for the reference's registry with the credentials the store holds for it."""
    credentials = store.get(ref.registry) if store is not None else None
    return RegistryClient(ref.registry, credentials, **options)


def push_artifact(client: RegistryClient, ref: Reference, artifact: Artifact) -> Digest:
    """Upload the blobs then the manifest, by tag (or by digest when the ref has no tag)."""
    for desc, data in artifact.blobs:
        title = desc.annotations.get(mt.TITLE_ANNOTATION) or desc.media_type.rsplit(".", 1)[-1]
        client.push_blob(ref.repository, data, desc.media_type, label=title)
    target = ref.tag if ref.tag else str(artifact.digest)
    digest, subject_header = client.push_manifest(ref.repository, target, artifact.manifest, artifact.media_type)
    manifest = parse_manifest(artifact.manifest, artifact.media_type)
    if manifest.subject is not None and subject_header is None:
        _update_referrers_tag(client, ref.repository, manifest, digest, len(artifact.manifest))
    return digest


def _update_referrers_tag(client: RegistryClient, repo: str, manifest: Manifest, digest: Digest, size: int) -> None:
    """The OCI 1.1 fallback for registries without the referrers API: an index at tag ``sha256-<hex>``."""
    assert manifest.subject is not None
    subject = manifest.subject.digest
    tag = f"{subject.algorithm}-{subject.hex}"
    entries: list[dict[str, Any]] = []
    if client.head_manifest(repo, tag) is not None:
        data, media_type, _ = client.get_manifest(repo, tag, accept=mt.OCI_INDEX)
        entries = [d.to_json() for d in parse_manifest(data, media_type).manifests if d.digest != digest]
    entry = Descriptor(manifest.media_type, digest, size, manifest.annotations, manifest.effective_artifact_type)
    entries.append(entry.to_json())
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}).encode()
    client.push_manifest(repo, tag, index, mt.OCI_INDEX)


def push_module(client: RegistryClient, ref: Reference, module: bytes, *, variant: str = "oci",
                root_ids: tuple[str, ...] = (), annotations: dict[str, str] | None = None) -> Digest:
    return push_artifact(client, ref, build_artifact(module, variant, root_ids=root_ids, annotations=annotations))


def resolve(client: RegistryClient, ref: Reference) -> tuple[bytes, str, Digest]:
    """Manifest bytes, media type and digest for a tag or pinned digest (the pin must match)."""
    data, media_type, digest = client.get_manifest(ref.repository, ref.reference)
    if ref.digest is not None and digest != ref.digest:
        raise RegistryError("DIGEST_INVALID", f"{ref} resolved to {digest}")
    return data, media_type, digest


def pull_module(client: RegistryClient, ref: Reference, *, expected_digest: Digest | None = None) -> PulledModule:
    """Fetch the module; ``expected_digest`` pins the manifest digest (Istio's ``sha256``)."""
    data, media_type, digest = resolve(client, ref)
    if expected_digest is not None and digest != expected_digest:
        raise RegistryError("DIGEST_INVALID", f"module {ref} has manifest digest {digest}, which does not match "
                            f"the expected {expected_digest}")
    manifest = parse_manifest(data, media_type)
    if manifest.is_index:
        chosen = pick_platform(manifest)
        data, media_type, _ = client.get_manifest(ref.repository, str(chosen.digest))
        manifest = parse_manifest(data, media_type)

    def fetch(desc: Descriptor) -> bytes:
        title = desc.annotations.get(mt.TITLE_ANNOTATION, "module")
        return client.get_blob(ref.repository, desc.digest, desc.size, label=title)

    module, variant = extract_module(manifest, fetch)
    return PulledModule(module, ref.with_digest(digest), digest, manifest, variant)


def describe(client: RegistryClient, ref: Reference) -> dict[str, Any]:
    """What ``wasmesh plugin inspect`` shows: digest, format, layers, signatures, referrers."""
    data, media_type, digest = resolve(client, ref)
    manifest = parse_manifest(data, media_type)
    info: dict[str, Any] = {
        "reference": str(ref), "digest": str(digest), "mediaType": manifest.media_type, "size": len(data),
        "artifactType": manifest.effective_artifact_type, "annotations": manifest.annotations,
        "layers": [d.to_json() for d in manifest.layers], "manifests": [d.to_json() for d in manifest.manifests],
    }
    sig_tag = f"{digest.algorithm}-{digest.hex}.sig"
    sig_digest = client.head_manifest(ref.repository, sig_tag)
    info["cosignSignatures"] = None
    if sig_digest is not None:
        sig_data, sig_type, _ = client.get_manifest(ref.repository, sig_tag)
        info["cosignSignatures"] = {"tag": sig_tag, "digest": str(sig_digest),
                                    "count": len(parse_manifest(sig_data, sig_type).layers)}
    info["referrers"] = [d.to_json() for d in client.referrers(ref.repository, digest)]
    return info
