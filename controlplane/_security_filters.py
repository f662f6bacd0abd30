"""Where the security filters go in an inbound HTTP filter chain, relative to Wasm plugins.

Istio's order (reference §5.2): ext_authz for CUSTOM policies → AUTHN plugins → Istio authn
(`jwt_authn`) → AUTHZ plugins → RBAC (DENY, AUDIT, ALLOW) → STATS plugins → unspecified
plugins → the rest. `SecurityFilters` holds the three security slots for one inbound port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane._authz_translate import custom_filters, rbac_filters
from controlplane._jwt_authn import issuers, jwks_clusters, jwt_filter
from controlplane._mesh import Mesh
from controlplane._proxies import Proxy


@dataclass(frozen=True)
class SecurityFilters:
    custom: list[dict[str, Any]] = field(default_factory=list)  # before AUTHN plugins
    authn: list[dict[str, Any]] = field(default_factory=list)  # after AUTHN plugins
    authz: list[dict[str, Any]] = field(default_factory=list)  # after AUTHZ plugins


def inbound_security_filters(mesh: Mesh, proxy: Proxy, port: int) -> SecurityFilters:
    """The CUSTOM, authn and RBAC filters for traffic to `port` of `proxy`'s workload."""
    trusted = issuers(mesh, proxy)
    jwt = jwt_filter(mesh, proxy)
    return SecurityFilters(custom=custom_filters(mesh, proxy, port, trusted), authn=[jwt] if jwt else [],
                           authz=rbac_filters(mesh, proxy, port, trusted))


def ordered_http_filters(security: SecurityFilters, plugins: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Plugin filters by phase (AUTHN, AUTHZ, STATS, UNSPECIFIED_PHASE) merged with the security filters."""
    return [*security.custom, *plugins.get("AUTHN", []), *security.authn, *plugins.get("AUTHZ", []),
            *security.authz, *plugins.get("STATS", []), *plugins.get("UNSPECIFIED_PHASE", [])]


def security_clusters(mesh: Mesh, proxy: Proxy) -> list[dict[str, Any]]:
    """Clusters the security filters need that translation does not make anyway (JWKS hosts)."""
    return jwks_clusters(mesh, proxy)


__all__ = ["SecurityFilters", "inbound_security_filters", "ordered_http_filters", "security_clusters"]
