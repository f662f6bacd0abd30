"""Istio's standard metrics, sans-io: which labels a request gets, and the overrides.

The sidecar's ``istio.stats`` filter (``wasmhost.sidecar._istio_stats``) gathers the facts
of a finished request into ``RequestFacts``; ``standard_tags`` turns them into Istio's 25
standard labels for the reporter (``source`` on an outbound listener, ``destination`` on an
inbound one, ``waypoint`` for a gateway), with Istio's fallbacks (``unknown``, ``latest``,
the Host header for the destination service). ``MetricOverrides`` applies a
``stats.PluginConfig``'s ``metrics`` list: drop a metric, remove tags, set or add tags from
expressions.

Labelled stats are stored as one stat per label set, named
``istiocustom.<metric>{tag="value",...}`` (Prometheus label syntax, so the name parses back
exactly); the ``istiocustom`` namespace is exported without Envoy's ``envoy_`` prefix, as
Envoy does for Istio's custom stat namespace.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._expr import Attributes, Expression, ExpressionError, compile_expression
from ._peer import WorkloadMetadata, principal_namespace

NAMESPACE = "istiocustom"

# metric short name (as PluginConfig and Telemetry name it) -> (exported name, kind)
METRICS: dict[str, tuple[str, str]] = {
    "requests_total": ("istio_requests_total", "counter"),
    "request_duration_milliseconds": ("istio_request_duration_milliseconds", "histogram"),
    "request_bytes": ("istio_request_bytes", "histogram"),
    "response_bytes": ("istio_response_bytes", "histogram"),
    "request_messages_total": ("istio_request_messages_total", "counter"),
    "response_messages_total": ("istio_response_messages_total", "counter"),
    "tcp_connections_opened_total": ("istio_tcp_connections_opened_total", "counter"),
    "tcp_connections_closed_total": ("istio_tcp_connections_closed_total", "counter"),
    "tcp_sent_bytes_total": ("istio_tcp_sent_bytes_total", "counter"),
    "tcp_received_bytes_total": ("istio_tcp_received_bytes_total", "counter"),
}
HTTP_METRICS = ("requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes")

STANDARD_TAGS = (
    "reporter",
    "source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
    "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster",
    "request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
)  # fmt: skip

UNKNOWN = "unknown"
_PASSTHROUGH = frozenset({"BlackHoleCluster", "PassthroughCluster", "InboundPassthroughCluster",
                          "InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6"})


class Reporter(enum.Enum):
    SOURCE = "source"  # client sidecar (outbound listener)
    DESTINATION = "destination"  # server sidecar (inbound listener)
    WAYPOINT = "waypoint"  # shared server gateway


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the stats filter learned about one finished request."""

    peer: WorkloadMetadata | None
    peer_principal: str = ""
    local_principal: str = ""
    mutual_tls: bool | None = None  # None: not known (client side)
    host: str = ""
    cluster_name: str = ""
    route_name: str = ""
    protocol: str = "http"  # http | grpc
    response_code: int = 0
    grpc_status: str = ""
    response_flags: str = "-"


def _or(value: str, default: str = UNKNOWN) -> str:
    return value if value else default


def destination_service(facts: RequestFacts, host_fallback: bool = True) -> tuple[str, str]:
    """(destination_service, destination_service_name): from the Istio cluster name, else the Host header."""
    host = facts.host if host_fallback else ""
    name = host
    if facts.route_name == "block_all":
        return host, "BlackHoleCluster"
    if facts.route_name == "allow_any":
        return host, "PassthroughCluster"
    cluster = facts.cluster_name
    if cluster in _PASSTHROUGH:
        return host, cluster
    parts = cluster.split("|")
    if len(parts) == 4 and parts[3]:  # outbound|9080|v1|reviews.default.svc.cluster.local
        return parts[3], parts[3].split(".", 1)[0]
    return host, name


def standard_tags(reporter: Reporter, local: WorkloadMetadata, facts: RequestFacts,
                  host_fallback: bool = True) -> tuple[tuple[str, str], ...]:
    """Istio's standard labels, in Istio's order."""
    peer = facts.peer
    peer_namespace = principal_namespace(facts.peer_principal) or (peer.namespace if peer else "")
    service, service_name = destination_service(facts, host_fallback)
    if facts.mutual_tls is None:
        security = UNKNOWN
    else:
        security = "mutual_tls" if facts.mutual_tls else "none"
    tail = (
        ("request_protocol", facts.protocol),
        ("response_code", str(facts.response_code)),
        ("grpc_response_status", facts.grpc_status),
        ("response_flags", facts.response_flags or "-"),
        ("connection_security_policy", security),
    )
    if reporter is Reporter.SOURCE:
        return (
            ("reporter", reporter.value),
            ("source_workload", _or(local.workload_name)),
            ("source_canonical_service", _or(local.canonical_service)),
            ("source_canonical_revision", _or(local.canonical_revision, "latest")),
            ("source_workload_namespace", _or(local.namespace)),
            ("source_principal", _or(facts.local_principal)),
            ("source_app", _or(local.app)),
            ("source_version", _or(local.version)),
            ("source_cluster", _or(local.cluster_id)),
            ("destination_workload", _or(peer.workload_name if peer else "")),
            ("destination_workload_namespace", _or(peer_namespace)),
            ("destination_principal", _or(facts.peer_principal)),
            ("destination_app", _or(peer.app if peer else "")),
            ("destination_version", _or(peer.version if peer else "")),
            ("destination_service", _or(service)),
            ("destination_canonical_service", _or(peer.canonical_service if peer else "")),
            ("destination_canonical_revision", _or(peer.canonical_revision if peer else "", "latest")),
            ("destination_service_name", _or(service_name)),
            ("destination_service_namespace", _or(peer_namespace)),
            ("destination_cluster", _or(peer.cluster_id if peer else "")),
        ) + tail
    return (
        ("reporter", reporter.value),
        ("source_workload", _or(peer.workload_name if peer else "")),
        ("source_canonical_service", _or(peer.canonical_service if peer else "")),
        ("source_canonical_revision", _or(peer.canonical_revision if peer else "", "latest")),
        ("source_workload_namespace", _or(peer_namespace)),
        ("source_principal", _or(facts.peer_principal)),
        ("source_app", _or(peer.app if peer else "")),
        ("source_version", _or(peer.version if peer else "")),
        ("source_cluster", _or(peer.cluster_id if peer else "")),
        ("destination_workload", _or(local.workload_name)),
        ("destination_workload_namespace", _or(local.namespace)),
        ("destination_principal", _or(facts.local_principal)),
        ("destination_app", _or(local.app)),
        ("destination_version", _or(local.version)),
        ("destination_service", _or(service, local.canonical_service or UNKNOWN)),
        ("destination_canonical_service", _or(local.canonical_service)),
        ("destination_canonical_revision", _or(local.canonical_revision, "latest")),
        ("destination_service_name", _or(service_name, local.canonical_service or UNKNOWN)),
        ("destination_service_namespace", _or(local.namespace)),
        ("destination_cluster", _or(local.cluster_id)),
    ) + tail


