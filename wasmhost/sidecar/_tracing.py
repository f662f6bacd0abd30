"""HCM ``tracing``: one span per stream, propagated upstream, exported over OTLP/HTTP or Zipkin v2 JSON.

Envoy configures tracing on the HTTP connection manager (``HttpConnectionManager.tracing``:
``provider``, ``random_sampling``, ``custom_tags``...). The plan builder turns that into a
filter placed first in the chain (``build_tracing_entry``):

- ``decode_headers`` extracts the incoming context (W3C ``traceparent`` or B3), decides
  sampling (the parent's decision, ``x-envoy-force-trace``, else ``random_sampling``),
  starts this hop's span (SERVER on an INBOUND listener, CLIENT otherwise) and injects it
  into the request the router forwards: ``traceparent`` for ``envoy.tracers.opentelemetry``,
  B3 for ``envoy.tracers.zipkin``.
- ``on_destroy`` (after every filter's ``on_log``) finishes the span with Istio's name (``<service>:<port>/*``) and tags
  (``http.url``, ``http.status_code``, ``response_flags``, ``upstream_cluster``,
  ``istio.canonical_service``, ``guid:x-request-id`` ...) and hands it to the worker's
  exporter, which batches spans and posts them through the collector's cluster off the
  request path.

Wasm plugins see the active span as ``wasmesh.span.*`` properties and add tags with
``proxy_set_property("wasmesh.span.tag.<name>")`` (``wasmhost.telemetry._plugin_span``): the
span's ids are kept in the stream's filter state for the Wasm filter, which hands back the
tags its plugin set when the plugin's stream ends.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2  # noqa: F401  (tracer config types)

from ..telemetry import WorkloadMetadata, destination_service
from ..telemetry._plugin_span import ACTIVE_SPAN, plugin_span_tags, span_properties
from ..telemetry._spans import CLIENT, SERVER, FinishedSpan, encode_otlp, encode_zipkin
from ..telemetry._trace_context import (
    FORCE_TRACE,
    IdGenerator,
    SpanContext,
    extract,
    inject_b3,
    inject_w3c,
    sampling_decision,
)
from ._config_support import unpack_any
from ._errors import ConfigError
from ._filter_api import FilterCallbacks, HeadersStatus, HttpCallResult, HttpFilter, StreamInfo
from ._filter_registry import Cancellable, FilterBuildContext, WorkerServices
from ._headers import HeaderMap
from ._plan import FilterEntry

OTEL_TYPE = "envoy.config.trace.v3.OpenTelemetryConfig"
ZIPKIN_TYPE = "envoy.config.trace.v3.ZipkinConfig"
FLUSH_INTERVAL_S = 1.0
MAX_BATCH = 256
MAX_PENDING = 4096  # spans kept while the collector is slow; more are dropped (and counted)
_INBOUND = 1
PLUGIN_TAGS = "wasmesh.span.tags"  # filter-state key: tags Wasm plugins added to this stream's span


@dataclass(frozen=True)
class CustomTag:
    tag: str
    literal: str = ""
    environment: str = ""
    environment_default: str = ""
    header: bytes = b""
    header_default: str = ""

    def value(self, request: HeaderMap | None) -> str | None:
        if self.header:
            found = request.get(self.header) if request is not None else None
            return found.decode("latin-1") if found is not None else (self.header_default or None)
        if self.environment:
            return os.environ.get(self.environment, self.environment_default) or None
        return self.literal


@dataclass
class ExportTarget:
    """Where and how a worker's spans go."""

    provider: str  # "opentelemetry" | "zipkin"
    cluster: str
    path: str
    authority: str
    timeout: float
    service_name: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    trace_id_128bit: bool = True
    shared_span_context: bool = False


