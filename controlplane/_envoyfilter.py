"""EnvoyFilter: patches applied to the generated Envoy resources before they are served.

Every `applyTo` (LISTENER, LISTENER_FILTER, FILTER_CHAIN, NETWORK_FILTER, HTTP_FILTER,
ROUTE_CONFIGURATION, VIRTUAL_HOST, HTTP_ROUTE, CLUSTER, EXTENSION_CONFIG; BOOTSTRAP in
`patch_bootstrap`) and every operation (MERGE, MERGE_AND_REPLACE_LIST, ADD, REMOVE,
INSERT_BEFORE, INSERT_AFTER, INSERT_FIRST, REPLACE) works on the real proto messages, as
istiod does: a patch value is parsed into the target's type and applied by `_patch_ops`
(protobuf merge, list operations); this module decides where. Matches select by
context, proxy, listener/port/filter chain/filter/sub-filter, route configuration/virtual
host/route, or cluster name/port/service/subset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, MutableSequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf.message import Message

from controlplane._mesh import Mesh
from controlplane._patch_ops import clone, merge, patch_list
from controlplane._protos import HCM_NAME, HCM_TYPE, ProtoError, from_dict, pack, unpack
from controlplane._proxies import ROUTER, Proxy, labels_match
from controlplane._resources import Resource

OUTBOUND, INBOUND, GATEWAY = "SIDECAR_OUTBOUND", "SIDECAR_INBOUND", "GATEWAY"

VALUE_TYPES: dict[str, type[Message]] = {
    "LISTENER": listener_pb2.Listener,
    "LISTENER_FILTER": listener_components_pb2.ListenerFilter,
    "FILTER_CHAIN": listener_components_pb2.FilterChain,
    "NETWORK_FILTER": listener_components_pb2.Filter,
    "HTTP_FILTER": hcm_pb2.HttpFilter,
    "ROUTE_CONFIGURATION": route_pb2.RouteConfiguration,
    "VIRTUAL_HOST": route_components_pb2.VirtualHost,
    "HTTP_ROUTE": route_components_pb2.Route,
    "CLUSTER": cluster_pb2.Cluster,
    "EXTENSION_CONFIG": extension_pb2.TypedExtensionConfig,
    "BOOTSTRAP": bootstrap_pb2.Bootstrap,
}
_LIST_OPS = {"INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST"}
ALLOWED_OPERATIONS: dict[str, set[str]] = {
    "LISTENER": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST"},
    "LISTENER_FILTER": {"ADD", "REMOVE", "MERGE", "REPLACE"} | _LIST_OPS,
    "FILTER_CHAIN": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST", "INSERT_FIRST"},
    "NETWORK_FILTER": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST", "REPLACE"} | _LIST_OPS,
    "HTTP_FILTER": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST", "REPLACE"} | _LIST_OPS,
    "ROUTE_CONFIGURATION": {"MERGE", "MERGE_AND_REPLACE_LIST"},
    "VIRTUAL_HOST": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST"},
    "HTTP_ROUTE": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST"} | _LIST_OPS,
    "CLUSTER": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST"},
    "EXTENSION_CONFIG": {"ADD", "REMOVE", "MERGE", "MERGE_AND_REPLACE_LIST"},
    "BOOTSTRAP": {"MERGE", "MERGE_AND_REPLACE_LIST"},
}
_NEEDS_VALUE = {"ADD", "MERGE", "MERGE_AND_REPLACE_LIST", "REPLACE"} | _LIST_OPS


def check_patch(patch: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems with one configPatch as (field path suffix, reason); empty when it is usable."""
    apply_to = str(patch.get("applyTo") or "INVALID")
    body = patch.get("patch") or {}
    operation = str(body.get("operation") or "INVALID")
    if apply_to not in ALLOWED_OPERATIONS:
        return [(".applyTo", f"applyTo {apply_to} is not supported")]
    if operation not in ALLOWED_OPERATIONS[apply_to]:
        return [(".patch.operation", f"operation {operation} is not valid for applyTo {apply_to} "
                                     f"(use one of {', '.join(sorted(ALLOWED_OPERATIONS[apply_to]))})")]
    problems = []
    if operation in _NEEDS_VALUE:
        if not body.get("value"):
            problems.append((".patch.value", f"operation {operation} needs a value"))
        else:
            try:
                from_dict(VALUE_TYPES[apply_to], body["value"])
            except ProtoError as err:
                problems.append((".patch.value", str(err)))
    version = ((patch.get("match") or {}).get("proxy") or {}).get("proxyVersion")
    if version:
        try:
            re.compile(version)
        except re.error as err:
            problems.append((".match.proxy.proxyVersion", f"invalid regex: {err}"))
    return problems


