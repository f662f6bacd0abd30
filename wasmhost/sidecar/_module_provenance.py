"""Module provenance: the signature material the control plane sends with a verified module,
and the wasmesh sidecar's own re-verification of it (sans-io apart from Sigstore roots).

The control plane verifies every `oci://` module once; a wasmesh sidecar with a trust policy of
its own (`WASMESH_TRUST_POLICY`) need not take that verdict on faith. With each distributed Wasm
extension the control plane sends the image reference, the signed manifest, the cosign
simple-signing payloads and signatures (and Sigstore bundles) it found, so the sidecar can check,
without any registry access, that:

- a signature is valid for a key or identity its own policy trusts for that image,
- the signed payload names the digest of the manifest sent along, and
- the manifest's Wasm layer digest is the sha256 of the module bytes the sidecar received.

Carrier: one entry of the VM's `environment_variables.host_env_keys`,
`WASMESH_MODULE_PROVENANCE:<base64url JSON>`. `host_env_keys` names host variables to pass
into the VM; no host defines a variable of that name, so real Envoy passes nothing and the
module's WASI environment is unchanged (a `key_values` entry would reach the module's environ
in Envoy). The wasmesh sidecar takes the entry out before it reads host variables.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry import (
    Descriptor,
    Digest,
    Reference,
    RegistryError,
    Signer,
    TrustPolicy,
    VerificationError,
    extract_module,
    parse_manifest,
    verify_bundle,
)
from registry._signing import SignedPayload, verify_signatures
from registry._wasm import pick_platform

CARRIER = "WASMESH_MODULE_PROVENANCE:"
MAX_SIGNATURES = 16


class ProvenanceError(Exception):
    """Why the provenance sent with a module does not vouch for it (the message names the part)."""


@dataclass(frozen=True)
class Provenance:
    """What the control plane found when it verified one `oci://` module."""

    reference: str  # oci://registry/repository[:tag]
    manifest: bytes  # the signed manifest (or index), as the registry served it
    media_type: str
    signatures: tuple[tuple[bytes, str], ...] = ()  # (simple-signing payload, base64 signature)
    bundles: tuple[bytes, ...] = ()  # Sigstore bundle JSON documents
    platform_manifest: bytes = b""  # the Wasm platform's manifest when `manifest` is an index
    layer: bytes = b""  # the module layer when it is a tar archive (the raw bytes cannot match it)

    def to_json(self) -> dict[str, Any]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        doc: dict[str, Any] = {
            "reference": self.reference, "manifest": b64(self.manifest), "mediaType": self.media_type,
            "signatures": [{"payload": b64(p), "signature": s} for p, s in self.signatures[:MAX_SIGNATURES]]}
        if self.bundles:
            doc["bundles"] = [b64(b) for b in self.bundles[:MAX_SIGNATURES]]
        if self.platform_manifest:
            doc["platformManifest"] = b64(self.platform_manifest)
        if self.layer:
            doc["layer"] = b64(self.layer)
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Provenance:
        if not isinstance(doc, dict):
            raise ProvenanceError("provenance: expected a JSON object")

        def text(key: str, required: bool = True) -> str:
            value = doc.get(key, None if required else "")
            if not isinstance(value, str):
                raise ProvenanceError(f"provenance.{key}: expected a string")
            return value

        def raw(value: Any, where: str) -> bytes:
            if not isinstance(value, str):
                raise ProvenanceError(f"provenance.{where}: expected base64 text")
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ProvenanceError(f"provenance.{where}: not valid base64") from None

        signatures = doc.get("signatures") or []
        bundles = doc.get("bundles") or []
        if not isinstance(signatures, list) or not isinstance(bundles, list):
            raise ProvenanceError("provenance.signatures/bundles: expected lists")
        pairs = []
        for index, entry in enumerate(signatures[:MAX_SIGNATURES]):
            if not isinstance(entry, dict) or not isinstance(entry.get("signature"), str):
                raise ProvenanceError(f"provenance.signatures[{index}]: expected {{payload, signature}}")
            pairs.append((raw(entry.get("payload"), f"signatures[{index}].payload"), entry["signature"]))
        return cls(text("reference"), raw(doc.get("manifest"), "manifest"), text("mediaType"), tuple(pairs),
                   tuple(raw(b, f"bundles[{i}]") for i, b in enumerate(bundles[:MAX_SIGNATURES])),
                   raw(doc.get("platformManifest"), "platformManifest") if doc.get("platformManifest") else b"",
                   raw(doc.get("layer"), "layer") if doc.get("layer") else b"")


def encode(provenance: Provenance) -> str:
    """The `host_env_keys` entry that carries `provenance`."""
    text = json.dumps(provenance.to_json(), separators=(",", ":"), sort_keys=True).encode()
    return CARRIER + base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode(entry: str) -> Provenance:
    """The provenance in a `host_env_keys` entry made by `encode`."""
    body = entry[len(CARRIER):] if entry.startswith(CARRIER) else entry
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise ProvenanceError("provenance: not base64url-encoded JSON") from None
    return Provenance.from_json(doc)


def split_carrier(host_env_keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(provenance entries, the real host variable names)."""
    entries = [k for k in host_env_keys if k.startswith(CARRIER)]
    return entries, [k for k in host_env_keys if not k.startswith(CARRIER)]


