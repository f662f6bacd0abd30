"""Trace propagation across three sidecars, checked from both ends.

The client starts a trace with the OpenTelemetry SDK and injects ``traceparent``; the request
crosses productpage's sidecar (outbound: CLIENT span), reviews' sidecar (inbound: SERVER
span, then its outbound listener: CLIENT span) and ratings' sidecar (inbound: SERVER span) to
an app that continues the trace with the SDK. The sidecars export their spans over OTLP/HTTP
to a receiver in this test; the SDK spans land in the SDK's in-memory exporter. One trace id
everywhere, and each span's parent is the span of the hop before it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is a test dependency")

from opentelemetry import trace  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

from tests.e2e._telemetry import free_port, listener, node, outbound_cluster, running, sidecar_bootstrap  # noqa: E402
from tests.e2e.test_telemetry_prometheus import _wait  # noqa: E402
from tests.wasmhost.sidecar._bootstrap import cluster  # noqa: E402
from tests.wasmhost.sidecar._process import http_request  # noqa: E402

OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
ZIPKIN = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
PROPAGATOR = TraceContextTextMapPropagator()


class Collector:
    """Receives OTLP/HTTP (``/v1/traces``, protobuf) and Zipkin v2 JSON (``/api/v2/spans``) posts."""

    def __init__(self) -> None:
        self.otlp: list[ExportTraceServiceRequest] = []
        self.zipkin: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/v1/traces":
                    message = ExportTraceServiceRequest()
                    message.ParseFromString(body)
                    collector.otlp.append(message)
                elif self.path == "/api/v2/spans":
                    collector.zipkin.extend(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[Any]:
        return [span for request in self.otlp for resource in request.resource_spans
                for scope in resource.scope_spans for span in scope.spans]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TracedApp:
    """The last hop's application: continues the trace with the OpenTelemetry SDK, echoes what it got."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.received: list[dict[str, str]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                headers = {k.lower(): v for k, v in self.headers.items()}
                app.received.append(headers)
                with tracer.start_as_current_span("ratings-app", context=PROPAGATOR.extract(headers),
                                                  kind=trace.SpanKind.SERVER):
                    pass
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sdk() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider.get_tracer("wasmesh-test"), exporter
    finally:
        provider.shutdown()


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    try:
        yield server
    finally:
        server.stop()


def otel_tracing(collector_cluster: str, sampling: float = 100.0) -> dict[str, Any]:
    return {"random_sampling": {"value": sampling},
            "custom_tags": [{"tag": "mesh.test", "literal": {"value": "three-hops"}}],
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": OTEL, "service_name": "", "http_service": {
                    "http_uri": {"uri": "http://collector/v1/traces", "cluster": collector_cluster,
                                 "timeout": "2s"}}}}}


