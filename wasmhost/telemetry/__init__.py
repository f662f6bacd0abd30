"""wasmhost.telemetry: what a sidecar tells the world about its traffic (metrics, traces, peers).

Where it sits: sans-io pieces shared by the sidecar's telemetry filters
(``wasmhost.sidecar._istio_stats``, ``_peer_metadata``, ``_tracing``) and the control
plane (which builds the same Istio extension configs): Istio's standard metric labels and
overrides, peer metadata exchange headers, a CEL subset for dimensions and filters, trace
context propagation (W3C ``traceparent``, B3), sampling, span building with Istio's tags,
and span exporters (OTLP over HTTP through the OpenTelemetry SDK exporter, Zipkin v2 JSON).
Importing this package registers Istio's ``stats.PluginConfig`` and
``io.istio.http.peer_metadata.Config`` message types in the protobuf pool.

Wasm plugins and traces (a wasmesh extension; Envoy's attributes have no trace ids): on a
listener with HCM ``tracing`` a plugin reads ``wasmesh.span.trace_id``, ``span_id``,
``parent_span_id`` and ``sampled`` with ``proxy_get_property`` and adds a tag to this hop's
span with ``proxy_set_property("wasmesh.span.tag.<name>", value)``, in any callback up to
``proxy_on_log`` (``_plugin_span``; at most 64 tags of 4 KiB each). Without tracing these
properties are NOT_FOUND.

Access-log filters: a ``Telemetry`` ``accessLogging[].filter.expression`` reaches the
sidecar as Envoy's CEL extension filter; the sidecar compiles it with the same CEL subset
(``_expr``) the control plane validates against and writes a line only when it is true.

Not built: ``istio_tcp_*`` metrics, because the sidecar has no TCP proxy
(``envoy.filters.network.tcp_proxy``) to count them on; Envoy's native access-log filter
types (status code, duration, runtime ...) are refused by name.
"""

from ._expr import Attributes, Expression, ExpressionError, compile_expression
from ._istio_metrics import (
    HTTP_METRICS,
    METRICS,
    NAMESPACE,
    STANDARD_TAGS,
    MetricOverrides,
    OverrideError,
    Reporter,
    RequestFacts,
    destination_service,
    parse_tagged,
    standard_tags,
    tagged_name,
)
from ._istio_protos import (
    PEER_METADATA_CONFIG_TYPE,
    STATS_CONFIG_TYPE,
    PeerMetadataConfig,
    StatsPluginConfig,
)
from ._peer import (
    PEER_ID_HEADER,
    PEER_METADATA_HEADER,
    WorkloadMetadata,
    decode_peer_header,
    encode_peer_header,
    principal_namespace,
    shared_metadata,
)

__all__ = [
    "HTTP_METRICS",
    "METRICS",
    "NAMESPACE",
    "PEER_ID_HEADER",
    "PEER_METADATA_CONFIG_TYPE",
    "PEER_METADATA_HEADER",
    "STANDARD_TAGS",
    "STATS_CONFIG_TYPE",
    "Attributes",
    "Expression",
    "ExpressionError",
    "MetricOverrides",
    "OverrideError",
    "PeerMetadataConfig",
    "Reporter",
    "RequestFacts",
    "StatsPluginConfig",
    "WorkloadMetadata",
    "compile_expression",
    "decode_peer_header",
    "destination_service",
    "encode_peer_header",
    "parse_tagged",
    "principal_namespace",
    "shared_metadata",
    "standard_tags",
    "tagged_name",
]
