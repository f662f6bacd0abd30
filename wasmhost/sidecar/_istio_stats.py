"""``istio.stats``: Istio's standard metrics from every sidecar (``type.googleapis.com/stats.PluginConfig``).

Registered under Istio's own config type, so the ``istio.stats`` filter istiod (and the
wasmesh control plane) put into each HTTP connection manager configures this one: the
reporter comes from ``reporter`` or the listener's ``traffic_direction`` (INBOUND:
``destination``, OUTBOUND: ``source``), ``metrics`` overrides drop metrics and remove,
set or add tags, ``disable_host_header_fallback`` is honoured.

At log time the filter reads the finished stream (response code and flags, gRPC status,
peer from ``istio.metadata_exchange``, TLS peer principal, Host header, upstream cluster)
and updates ``istio_requests_total``, ``istio_request_duration_milliseconds``,
``istio_request_bytes`` and ``istio_response_bytes`` in the worker's stats under the
``istiocustom`` namespace. Stats objects are cached per label set, so a repeated label set
costs dictionary lookups only; the number of label sets per worker is capped
(``MAX_SERIES``) so peers cannot grow memory without bound.

The same module exports per-plugin health from the worker's Wasm runtime (a stats snapshot
hook): ``wasmesh_wasm_plugin_*{plugin, sha256, vm_id}``.
"""

from __future__ import annotations

from typing import Any

from .. import CALLBACK_LATENCY_BOUNDS_US
from ..telemetry import (
    HTTP_METRICS,
    METRICS,
    STATS_CONFIG_TYPE,
    MetricOverrides,
    OverrideError,
    Reporter,
    RequestFacts,
    WorkloadMetadata,
    parse_tagged,
    standard_tags,
    tagged_name,
)
from ._attributes import StreamAttributes
from ._errors import ConfigError
from ._filter_api import FilterCallbacks, HttpFilter
from ._filter_registry import FilterBuildContext, register_http_filter
from ._headers import HeaderMap
from ._peer_metadata import DOWNSTREAM_PEER, UPSTREAM_PEER
from ._stats import StatsStore, add_snapshot_hook, register_stat_namespace

#: label sets per worker and config before new ones are dropped (and counted)
MAX_SERIES = 20_000
_GRPC = b"application/grpc"
_INBOUND, _OUTBOUND = 1, 2
PLUGIN_NAMESPACE = "wasmesh"


class _Series:
    """The four HTTP stats of one label set (None when the metric is dropped)."""

    __slots__ = ("requests", "duration", "request_bytes", "response_bytes")

    def __init__(self, stats: StatsStore, names: dict[str, str | None]) -> None:
        requests, duration = names["requests_total"], names["request_duration_milliseconds"]
        request_bytes, response_bytes = names["request_bytes"], names["response_bytes"]
        self.requests = stats.counter(requests) if requests else None
        self.duration = stats.histogram(duration) if duration else None
        self.request_bytes = stats.histogram(request_bytes) if request_bytes else None
        self.response_bytes = stats.histogram(response_bytes) if response_bytes else None


