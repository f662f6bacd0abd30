"""PeerAuthentication (security.istio.io): which mTLS mode applies to a workload's port.

Istio's resolution: the most specific policy wins (workload selector > namespace > mesh-wide
in the root namespace; among equals, the oldest, i.e. first given); ``UNSET`` inherits from
the next level up; ``portLevelMtls`` (only in policies with a selector) overrides per port,
and an ``UNSET`` port mode inherits the workload's. With nothing set the mode is PERMISSIVE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._inbound import PeerAuthenticationMode

_MODES = {"UNSET", "DISABLE", "PERMISSIVE", "STRICT"}
MESH_DEFAULT = PeerAuthenticationMode.PERMISSIVE


class PeerAuthenticationError(ValueError):
    """A PeerAuthentication is invalid; the message starts with the field path."""


@dataclass(frozen=True)
class PeerAuthentication:
    name: str
    namespace: str
    mode: str = "UNSET"
    selector: Mapping[str, str] | None = None
    port_modes: Mapping[int, str] = field(default_factory=dict)


def _mode(value: Any, where: str) -> str:
    if value is None:
        return "UNSET"
    if value not in _MODES:
        raise PeerAuthenticationError(f"{where}: {value!r} is not one of {', '.join(sorted(_MODES))}")
    return str(value)


def parse_peer_authentication(manifest: Mapping[str, Any]) -> PeerAuthentication:
    metadata = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise PeerAuthenticationError("spec: must be an object")
    unknown = sorted(set(spec) - {"selector", "mtls", "portLevelMtls"})
    if unknown:
        raise PeerAuthenticationError(f"spec.{unknown[0]}: unknown field")
    selector = (spec.get("selector") or {}).get("matchLabels")
    ports: dict[int, str] = {}
    for key, value in (spec.get("portLevelMtls") or {}).items():
        where = f"spec.portLevelMtls[{key}]"
        if not str(key).isdigit() or not 1 <= int(key) <= 65535:
            raise PeerAuthenticationError(f"{where}: {key!r} is not a port number")
        ports[int(key)] = _mode((value or {}).get("mode"), f"{where}.mode")
    if ports and not selector:
        raise PeerAuthenticationError("spec.portLevelMtls: only allowed with a workload selector")
    return PeerAuthentication(
        name=str(metadata.get("name", "")), namespace=str(metadata.get("namespace", "")),
        mode=_mode((spec.get("mtls") or {}).get("mode"), "spec.mtls.mode"),
        selector=dict(selector) if selector else None, port_modes=ports,
    )


def effective_mode(
    policies: Iterable[PeerAuthentication],
    namespace: str,
    labels: Mapping[str, str],
    port: int | None = None,
    *,
    root_namespace: str = "istio-system",
) -> PeerAuthenticationMode:
    """The mode for traffic to ``port`` of the workload (``namespace``, ``labels``)."""
    mesh = namespace_wide = workload = None
    for policy in policies:
        if policy.selector is None:
            if policy.namespace == namespace and namespace_wide is None:
                namespace_wide = policy
            elif policy.namespace == root_namespace and mesh is None:
                mesh = policy
        elif policy.namespace == namespace and workload is None and all(
            labels.get(k) == v for k, v in policy.selector.items()
        ):
            workload = policy
    mode = MESH_DEFAULT.value
    for level in (mesh, namespace_wide, workload):
        if level is not None and level.mode != "UNSET":
            mode = level.mode
    if workload is not None and port is not None and workload.port_modes.get(port, "UNSET") != "UNSET":
        mode = workload.port_modes[port]
    return PeerAuthenticationMode(mode)