def test_three_hops_propagate_and_parent_spans(tmp_path: Path, collector: Collector,
                                               sdk: tuple[trace.Tracer, InMemorySpanExporter]) -> None:
    tracer, memory = sdk
    app = TracedApp(tracer)
    otlp = cluster("zipkin", collector.port)
    otlp["name"] = "otel_collector"
    otlp["load_assignment"]["cluster_name"] = "otel_collector"
    tracing = otel_tracing("otel_collector")
    try:
        ratings = sidecar_bootstrap(node("ratings-v1"), [
            listener("virtualInbound_9080", "INBOUND", "inbound|9080||", tracing=tracing)],
            [cluster("inbound|9080||", app.port), otlp])
        with running(ratings, tmp_path / "ratings") as hop3:
            ratings_in = hop3.listener_ports()["virtualInbound_9080"]
            reviews_out = free_port()  # the reviews app forwards to its own outbound listener
            reviews = sidecar_bootstrap(node("reviews-v1"), [
                listener("virtualInbound_9080", "INBOUND", "inbound|9080||", tracing=tracing),
                listener("0.0.0.0_9080", "OUTBOUND", "outbound|9080||ratings.default.svc.cluster.local",
                         port=reviews_out, tracing=tracing)],
                [cluster("inbound|9080||", reviews_out),
                 outbound_cluster("ratings.default.svc.cluster.local", 9080, ratings_in), otlp])
            with running(reviews, tmp_path / "reviews") as hop2:
                ports = hop2.listener_ports()
                productpage = sidecar_bootstrap(node("productpage-v1"), [
                    listener("0.0.0.0_9080", "OUTBOUND", "outbound|9080||reviews.default.svc.cluster.local",
                             tracing=tracing)],
                    [outbound_cluster("reviews.default.svc.cluster.local", 9080, ports["virtualInbound_9080"]), otlp])
                with running(productpage, tmp_path / "productpage") as hop1:
                    with tracer.start_as_current_span("client", kind=trace.SpanKind.CLIENT) as root:
                        carrier: dict[str, str] = {}
                        PROPAGATOR.inject(carrier)
                        status, _, body = http_request(hop1.listener_ports()["0.0.0.0_9080"],
                                                       headers=[("host", "reviews:9080"), *carrier.items()])
                    assert (status, body) == (200, b"ok")
                    sidecar_spans = _wait(lambda: len(collector.spans()) >= 4 and collector.spans())
    finally:
        app.stop()

    trace_id = root.get_span_context().trace_id
    by_parent = {span.parent_span_id: span for span in sidecar_spans}
    chain = []
    parent = root.get_span_context().span_id.to_bytes(8, "big")
    while parent in by_parent:
        span = by_parent.pop(parent)
        chain.append(span)
        parent = span.span_id
    assert [(s.name, s.kind) for s in chain] == [
        ("reviews.default.svc.cluster.local:9080/*", 3),  # SPAN_KIND_CLIENT at productpage
        ("reviews:9080/*", 2),  # SPAN_KIND_SERVER at reviews (inbound: the Host header names the service)
        ("ratings.default.svc.cluster.local:9080/*", 3),  # reviews calls ratings
        ("reviews:9080/*", 2),  # SERVER at ratings (the forwarded Host header)
    ]
    assert all(int.from_bytes(s.trace_id, "big") == trace_id for s in chain)
    tags = {a.key: a.value.string_value for a in chain[0].attributes}
    assert tags["istio.canonical_service"] == "productpage" and tags["http.status_code"] == "200"
    assert tags["mesh.test"] == "three-hops" and tags["component"] == "proxy"

    app_span = next(s for s in memory.get_finished_spans() if s.name == "ratings-app")
    assert app_span.context.trace_id == trace_id
    assert app_span.parent is not None and app_span.parent.span_id == int.from_bytes(chain[-1].span_id, "big")
    forwarded = app.received[0]["traceparent"].split("-")
    assert forwarded[1] == f"{trace_id:032x}" and forwarded[2] == chain[-1].span_id.hex() and forwarded[3] == "01"


def test_zipkin_b3_propagation_and_unsampled_requests(tmp_path: Path, collector: Collector,
                                                      sdk: tuple[trace.Tracer, InMemorySpanExporter]) -> None:
    tracer, _ = sdk
    app = TracedApp(tracer)
    zipkin = {"provider": {"name": "envoy.tracers.zipkin", "typed_config": {
        "@type": ZIPKIN, "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
        "collector_endpoint_version": "HTTP_JSON", "trace_id_128bit": True}}}
    try:
        config = sidecar_bootstrap(node("details-v1"), [
            listener("virtualInbound_9080", "INBOUND", "inbound|9080||", tracing=zipkin)],
            [cluster("inbound|9080||", app.port), cluster("zipkin", collector.port)])
        with running(config, tmp_path / "details") as sidecar:
            port = sidecar.listener_ports()["virtualInbound_9080"]
            b3 = [("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "a2fb4a1d1a96d312"),
                  ("x-b3-sampled", "1")]
            assert http_request(port, headers=[("host", "details:9080"), *b3])[0] == 200
            assert http_request(port, headers=[("host", "details:9080"), ("x-b3-traceid", "1" * 32),
                                               ("x-b3-spanid", "2" * 16), ("x-b3-sampled", "0")])[0] == 200
            spans = _wait(lambda: collector.zipkin)
    finally:
        app.stop()
    assert len(spans) == 1  # the unsampled request propagated its decision and exported nothing
    span = spans[0]
    assert (span["traceId"], span["parentId"], span["kind"]) == ("463ac35c9f6413ad48485a3953bb6124",
                                                                 "a2fb4a1d1a96d312", "SERVER")
    assert span["localEndpoint"]["serviceName"] == "details.default"
    sampled, unsampled = app.received
    assert sampled["x-b3-traceid"] == "463ac35c9f6413ad48485a3953bb6124"
    assert sampled["x-b3-spanid"] == span["id"] and sampled["x-b3-parentspanid"] == "a2fb4a1d1a96d312"
    assert (unsampled["x-b3-traceid"], unsampled["x-b3-sampled"]) == ("1" * 32, "0")