@dataclass
class SpanExporter:
    """Per worker and target: a bounded queue of finished spans, flushed by a timer through the cluster."""

    target: ExportTarget
    services: WorkerServices
    resource: dict[str, str]
    pending: list[FinishedSpan] = field(default_factory=list)
    timer: Cancellable | None = None
    in_flight: int = 0

    def add(self, span: FinishedSpan) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.services.stats.counter("tracing.spans_dropped").value += 1
            return
        self.pending.append(span)
        if len(self.pending) >= MAX_BATCH:
            self.services.call_soon(self.flush)
        elif self.timer is None:
            self.timer = self.services.call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            self._send(batch)

    def _send(self, batch: list[FinishedSpan]) -> None:
        target = self.target
        if target.provider == "zipkin":
            body = encode_zipkin(batch, target.service_name, trace_id_128bit=target.trace_id_128bit,
                                 shared_span_context=target.shared_span_context)
            content_type = b"application/json"
        else:
            body = encode_otlp(batch, self.resource)
            content_type = b"application/x-protobuf"
        headers = [(b":method", b"POST"), (b":path", target.path.encode()), (b":scheme", b"http"),
                   (b":authority", target.authority.encode()), (b"content-type", content_type),
                   (b"content-length", str(len(body)).encode()), *target.headers]
        stats = self.services.stats

        def done(result: HttpCallResult) -> None:
            self.in_flight -= 1
            status = result.headers.get(b":status") if result.headers is not None else None
            if status is not None and status.startswith(b"2"):
                stats.counter("tracing.spans_exported").value += len(batch)
            else:
                stats.counter("tracing.export_failures").value += 1

        self.in_flight += 1
        try:
            self.services.dispatch_http_call(target.cluster, headers, body, (), target.timeout, done)
        except LookupError:
            self.in_flight -= 1
            stats.counter("tracing.export_failures").value += 1


_EXPORTERS: dict[tuple[int, str, str], SpanExporter] = {}


def _exporter(services: WorkerServices, target: ExportTarget, resource: dict[str, str]) -> SpanExporter:
    key = (id(services), target.provider, target.cluster + target.path)
    exporter = _EXPORTERS.get(key)
    if exporter is None or exporter.services is not services:
        exporter = _EXPORTERS[key] = SpanExporter(target, services, resource)
    else:
        exporter.target = target
    return exporter


def _percent(message: Any, field_name: str, default: float) -> float:
    if not message.HasField(field_name):
        return default
    value = float(getattr(message, field_name).value)
    if not 0.0 <= value <= 100.0:
        raise ConfigError(field_name, f"must be a percentage between 0 and 100, not {value}")
    return value


def _target(provider: Any, context: FilterBuildContext, local: WorkloadMetadata) -> ExportTarget:
    if not provider.HasField("typed_config"):
        raise ConfigError("provider.typed_config", "a tracer config is required")
    config = unpack_any(provider.typed_config, "provider.typed_config")
    type_name = config.DESCRIPTOR.full_name
    service = local.canonical_service and f"{local.canonical_service}.{local.namespace or 'default'}"
    if type_name == OTEL_TYPE:
        if config.HasField("grpc_service"):
            raise ConfigError("provider.typed_config.grpc_service",
                              "OTLP over gRPC is not supported by the wasmesh sidecar; use http_service")
        if not config.HasField("http_service"):
            raise ConfigError("provider.typed_config.http_service", "an http_service is required")
        uri = config.http_service.http_uri
        cluster, path, authority = uri.cluster, "/v1/traces", uri.cluster
        if uri.uri:
            rest = uri.uri.split("://", 1)[-1]
            authority, slash, tail = rest.partition("/")
            path = "/" + tail if slash else path
        timeout = uri.timeout.ToNanoseconds() / 1e9 if uri.HasField("timeout") else 5.0
        headers = tuple((h.header.key.lower().encode(), h.header.value.encode())
                        for h in config.http_service.request_headers_to_add)
        name = config.service_name or service or "wasmesh-sidecar"
        _require_cluster(cluster, context, "provider.typed_config.http_service.http_uri.cluster")
        return ExportTarget("opentelemetry", cluster, path, authority, timeout, name, headers)
    if type_name == ZIPKIN_TYPE:
        if config.collector_endpoint_version not in (0, 1):  # unset (Envoy: JSON) or HTTP_JSON
            raise ConfigError("provider.typed_config.collector_endpoint_version",
                              "only HTTP_JSON (Zipkin v2 JSON) is supported")
        _require_cluster(config.collector_cluster, context, "provider.typed_config.collector_cluster")
        return ExportTarget("zipkin", config.collector_cluster, config.collector_endpoint or "/api/v2/spans",
                            config.collector_hostname or config.collector_cluster, 5.0, service or "wasmesh-sidecar",
                            trace_id_128bit=config.trace_id_128bit,
                            shared_span_context=config.shared_span_context.value
                            if config.HasField("shared_span_context") else True)
    raise ConfigError("provider.typed_config", f"tracer {type_name} is not supported "
                                               f"(use {OTEL_TYPE} or {ZIPKIN_TYPE})")


