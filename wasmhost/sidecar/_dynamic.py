"""xDS resources turned into something the plan builder serves: the dynamic half of the config.

The xDS client (``_xds_client``) hands over the resources of DiscoveryResponses; this module keeps
the accepted ones per type and assembles, from the static bootstrap plus those resources, one
self-contained bootstrap for the ordinary plan builder: RDS route configurations are inlined into
their connection managers, ECDS extension configs into their HTTP filters, EDS assignments into
their clusters. Envoy's warming rules decide what goes in: a listener whose routes or extension
configs have not arrived keeps serving its previous version (a new one is not bound yet), and a
cluster waits for its endpoints the same way. Every inlined part remembers where it came from
(``Origin``), so a build error names the xDS resource and the field inside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import any_pb2

from ._config_load import register_any_types
from ._errors import ConfigError, join_path

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
EXTENSION = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# the order Envoy needs: what a resource refers to comes before it
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, EXTENSION, SECRET)
WILDCARD = frozenset({LISTENER, CLUSTER})
SHORT_NAMES = {LISTENER: "Listener", CLUSTER: "Cluster", ENDPOINT: "ClusterLoadAssignment",
               ROUTE: "RouteConfiguration", EXTENSION: "TypedExtensionConfig", SECRET: "Secret"}
_MESSAGES: dict[str, Any] = {
    LISTENER: listener_pb2.Listener, CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    ROUTE: route_pb2.RouteConfiguration, EXTENSION: extension_pb2.TypedExtensionConfig, SECRET: secret_pb2.Secret,
}
_WRAPPED = "type.googleapis.com/envoy.service.discovery.v3.Resource"
SELF = "self"  # an Origin inside the resource being inlined
DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0
HCM_TYPE_URL = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                "HttpConnectionManager")

Resources = Mapping[str, Mapping[str, "XdsResource"]]
Received = Mapping[str, AbstractSet[str]]  # named type -> names the control plane has answered for
_NOTHING: Received = {}


@dataclass(frozen=True)
class XdsResource:
    """One resource as accepted: its type, name, and the response version that last changed it."""

    type_url: str
    name: str
    version: str
    message: Any
    updated: float  # wall-clock seconds, for /config_dump


def resource_name(type_url: str, message: Any) -> str:
    return str(message.cluster_name if type_url == ENDPOINT else message.name)


def decode_resources(type_url: str, version: str, items: Iterable[Any],
                     now: float | None = None) -> tuple[dict[str, XdsResource], list[str]]:
    """The resources of one response by name, and a message for each one that cannot be used."""
    stamp = time.time() if now is None else now
    decoded: dict[str, XdsResource] = {}
    errors: list[str] = []
    message_class = _MESSAGES.get(type_url)
    short = SHORT_NAMES.get(type_url, type_url)
    if message_class is None:
        return decoded, [f"resources of type {type_url} are not supported by the wasmesh sidecar"]
    for index, item in enumerate(items):
        if item.type_url == _WRAPPED:
            from envoy.service.discovery.v3 import discovery_pb2

            wrapper = discovery_pb2.Resource()
            item.Unpack(wrapper)
            item = wrapper.resource
        if item.type_url != type_url:
            errors.append(f"resources[{index}]: a {item.type_url} in a response of type {type_url}")
            continue
        message = message_class()
        try:
            unpacked = item.Unpack(message)
        except Exception as err:  # noqa: BLE001 - whatever the bytes are, the answer is a NACK
            errors.append(f"resources[{index}]: cannot decode the {short}: {err}")
            continue
        if not unpacked:
            errors.append(f"resources[{index}]: cannot decode the {short}")
            continue
        register_any_types(message)
        name = resource_name(type_url, message)
        if not name:
            errors.append(f"resources[{index}]: a {short} without a name")
        elif name in decoded:
            errors.append(f"{short} {name}: sent twice in one response")
        else:
            decoded[name] = XdsResource(type_url, name, version, message, stamp)
    return decoded, errors


def merge(current: Resources, received: Mapping[str, Mapping[str, XdsResource]],
          removed: Mapping[str, AbstractSet[str]] = _NOTHING) -> dict[str, dict[str, XdsResource]]:
    """``current`` updated by a batch: wildcard types are replaced whole, named types per resource
    (and ``removed`` names dropped, for incremental xDS).

    A resource whose content did not change keeps its old entry (version, time), as in Envoy.
    """
    out = {type_url: dict(found) for type_url, found in current.items()}
    for type_url in set(received) | set(removed):
        base = current.get(type_url, {})
        merged: dict[str, XdsResource] = {} if type_url in WILDCARD and type_url in received else dict(base)
        for name in removed.get(type_url, ()):
            merged.pop(name, None)
        for name, resource in received.get(type_url, {}).items():
            old = base.get(name)
            merged[name] = old if old is not None and old.message == resource.message else resource
        out[type_url] = merged
    return out


def changed_keys(before: Resources, after: Resources) -> set[tuple[str, str]]:
    """(type, name) of every resource added, changed or removed between two states."""
    keys: set[tuple[str, str]] = set()
    for type_url in set(before) | set(after):
        old, new = before.get(type_url, {}), after.get(type_url, {})
        for name in set(old) | set(new):
            if old.get(name) is not new.get(name):
                keys.add((type_url, name))
    return keys


# --- references between resources ---------------------------------------------------------------


def is_ads(source: Any) -> bool:
    return bool(source.WhichOneof("config_source_specifier") == "ads")


def _hcm_of(network_filter: Any) -> Any | None:
    if network_filter.WhichOneof("config_type") != "typed_config" or network_filter.typed_config.type_url != HCM_TYPE_URL:
        return None
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    return hcm if network_filter.typed_config.Unpack(hcm) else None


def listener_references(listener: Any) -> tuple[set[str], set[str]]:
    """Route configuration names (RDS) and extension config names (ECDS) a listener needs."""
    routes: set[str] = set()
    extensions: set[str] = set()
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            hcm = _hcm_of(network_filter)
            if hcm is None:
                continue
            if hcm.WhichOneof("route_specifier") == "rds" and is_ads(hcm.rds.config_source):
                routes.add(hcm.rds.route_config_name)
            for http_filter in hcm.http_filters:
                if http_filter.WhichOneof("config_type") == "config_discovery" \
                        and is_ads(http_filter.config_discovery.config_source):
                    extensions.add(http_filter.name)
    return routes, extensions


def eds_name(cluster: Any) -> str | None:
    """The ClusterLoadAssignment name an EDS cluster over ADS needs (None for other clusters)."""
    if cluster.WhichOneof("cluster_discovery_type") != "type" or cluster.type != cluster_pb2.Cluster.EDS:
        return None
    config = cluster.eds_cluster_config
    if not is_ads(config.eds_config):
        return None
    return str(config.service_name or cluster.name)


def subscriptions(static: Any, resources: Resources, serving: Resources) -> dict[str, frozenset[str]]:
    """Names to subscribe to for the named types, from every listener and cluster in play."""
    routes: set[str] = set()
    extensions: set[str] = set()
    endpoints: set[str] = set()
    listeners = list(static.static_resources.listeners)
    listeners += [r.message for r in resources.get(LISTENER, {}).values()]
    listeners += [r.message for r in serving.get(LISTENER, {}).values()]
    for listener in listeners:
        found_routes, found_extensions = listener_references(listener)
        routes |= found_routes
        extensions |= found_extensions
    clusters = list(static.static_resources.clusters)
    clusters += [r.message for r in resources.get(CLUSTER, {}).values()]
    clusters += [r.message for r in serving.get(CLUSTER, {}).values()]
    secrets: set[str] = set()
    for cluster in clusters:
        name = eds_name(cluster)
        if name is not None:
            endpoints.add(name)
        if cluster.HasField("transport_socket"):
            secrets |= secret_references(cluster.transport_socket)
    for listener in listeners:
        for chain in listener.filter_chains:
            if chain.HasField("transport_socket"):
                secrets |= secret_references(chain.transport_socket)
    return {ENDPOINT: frozenset(endpoints), ROUTE: frozenset(routes), EXTENSION: frozenset(extensions),
            SECRET: frozenset(secrets)}


# --- inlining ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """``path`` of the assembled bootstrap came from resource (type_url, name) at ``inner``.

    ``type_url`` is empty for parts of the bootstrap file itself.
    """

    path: str
    type_url: str
    name: str
    inner: str


@dataclass
class Inlined:
    """A listener or cluster with its dependencies inlined, or what it still waits for."""

    message: Any
    origins: list[Origin] = field(default_factory=list)  # paths relative to the message
    missing: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, message) to refuse
    waits: dict[tuple[str, str], float | None] = field(default_factory=dict)  # -> initial fetch timeout

    def wait(self, type_url: str, name: str, source: Any) -> None:
        """A dependency that has not arrived; ``source`` (its ConfigSource) says how long to wait."""
        self.missing.append(f"{SHORT_NAMES[type_url]} {name}")
        self.waits[(type_url, name)] = initial_fetch_timeout(source)


def initial_fetch_timeout(source: Any) -> float | None:
    """Seconds to wait for a first answer (Envoy's default is 15); None for 0s, which waits forever."""
    if not source.HasField("initial_fetch_timeout"):
        return DEFAULT_INITIAL_FETCH_TIMEOUT
    timeout = source.initial_fetch_timeout
    seconds = timeout.seconds + timeout.nanos / 1e9
    return seconds if seconds > 0 else None


def inline_listener(listener: Any, resources: Resources, received: Received = _NOTHING) -> Inlined:
    """A copy of ``listener`` with RDS routes and ECDS filter configs taken from ``resources``.

    What was answered but never accepted does not hold the listener back (Envoy's warming ends
    with the first answer): a route configuration becomes an empty one (every request 404) and
    a filter keeps ``config_discovery``, which the plan builder turns into a filter failing
    every request with a 500.
    """
    copy = listener_pb2.Listener()
    copy.CopyFrom(listener)
    result = Inlined(copy)
    routes = resources.get(ROUTE, {})
    extensions = resources.get(EXTENSION, {})
    for c_index, chain in enumerate(copy.filter_chains):
        if chain.HasField("transport_socket"):
            _inline_tls(chain.transport_socket, f"filter_chains[{c_index}].transport_socket", resources, result)
        for f_index, network_filter in enumerate(chain.filters):
            hcm = _hcm_of(network_filter)
            if hcm is None:
                continue
            hcm_path = f"filter_chains[{c_index}].filters[{f_index}].typed_config"
            changed = False
            if hcm.WhichOneof("route_specifier") == "rds" and is_ads(hcm.rds.config_source):
                name = hcm.rds.route_config_name
                route = routes.get(name)
                if route is None and name in received.get(ROUTE, ()):
                    hcm.route_config.CopyFrom(route_pb2.RouteConfiguration(name=name))
                    hcm.route_config.validate_clusters.value = False
                    changed = True
                elif route is None:
                    result.wait(ROUTE, name, hcm.rds.config_source)
                else:
                    route_config = route_pb2.RouteConfiguration()
                    route_config.CopyFrom(route.message)
                    if not route_config.HasField("validate_clusters"):
                        route_config.validate_clusters.value = False  # Envoy's default for RDS
                    hcm.route_config.CopyFrom(route_config)
                    result.origins.append(Origin(f"{hcm_path}.route_config", ROUTE, name, ""))
                    changed = True
            for h_index, http_filter in enumerate(hcm.http_filters):
                if http_filter.WhichOneof("config_type") != "config_discovery":
                    continue
                discovery = http_filter.config_discovery
                if not is_ads(discovery.config_source):
                    continue  # refused by the field check, under the listener
                filter_path = f"{hcm_path}.http_filters[{h_index}]"
                extension = extensions.get(http_filter.name)
                if extension is None:
                    if discovery.HasField("default_config") and (
                            discovery.apply_default_config_without_warming
                            or http_filter.name in received.get(EXTENSION, ())):
                        typed = discovery.default_config
                        result.origins.append(Origin(f"{filter_path}.typed_config", SELF, "",
                                                     f"{filter_path}.config_discovery.default_config"))
                    elif http_filter.name in received.get(EXTENSION, ()):
                        continue  # answered, never accepted: the filter fails requests
                    else:
                        result.wait(EXTENSION, http_filter.name, discovery.config_source)
                        continue
                else:
                    typed = extension.message.typed_config
                    allowed = list(discovery.type_urls)
                    if allowed and typed.type_url not in allowed:
                        result.problems.append((EXTENSION, http_filter.name, describe(
                            EXTENSION, http_filter.name, ConfigError(
                                "typed_config", f"type {typed.type_url} is not one the filter {http_filter.name!r} "
                                                f"of listener {listener.name!r} accepts ({', '.join(allowed)})"))))
                        result.missing.append(f"TypedExtensionConfig {http_filter.name}")
                        continue
                    result.origins.append(Origin(f"{filter_path}.typed_config", EXTENSION, http_filter.name,
                                                 "typed_config"))
                typed_copy = any_pb2.Any()
                typed_copy.CopyFrom(typed)
                http_filter.typed_config.CopyFrom(typed_copy)  # replaces config_discovery (one of)
                changed = True
            if changed:
                network_filter.typed_config.Pack(hcm)
    return result


def inline_cluster(cluster: Any, resources: Resources, received: Received = _NOTHING) -> Inlined:
    """A copy of ``cluster``; an EDS cluster over ADS becomes STATIC with its assignment inlined.

    An assignment answered but never accepted leaves the cluster without endpoints (as Envoy).
    """
    copy = cluster_pb2.Cluster()
    copy.CopyFrom(cluster)
    result = Inlined(copy)
    if copy.HasField("transport_socket"):
        _inline_tls(copy.transport_socket, "transport_socket", resources, result)
    name = eds_name(cluster)
    if name is None:
        return result
    assignment = resources.get(ENDPOINT, {}).get(name)
    if assignment is None and name not in received.get(ENDPOINT, ()):
        result.wait(ENDPOINT, name, cluster.eds_cluster_config.eds_config)
        return result
    copy.ClearField("eds_cluster_config")
    copy.type = cluster_pb2.Cluster.STATIC
    if assignment is None:
        copy.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(cluster_name=name))
        return result
    copy.load_assignment.CopyFrom(assignment.message)
    result.origins.append(Origin("load_assignment", ENDPOINT, name, ""))
    return result


