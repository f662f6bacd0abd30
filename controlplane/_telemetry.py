"""The `Telemetry` resource (telemetry.istio.io/v1) and what it becomes in a proxy's configuration.

Scope, as Istio resolves it: a Telemetry in the root namespace without a selector applies to
the mesh, one in a namespace without a selector to that namespace, one with
`selector.matchLabels` (or a `targetRef`) to matching workloads. For `tracing` and
`accessLogging` the most specific resource that sets the section wins; `metrics.overrides`
accumulate from mesh to namespace to workload, later ones winning per metric and tag.

Each listener of a proxy that any Telemetry applies to gets (see `telemetry_filters`,
`telemetry_hcm`):
- `istio.metadata_exchange` and `istio.stats` HTTP filters (`stats.PluginConfig`, marked
  optional so an Envoy without Istio's extensions still accepts the listener) carrying the
  overrides for its direction (CLIENT = outbound, SERVER = inbound): `disabled` drops a
  metric, `tagOverrides` REMOVE/UPSERT remove or set tags (values are CEL expressions);
- HCM `tracing` when a tracing provider applies: the meshConfig `extensionProviders` entry
  (`opentelemetry` or `zipkin`) names the collector service, which becomes the
  `outbound|PORT||HOST` cluster; `randomSamplingPercentage` and `customTags` carry over;
- HCM `access_log` for `envoyFileAccessLog` providers unless `disabled`, with Envoy's CEL
  extension filter for `filter.expression`. Both Envoy and the wasmesh sidecar run it; the
  expression is checked here (`validate_telemetry`) against the same CEL subset the sidecar
  compiles, so a Telemetry the control plane accepts never becomes a sidecar NACK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import wasmhost.telemetry  # noqa: F401  (registers Istio's stats and peer metadata config types)
from controlplane._mesh import Mesh
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource

KIND = "Telemetry"
CLIENT, SERVER = "CLIENT", "SERVER"
PEER_METADATA_TYPE = "type.googleapis.com/io.istio.http.peer_metadata.Config"
STATS_TYPE = "type.googleapis.com/stats.PluginConfig"
OTEL_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
ZIPKIN_TYPE = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
CEL_FILTER_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"

# Telemetry API metric names -> the stats filter's names
METRIC_NAMES = {
    "ALL_METRICS": "", "REQUEST_COUNT": "requests_total", "REQUEST_DURATION": "request_duration_milliseconds",
    "REQUEST_SIZE": "request_bytes", "RESPONSE_SIZE": "response_bytes",
    "TCP_OPENED_CONNECTIONS": "tcp_connections_opened_total", "TCP_CLOSED_CONNECTIONS": "tcp_connections_closed_total",
    "TCP_SENT_BYTES": "tcp_sent_bytes_total", "TCP_RECEIVED_BYTES": "tcp_received_bytes_total",
    "GRPC_REQUEST_MESSAGES": "request_messages_total", "GRPC_RESPONSE_MESSAGES": "response_messages_total",
}
DEFAULT_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)


def _mode_applies(item: Mapping[str, Any], mode: str) -> bool:
    wanted = str((item.get("match") or {}).get("mode") or "CLIENT_AND_SERVER")
    return wanted == "CLIENT_AND_SERVER" or wanted == mode


@dataclass
class EffectiveTelemetry:
    """The Telemetry sections that apply to one proxy, most specific first resolved."""

    tracing: list[Mapping[str, Any]] = field(default_factory=list)
    access_logging: list[Mapping[str, Any]] = field(default_factory=list)
    overrides: list[Mapping[str, Any]] = field(default_factory=list)  # in application order
    sources: list[str] = field(default_factory=list)


def _selects(resource: Resource, proxy: Proxy) -> bool:
    spec = resource.spec
    selector = (spec.get("selector") or {}).get("matchLabels")
    if selector:
        return labels_match(selector, proxy.labels)
    targets = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if spec.get("targetRef") else [])
    if targets:  # a Service target selects the workloads whose app label names it
        return any(str(t.get("name", "")) in (proxy.labels.get("app"), proxy.name) for t in targets)
    return True


def effective_telemetry(mesh: Mesh, proxy: Proxy) -> EffectiveTelemetry:
    """Mesh-wide, then namespace, then workload Telemetry for `proxy`."""
    telemetries = mesh.of_kind(KIND)
    levels: list[list[Resource]] = [
        [t for t in telemetries if t.namespace == mesh.root_namespace and not _has_selector(t)],
        [t for t in telemetries if t.namespace == proxy.namespace and t.namespace != mesh.root_namespace
         and not _has_selector(t)],
        [t for t in telemetries if t.namespace in (proxy.namespace, mesh.root_namespace) and _has_selector(t)
         and _selects(t, proxy)],
    ]
    out = EffectiveTelemetry()
    for level in levels:
        for resource in sorted(level, key=lambda r: r.name):
            spec = resource.spec
            out.sources.append(f"{resource.namespace}/{resource.name}")
            if spec.get("tracing"):
                out.tracing = list(spec["tracing"])
            if spec.get("accessLogging"):
                out.access_logging = list(spec["accessLogging"])
            for metrics in spec.get("metrics") or []:
                out.overrides.extend(metrics.get("overrides") or [])
    return out


def _has_selector(resource: Resource) -> bool:
    spec = resource.spec
    return bool((spec.get("selector") or {}).get("matchLabels") or spec.get("targetRef") or spec.get("targetRefs"))


def stats_config(effective: EffectiveTelemetry, mode: str) -> dict[str, Any]:
    """The `stats.PluginConfig` JSON for one direction."""
    metrics: list[dict[str, Any]] = []
    for override in effective.overrides:
        if not _mode_applies(override, mode):
            continue
        match = override.get("match") or {}
        name = METRIC_NAMES.get(str(match.get("metric") or "ALL_METRICS"), "")
        if match.get("customMetric"):
            name = str(match["customMetric"])
        if override.get("disabled"):
            metrics.append({"name": name, "drop": True})
            continue
        removed, dimensions = [], {}
        for tag, change in sorted((override.get("tagOverrides") or {}).items()):
            if str(change.get("operation") or "UPSERT") == "REMOVE":
                removed.append(tag)
            else:
                dimensions[tag] = str(change.get("value", ""))
        entry: dict[str, Any] = {"name": name}
        if removed:
            entry["tags_to_remove"] = removed
        if dimensions:
            entry["dimensions"] = dimensions
        if removed or dimensions:
            metrics.append(entry)
    config: dict[str, Any] = {"@type": STATS_TYPE}
    if metrics:
        config["metrics"] = metrics
    return config


def telemetry_filters(mesh: Mesh, proxy: Proxy, mode: str) -> list[dict[str, Any]]:
    """`istio.metadata_exchange` and `istio.stats` for a listener of this direction.

    Added once any Telemetry applies to the proxy (a mesh-wide one in the root namespace turns
    them on everywhere); a mesh without Telemetry resources keeps its listeners as they were.
    """
    effective = effective_telemetry(mesh, proxy)
    if not effective.sources:
        return []
    headers: list[dict[str, Any]] = [{"istio_headers": {}}]
    if mode == SERVER:
        exchange = {"@type": PEER_METADATA_TYPE, "downstream_discovery": headers, "downstream_propagation": headers}
    else:
        exchange = {"@type": PEER_METADATA_TYPE, "upstream_discovery": headers, "upstream_propagation": headers}
    return [{"name": "istio.metadata_exchange", "typed_config": exchange, "is_optional": True},
            {"name": "istio.stats", "typed_config": stats_config(effective, mode), "is_optional": True}]


def _provider(mesh: Mesh, name: str) -> Mapping[str, Any] | None:
    providers = getattr(getattr(mesh, "config", None), "extension_providers", {}) or {}
    found = providers.get(name)
    return found if isinstance(found, Mapping) else None


def _provider_names(item: Mapping[str, Any]) -> list[str]:
    return [str(p.get("name")) for p in item.get("providers") or [] if p.get("name")]


def tracing_config(mesh: Mesh, proxy: Proxy, mode: str, effective: EffectiveTelemetry | None = None
                   ) -> dict[str, Any] | None:
    """HCM `tracing` for this direction, or None when no tracing provider applies."""
    effective = effective or effective_telemetry(mesh, proxy)
    for item in effective.tracing:
        if not _mode_applies(item, mode) or item.get("disableSpanReporting"):
            continue
        for name in _provider_names(item):
            provider = _provider(mesh, name)
            if provider is None:
                continue
            typed = _tracer(provider, proxy)
            if typed is None:
                continue
            out: dict[str, Any] = {"provider": {"name": typed[0], "typed_config": typed[1]}}
            if item.get("randomSamplingPercentage") is not None:
                out["random_sampling"] = {"value": float(item["randomSamplingPercentage"])}
            tags = []
            for tag, spec in sorted((item.get("customTags") or {}).items()):
                if "literal" in spec:
                    tags.append({"tag": tag, "literal": {"value": str(spec["literal"].get("value", ""))}})
                elif "environment" in spec:
                    env = spec["environment"]
                    tags.append({"tag": tag, "environment": {"name": str(env.get("name", "")),
                                                             "default_value": str(env.get("defaultValue", ""))}})
                elif "header" in spec:
                    header = spec["header"]
                    tags.append({"tag": tag, "request_header": {"name": str(header.get("name", "")),
                                                                "default_value": str(header.get("defaultValue", ""))}})
            if tags:
                out["custom_tags"] = tags
            return out
    return None


def _tracer(provider: Mapping[str, Any], proxy: Proxy) -> tuple[str, dict[str, Any]] | None:
    if "opentelemetry" in provider:
        otel = provider["opentelemetry"]
        host, port = str(otel.get("service", "")), int(otel.get("port") or 4318)
        http = otel.get("http") or {}
        path = str(http.get("path") or "/v1/traces")
        return "envoy.tracers.opentelemetry", {
            "@type": OTEL_TYPE, "service_name": f"{proxy.labels.get('app') or proxy.name}.{proxy.namespace}",
            "http_service": {"http_uri": {"uri": f"http://{host}:{port}{path}", "cluster": f"outbound|{port}||{host}",
                                          "timeout": str(http.get("timeout") or "5s")}}}
    if "zipkin" in provider:
        zipkin = provider["zipkin"]
        host, port = str(zipkin.get("service", "")), int(zipkin.get("port") or 9411)
        return "envoy.tracers.zipkin", {
            "@type": ZIPKIN_TYPE, "collector_cluster": f"outbound|{port}||{host}",
            "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True, "shared_span_context": False}
    return None


def access_logs(mesh: Mesh, proxy: Proxy, mode: str, effective: EffectiveTelemetry | None = None
                ) -> list[dict[str, Any]]:
    """HCM `access_log` entries for this direction."""
    effective = effective or effective_telemetry(mesh, proxy)
    out: list[dict[str, Any]] = []
    for item in effective.access_logging:
        if not _mode_applies(item, mode) or item.get("disabled"):
            continue
        names = _provider_names(item) or ["envoy"]
        for name in names:
            provider = _provider(mesh, name)
            file_log: Any = provider.get("envoyFileAccessLog") if provider is not None else (
                {"path": "/dev/stdout"} if name == "envoy" else None)
            if not isinstance(file_log, Mapping):
                continue
            log_format: Any = file_log.get("logFormat") or {}
            typed: dict[str, Any] = {"@type": FILE_LOG_TYPE, "path": str(file_log.get("path") or "/dev/stdout")}
            if log_format.get("labels"):
                typed["log_format"] = {"json_format": dict(log_format["labels"])}
            else:
                typed["log_format"] = {"text_format_source": {
                    "inline_string": str(log_format.get("text") or DEFAULT_ACCESS_LOG_FORMAT)}}
            entry: dict[str, Any] = {"name": "envoy.access_loggers.file", "typed_config": typed}
            expression = (item.get("filter") or {}).get("expression")
            if expression:
                entry["filter"] = {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel",
                                                        "typed_config": {"@type": CEL_FILTER_TYPE,
                                                                         "expression": str(expression)}}}
            out.append(entry)
    return out


def telemetry_hcm(mesh: Mesh, proxy: Proxy, mode: str) -> dict[str, Any]:
    """Extra HCM fields (`tracing`, `access_log`) for a listener of this direction."""
    effective = effective_telemetry(mesh, proxy)
    fields: dict[str, Any] = {}
    tracing = tracing_config(mesh, proxy, mode, effective)
    if tracing is not None:
        fields["tracing"] = tracing
    logs = access_logs(mesh, proxy, mode, effective)
    if logs:
        fields["access_log"] = logs
    return fields


def validate_telemetry(spec: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(field path, problem) for what a schema cannot say: CEL expressions outside the supported subset."""
    from wasmhost.telemetry import ExpressionError, compile_expression

    for index, metrics in enumerate(spec.get("metrics") or []):
        for o_index, override in enumerate(metrics.get("overrides") or []):
            for tag, change in (override.get("tagOverrides") or {}).items():
                if str(change.get("operation") or "UPSERT") == "UPSERT":
                    try:
                        compile_expression(str(change.get("value", "")))
                    except ExpressionError as err:
                        yield (f"spec.metrics[{index}].overrides[{o_index}].tagOverrides.{tag}.value", str(err))
    for index, item in enumerate(spec.get("accessLogging") or []):
        expression = (item.get("filter") or {}).get("expression")
        if expression:
            try:
                compile_expression(str(expression))
            except ExpressionError as err:
                yield (f"spec.accessLogging[{index}].filter.expression", str(err))


__all__ = ["CLIENT", "SERVER", "EffectiveTelemetry", "access_logs", "effective_telemetry", "stats_config",
           "telemetry_filters", "telemetry_hcm", "tracing_config", "validate_telemetry"]