# ---- the generated resources, with what matches need to know about them -------------------------
@dataclass
class Generated:
    """One proxy's resources while they are patched; contexts say inbound or outbound by name."""

    listeners: list[listener_pb2.Listener] = field(default_factory=list)
    routes: list[route_pb2.RouteConfiguration] = field(default_factory=list)
    clusters: list[cluster_pb2.Cluster] = field(default_factory=list)
    extensions: list[extension_pb2.TypedExtensionConfig] = field(default_factory=list)
    contexts: dict[str, str] = field(default_factory=dict)  # "listener:NAME" / "route:NAME" -> context
    ports: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Patch:
    apply_to: str
    operation: str
    match: Mapping[str, Any]
    value: Message | None
    filter_class: str
    source: str


def patches_for(mesh: Mesh, proxy: Proxy) -> list[Patch]:
    """The configPatches that apply to `proxy`, in istiod's order (priority, root first, age, name)."""
    filters = []
    for ef in mesh.of_kind("EnvoyFilter"):
        if ef.namespace not in (proxy.namespace, mesh.root_namespace):
            continue
        if ef.spec.get("targetRefs"):
            names = {r.get("name") for r in ef.spec["targetRefs"] if r.get("kind") == "Gateway"}
            if proxy.labels.get("gateway.networking.k8s.io/gateway-name") not in names:
                continue
        elif not labels_match((ef.spec.get("workloadSelector") or {}).get("labels"), proxy.labels):
            continue
        filters.append(ef)
    filters.sort(key=lambda ef: (int(ef.spec.get("priority", 0)), ef.namespace != mesh.root_namespace,
                                 ef.creation_timestamp, ef.name))
    out: list[Patch] = []
    for ef in filters:
        out.extend(_compile(ef, proxy))
    return out


def _compile(ef: Resource, proxy: Proxy) -> Iterable[Patch]:
    for patch in ef.spec.get("configPatches") or []:
        if check_patch(patch):
            continue  # validation reported it; an invalid patch is never applied
        match = patch.get("match") or {}
        if not _proxy_matches(match.get("proxy") or {}, proxy):
            continue
        body = patch.get("patch") or {}
        value = from_dict(VALUE_TYPES[patch["applyTo"]], body["value"]) if body.get("value") else None
        yield Patch(patch["applyTo"], body["operation"], match, value, str(body.get("filterClass") or ""), str(ef.key))


def _proxy_matches(match: Mapping[str, Any], proxy: Proxy) -> bool:
    if match.get("proxyVersion") and not re.match(str(match["proxyVersion"]), proxy.istio_version):
        return False
    return all(str(proxy.metadata.get(k)) == str(v) for k, v in (match.get("metadata") or {}).items())


def _context_matches(patch: Patch, context: str, proxy: Proxy) -> bool:
    wanted = str(patch.match.get("context") or "ANY")
    if wanted == "ANY":
        return True
    if proxy.type == ROUTER:
        return wanted == GATEWAY
    return wanted == context


def _apply_merge(target: Message, patch: Patch) -> None:
    assert patch.value is not None
    merge(target, patch.value, replace_lists=patch.operation == "MERGE_AND_REPLACE_LIST")


def _list_patch(items: MutableSequence[Any], patch: Patch, matches: Callable[[Any], bool], has_target: bool) -> None:
    patch_list(items, patch.operation, patch.value, matches, has_target)


def _clone(msg: Message | None) -> Any:
    assert msg is not None
    return clone(msg)


