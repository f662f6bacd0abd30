"""One xDS update as a transaction: received resources in, a plan and ACK/NACK verdicts out.

A debounced batch of responses becomes an ``Update`` over the accepted ``XdsState``. Changed
resources are validated on their own first, as Envoy does on receipt (an ECDS Wasm filter is
compiled and configured, a route configuration compiled, an assignment checked), so even a
resource no serving listener uses yet is NACKed when it is bad. Then the plan is assembled and
built; a build error is traced to the resource it came from, that resource is refused (its
previous version stays, or it goes away if it had none) and the rest is built again. Only the
resources that were refused are NACKed, with a message naming the resource and the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from ._config_support import check_supported, unpack_any
from ._dynamic import Assembly, assemble, attribute, awaits_secrets, describe, inline_cluster
from ._errors import ConfigError
from ._filter_registry import FilterBuildContext, WorkerServices, lookup_http_filter, type_name_of
from ._plan_build import build_cluster
from ._route_build import build_route_table
from ._xds_resources import (
    CLUSTER,
    ENDPOINT,
    EXTENSION,
    LISTENER,
    ROUTE,
    SECRET,
    TYPE_ORDER,
    WILDCARD,
    XdsResource,
    changed_keys,
    merge,
)

NAMED = (ENDPOINT, ROUTE, EXTENSION, SECRET)


@dataclass(frozen=True)
class Failure:
    """The last refused update of one resource (Envoy's ``error_state`` in /config_dump)."""

    message: str
    version: str
    at: float
    resource: Any


@dataclass
class XdsState:
    """What the sidecar holds from xDS: accepted resources, the versions serving, what warms or failed."""

    resources: dict[str, dict[str, XdsResource]] = field(default_factory=lambda: {t: {} for t in TYPE_ORDER})
    serving: dict[str, dict[str, XdsResource]] = field(default_factory=lambda: {LISTENER: {}, CLUSTER: {}})
    warming: dict[tuple[str, str], str] = field(default_factory=dict)
    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # per type: the version last ACKed
    # named types: names the control plane has answered for (accepted or not); ends warming
    received: dict[str, set[str]] = field(default_factory=lambda: {t: set() for t in NAMED})
    # dependencies waited for: since when (monotonic seconds) and for how long (None: forever)
    waiting: dict[tuple[str, str], tuple[float, float | None]] = field(default_factory=dict)

    def next_deadline(self) -> float | None:
        """When the first initial fetch timeout runs out (monotonic seconds), if any will."""
        deadlines = [since + timeout for since, timeout in self.waiting.values() if timeout is not None]
        return min(deadlines) if deadlines else None


class UpdateRefused(Exception):
    """A build error that belongs to no changed xDS resource: the whole batch is NACKed."""


@dataclass
class Update:
    static: Any  # the bootstrap, with its dynamic_resources
    state: XdsState
    received: Mapping[str, Mapping[str, XdsResource]]  # type -> name -> resource, this batch
    errors: Mapping[str, list[str]] = field(default_factory=dict)  # type -> decode problems
    removed: Mapping[str, set[str]] = field(default_factory=dict)  # type -> names removed (incremental xDS)
    node: Any = None
    services: WorkerServices | None = None
    candidate: dict[str, dict[str, XdsResource]] = field(init=False)
    changed: set[tuple[str, str]] = field(init=False)
    nacks: dict[str, list[str]] = field(init=False)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.candidate = merge(self.state.resources, self.received, self.removed)
        self.changed = changed_keys(self.state.resources, self.candidate)
        self.nacks = {type_url: list(messages) for type_url, messages in self.errors.items() if messages}
        self.answered = {t: set(self.state.received.get(t, ())) | set(self.received.get(t, {})) for t in NAMED}
        self.now = time.monotonic()
        for (type_url, name), (since, timeout) in self.state.waiting.items():
            if timeout is not None and self.now - since >= timeout and type_url in self.answered:
                self.answered[type_url].add(name)  # the initial fetch timed out: serve without it, as Envoy
        self.refused: dict[tuple[str, str], Failure] = {}  # what this update refused, by resource

    # --- refusing resources ---------------------------------------------------------------------

    def reject(self, type_url: str, name: str, message: str) -> None:
        """Refuse this batch's version of a resource: the previous one stays (or none)."""
        refused = self.candidate.get(type_url, {}).get(name)
        old = self.state.resources.get(type_url, {}).get(name)
        target = self.candidate.setdefault(type_url, {})
        if refused is not old:
            fallback = old
        else:  # accepted earlier but never built (it was warming): fall back to what serves
            serving = self.state.serving.get(type_url, {}).get(name)
            fallback = serving if serving is not old else None
        if fallback is None:
            target.pop(name, None)
        else:
            target[name] = fallback
        self.changed.discard((type_url, name))
        self.nacks.setdefault(type_url, []).append(message)
        if refused is not None:
            self.refused[(type_url, name)] = Failure(message, refused.version, time.time(), refused.message)

    # --- validation of single resources (in a worker thread) ------------------------------------

    def validate(self) -> None:
        """Check every changed route, assignment, cluster and extension config on its own."""
        clusters = self._cluster_names()
        from_xds = [key for key in self.changed if key[0] in TYPE_ORDER]  # not the sidecar's own (the agent's)
        for type_url, name in sorted(from_xds, key=lambda key: TYPE_ORDER.index(key[0])):
            resource = self.candidate.get(type_url, {}).get(name)
            if resource is None or type_url == LISTENER:
                continue
            try:
                self._validate(resource, clusters)
            except ConfigError as err:
                self.reject(type_url, name, describe(type_url, name, ConfigError(err.path.lstrip("."), err.reason)))

    def _cluster_names(self) -> frozenset[str]:
        names = {c.name for c in self.static.static_resources.clusters}
        names.update(self.candidate.get(CLUSTER, {}))
        return frozenset(names)

    def _cluster_plan(self, name: str) -> Any:
        """The plan this update would build for cluster `name` (None when it has none or it is bad)."""
        static = next((c for c in self.static.static_resources.clusters if c.name == name), None)
        resource = self.candidate.get(CLUSTER, {}).get(name)
        message = static if static is not None else resource.message if resource is not None else None
        if message is None:
            return None
        try:
            return build_cluster(inline_cluster(message, self.candidate).message, "")
        except ConfigError:
            return None

    def _validate(self, resource: XdsResource, clusters: frozenset[str]) -> None:
        message = resource.message
        if resource.type_url == ROUTE:
            route_config = route_pb2.RouteConfiguration()
            route_config.CopyFrom(message)
            if not route_config.HasField("validate_clusters"):
                route_config.validate_clusters.value = False
            check_supported(route_config, "")
            build_route_table(route_config, "", clusters)
        elif resource.type_url == ENDPOINT:
            check_supported(message, "")
            cluster = cluster_pb2.Cluster(name=message.cluster_name or "eds", type=cluster_pb2.Cluster.STATIC)
            cluster.load_assignment.CopyFrom(message)
            try:
                build_cluster(cluster, "")
            except ConfigError as err:
                raise ConfigError(err.path.removeprefix(".load_assignment").lstrip("."), err.reason) from None
        elif resource.type_url == CLUSTER:
            pending = inline_cluster(message, self.candidate)
            inlined = pending.message
            if pending.missing:  # sockets waiting for secrets are checked once the secrets are inlined
                _drop_sockets_awaiting_secrets(inlined)
            if inlined.type == cluster_pb2.Cluster.EDS:  # endpoints not here yet: check the rest
                inlined.ClearField("eds_cluster_config")
                inlined.type = cluster_pb2.Cluster.STATIC
            check_supported(inlined, "")
            build_cluster(inlined, "")
        elif resource.type_url == EXTENSION:
            self._validate_extension(resource, clusters)
        elif resource.type_url == SECRET:
            check_supported(message, "")
            if not message.HasField("tls_certificate") and not message.HasField("validation_context"):
                raise ConfigError("", "a TLS certificate or a validation context is required")

    def _validate_extension(self, resource: XdsResource, clusters: frozenset[str]) -> None:
        typed = resource.message.typed_config
        found = lookup_http_filter(typed.type_url)
        if found is None:
            raise ConfigError("typed_config", f"unsupported filter type {type_name_of(typed.type_url)}")
        factory, terminal = found
        if terminal:
            raise ConfigError("typed_config", f"the terminal filter type {type_name_of(typed.type_url)} "
                                              "cannot be configured through ECDS")
        config = unpack_any(typed, "typed_config")
        context = FilterBuildContext(
            path="typed_config", filter_name=resource.name, stat_prefix="", node=self.node, cluster_names=clusters,
            listener_name="", listener_direction=0, listener_metadata=None, services=self.services,
            on_retire=self.cleanups.append, cluster_plan=self._cluster_plan)
        try:
            factory(config, context)
        except ConfigError as err:
            raise err.under("typed_config") from None

    # --- assembling and building ----------------------------------------------------------------

    def assemble(self) -> Assembly:
        """The bootstrap to build, after refusing what assembling itself finds wrong."""
        for _ in range(len(self.changed) + 2):
            assembly = assemble(self.static, self.candidate, self.state.serving, self.answered)
            fresh = [p for p in assembly.problems if (p[0], p[1]) in self.changed]
            if not fresh:
                return assembly
            for type_url, name, message in fresh:
                self.reject(type_url, name, message)
        return assemble(self.static, self.candidate, self.state.serving, self.answered)

    def refuse_error(self, assembly: Assembly, error: ConfigError) -> None:
        """Refuse the resource a build error came from; ``UpdateRefused`` when it is none of ours."""
        found = attribute(assembly, error)
        if found is None:
            raise UpdateRefused(str(error))
        type_url, name, message = found
        resource = self.candidate.get(type_url, {}).get(name)
        serving = self.state.serving.get(type_url, {}).get(name)
        if resource is None or ((type_url, name) not in self.changed and (
                resource is serving or type_url not in (LISTENER, CLUSTER))):
            # it served (or was accepted) before this batch: something new broke it, which is not
            # something refusing it would fix
            raise UpdateRefused(message)
        self.reject(type_url, name, message)

    def prepare(self, build: Callable[[Any], Any]) -> tuple[Any, Assembly]:
        """Validate, assemble and build (refusing what fails) until a plan builds; in a worker thread."""
        self.validate()
        limit = sum(len(found) for found in self.candidate.values()) + 2
        for _ in range(limit):
            assembly = self.assemble()
            try:
                return build(assembly.bootstrap), assembly
            except ConfigError as err:
                self.refuse_error(assembly, err)
        raise UpdateRefused("the configuration did not settle after refusing its bad resources")

    def commit(self, assembly: Assembly) -> None:
        """The built plan serves now: what it was built from becomes the accepted state."""
        state = self.state
        state.resources = self.candidate
        state.serving = {LISTENER: dict(assembly.listeners), CLUSTER: dict(assembly.clusters)}
        state.warming = dict(assembly.warming)
        state.received = self.answered
        state.waiting = {key: (state.waiting.get(key, (self.now, timeout))[0], timeout)
                         for key, timeout in assembly.waits.items()}
        for key in list(state.failures):
            type_url, name = key
            if key in self.refused or type_url not in self.received:
                continue
            if name in self.received[type_url] or type_url in WILDCARD:
                del state.failures[key]  # a later version was accepted, or the control plane dropped it
        state.failures.update(self.refused)

    def release(self) -> None:
        """Drop what standalone validation acquired (the plan holds its own references by now)."""
        cleanups, self.cleanups = self.cleanups, []
        for cleanup in reversed(cleanups):
            cleanup()


__all__ = ["Failure", "Update", "UpdateRefused", "XdsState"]


def _drop_sockets_awaiting_secrets(cluster: Any) -> None:
    """Remove the cluster's TLS sockets that still name SDS secrets (for checking the rest alone)."""
    if cluster.HasField("transport_socket") and awaits_secrets(cluster.transport_socket):
        cluster.ClearField("transport_socket")
    for match in cluster.transport_socket_matches:
        if awaits_secrets(match.transport_socket):
            match.ClearField("transport_socket")