def _require_cluster(name: str, context: FilterBuildContext, path: str) -> None:
    if not name:
        raise ConfigError(path, "a collector cluster is required")
    if name not in context.cluster_names:
        raise ConfigError(path, f"unknown cluster {name!r}")


def _custom_tags(tags: Any) -> tuple[CustomTag, ...]:
    out = []
    for index, tag in enumerate(tags):
        which = tag.WhichOneof("type")
        if not tag.tag:
            raise ConfigError(f"custom_tags[{index}].tag", "must not be empty")
        if which == "literal":
            out.append(CustomTag(tag.tag, literal=tag.literal.value))
        elif which == "environment":
            out.append(CustomTag(tag.tag, environment=tag.environment.name,
                                 environment_default=tag.environment.default_value))
        elif which == "request_header":
            out.append(CustomTag(tag.tag, header=tag.request_header.name.lower().encode(),
                                 header_default=tag.request_header.default_value))
        else:
            raise ConfigError(f"custom_tags[{index}].{which}", "only literal, environment and request_header "
                                                               "custom tags are supported")
    return tuple(out)


class TracingConfig:
    """One HCM's tracing settings, compiled."""

    def __init__(self, tracing: Any, context: FilterBuildContext, rng: random.Random | None = None) -> None:
        self.kind = SERVER if context.listener_direction == _INBOUND else CLIENT
        self.random_sampling = _percent(tracing, "random_sampling", 100.0)
        self.overall_sampling = _percent(tracing, "overall_sampling", 100.0)
        self.custom_tags = _custom_tags(tracing.custom_tags)
        self.max_path = tracing.max_path_tag_length.value if tracing.HasField("max_path_tag_length") else 256
        self.local = WorkloadMetadata.from_node(context.node)
        self.node_id = context.node.id if context.node is not None else ""
        self.rng = rng or random.Random()
        self.ids = IdGenerator(rng)
        if not tracing.HasField("provider"):
            raise ConfigError("provider", "a tracing provider is required (the sidecar has no bootstrap tracer)")
        self.target = _target(tracing.provider, context, self.local)
        self.services = context.services
        self.resource = {"service.name": self.target.service_name, "service.instance.id": self.node_id,
                         "k8s.namespace.name": self.local.namespace}

    def sample(self, parent: SpanContext | None, decision: bool | None, forced: bool) -> bool:
        if forced:
            return True
        if parent is not None and parent.sampled is not None:
            return parent.sampled
        if decision is not None:
            return decision
        percent = min(self.random_sampling, self.overall_sampling)
        return percent >= 100.0 or self.rng.random() * 100.0 < percent

    def record(self, span: FinishedSpan) -> None:
        services = self.services
        if services is not None:
            _exporter(services, self.target, self.resource).add(span)