# ---- listeners and what is inside them -----------------------------------------------------------
def _listener_port(gen: Generated, listener: listener_pb2.Listener) -> int:
    return gen.ports.get(f"listener:{listener.name}", listener.address.socket_address.port_value)


def _listener_matches(match: Mapping[str, Any], gen: Generated, listener: listener_pb2.Listener) -> bool:
    if match.get("name") and match["name"] != listener.name:
        return False
    if match.get("portNumber") and match["portNumber"] != _listener_port(gen, listener):
        return False
    if match.get("listenerFilter") and not any(f.name == match["listenerFilter"] for f in listener.listener_filters):
        return False
    return True


def _chain_matches(match: Mapping[str, Any], chain: listener_components_pb2.FilterChain) -> bool:
    if not match:
        return True
    if match.get("name") and match["name"] != chain.name:
        return False
    cm = chain.filter_chain_match
    if match.get("sni") and match["sni"] not in cm.server_names:
        return False
    if match.get("transportProtocol") and match["transportProtocol"] != cm.transport_protocol:
        return False
    if match.get("applicationProtocols") and not set(match["applicationProtocols"].split(",")) & set(cm.application_protocols):
        return False
    if match.get("destinationPort") and match["destinationPort"] != cm.destination_port.value:
        return False
    wanted = (match.get("filter") or {}).get("name")
    if wanted and not any(f.name == wanted for f in chain.filters):
        return False
    sub = ((match.get("filter") or {}).get("subFilter") or {}).get("name")
    if sub and not any(h.name == sub for h in _hcm_filters(chain)):
        return False
    return True


def _hcm_filters(chain: listener_components_pb2.FilterChain) -> list[hcm_pb2.HttpFilter]:
    for f in chain.filters:
        if f.name == HCM_NAME and f.typed_config.type_url == HCM_TYPE:
            return list(unpack(f.typed_config).http_filters)
    return []


def _selected_chains(gen: Generated, patch: Patch, proxy: Proxy) -> Iterable[tuple[listener_pb2.Listener, listener_components_pb2.FilterChain]]:
    listener_match = patch.match.get("listener") or {}
    for listener in gen.listeners:
        if not _context_matches(patch, gen.contexts.get(f"listener:{listener.name}", OUTBOUND), proxy):
            continue
        if not _listener_matches(listener_match, gen, listener):
            continue
        for chain in listener.filter_chains:
            if _chain_matches(listener_match.get("filterChain") or {}, chain):
                yield listener, chain


def _patch_listeners(gen: Generated, patch: Patch, proxy: Proxy) -> None:
    listener_match = patch.match.get("listener") or {}
    chain_match = listener_match.get("filterChain") or {}
    if patch.apply_to == "LISTENER":
        if patch.operation == "ADD":
            if patch.match.get("context") in (None, "ANY", OUTBOUND, INBOUND, GATEWAY) and _context_matches(
                    patch, str(patch.match.get("context") or OUTBOUND), proxy):
                added = _clone(patch.value)
                gen.listeners.append(added)
                gen.contexts[f"listener:{added.name}"] = str(patch.match.get("context") or OUTBOUND)
            return
        chosen = [item for item in gen.listeners
                  if _context_matches(patch, gen.contexts.get(f"listener:{item.name}", OUTBOUND), proxy)
                  and _listener_matches(listener_match, gen, item) and _chain_any(item, chain_match)]
        if patch.operation == "REMOVE":
            gen.listeners[:] = [item for item in gen.listeners if item not in chosen]
        else:
            for listener in chosen:
                _apply_merge(listener, patch)
        return
    if patch.apply_to == "LISTENER_FILTER":
        for listener in gen.listeners:
            if _context_matches(patch, gen.contexts.get(f"listener:{listener.name}", OUTBOUND), proxy) and \
                    _listener_matches({k: v for k, v in listener_match.items() if k != "listenerFilter"}, gen, listener):
                target = listener_match.get("listenerFilter")
                _list_patch(listener.listener_filters, patch, _named(target), bool(target))
        return
    if patch.apply_to == "FILTER_CHAIN":
        for listener in gen.listeners:
            if not (_context_matches(patch, gen.contexts.get(f"listener:{listener.name}", OUTBOUND), proxy)
                    and _listener_matches(listener_match, gen, listener)):
                continue
            if patch.operation in ("ADD", "INSERT_FIRST"):
                _list_patch(listener.filter_chains, patch, lambda c: False, False)
            else:
                _list_patch(listener.filter_chains, patch, lambda c: _chain_matches(chain_match, c), True)
        return
    filter_match = chain_match.get("filter") or {}
    for _listener, chain in list(_selected_chains(gen, patch, proxy)):
        if patch.apply_to == "NETWORK_FILTER":
            name = filter_match.get("name")
            _list_patch(chain.filters, patch, _named(name), bool(name))
        elif patch.apply_to == "HTTP_FILTER":
            for net_filter in chain.filters:
                if net_filter.name != HCM_NAME or net_filter.typed_config.type_url != HCM_TYPE:
                    continue
                hcm = unpack(net_filter.typed_config)
                _patch_http_filters(hcm, patch, (filter_match.get("subFilter") or {}).get("name"))
                net_filter.typed_config.CopyFrom(pack(hcm))
        elif patch.apply_to in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"):
            for net_filter in chain.filters:
                if net_filter.name == HCM_NAME and net_filter.typed_config.type_url == HCM_TYPE:
                    hcm = unpack(net_filter.typed_config)
                    if hcm.HasField("route_config"):
                        _patch_route_config(hcm.route_config, patch, gen, INBOUND, proxy)
                        net_filter.typed_config.CopyFrom(pack(hcm))