# --- SDS: secrets inlined into TLS contexts --------------------------------------------------------

_TLS_CONTEXTS = {
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":
        tls_pb2.DownstreamTlsContext,
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": tls_pb2.UpstreamTlsContext,
}


def _tls_context(transport_socket: Any) -> Any | None:
    message_class = _TLS_CONTEXTS.get(transport_socket.typed_config.type_url)
    if message_class is None:
        return None
    context = message_class()
    return context if transport_socket.typed_config.Unpack(context) else None


def _sds_configs(common: Any) -> list[tuple[str, Any]]:
    """(field, SdsSecretConfig) of every secret a CommonTlsContext fetches over ADS."""
    found = [("tls_certificate_sds_secret_configs", c) for c in common.tls_certificate_sds_secret_configs]
    which = common.WhichOneof("validation_context_type")
    if which == "validation_context_sds_secret_config":
        found.append((which, common.validation_context_sds_secret_config))
    elif which == "combined_validation_context":
        found.append((which, common.combined_validation_context.validation_context_sds_secret_config))
    return [(f, c) for f, c in found if c.name and c.HasField("sds_config") and is_ads(c.sds_config)]


def secret_references(transport_socket: Any) -> set[str]:
    """Names of the SDS secrets (over ADS) a transport socket needs."""
    context = _tls_context(transport_socket)
    if context is None:
        return set()
    return {config.name for _, config in _sds_configs(context.common_tls_context)}