class TracingFilter(HttpFilter):
    encodes = False
    __slots__ = ("callbacks", "config", "context", "parent", "sampled")

    def __init__(self, callbacks: FilterCallbacks, config: TracingConfig) -> None:
        self.callbacks = callbacks
        self.config = config
        self.context: SpanContext | None = None
        self.parent: SpanContext | None = None
        self.sampled = False

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        config = self.config
        parent = extract(headers.get)
        sampled = config.sample(parent, sampling_decision(headers.get), headers.get(FORCE_TRACE) is not None)
        trace_id = parent.trace_id if parent is not None else config.ids.trace_id()
        span = SpanContext(trace_id, config.ids.span_id(), sampled,
                           parent.tracestate if parent is not None else b"",
                           parent_span_id=parent.span_id if parent is not None else 0)
        self.parent, self.context, self.sampled = parent, span, sampled
        self.callbacks.stream_info.filter_state[ACTIVE_SPAN] = span_properties(span, parent)
        if config.target.provider == "zipkin":
            inject_b3(span, headers.set, trace_id_128bit=config.target.trace_id_128bit)
        else:
            inject_w3c(span, headers.set)
        return HeadersStatus.Continue

    def on_destroy(self) -> None:
        """Finish the span after every filter's ``on_log``, so tags plugins add there are kept."""
        if not self.sampled or self.context is None:
            return
        config, callbacks = self.config, self.callbacks
        info = callbacks.stream_info
        request = callbacks.request_headers
        end = info.last_downstream_tx_at if info.last_downstream_tx_at is not None else info.start_monotonic
        start_ns = int(info.start_time * 1e9)
        end_ns = start_ns + max(1000, int((end - info.start_monotonic) * 1e9))
        code = info.response_code
        tags = _istio_tags(config, info, request, code)
        for custom in config.custom_tags:
            value = custom.value(request)
            if value is not None:
                tags[custom.tag] = value
        plugin_tags = info.filter_state.get(PLUGIN_TAGS)
        if plugin_tags:
            tags.update(plugin_tags)
        context = self.context
        config.record(FinishedSpan(
            trace_id=context.trace_id, span_id=context.span_id,
            parent_span_id=self.parent.span_id if self.parent is not None else 0,
            name=_span_name(config, info, request), kind=config.kind, start_ns=start_ns, end_ns=end_ns, tags=tags,
            error=code >= 500 or code == 0, local_address=info.downstream_local_address,
            remote_address=info.downstream_remote_address if config.kind == SERVER else info.upstream_host))


def active_span_properties(info: StreamInfo) -> dict[str, object] | None:
    """The ``wasmesh.span.*`` properties for plugins on this stream (None: the listener does not trace)."""
    state = info._filter_state  # read without creating it: most streams have no filter state
    return state.get(ACTIVE_SPAN) if state is not None else None


def collect_plugin_span_tags(info: StreamInfo, plugin_state: dict[bytes, bytes]) -> None:
    """Move the span tags one plugin set (``wasmesh.span.tag.<name>``) to the stream, for the tracing filter."""
    state = info._filter_state
    if state is None or ACTIVE_SPAN not in state:
        return
    tags = plugin_span_tags(plugin_state)
    if tags:
        state.setdefault(PLUGIN_TAGS, {}).update(tags)


def _header(headers: HeaderMap | None, name: bytes) -> str:
    value = headers.get(name) if headers is not None else None
    return value.decode("latin-1") if value is not None else ""


def _span_name(config: TracingConfig, info: Any, request: HeaderMap | None) -> str:
    """Istio's operation name: ``<destination service>:<port>/*``."""
    host = _header(request, b":authority")
    service, _ = destination_service_for(info, host)
    port = ""
    parts = info.cluster_name.split("|")
    if len(parts) == 4 and parts[1].isdigit():
        port = parts[1]
    elif ":" in host:
        port = host.rsplit(":", 1)[1]
    elif info.downstream_local_address is not None and config.kind == SERVER:
        port = str(info.downstream_local_address[1])
    service = service.split(":", 1)[0] if service else (config.local.canonical_service or "unknown")
    return f"{service}:{port}/*" if port else f"{service}/*"


