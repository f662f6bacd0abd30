"""Per-proxy generation: the mesh in, one `Snapshot` of Envoy resources out.

Listeners, routes, clusters, endpoints and extension configs are generated as Envoy JSON,
parsed into the real message types, patched by the EnvoyFilters that select the proxy, and
versioned per type by a digest of their deterministic serialization, so an unchanged type
keeps its version and is not pushed again. Proxies with the same scope (namespace, labels,
ports, metadata) share one generation per push.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from controlplane._clusters import inbound_clusters, outbound_clusters, outbound_endpoints
from controlplane._envoyfilter import INBOUND, OUTBOUND, Generated, apply_patches, patches_for
from controlplane._gateways import gateway_config
from controlplane._grpcgen import adapt_cluster, api_listeners, is_grpc
from controlplane._listeners import INBOUND_PREFIX, gateway_filters, inbound_listeners, outbound_listeners
from controlplane._mesh import Mesh
from controlplane._protos import (
    CLUSTER,
    ENDPOINT,
    EXTENSION_CONFIG,
    LISTENER,
    RESOURCE_CLASSES,
    ROUTE,
    digest,
    from_dict,
    pack,
    resource_name,
)
from controlplane._proxies import ROUTER, Proxy
from controlplane._routes import outbound_route_configs
from controlplane._secrets import SECRET_KIND, pull_secrets
from controlplane._security_filters import security_clusters
from controlplane._wasm import extension_config

if TYPE_CHECKING:
    from controlplane._module_placement import ModulePlacements

TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, EXTENSION_CONFIG)


@dataclass(frozen=True)
class TypeSnapshot:
    version: str
    resources: Mapping[str, Message]


@dataclass(frozen=True)
class Snapshot:
    """Everything one proxy should have, by type URL; `notes` lists patches that failed.

    Per-resource digests and packed Anys are memoised: a snapshot is shared by every proxy of
    the same scope, so a push to many proxies serializes each resource once.
    """

    types: Mapping[str, TypeSnapshot]
    notes: tuple[str, ...] = ()
    _digests: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)
    _packed: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)
    _shared: Snapshot | None = field(default=None, compare=False, repr=False)

    def with_private(self, extra: Mapping[str, TypeSnapshot]) -> Snapshot:
        """This snapshot plus types that belong to one proxy only (its SDS secrets): shared types
        keep using this snapshot's memo, the private ones get their own."""
        return Snapshot({**self.types, **extra}, self.notes, _shared=self)

    def _owner(self, type_url: str) -> Snapshot:
        shared = self._shared
        return shared if shared is not None and type_url in shared.types else self

    def subset_version(self, type_url: str, names: Iterable[str]) -> str:
        """A version of just these resources (for types a proxy subscribes to by name)."""
        parts = [f"{name}={self.resource_version(type_url, name)}" for name in names]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def resource_version(self, type_url: str, name: str) -> str:
        """The version of one resource (a digest of its serialization)."""
        owner = self._owner(type_url)
        key = (type_url, name)
        if key not in owner._digests:
            owner._digests[key] = digest([owner.resources(type_url)[name]])
        return owner._digests[key]

    def packed(self, type_url: str, name: str) -> Any:
        owner = self._owner(type_url)
        key = (type_url, name)
        if key not in owner._packed:
            owner._packed[key] = pack(owner.resources(type_url)[name])
        return owner._packed[key]

    def resources(self, type_url: str) -> Mapping[str, Message]:
        entry = self.types.get(type_url)
        return entry.resources if entry is not None else {}

    def version(self, type_url: str) -> str:
        entry = self.types.get(type_url)
        return entry.version if entry is not None else ""


def _parse(type_url: str, items: list[dict[str, Any]]) -> list[Any]:
    cls = RESOURCE_CLASSES[type_url]
    return [from_dict(cls, item) for item in items]


def _dedupe_domains(route_configs: list[dict[str, Any]]) -> None:
    """Envoy rejects a domain listed by two virtual hosts: keep it on the first one only."""
    for config in route_configs:
        seen: set[str] = set()
        for vhost in config["virtual_hosts"]:
            vhost["domains"] = [d for d in vhost["domains"] if not (d in seen or seen.add(d))]  # type: ignore[func-returns-value]