def _inline_tls(transport_socket: Any, path: str, resources: Resources, result: Inlined) -> None:
    """Replace SDS references (over ADS) in a TLS transport socket with the secrets themselves."""
    context = _tls_context(transport_socket)
    if context is None:
        return
    common = context.common_tls_context
    wanted = _sds_configs(common)
    if not wanted:
        return
    secrets = resources.get(SECRET, {})
    missing = [f"Secret {config.name}" for _, config in wanted if config.name not in secrets]
    if missing:
        result.missing.extend(missing)
        return
    common_path = f"{path}.typed_config.common_tls_context"
    certificates = [c for c in common.tls_certificate_sds_secret_configs
                    if c.name and c.HasField("sds_config") and is_ads(c.sds_config)]
    if certificates:
        keep = [c for c in common.tls_certificate_sds_secret_configs if c not in certificates]
        del common.tls_certificate_sds_secret_configs[:]
        common.tls_certificate_sds_secret_configs.extend(keep)
        for config in certificates:
            secret = secrets[config.name].message
            result.origins.append(Origin(f"{common_path}.tls_certificates[{len(common.tls_certificates)}]",
                                         SECRET, config.name, "tls_certificate"))
            common.tls_certificates.append(secret.tls_certificate)
    which = common.WhichOneof("validation_context_type")
    if which in ("validation_context_sds_secret_config", "combined_validation_context"):
        if which == "combined_validation_context":
            combined = common.combined_validation_context
            name = combined.validation_context_sds_secret_config.name
            merged = common_pb2.CertificateValidationContext()
            merged.CopyFrom(combined.default_validation_context)
            merged.MergeFrom(secrets[name].message.validation_context)  # Envoy merges the secret over the default
        else:
            name = common.validation_context_sds_secret_config.name
            merged = secrets[name].message.validation_context
        if name in secrets:
            common.validation_context.CopyFrom(merged)  # replaces the one-of
            result.origins.append(Origin(f"{common_path}.validation_context", SECRET, name, "validation_context"))
    transport_socket.typed_config.Pack(context)