def destination_service_for(info: Any, host: str) -> tuple[str, str]:
    from ..telemetry import RequestFacts

    return destination_service(RequestFacts(peer=None, host=host, cluster_name=info.cluster_name,
                                            route_name=info.route_name))


def _istio_tags(config: TracingConfig, info: Any, request: HeaderMap | None, code: int) -> dict[str, str]:
    local = config.local
    path = _header(request, b":path")[: config.max_path]
    scheme = _header(request, b":scheme") or "http"
    tags = {
        "component": "proxy",
        "node_id": config.node_id,
        "guid:x-request-id": _header(request, b"x-request-id"),
        "http.url": f"{scheme}://{_header(request, b':authority')}{path}",
        "http.method": _header(request, b":method"),
        "http.protocol": info.protocol,
        "downstream_cluster": _header(request, b"x-envoy-downstream-service-cluster") or "-",
        "user_agent": _header(request, b"user-agent") or "-",
        "request_size": str(info.bytes_received),
        "response_size": str(info.bytes_sent),
        "http.status_code": str(code),
        "response_flags": info.flags_string(),
        "upstream_cluster": info.cluster_name or "-",
        "upstream_cluster.name": info.cluster_name or "-",
        "istio.mesh_id": local.mesh_id or "unknown",
        "istio.canonical_service": local.canonical_service or "unknown",
        "istio.canonical_revision": local.canonical_revision or "latest",
        "istio.namespace": local.namespace or "unknown",
    }
    remote = info.downstream_remote_address
    if remote is not None:
        tags["peer.address"] = remote[0]
    if code >= 500 or code == 0:
        tags["error"] = "true"
    return tags


def build_tracing_entry(tracing: Any, path: str, context: FilterBuildContext) -> FilterEntry:
    """The tracing filter for one HCM's ``tracing`` field (first in its chain)."""
    try:
        config = TracingConfig(tracing, context)
    except ConfigError as err:
        raise err.under(path) from None

    def create(callbacks: FilterCallbacks) -> HttpFilter:
        return TracingFilter(callbacks, config)

    return FilterEntry("envoy.tracing", "envoy.config.trace.v3.Tracing", create, False,
                       wants_complete=False, wants_log=True)


Builder = Callable[[Any, str, FilterBuildContext], FilterEntry]


def _declare_supported() -> None:
    """Tell the config checker which tracing fields this module gives Envoy's meaning to."""
    from ._config_support import ALL, SUPPORTED

    hcm = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    SUPPORTED[hcm] = SUPPORTED[hcm] | {"tracing"}
    SUPPORTED.update({
        hcm + ".Tracing": frozenset({"provider", "random_sampling", "client_sampling", "overall_sampling",
                                     "custom_tags", "max_path_tag_length", "spawn_upstream_span", "verbose"}),
        "envoy.type.v3.Percent": ALL,
        "envoy.config.trace.v3.Tracing.Http": frozenset({"name", "typed_config"}),
        OTEL_TYPE: frozenset({"http_service", "grpc_service", "service_name"}),
        "envoy.config.core.v3.HttpService": frozenset({"http_uri", "request_headers_to_add"}),
        "envoy.config.core.v3.HttpUri": frozenset({"uri", "cluster", "timeout"}),
        "envoy.config.core.v3.GrpcService": ALL,
        ZIPKIN_TYPE: frozenset({"collector_cluster", "collector_endpoint", "trace_id_128bit", "shared_span_context",
                                "collector_endpoint_version", "collector_hostname"}),
        "envoy.type.tracing.v3.CustomTag": ALL,
        "envoy.type.tracing.v3.CustomTag.Literal": ALL,
        "envoy.type.tracing.v3.CustomTag.Environment": ALL,
        "envoy.type.tracing.v3.CustomTag.Header": ALL,
        "envoy.type.tracing.v3.CustomTag.Metadata": ALL,
    })


_declare_supported()