class OverrideError(ValueError):
    """A ``metrics`` override the sidecar cannot apply (``path`` names the field)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class _MetricRules:
    removed: set[str] = field(default_factory=set)
    set_tags: dict[str, Expression] = field(default_factory=dict)  # standard tag -> new value
    added: list[tuple[str, Expression]] = field(default_factory=list)  # extra tag -> value


_TAG_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass
class MetricOverrides:
    """``PluginConfig.metrics``: dropped metrics and per-metric tag changes, compiled once."""

    dropped: set[str] = field(default_factory=set)
    rules: dict[str, _MetricRules] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.dropped and not self.rules

    @classmethod
    def from_config(cls, metrics: Sequence[Any], path: str = "metrics") -> MetricOverrides:
        """From ``stats.PluginConfig.metrics`` (messages with name, drop, tags_to_remove, dimensions)."""
        out = cls()
        for index, metric in enumerate(metrics):
            where = f"{path}[{index}]"
            name = metric.name
            if name and name not in METRICS:
                raise OverrideError(f"{where}.name", f"unknown metric {name!r} (one of {', '.join(METRICS)})")
            targets = [name] if name else list(METRICS)
            if metric.drop:
                out.dropped.update(targets)
                continue
            if metric.match:
                raise OverrideError(f"{where}.match", "conditional overrides are not supported")
            for tag in metric.tags_to_remove:
                if tag not in STANDARD_TAGS:
                    raise OverrideError(f"{where}.tags_to_remove", f"{tag!r} is not a standard tag")
                for target in targets:
                    out.rules.setdefault(target, _MetricRules()).removed.add(tag)
            for tag in sorted(metric.dimensions):
                source = metric.dimensions[tag]
                if not _TAG_NAME.match(tag):
                    raise OverrideError(f"{where}.dimensions[{tag!r}]", "tag names are letters, digits and _")
                try:
                    expression = compile_expression(source)
                except ExpressionError as err:
                    raise OverrideError(f"{where}.dimensions[{tag!r}]", str(err)) from None
                for target in targets:
                    rules = out.rules.setdefault(target, _MetricRules())
                    if tag in STANDARD_TAGS:
                        rules.set_tags[tag] = expression
                        rules.removed.discard(tag)
                    else:
                        rules.added = [(t, e) for t, e in rules.added if t != tag] + [(tag, expression)]
        return out

    def apply(self, metric: str, tags: tuple[tuple[str, str], ...],
              attributes: Attributes) -> tuple[tuple[str, str], ...]:
        rules = self.rules.get(metric)
        if rules is None:
            return tags
        out = []
        for tag, value in tags:
            if tag in rules.removed:
                continue
            expression = rules.set_tags.get(tag)
            out.append((tag, expression.text(attributes) if expression is not None else value))
        for tag, expression in rules.added:
            out.append((tag, expression.text(attributes)))
        return tuple(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def tagged_name(metric: str, tags: Sequence[tuple[str, str]], namespace: str = NAMESPACE) -> str:
    """``istiocustom.istio_requests_total{reporter="source",...}``."""
    inner = ",".join(f'{tag}="{_escape(value)}"' for tag, value in tags)
    return f"{namespace}.{metric}{{{inner}}}"


def parse_tagged(rest: str) -> tuple[str, dict[str, str]]:
    """The inverse of ``tagged_name`` without the namespace: (metric, labels)."""
    brace = rest.find("{")
    if brace < 0 or not rest.endswith("}"):
        return re.sub(r"[^a-zA-Z0-9_:]", "_", rest), {}
    metric = rest[:brace]
    labels: dict[str, str] = {}
    for match in _LABEL.finditer(rest, brace + 1, len(rest) - 1):
        labels[match.group(1)] = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1),
                                        match.group(2))
    return re.sub(r"[^a-zA-Z0-9_:]", "_", metric), labels


def label_dict(tags: Mapping[str, str] | Sequence[tuple[str, str]]) -> dict[str, str]:
    return dict(tags.items()) if isinstance(tags, Mapping) else dict(tags)