# --- assembly ------------------------------------------------------------------------------------


@dataclass
class Assembly:
    """The bootstrap the plan is built from, where its parts came from, and what is warming."""

    bootstrap: Any
    origins: list[Origin]
    listeners: dict[str, XdsResource]  # the dynamic listener versions that went in
    clusters: dict[str, XdsResource]
    warming: dict[tuple[str, str], str]  # (type, name) -> what it waits for
    problems: list[tuple[str, str, str]]
    waits: dict[tuple[str, str], float | None] = field(default_factory=dict)  # dependency -> fetch timeout


def _place(inlined: Inlined, prefix: str, type_url: str, name: str, inner: str, origins: list[Origin]) -> None:
    origins.append(Origin(prefix, type_url, name, inner))
    for origin in inlined.origins:
        if origin.type_url == SELF:  # a part of the listener or cluster itself
            origins.append(Origin(join_path(prefix, origin.path), type_url, name, join_path(inner, origin.inner)))
        else:
            origins.append(Origin(join_path(prefix, origin.path), origin.type_url, origin.name, origin.inner))


def assemble(static: Any, resources: Resources, serving: Resources, received: Received = _NOTHING) -> Assembly:
    """The static bootstrap plus every dynamic listener and cluster that is ready (or its serving version)."""
    boot = type(static)()
    boot.CopyFrom(static)
    boot.static_resources.ClearField("listeners")
    boot.static_resources.ClearField("clusters")
    origins: list[Origin] = []
    warming: dict[tuple[str, str], str] = {}
    problems: list[tuple[str, str, str]] = []
    used_clusters: dict[str, XdsResource] = {}
    used_listeners: dict[str, XdsResource] = {}

    def cluster_of(message: Any, found: Resources) -> Inlined:
        return inline_cluster(message, found, received)

    def listener_of(message: Any, found: Resources) -> Inlined:
        return inline_listener(message, found, received)

    waits: dict[tuple[str, str], float | None] = {}

    def warm(key: tuple[str, str], pending: Inlined) -> None:
        warming[key] = ", ".join(pending.missing)
        for dependency, timeout in pending.waits.items():
            known = waits.get(dependency, timeout)
            waits[dependency] = timeout if known is None else known if timeout is None else min(known, timeout)

    for index, cluster in enumerate(static.static_resources.clusters):
        inlined = cluster_of(cluster, resources)
        if inlined.missing:
            warm(("", cluster.name), inlined)
            continue
        position = len(boot.static_resources.clusters)
        boot.static_resources.clusters.append(inlined.message)
        _place(inlined, f"static_resources.clusters[{position}]", "", "", f"static_resources.clusters[{index}]",
               origins)
    for name, resource in sorted(resources.get(CLUSTER, {}).items()):
        chosen, ready = _ready(resource, serving.get(CLUSTER, {}).get(name), resources, cluster_of)
        if chosen is not resource:
            warm((CLUSTER, name), cluster_of(resource.message, resources))
        if chosen is None or ready is None:
            continue
        position = len(boot.static_resources.clusters)
        boot.static_resources.clusters.append(ready.message)
        _place(ready, f"static_resources.clusters[{position}]", CLUSTER, name, "", origins)
        used_clusters[name] = chosen

    for index, listener in enumerate(static.static_resources.listeners):
        inlined = listener_of(listener, resources)
        problems.extend(inlined.problems)
        if inlined.missing:
            warm(("", listener.name), inlined)
            continue
        position = len(boot.static_resources.listeners)
        boot.static_resources.listeners.append(inlined.message)
        _place(inlined, f"static_resources.listeners[{position}]", "", "", f"static_resources.listeners[{index}]",
               origins)
    for name, resource in sorted(resources.get(LISTENER, {}).items()):
        chosen, ready = _ready(resource, serving.get(LISTENER, {}).get(name), resources, listener_of)
        problems.extend(listener_of(resource.message, resources).problems)
        if chosen is not resource:
            warm((LISTENER, name), listener_of(resource.message, resources))
        if chosen is None or ready is None:
            continue
        position = len(boot.static_resources.listeners)
        boot.static_resources.listeners.append(ready.message)
        _place(ready, f"static_resources.listeners[{position}]", LISTENER, name, "", origins)
        used_listeners[name] = chosen
    return Assembly(boot, origins, used_listeners, used_clusters, warming, problems, waits)