def _named(name: str | None) -> Callable[[Any], bool]:
    return lambda item: bool(item.name == name)


def _chain_any(listener: listener_pb2.Listener, chain_match: Mapping[str, Any]) -> bool:
    return not chain_match or any(_chain_matches(chain_match, c) for c in listener.filter_chains)


def _patch_http_filters(hcm: hcm_pb2.HttpConnectionManager, patch: Patch, sub_filter: str | None) -> None:
    filters = hcm.http_filters
    if patch.operation == "ADD" and patch.filter_class in ("AUTHN", "AUTHZ", "STATS"):
        filters.insert(_class_position(filters, patch.filter_class), _clone(patch.value))
        return
    _list_patch(filters, patch, lambda f: f.name == sub_filter, bool(sub_filter))


def _class_position(filters: Any, filter_class: str) -> int:
    """Where a filterClass ADD goes: AUTHN first; AUTHZ and STATS after the leading Wasm (ECDS)
    filters and before the built-in ones (fault, CORS, router), since there are no Istio
    authn/authz/stats filters in this chain to anchor on."""
    if filter_class == "AUTHN":
        return 0
    position = 0
    for item in filters:
        if not item.HasField("config_discovery"):
            break
        position += 1
    return position


# ---- routes -------------------------------------------------------------------------------------
def _route_port(gen: Generated, route_config: route_pb2.RouteConfiguration) -> int:
    if route_config.name.isdigit():
        return int(route_config.name)
    parts = route_config.name.split("|")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _route_action(route: route_components_pb2.Route) -> str:
    kind = route.WhichOneof("action")
    return {"route": "ROUTE", "redirect": "REDIRECT", "direct_response": "DIRECT_RESPONSE"}.get(kind or "", "ANY")


def _patch_route_config(rc: route_pb2.RouteConfiguration, patch: Patch, gen: Generated, context: str,
                        proxy: Proxy) -> None:
    match = patch.match.get("routeConfiguration") or {}
    if not _context_matches(patch, context, proxy):
        return
    if match.get("name") and match["name"] != rc.name:
        return
    if match.get("portNumber") and match["portNumber"] != _route_port(gen, rc):
        return
    vhost_match = match.get("vhost") or {}
    if patch.apply_to == "ROUTE_CONFIGURATION":
        _apply_merge(rc, patch)
        return

    def vhost_ok(vh: route_components_pb2.VirtualHost) -> bool:
        if vhost_match.get("name") and vhost_match["name"] != vh.name:
            return False
        return not vhost_match.get("domainName") or vhost_match["domainName"] in vh.domains

    if patch.apply_to == "VIRTUAL_HOST":
        if patch.operation == "ADD":
            rc.virtual_hosts.append(_clone(patch.value))
        else:
            _list_patch(rc.virtual_hosts, patch, vhost_ok, True)
        return
    route_match = vhost_match.get("route") or {}

    def route_ok(route: route_components_pb2.Route) -> bool:
        if route_match.get("name") and route_match["name"] != route.name:
            return False
        action = route_match.get("action") or "ANY"
        return action == "ANY" or action == _route_action(route)

    for vh in rc.virtual_hosts:
        if vhost_ok(vh):
            targeted = bool(route_match.get("name") or (route_match.get("action") not in (None, "ANY")))
            _list_patch(vh.routes, patch, route_ok, targeted or patch.operation in ("MERGE", "REMOVE",
                                                                                    "MERGE_AND_REPLACE_LIST", "REPLACE"))


