"""Finished spans and their wire formats: OTLP (through the OpenTelemetry SDK's encoder) and Zipkin v2 JSON.

A sidecar records one ``FinishedSpan`` per traced stream (SERVER on an inbound listener,
CLIENT on an outbound one) with Istio's tags. Exporters batch them and call
``encode_otlp`` / ``encode_zipkin`` off the request path; the bytes are posted to the
collector cluster by the sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SERVER, CLIENT = "SERVER", "CLIENT"


@dataclass(slots=True)
class FinishedSpan:
    """One span: ids, name, kind, wall-clock start/end in nanoseconds, string tags."""

    trace_id: int
    span_id: int
    parent_span_id: int
    name: str
    kind: str
    start_ns: int
    end_ns: int
    tags: dict[str, str] = field(default_factory=dict)
    error: bool = False
    local_address: tuple[str, int] | None = None
    remote_address: tuple[str, int] | None = None


def encode_otlp(spans: Sequence[FinishedSpan], resource: Mapping[str, str]) -> bytes:
    """An OTLP ``ExportTraceServiceRequest`` (protobuf), encoded by ``opentelemetry-exporter-otlp``."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    sdk_resource = Resource.create(dict(resource))
    scope = InstrumentationScope("wasmesh.sidecar", "0.1.0")
    readable = []
    for span in spans:
        context = SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=TraceFlags(1))
        parent = SpanContext(span.trace_id, span.parent_span_id, is_remote=True, trace_flags=TraceFlags(1)) \
            if span.parent_span_id else None
        readable.append(ReadableSpan(
            name=span.name, context=context, parent=parent, resource=sdk_resource,
            attributes=dict(span.tags), kind=SpanKind.SERVER if span.kind == SERVER else SpanKind.CLIENT,
            start_time=span.start_ns, end_time=span.end_ns, instrumentation_scope=scope,
            status=Status(StatusCode.ERROR) if span.error else Status(StatusCode.UNSET)))
    message: bytes = encode_spans(readable).SerializeToString()
    return message


def _endpoint(service: str, address: tuple[str, int] | None) -> dict[str, object]:
    out: dict[str, object] = {"serviceName": service} if service else {}
    if address is not None:
        host, port = address
        out["ipv6" if ":" in host else "ipv4"] = host
        out["port"] = port
    return out


def encode_zipkin(spans: Sequence[FinishedSpan], service_name: str, *, trace_id_128bit: bool = True,
                  shared_span_context: bool = False) -> bytes:
    """Zipkin v2 JSON (``POST /api/v2/spans``)."""
    out = []
    for span in spans:
        trace = f"{span.trace_id:032x}" if trace_id_128bit else f"{span.trace_id & (2**64 - 1):016x}"
        item: dict[str, object] = {
            "traceId": trace, "id": f"{span.span_id:016x}", "name": span.name, "kind": span.kind,
            "timestamp": span.start_ns // 1000, "duration": max(1, (span.end_ns - span.start_ns) // 1000),
            "localEndpoint": _endpoint(service_name, span.local_address),
            "tags": {**span.tags, **({"error": "true"} if span.error else {})},
        }
        if span.parent_span_id:
            item["parentId"] = f"{span.parent_span_id:016x}"
        if span.remote_address is not None:
            item["remoteEndpoint"] = _endpoint("", span.remote_address)
        if shared_span_context and span.kind == SERVER:
            item["shared"] = True
        out.append(item)
    return json.dumps(out, separators=(",", ":")).encode()