def _ready(resource: XdsResource, serving: XdsResource | None, resources: Resources,
           inline: Any) -> tuple[XdsResource | None, Inlined | None]:
    """The version to serve: the new one when its dependencies are all there, else the serving one."""
    inlined: Inlined = inline(resource.message, resources)
    if not inlined.missing:
        return resource, inlined
    if serving is not None and serving is not resource:
        previous: Inlined = inline(serving.message, resources)
        if not previous.missing:
            return serving, previous
    return None, None



# --- attribution ---------------------------------------------------------------------------------


def _under(path: str, prefix: str) -> bool:
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] in ".[")


def describe(type_url: str, name: str, error: ConfigError) -> str:
    """A NACK message: which resource, which field inside it, and why."""
    return f"{SHORT_NAMES.get(type_url, type_url)} {name}: {error}"


def attribute(assembly: Assembly, error: ConfigError) -> tuple[str, str, str] | None:
    """(type, name, message) of the xDS resource a build error belongs to; None for the bootstrap's own parts."""
    best: Origin | None = None
    for origin in assembly.origins:
        if _under(error.path, origin.path) and (best is None or len(origin.path) > len(best.path)):
            best = origin
    if best is None or not best.type_url:
        return None
    rest = error.path[len(best.path):]
    inner = best.inner + rest if rest.startswith("[") or not best.inner else join_path(best.inner, rest.lstrip("."))
    return best.type_url, best.name, describe(best.type_url, best.name, ConfigError(inner.lstrip("."), error.reason))


__all__ = [
    "CLUSTER", "ENDPOINT", "EXTENSION", "LISTENER", "ROUTE", "SECRET", "SHORT_NAMES", "TYPE_ORDER", "WILDCARD",
    "Assembly", "Inlined", "Origin", "XdsResource", "assemble", "attribute", "changed_keys", "decode_resources",
    "describe", "eds_name", "inline_cluster", "inline_listener", "listener_references", "merge", "subscriptions",
]
