"""Proxies as the control plane sees them: identity and placement read from the Envoy node.

The node metadata follows istio-agent's keys (NAME, NAMESPACE, LABELS, SERVICE_ACCOUNT,
INSTANCE_IPS, POD_PORTS), so an Istio-style bootstrap identifies a workload the same way.
Two wasmesh keys say where the proxy's listeners bind, since there is no traffic capture on
a laptop: OUTBOUND_PORTS maps a service port to the local port its outbound listener binds,
INBOUND_PORTS maps an application port to the local port of its inbound listener.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

SIDECAR, ROUTER = "sidecar", "router"


class NodeError(ValueError):
    """The node's identity or metadata cannot be used (names the field and the reason)."""


@dataclass(frozen=True)
class AppPort:
    number: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Proxy:
    """One connected proxy: who it is (workload identity) and how its listeners bind."""

    id: str
    type: str = SIDECAR
    name: str = ""
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    ips: tuple[str, ...] = ("127.0.0.1",)
    app_ports: tuple[AppPort, ...] = ()
    outbound_ports: Mapping[int, int] = field(default_factory=dict)
    inbound_ports: Mapping[int, int] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    istio_version: str = ""

    @property
    def address(self) -> str:
        return self.ips[0] if self.ips else "127.0.0.1"

    def scope_key(self) -> tuple[Any, ...]:
        """Everything generation depends on: proxies with equal keys get equal configuration."""
        return (self.type, self.namespace, tuple(sorted(self.labels.items())), self.app_ports,
                tuple(sorted(self.outbound_ports.items())), tuple(sorted(self.inbound_ports.items())),
                tuple(sorted((k, str(v)) for k, v in self.metadata.items() if k not in ("NAME", "INSTANCE_IPS"))))


def _port_map(value: Any, key: str) -> dict[int, int]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise NodeError(f"node.metadata.{key}: not JSON: {err}") from None
    if not isinstance(value, Mapping):
        raise NodeError(f"node.metadata.{key}: expected a map of port to port")
    out: dict[int, int] = {}
    for port, local in value.items():
        try:
            number, local_number = int(port), int(local)
        except (TypeError, ValueError):
            raise NodeError(f"node.metadata.{key}.{port}: ports must be integers") from None
        if not (0 < number < 65536 and 0 <= local_number < 65536):
            raise NodeError(f"node.metadata.{key}.{port}: port out of range")
        out[number] = local_number
    return out


def _app_ports(value: Any) -> tuple[AppPort, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise NodeError(f"node.metadata.POD_PORTS: not JSON: {err}") from None
    if not isinstance(value, list):
        raise NodeError("node.metadata.POD_PORTS: expected a list of {containerPort, name, protocol}")
    ports = []
    for index, item in enumerate(value):
        try:
            number = int(item["containerPort"])
        except (TypeError, KeyError, ValueError):
            raise NodeError(f"node.metadata.POD_PORTS[{index}].containerPort: required integer") from None
        if not 0 < number < 65536:
            raise NodeError(f"node.metadata.POD_PORTS[{index}].containerPort: {number} is out of range")
        ports.append(AppPort(number, str(item.get("name", "")), str(item.get("protocol", "TCP"))))
    return tuple(ports)


def proxy_from_node(node: base_pb2.Node) -> Proxy:
    """Read a Proxy from an xDS node; raises NodeError naming the bad field."""
    if not node.id:
        raise NodeError("node.id is required")
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    parts = node.id.split("~")
    proxy_type = parts[0] if len(parts) == 4 and parts[0] in (SIDECAR, ROUTER) else SIDECAR
    name = str(metadata.get("NAME") or (parts[2].split(".")[0] if len(parts) == 4 else node.id))
    namespace = str(metadata.get("NAMESPACE") or (parts[3].split(".")[0] if len(parts) == 4 else "default"))
    labels = metadata.get("LABELS") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise NodeError("node.metadata.LABELS: expected a map of strings")
    ips_value = metadata.get("INSTANCE_IPS") or (parts[1] if len(parts) == 4 else "127.0.0.1")
    ips = tuple(ip.strip() for ip in str(ips_value).split(",") if ip.strip())
    return Proxy(
        id=node.id,
        type=proxy_type,
        name=name,
        namespace=namespace,
        labels=dict(labels),
        service_account=str(metadata.get("SERVICE_ACCOUNT") or "default"),
        ips=ips or ("127.0.0.1",),
        app_ports=_app_ports(metadata.get("POD_PORTS")),
        outbound_ports=_port_map(metadata.get("OUTBOUND_PORTS"), "OUTBOUND_PORTS"),
        inbound_ports=_port_map(metadata.get("INBOUND_PORTS"), "INBOUND_PORTS"),
        metadata=metadata,
        istio_version=str(metadata.get("ISTIO_VERSION", "")),
    )


def labels_match(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes equality selector: every selector label present with the same value."""
    return all(labels.get(key) == value for key, value in (selector or {}).items())


__all__ = ["ROUTER", "SIDECAR", "AppPort", "NodeError", "Proxy", "labels_match", "proxy_from_node"]