def generate(mesh: Mesh, proxy: Proxy, secrets: Mapping[str, str] | None = None,
             modules: ModulePlacements | None = None) -> Snapshot:
    """All resources for `proxy`, EnvoyFilter patches applied."""
    gen = Generated()
    in_listeners: list[dict[str, Any]] = []
    if is_grpc(proxy):
        out_listeners, routes = api_listeners(mesh, proxy)
    elif proxy.type == ROUTER:
        out_listeners, routes = gateway_config(mesh, proxy, lambda port: gateway_filters(mesh, proxy, port))
    else:
        out_listeners = outbound_listeners(mesh, proxy)
        in_listeners = inbound_listeners(mesh, proxy)
        routes = outbound_route_configs(mesh, proxy)
    _dedupe_domains(routes)
    gen.listeners = _parse(LISTENER, out_listeners + in_listeners)
    for item in out_listeners:
        gen.contexts[f"listener:{item['name']}"] = OUTBOUND
        gen.ports[f"listener:{item['name']}"] = int(item["name"].replace(":", "_").rsplit("_", 1)[1])
    for item in in_listeners:
        gen.contexts[f"listener:{item['name']}"] = INBOUND
        gen.ports[f"listener:{item['name']}"] = int(item["name"][len(INBOUND_PREFIX):])
    gen.routes = _parse(ROUTE, routes)
    clusters = outbound_clusters(mesh, proxy) + inbound_clusters(proxy)
    if not is_grpc(proxy):
        clusters += security_clusters(mesh, proxy)
    if is_grpc(proxy):
        clusters = [adapt_cluster(c) for c in clusters]
    elif modules is not None and modules.serves_any:
        clusters.append(modules.cluster())  # proxies fetch verified modules from the control plane
    gen.clusters = _parse(CLUSTER, clusters)
    secrets = secrets if secrets is not None else pull_secrets(mesh.of_kind(SECRET_KIND))
    rendered = [extension_config(p, secrets, modules) for p in mesh.of_kind("WasmPlugin")]
    gen.extensions = _parse(EXTENSION_CONFIG, [e for e in rendered if e is not None])
    patches = patches_for(mesh, proxy)
    notes = apply_patches(gen, modules.patches(patches) if modules is not None else patches, proxy)
    referenced = _ecds_names(gen)
    gen.extensions = [e for e in gen.extensions if e.name in referenced]
    endpoints = _parse(ENDPOINT, outbound_endpoints(mesh, proxy))
    eds_names = {c.eds_cluster_config.service_name or c.name for c in gen.clusters if c.type == c.EDS}
    endpoints = [e for e in endpoints if e.cluster_name in eds_names]
    by_type = {LISTENER: gen.listeners, ROUTE: gen.routes, CLUSTER: gen.clusters, ENDPOINT: endpoints,
               EXTENSION_CONFIG: gen.extensions}
    types = {}
    for type_url, messages in by_type.items():
        named = {resource_name(m): m for m in messages}
        ordered = [named[name] for name in sorted(named)]
        types[type_url] = TypeSnapshot(digest(ordered), {resource_name(m): m for m in ordered})
    return Snapshot(types, tuple(notes))


def _ecds_names(gen: Generated) -> set[str]:
    """Names of the extension configs the generated listeners fetch over ECDS."""
    from controlplane._protos import HCM_TYPE, unpack

    names: set[str] = set()
    for listener in gen.listeners:
        for chain in listener.filter_chains:
            for net_filter in chain.filters:
                if net_filter.HasField("config_discovery"):
                    names.add(net_filter.name)
                if net_filter.typed_config.type_url == HCM_TYPE:
                    hcm = unpack(net_filter.typed_config)
                    names.update(f.name for f in hcm.http_filters if f.HasField("config_discovery"))
    return names


@dataclass
class Generator:
    """Generation for one push, cached by proxy scope so identical proxies cost one generation."""

    mesh: Mesh
    secrets: Mapping[str, str] | None = None  # default: the pull secrets among the mesh's resources
    modules: ModulePlacements | None = None  # where verified modules come from (None: as istiod renders them)
    _cache: dict[Any, Snapshot] = field(default_factory=dict)

    def snapshot(self, proxy: Proxy) -> Snapshot:
        key = proxy.scope_key()
        if key not in self._cache:
            self._cache[key] = generate(self.mesh, proxy, self.secrets, self.modules)
        return self._cache[key]


__all__ = ["TYPE_ORDER", "Generator", "Snapshot", "TypeSnapshot", "generate"]
