"""Peer metadata: who is on the other end of a request, as Istio's sidecars tell each other.

A sidecar describes itself with a subset of its node metadata (NAME, NAMESPACE,
WORKLOAD_NAME, LABELS, CLUSTER_ID, ...). Istio's HTTP metadata exchange carries that
description in two headers: ``x-envoy-peer-metadata`` (a base64-encoded, serialized
``google.protobuf.Struct``) and ``x-envoy-peer-metadata-id`` (the node id). The client
sidecar adds them to the request, the server sidecar reads and strips them and answers
with its own on the response, so both reporters can fill source and destination labels.

Peer headers are untrusted input: a value that is not base64, not a Struct, or too large
is ignored (the peer becomes unknown), never an error for the request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

PEER_METADATA_HEADER = b"x-envoy-peer-metadata"
PEER_ID_HEADER = b"x-envoy-peer-metadata-id"
#: A larger header is ignored (Istio's sidecars send well under 1 KiB).
MAX_PEER_HEADER_BYTES = 8192
#: Longer strings from a peer are cut, so a peer cannot make label values of any size.
MAX_VALUE_CHARS = 253

# Node metadata keys a sidecar shares about itself (what Istio's exchange sends).
SHARED_KEYS = ("NAME", "NAMESPACE", "WORKLOAD_NAME", "LABELS", "CLUSTER_ID", "MESH_ID", "SERVICE_ACCOUNT",
               "OWNER", "APP_CONTAINERS", "INSTANCE_IPS", "ISTIO_VERSION", "PLATFORM_METADATA")
CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"


def _text(value: Any) -> str:
    return value[:MAX_VALUE_CHARS] if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class WorkloadMetadata:
    """The telemetry-relevant identity of one workload (this sidecar's or a peer's)."""

    workload_name: str = ""
    namespace: str = ""
    app: str = ""
    version: str = ""
    canonical_service: str = ""
    canonical_revision: str = ""
    cluster_id: str = ""
    mesh_id: str = ""
    service_account: str = ""
    node_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], node_id: str = "") -> WorkloadMetadata:
        """Read Istio's node metadata keys; missing or mistyped values stay empty."""
        raw_labels = metadata.get("LABELS")
        labels = {str(k)[:MAX_VALUE_CHARS]: _text(v) for k, v in raw_labels.items()} \
            if isinstance(raw_labels, Mapping) else {}
        workload = _text(metadata.get("WORKLOAD_NAME")) or _workload_from_name(_text(metadata.get("NAME")))
        app = labels.get("app", "") or labels.get("app.kubernetes.io/name", "")
        version = labels.get("version", "") or labels.get("app.kubernetes.io/version", "")
        return cls(
            workload_name=workload,
            namespace=_text(metadata.get("NAMESPACE")),
            app=app,
            version=version,
            canonical_service=labels.get(CANONICAL_NAME_LABEL, "") or app or workload,
            canonical_revision=labels.get(CANONICAL_REVISION_LABEL, "") or version or "latest",
            cluster_id=_text(metadata.get("CLUSTER_ID")),
            mesh_id=_text(metadata.get("MESH_ID")),
            service_account=_text(metadata.get("SERVICE_ACCOUNT")),
            node_id=node_id[:MAX_VALUE_CHARS],
            labels=labels,
        )

    @classmethod
    def from_node(cls, node: Any) -> WorkloadMetadata:
        """From an ``envoy.config.core.v3.Node`` (the sidecar's own bootstrap node)."""
        if node is None:
            return cls()
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        return cls.from_metadata(metadata, node.id)


def _workload_from_name(pod_name: str) -> str:
    """A pod name ``reviews-v1-5d8f7c-x2x4k`` belongs to workload ``reviews-v1`` (Deployment naming)."""
    parts = pod_name.split("-")
    if len(parts) >= 3 and len(parts[-1]) == 5 and parts[-2].isalnum():
        return "-".join(parts[:-2])
    return pod_name


def shared_metadata(node: Any) -> dict[str, Any]:
    """The part of a node's metadata a sidecar tells its peers."""
    if node is None or not node.HasField("metadata"):
        return {}
    metadata = json_format.MessageToDict(node.metadata)
    return {key: metadata[key] for key in SHARED_KEYS if key in metadata}


def encode_peer_header(metadata: Mapping[str, Any]) -> bytes:
    """``x-envoy-peer-metadata``: base64 of the serialized Struct."""
    message = struct_pb2.Struct()
    message.update(dict(metadata))
    return base64.b64encode(message.SerializeToString(deterministic=True))


def decode_peer_header(value: bytes | None, node_id: bytes | None = None) -> WorkloadMetadata | None:
    """The peer a header describes, or None when absent or unreadable."""
    if not value or len(value) > MAX_PEER_HEADER_BYTES:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
        message = struct_pb2.Struct()
        message.ParseFromString(raw)
        metadata = json_format.MessageToDict(message)
    except (binascii.Error, ValueError, DecodeError, RecursionError):
        return None
    return WorkloadMetadata.from_metadata(metadata, (node_id or b"").decode("latin-1"))


def principal_namespace(principal: str) -> str:
    """``spiffe://td/ns/NAMESPACE/sa/NAME`` -> ``NAMESPACE`` ("" when not in that form)."""
    marker = principal.find("/ns/")
    if marker < 0:
        return ""
    rest = principal[marker + 4:]
    return rest.split("/", 1)[0]
