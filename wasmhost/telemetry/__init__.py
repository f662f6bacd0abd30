"""wasmhost.telemetry: what a sidecar tells the world about its traffic (metrics, traces, peers).

Where it sits: sans-io pieces shared by the sidecar's telemetry filters
(``wasmhost.sidecar._istio_stats``, ``_peer_metadata``, ``_tracing``) and the control
plane (which builds the same Istio extension configs): Istio's standard metric labels and
overrides, peer metadata exchange headers, a CEL subset for dimensions and filters, trace
context propagation (W3C ``traceparent``, B3), sampling, span building with Istio's tags,
and span exporters (OTLP over HTTP through the OpenTelemetry SDK exporter, Zipkin v2 JSON).
Importing this package registers Istio's ``stats.PluginConfig`` and
``io.istio.http.peer_metadata.Config`` message types in the protobuf pool.
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
