"""Parsing and validation of image manifests and indexes (OCI 1.1 and Docker schema 2).

Manifests arrive from untrusted peers, so each field is checked and an error names the
field. The parsed form lists every descriptor a manifest points at, which is what the
server needs to check references, GC needs to mark, and the referrers API needs to index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import _mediatypes as mt
from ._digest import Digest
from ._errors import RegistryError

MAX_MANIFEST_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest, size, plus optional artifact type/annotations."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    platform: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = self.platform
        return out

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> Descriptor:
        return cls(media_type, Digest.of(data), len(data), dict(annotations or {}))


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its own media type and the descriptors it references."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str]

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_MANIFESTS

    @property
    def effective_artifact_type(self) -> str | None:
        """The artifact type the referrers API reports: ``artifactType``, else the config type."""
        if self.artifact_type:
            return self.artifact_type
        if self.config is not None and not self.is_index:
            return self.config.media_type
        return None

    def blob_references(self) -> tuple[Descriptor, ...]:
        return ((self.config,) if self.config else ()) + self.layers


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise RegistryError("MANIFEST_INVALID", f"{where}: expected an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise RegistryError("MANIFEST_INVALID", f"{where}.mediaType: expected a non-empty string")
    digest_text = value.get("digest")
    if not isinstance(digest_text, str):
        raise RegistryError("MANIFEST_INVALID", f"{where}.digest: expected a string")
    try:
        digest = Digest.parse(digest_text)
    except RegistryError as err:
        raise RegistryError("MANIFEST_INVALID", f"{where}.digest: {err.message}") from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError("MANIFEST_INVALID", f"{where}.size: expected a non-negative integer")
    annotations = _annotations(value.get("annotations"), f"{where}.annotations")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise RegistryError("MANIFEST_INVALID", f"{where}.artifactType: expected a string")
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise RegistryError("MANIFEST_INVALID", f"{where}.platform: expected an object")
    return Descriptor(media_type, digest, size, annotations, artifact_type, platform)


def _annotations(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RegistryError("MANIFEST_INVALID", f"{where}: expected a map of strings")
    return dict(value)


def parse_manifest(data: bytes, content_type: str | None = None) -> Manifest:
    """Validate manifest bytes; ``content_type`` is the request's (may be absent or generic)."""
    if len(data) > MAX_MANIFEST_SIZE:
        raise RegistryError("PAYLOAD_TOO_LARGE", f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_SIZE}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise RegistryError("MANIFEST_INVALID", f"manifest is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest: expected a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise RegistryError("MANIFEST_INVALID", "mediaType: expected a string")
    ctype = (content_type or "").split(";", 1)[0].strip()
    if ctype not in mt.ALL_MANIFESTS:
        ctype = ""
    if declared and ctype and declared != ctype:
        raise RegistryError("MANIFEST_INVALID", f"mediaType {declared!r} does not match Content-Type {ctype!r}")
    media_type = declared or ctype or (mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST)
    if media_type not in mt.ALL_MANIFESTS:
        raise RegistryError("MANIFEST_INVALID", f"mediaType {media_type!r} is not a supported manifest type")
    if doc.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", "schemaVersion: expected 2")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise RegistryError("MANIFEST_INVALID", "artifactType: expected a string")
    annotations = _annotations(doc.get("annotations"), "annotations")
    if media_type in mt.INDEX_MANIFESTS:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError("MANIFEST_INVALID", "manifests: expected a list")
        children = tuple(_descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries))
        return Manifest(media_type, None, (), children, subject, artifact_type, annotations)
    config = _descriptor(doc.get("config"), "config")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise RegistryError("MANIFEST_INVALID", "layers: expected a list")
    layers = tuple(_descriptor(e, f"layers[{i}]") for i, e in enumerate(layers_doc))
    return Manifest(media_type, config, layers, (), subject, artifact_type, annotations)