class IstioStatsConfig:
    """One ``istio.stats`` filter config on one listener, with its worker's series cache."""

    def __init__(self, config: Any, context: FilterBuildContext) -> None:
        if config.reporter == 1:
            self.reporter = Reporter.WAYPOINT
        elif context.listener_direction == _INBOUND:
            self.reporter = Reporter.DESTINATION
        else:
            self.reporter = Reporter.SOURCE
        self.host_fallback = not config.disable_host_header_fallback
        if len(config.definitions):
            raise ConfigError("definitions", "custom metric definitions are not supported; "
                                             "use metrics overrides on the standard metrics")
        try:
            self.overrides = MetricOverrides.from_config(config.metrics, "metrics")
        except OverrideError as err:
            raise ConfigError(err.path, err.reason) from None
        self.node = context.node
        self.local = WorkloadMetadata.from_node(context.node)
        self.peer_key = DOWNSTREAM_PEER if self.reporter is not Reporter.SOURCE else UPSTREAM_PEER
        self.series: dict[Any, _Series] = {}
        self.stats: StatsStore | None = context.services.stats if context.services is not None else None
        self.overflow = self.stats.counter("istio_stats.series_overflow") if self.stats is not None else None
        if self.stats is not None:
            version = self.local_version()
            self.stats.gauge(tagged_name("istio_build", (("component", "proxy"), ("tag", version)))).set(1)

    def local_version(self) -> str:
        node = self.node
        if node is None or not node.HasField("metadata"):
            return "unknown"
        value = node.metadata.fields.get("ISTIO_VERSION")
        return value.string_value if value is not None and value.string_value else "unknown"

    def facts(self, callbacks: FilterCallbacks) -> RequestFacts:
        info = callbacks.stream_info
        request = callbacks.request_headers
        response = callbacks.response_headers
        grpc = request is not None and (request.get(b"content-type") or b"").startswith(_GRPC)
        grpc_status = ""
        if grpc:
            raw = _grpc_status(callbacks.response_trailers, response)
            grpc_status = raw if raw is not None else ""
        state = info._filter_state
        peer = state.get(self.peer_key) if state else None
        peer_principal = ""
        mutual_tls: bool | None = None
        if self.reporter is not Reporter.SOURCE:
            tls = info.downstream_tls
            if tls is not None:
                sans = tls.get("uri_san_peer_certificate") or []
                peer_principal = sans[0] if sans else ""
            mutual_tls = bool(peer_principal)
        host = request.get(b":authority") if request is not None else None
        return RequestFacts(
            peer=peer if isinstance(peer, WorkloadMetadata) else None,
            peer_principal=peer_principal,
            mutual_tls=mutual_tls,
            host=host.decode("latin-1") if host else "",
            cluster_name=info.cluster_name,
            route_name=info.route_name,
            protocol="grpc" if grpc else "http",
            response_code=info.response_code,
            grpc_status=grpc_status,
            response_flags=info.flags_string(),
        )

    def series_for(self, callbacks: FilterCallbacks, tags: tuple[tuple[str, str], ...]) -> _Series | None:
        stats = self.stats
        if stats is None:
            return None
        overrides = self.overrides
        if overrides.empty:
            key: Any = tags
        else:
            attributes = StreamAttributes(callbacks.stream_info, callbacks.request_headers,
                                          callbacks.response_headers, callbacks.response_trailers, self.node)
            key = tuple(None if metric in overrides.dropped else overrides.apply(metric, tags, attributes)
                        for metric in HTTP_METRICS)
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                if self.overflow is not None:
                    self.overflow.value += 1
                return None
            names: dict[str, str | None]
            if overrides.empty:
                names = {metric: tagged_name(METRICS[metric][0], tags) for metric in HTTP_METRICS}
            else:
                names = {metric: tagged_name(METRICS[metric][0], metric_tags) if metric_tags is not None else None
                         for metric, metric_tags in zip(HTTP_METRICS, key, strict=True)}
            series = self.series[key] = _Series(stats, names)
        return series


def _grpc_status(trailers: HeaderMap | None, headers: HeaderMap | None) -> str | None:
    for source in (trailers, headers):
        if source is not None:
            value = source.get(b"grpc-status")
            if value is not None:
                return value.decode("latin-1")
    return None


class IstioStatsFilter(HttpFilter):
    """Reads the stream once, at log time; off the request and response paths."""

    decodes = False
    encodes = False
    __slots__ = ("callbacks", "config")

    def __init__(self, callbacks: FilterCallbacks, config: IstioStatsConfig) -> None:
        self.callbacks = callbacks
        self.config = config

    def on_log(self) -> None:
        config = self.config
        callbacks = self.callbacks
        tags = standard_tags(config.reporter, config.local, config.facts(callbacks), config.host_fallback)
        series = config.series_for(callbacks, tags)
        if series is None:
            return
        info = callbacks.stream_info
        if series.requests is not None:
            series.requests.value += 1
        if series.duration is not None:
            end = info.last_downstream_tx_at
            if end is not None:
                series.duration.observe((end - info.start_monotonic) * 1000.0)
        if series.request_bytes is not None:
            request = callbacks.request_headers
            series.request_bytes.observe(info.bytes_received + (request.byte_size() if request is not None else 0))
        if series.response_bytes is not None:
            response = callbacks.response_headers
            series.response_bytes.observe(info.bytes_sent + (response.byte_size() if response is not None else 0))


