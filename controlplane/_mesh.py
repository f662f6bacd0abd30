"""One consistent view of the mesh for a push: resources by kind, services, proxies.

Translation reads only this object, so a push works on a snapshot that cannot change under
it. The lookups here follow istiod's visibility rules: `exportTo` ("." means the resource's
own namespace, "*" or absent means everyone), DestinationRule precedence (the client's
namespace, then the service's, then the root namespace) and root-namespace resources applying
mesh-wide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane._hosts import fqdn, host_matches
from controlplane._meshconfig import MeshConfig
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource
from controlplane._services import Service, ServiceRegistry

ROOT_NAMESPACE = "istio-system"


def _visible(resource: Resource, namespace: str) -> bool:
    export = resource.spec.get("exportTo") or ["*"]
    return "*" in export or namespace in export or ("." in export and resource.namespace == namespace)


@dataclass
class Mesh:
    """Resources and proxies at one instant, with the lookups translation needs."""

    resources: list[Resource]
    proxies: list[Proxy] = field(default_factory=list)
    root_namespace: str = ROOT_NAMESPACE
    config: MeshConfig = field(default_factory=MeshConfig)  # trust domain, extension providers

    def __post_init__(self) -> None:
        self.by_kind: dict[str, list[Resource]] = {}
        for res in sorted(self.resources, key=lambda r: (r.creation_timestamp, r.name, r.namespace)):
            self.by_kind.setdefault(res.kind, []).append(res)
        self.registry = ServiceRegistry(self.resources, self.proxies)

    def of_kind(self, kind: str) -> list[Resource]:
        return self.by_kind.get(kind, [])

    def sidecar_for(self, proxy: Proxy) -> Resource | None:
        """The Sidecar resource scoping `proxy`: one selecting it, else its namespace's default,
        else the root namespace's default (oldest first on ties, as istiod)."""
        own = [s for s in self.of_kind("Sidecar") if s.namespace == proxy.namespace]
        for sidecar in own:
            labels = (sidecar.spec.get("workloadSelector") or {}).get("labels")
            if labels and labels_match(labels, proxy.labels):
                return sidecar
        for candidates in (own, [s for s in self.of_kind("Sidecar") if s.namespace == self.root_namespace]):
            for sidecar in candidates:
                if not (sidecar.spec.get("workloadSelector") or {}).get("labels"):
                    return sidecar
        return None

    def services_for(self, proxy: Proxy) -> list[Service]:
        """Services `proxy` may reach: exported to its namespace and allowed by its Sidecar's egress."""
        visible = [s for s in self.registry.services if s.visible_from(proxy.namespace)]
        sidecar = self.sidecar_for(proxy)
        egress = (sidecar.spec.get("egress") or []) if sidecar is not None else []
        if not egress:
            return visible
        patterns = [str(h) for item in egress for h in item.get("hosts") or []]
        return [s for s in visible if any(_egress_allows(p, s, proxy.namespace) for p in patterns)]

    def virtual_services(self, proxy: Proxy, gateway: str = "mesh") -> list[Resource]:
        """VirtualServices visible to `proxy` that bind to `gateway` (the sidecar mesh by default)."""
        out = []
        for vs in self.of_kind("VirtualService"):
            gateways = vs.spec.get("gateways") or ["mesh"]
            if gateway in gateways and _visible(vs, proxy.namespace):
                out.append(vs)
        return out

    def virtual_service_for(self, proxy: Proxy, hostname: str) -> Resource | None:
        """The first (oldest) VirtualService whose hosts cover `hostname`, as istiod merges none."""
        for vs in self.virtual_services(proxy):
            if any(host_matches(fqdn(str(h), vs.namespace), hostname) for h in vs.spec.get("hosts") or []):
                return vs
        return None

    def destination_rule_for(self, proxy: Proxy, hostname: str, service_namespace: str) -> Resource | None:
        candidates = [dr for dr in self.of_kind("DestinationRule")
                      if host_matches(fqdn(str(dr.spec.get("host", "")), dr.namespace), hostname)
                      and _visible(dr, proxy.namespace)
                      and labels_match((dr.spec.get("workloadSelector") or {}).get("matchLabels"), proxy.labels)]
        for namespace in (proxy.namespace, service_namespace, self.root_namespace):
            for dr in candidates:
                if dr.namespace == namespace:
                    return dr
        return candidates[0] if candidates else None

    def applies_to(self, resource: Resource, proxy: Proxy, selector: Mapping[str, str] | None) -> bool:
        """Namespace-scoped selection: same namespace (or root namespace) and matching labels."""
        if resource.namespace not in (proxy.namespace, self.root_namespace):
            return False
        return labels_match(selector, proxy.labels)


def _egress_allows(pattern: str, service: Service, namespace: str) -> bool:
    """Sidecar egress host `namespace/dnsName`: namespace `*` any, `.` the proxy's own, `~` none."""
    space, _, host = pattern.partition("/")
    if space == "~" or (space == "." and service.namespace != namespace) or (
            space not in ("*", ".") and space != service.namespace):
        return False
    return host_matches(host, service.hostname) or host_matches(fqdn(host, service.namespace), service.hostname)


def subset_labels(rule: Resource | None, subset: str) -> dict[str, Any] | None:
    if rule is None:
        return None
    for item in rule.spec.get("subsets") or []:
        if item.get("name") == subset:
            return dict(item.get("labels") or {})
    return None


def selected(resources: Iterable[Resource], proxy: Proxy, mesh: Mesh, selector_field: str) -> list[Resource]:
    out = []
    for res in resources:
        sel = res.spec.get(selector_field) or {}
        labels = sel.get("labels") if "labels" in sel else sel.get("matchLabels")
        if mesh.applies_to(res, proxy, labels):
            out.append(res)
    return out


__all__ = ["ROOT_NAMESPACE", "Mesh", "selected", "subset_labels"]
