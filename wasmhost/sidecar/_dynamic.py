"""The dynamic half of the configuration: a plan's bootstrap assembled from static parts and xDS.

From the static bootstrap plus the accepted xDS resources (``_xds_resources``) this module builds
one self-contained bootstrap for the ordinary plan builder: RDS route configurations are inlined
into their connection managers, ECDS extension configs into their HTTP filters, EDS assignments
into their clusters and SDS secrets into TLS contexts. Envoy's warming rules decide what goes in:
a listener whose routes, extension configs or secrets have not arrived keeps serving its previous
version (a new one is not bound yet), a cluster waits for its endpoints the same way, and the
first answer (even a refused one) or the initial fetch timeout ends the wait. Every inlined part
remembers where it came from (``Origin``), so a build error names the xDS resource and the field
inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2
from google.protobuf import any_pb2

from ._errors import ConfigError, join_path
from ._xds_resources import (
    CLUSTER,
    ENDPOINT,
    EXTENSION,
    LISTENER,
    NOTHING,
    ROUTE,
    SECRET,
    SHORT_NAMES,
    Received,
    Resources,
    XdsResource,
    eds_name,
    hcm_of,
    is_ads,
    tls_context,
)

SELF = "self"  # an Origin inside the resource being inlined
DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0

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


def inline_listener(listener: Any, resources: Resources, received: Received = NOTHING) -> Inlined:
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
            hcm = hcm_of(network_filter)
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


def inline_cluster(cluster: Any, resources: Resources, received: Received = NOTHING) -> Inlined:
    """A copy of ``cluster``; an EDS cluster over ADS becomes STATIC with its assignment inlined.

    An assignment answered but never accepted leaves the cluster without endpoints (as Envoy).
    """
    copy = cluster_pb2.Cluster()
    copy.CopyFrom(cluster)
    result = Inlined(copy)
    if copy.HasField("transport_socket"):
        _inline_tls(copy.transport_socket, "transport_socket", resources, result)
    for index, match in enumerate(copy.transport_socket_matches):
        _inline_tls(match.transport_socket, f"transport_socket_matches[{index}].transport_socket", resources, result)
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

#: The cluster istio-agent's SDS is reached through (a Unix socket next to Envoy). In the wasmesh
#: sidecar the identity agent runs in the process itself, so an SDS config naming this cluster is
#: answered from the agent's secrets, held under ``AGENT_SECRETS``, and never leaves the sidecar.
AGENT_SDS_CLUSTER = "sds-grpc"
AGENT_SECRETS = "wasmesh.sidecar/identity-agent.Secret"
_GRPC = 2  # ApiConfigSource.ApiType


def from_identity_agent(source: Any) -> bool:
    """Whether a ConfigSource is istio-agent's SDS (gRPC to the ``sds-grpc`` cluster)."""
    if source.WhichOneof("config_source_specifier") != "api_config_source":
        return False
    api = source.api_config_source
    if api.api_type != _GRPC or len(api.grpc_services) != 1:
        return False
    service = api.grpc_services[0]
    return bool(service.WhichOneof("target_specifier") == "envoy_grpc"
                and service.envoy_grpc.cluster_name == AGENT_SDS_CLUSTER)


def _table_of(config: Any) -> str | None:
    """Where the secret an SdsSecretConfig names is held: SECRET (ADS), AGENT_SECRETS, or None."""
    if not config.name or not config.HasField("sds_config"):
        return None
    if is_ads(config.sds_config):
        return SECRET
    return AGENT_SECRETS if from_identity_agent(config.sds_config) else None


def _validation_reference(common: Any) -> Any | None:
    which = common.WhichOneof("validation_context_type")
    if which == "validation_context_sds_secret_config":
        return common.validation_context_sds_secret_config
    if which == "combined_validation_context":
        return common.combined_validation_context.validation_context_sds_secret_config
    return None


def secret_sources(common: Any) -> list[tuple[Any, str]]:
    """(SdsSecretConfig, table) of every secret a CommonTlsContext fetches: ``SECRET`` over ADS,
    ``AGENT_SECRETS`` from the sidecar's identity agent."""
    configs = list(common.tls_certificate_sds_secret_configs)
    reference = _validation_reference(common)
    if reference is not None:
        configs.append(reference)
    return [(config, table) for config in configs if (table := _table_of(config)) is not None]


def awaits_secrets(transport_socket: Any) -> bool:
    """Whether a TLS transport socket still names SDS secrets (none inlined yet)."""
    context = tls_context(transport_socket)
    return context is not None and bool(secret_sources(context.common_tls_context))


def _inline_tls(transport_socket: Any, path: str, resources: Resources, result: Inlined) -> None:
    """Replace SDS references (over ADS or to the identity agent) in a TLS transport socket with the secrets."""
    context = tls_context(transport_socket)
    if context is None:
        return
    common = context.common_tls_context
    wanted = secret_sources(common)
    if not wanted:
        return
    missing = []
    for config, source in wanted:
        if config.name in resources.get(source, {}):
            continue
        if source == AGENT_SECRETS and source not in resources:
            missing.append(f"Secret {config.name} (from {AGENT_SDS_CLUSTER}, but no identity agent runs here)")
        else:
            missing.append(f"Secret {config.name}")
    if missing:
        result.missing.extend(missing)
        return
    common_path = f"{path}.typed_config.common_tls_context"
    configs = list(common.tls_certificate_sds_secret_configs)
    fetched = [(config.name, found) for config in configs if (found := _table_of(config)) is not None]
    if fetched:
        keep = [config for config in configs if _table_of(config) is None]
        del common.tls_certificate_sds_secret_configs[:]
        common.tls_certificate_sds_secret_configs.extend(keep)
        for name, source in fetched:
            secret = resources[source][name].message
            result.origins.append(Origin(f"{common_path}.tls_certificates[{len(common.tls_certificates)}]",
                                         source, name, "tls_certificate"))
            common.tls_certificates.append(secret.tls_certificate)
    reference = _validation_reference(common)
    table = _table_of(reference) if reference is not None else None
    if reference is not None and table is not None:
        name = reference.name
        validation = resources[table][name].message.validation_context
        if common.WhichOneof("validation_context_type") == "combined_validation_context":
            merged = common_pb2.CertificateValidationContext()
            merged.CopyFrom(common.combined_validation_context.default_validation_context)
            merged.MergeFrom(validation)  # Envoy merges the secret over the default
        else:
            merged = validation
        common.validation_context.CopyFrom(merged)  # replaces the one-of
        result.origins.append(Origin(f"{common_path}.validation_context", table, name, "validation_context"))
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


def assemble(static: Any, resources: Resources, serving: Resources, received: Received = NOTHING) -> Assembly:
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
    "AGENT_SDS_CLUSTER", "AGENT_SECRETS", "DEFAULT_INITIAL_FETCH_TIMEOUT", "Assembly", "Inlined", "Origin", "assemble", "attribute", "describe",
    "awaits_secrets", "from_identity_agent", "inline_cluster", "inline_listener", "initial_fetch_timeout",
    "secret_sources",
]