def reverify(provenance: Provenance, module: bytes, policy: TrustPolicy) -> tuple[Signer, ...]:
    """The signers `policy` accepts for this module; raises `ProvenanceError` saying why not."""
    try:
        ref = Reference.parse(provenance.reference)
    except ValueError as err:
        raise ProvenanceError(f"provenance.reference: {err}") from None
    digest = Digest.of(provenance.manifest)
    signers = _signers(ref, digest, provenance, policy)
    try:
        manifest = parse_manifest(provenance.manifest, provenance.media_type)
        if manifest.is_index:
            chosen = pick_platform(manifest)
            if not provenance.platform_manifest or Digest.of(provenance.platform_manifest) != chosen.digest:
                raise ProvenanceError(f"{ref}: the index names platform manifest {chosen.digest}, which was not "
                                      "sent along")
            manifest = parse_manifest(provenance.platform_manifest, chosen.media_type)
    except RegistryError as err:
        raise ProvenanceError(f"provenance.manifest: {err.message}") from None
    received = hashlib.sha256(module).hexdigest()

    def layer(desc: Descriptor) -> bytes:
        if desc.digest.hex == received:
            return module
        if provenance.layer and Digest.of(provenance.layer) == desc.digest:
            return provenance.layer
        raise ProvenanceError(f"{ref}@{digest}: the manifest's Wasm layer is {desc.digest}, but the module "
                              f"received has sha256:{received}")

    try:
        extracted, _variant = extract_module(manifest, layer)
    except RegistryError as err:
        raise ProvenanceError(f"{ref}@{digest}: {err.message}") from None
    if extracted != module:
        raise ProvenanceError(f"{ref}@{digest}: the module in the manifest's layer is not the module received "
                              f"(sha256:{received})")
    return signers


def _signers(ref: Reference, digest: Digest, provenance: Provenance, policy: TrustPolicy) -> tuple[Signer, ...]:
    decision = policy.decide(ref)
    if not decision.require_signature:
        return ()
    if not decision.covered:
        raise ProvenanceError(f"the sidecar's trust policy has no rule for {ref.name}")
    reasons: list[str] = []
    if decision.keys:
        candidates = [SignedPayload(p, s, f"signature {i}") for i, (p, s) in enumerate(provenance.signatures)]
        try:
            return tuple(verify_signatures(candidates, digest, decision.keys))
        except VerificationError as err:
            reasons.append(str(err))
    if decision.identities:
        root = policy.trusted_root
        if root is None:
            reasons.append("Sigstore identities are trusted but the sidecar's policy has no trustedRoot")
        elif not provenance.bundles:
            reasons.append(f"{digest}: no Sigstore bundle was sent along")
        else:
            for bundle in provenance.bundles:
                try:
                    return (verify_bundle(bundle, digest, root, list(decision.identities)),)
                except VerificationError as err:
                    reasons.append(str(err))
    if not decision.keys and not decision.identities:
        reasons.append(f"the sidecar's trust policy names no key or identity for {ref.name}")
    raise ProvenanceError(f"{ref}: " + "; ".join(reasons))


__all__ = ["CARRIER", "Provenance", "ProvenanceError", "decode", "encode", "reverify", "split_carrier"]