def build_istio_stats(config: Any, context: FilterBuildContext) -> Any:
    settings = IstioStatsConfig(config, context)

    def create(callbacks: FilterCallbacks) -> HttpFilter:
        return IstioStatsFilter(callbacks, settings)

    create.filter_class = IstioStatsFilter  # type: ignore[attr-defined]
    return create


# --- per-plugin health, copied from the Wasm runtime when stats are read ----------------------------

_PLUGIN_COUNTERS = {"traps": "traps", "deadline_hits": "deadline_hits", "memory_hits": "memory_cap_hits",
                    "reloads": "reloads", "reload_failures": "reload_failures", "reload_backoff": "reload_backoff"}


def sync_plugin_health(store: StatsStore) -> None:
    """``wasmesh_wasm_plugin_*``: what each running plugin of this worker costs and how it fails."""
    from . import _wasm_host

    host = _wasm_host._HOST
    if host is None:
        return
    per_plugin = host.runtime.counters.per_plugin
    for (sha256, spec), binding in list(host.pool.items()):
        plugin = binding.plugin
        tags = (("plugin", spec.name), ("sha256", sha256), ("vm_id", spec.vm_id), ("root_id", spec.root_id))
        store.gauge(tagged_name("wasmesh_wasm_plugin_info", tags, PLUGIN_NAMESPACE)).set(1)
        short = (("plugin", spec.name), ("sha256", sha256))
        vm = plugin.vm
        pages = vm.memory.size // 65536 if vm is not None else 0
        store.gauge(tagged_name("wasmesh_wasm_plugin_memory_pages", short, PLUGIN_NAMESPACE)).set(pages)
        store.gauge(tagged_name("wasmesh_wasm_plugin_healthy", short, PLUGIN_NAMESPACE)).set(0 if plugin.failed else 1)
        store.gauge(tagged_name("wasmesh_wasm_plugin_active_streams", short, PLUGIN_NAMESPACE)).set(
            vm.active_streams if vm is not None else 0)
        counts = per_plugin.get(spec.name, {})
        for key, metric in _PLUGIN_COUNTERS.items():
            counter = store.counter(tagged_name(f"wasmesh_wasm_plugin_{metric}_total", short, PLUGIN_NAMESPACE))
            counter.value = max(counter.value, counts.get(key, 0))
        calls = host.runtime.counters.calls.get(spec.name)
        if calls is not None:
            store.counter(tagged_name("wasmesh_wasm_plugin_calls_total", short, PLUGIN_NAMESPACE)).value = calls.calls
            store.counter(tagged_name("wasmesh_wasm_plugin_errors_total", short, PLUGIN_NAMESPACE)).value = calls.errors
            latency = store.histogram(
                tagged_name("wasmesh_wasm_plugin_callback_duration_microseconds", short, PLUGIN_NAMESPACE),
                tuple(float(b) for b in CALLBACK_LATENCY_BOUNDS_US),
            )
            latency.counts = list(calls.latency_counts)
            latency.total = calls.latency_sum_us
            latency.count = calls.calls


register_stat_namespace("istiocustom", parse_tagged)
register_stat_namespace(PLUGIN_NAMESPACE, parse_tagged)
# plugin-defined metrics: Envoy strips the wasmcustom namespace in its Prometheus view
register_stat_namespace("wasmcustom")
add_snapshot_hook(sync_plugin_health)
register_http_filter(STATS_CONFIG_TYPE, build_istio_stats)
