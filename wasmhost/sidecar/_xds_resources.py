"""xDS resources as the sidecar holds them: types, decoding, merging, and who references what.

A DiscoveryResponse's resources become ``XdsResource`` entries (decoded, their nested typed
configs importable, each problem worded for a NACK); a batch merges into the accepted set as
state-of-the-world or incremental xDS define it; and the names to subscribe to (RDS, EDS, ECDS,
SDS) follow from the listeners and clusters in play. Assembling them into a plan is ``_dynamic``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from ._config_load import register_any_types

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
HCM_TYPE_URL = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                "HttpConnectionManager")

Resources = Mapping[str, Mapping[str, "XdsResource"]]
Received = Mapping[str, AbstractSet[str]]  # named type -> names the control plane has answered for
NOTHING: Received = {}


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
          removed: Mapping[str, AbstractSet[str]] = NOTHING) -> dict[str, dict[str, XdsResource]]:
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


def hcm_of(network_filter: Any) -> Any | None:
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
            hcm = hcm_of(network_filter)
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
        for match in cluster.transport_socket_matches:
            secrets |= secret_references(match.transport_socket)
    for listener in listeners:
        for chain in listener.filter_chains:
            if chain.HasField("transport_socket"):
                secrets |= secret_references(chain.transport_socket)
    return {ENDPOINT: frozenset(endpoints), ROUTE: frozenset(routes), EXTENSION: frozenset(extensions),
            SECRET: frozenset(secrets)}



_TLS_CONTEXTS = {
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":
        tls_pb2.DownstreamTlsContext,
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": tls_pb2.UpstreamTlsContext,
}


def tls_context(transport_socket: Any) -> Any | None:
    message_class = _TLS_CONTEXTS.get(transport_socket.typed_config.type_url)
    if message_class is None:
        return None
    context = message_class()
    return context if transport_socket.typed_config.Unpack(context) else None


def sds_configs(common: Any) -> list[tuple[str, Any]]:
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
    context = tls_context(transport_socket)
    if context is None:
        return set()
    return {config.name for _, config in sds_configs(context.common_tls_context)}




__all__ = [
    "CLUSTER", "ENDPOINT", "EXTENSION", "HCM_TYPE_URL", "LISTENER", "NOTHING", "ROUTE", "SECRET", "SHORT_NAMES",
    "TYPE_ORDER", "WILDCARD", "Received", "Resources", "XdsResource", "changed_keys", "decode_resources", "eds_name",
    "hcm_of", "is_ads", "listener_references", "merge", "resource_name", "secret_references", "sds_configs",
    "subscriptions", "tls_context",
]