# ---- clusters and extension configs --------------------------------------------------------------
def _cluster_matches(match: Mapping[str, Any], cluster: cluster_pb2.Cluster) -> bool:
    if match.get("name") and match["name"] != cluster.name:
        return False
    parts = cluster.name.split("|")
    if len(parts) != 4:
        return not any(match.get(k) for k in ("portNumber", "service", "subset"))
    _direction, port, subset, host = parts
    if match.get("portNumber") and str(match["portNumber"]) != port:
        return False
    if match.get("service") and match["service"] != host:
        return False
    return not (match.get("subset") and match["subset"] != subset)


def _patch_clusters(gen: Generated, patch: Patch, proxy: Proxy) -> None:
    if patch.operation == "ADD":
        if _context_matches(patch, str(patch.match.get("context") or OUTBOUND), proxy):
            gen.clusters.append(_clone(patch.value))
        return
    match = patch.match.get("cluster") or {}
    chosen = [c for c in gen.clusters
              if _context_matches(patch, INBOUND if c.name.startswith("inbound|") else OUTBOUND, proxy)
              and _cluster_matches(match, c)]
    if patch.operation == "REMOVE":
        gen.clusters[:] = [c for c in gen.clusters if c not in chosen]
    else:
        for cluster in chosen:
            _apply_merge(cluster, patch)


def _patch_extensions(gen: Generated, patch: Patch) -> None:
    assert patch.value is not None or patch.operation == "REMOVE"
    name = patch.value.name if patch.value is not None else ""
    if patch.operation == "ADD":
        gen.extensions[:] = [e for e in gen.extensions if e.name != name]
        gen.extensions.append(_clone(patch.value))
    elif patch.operation == "REMOVE":
        gen.extensions[:] = [e for e in gen.extensions if e.name != name]
    else:
        for ext in gen.extensions:
            if ext.name == name:
                _apply_merge(ext, patch)


def apply_patches(gen: Generated, patches: list[Patch], proxy: Proxy) -> list[str]:
    """Apply every patch in order; returns a note for each patch that failed (the rest still apply)."""
    notes = []
    for patch in patches:
        try:
            if patch.apply_to == "CLUSTER":
                _patch_clusters(gen, patch, proxy)
            elif patch.apply_to == "EXTENSION_CONFIG":
                _patch_extensions(gen, patch)
            elif patch.apply_to in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"):
                for rc in gen.routes:
                    _patch_route_config(rc, patch, gen, gen.contexts.get(f"route:{rc.name}", OUTBOUND), proxy)
                _patch_listeners(gen, patch, proxy)  # inline (inbound) route configurations
            elif patch.apply_to != "BOOTSTRAP":
                _patch_listeners(gen, patch, proxy)
        except (ProtoError, ValueError, TypeError) as err:
            notes.append(f"{patch.source}: {patch.apply_to} {patch.operation}: {err}")
    return notes


def patch_bootstrap(bootstrap: bootstrap_pb2.Bootstrap, patches: list[Patch]) -> None:
    for patch in patches:
        if patch.apply_to == "BOOTSTRAP" and patch.value is not None:
            _apply_merge(bootstrap, patch)


__all__ = ["ALLOWED_OPERATIONS", "Generated", "Patch", "apply_patches", "check_patch", "merge", "patch_bootstrap",
           "patches_for"]
