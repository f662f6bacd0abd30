"""Wasm plugins read the active span and tag it, through wasmesh's ``wasmesh.span.*`` properties.

One sidecar, two inbound listeners to the same app, both running the plugin built from
``tests/e2e/data/span_properties.wat``; only the first has HCM tracing. The plugin copies
``wasmesh.span.trace_id``/``span_id`` into request headers and sets
``wasmesh.span.tag.plugin.phase`` (in its request callback) and ``wasmesh.span.tag.plugin.log``
(in ``proxy_on_log``). On the traced listener the app must see the client's trace id and the
sidecar's own span id, and the span the OTLP receiver gets must carry both tags; on the
untraced listener the properties do not exist, so the app sees neither header.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is a test dependency")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from tests.e2e._telemetry import listener, node, running, sidecar_bootstrap  # noqa: E402
from tests.e2e.conftest import build_wat  # noqa: E402
from tests.e2e.test_telemetry_prometheus import _wait  # noqa: E402
from tests.e2e.test_telemetry_tracing import PROPAGATOR, Collector, TracedApp, otel_tracing  # noqa: E402
from tests.wasmhost.sidecar._bootstrap import cluster  # noqa: E402
from tests.wasmhost.sidecar._process import http_request  # noqa: E402

WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    try:
        yield provider.get_tracer("wasmesh-test")
    finally:
        provider.shutdown()


def span_plugin(path: Path) -> dict[str, Any]:
    return {"name": "default.span-properties", "typed_config": {"@type": WASM, "config": {
        "name": "default.span-properties", "root_id": "span",
        "vm_config": {"vm_id": "span", "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(path)}}}}}}


def with_plugin(entry: dict[str, Any], plugin: dict[str, Any]) -> dict[str, Any]:
    hcm = entry["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, plugin)
    return entry


def test_plugin_reads_span_ids_and_tags_the_span(tmp_path: Path, collector: Collector, tracer: trace.Tracer) -> None:
    app = TracedApp(tracer)
    plugin = span_plugin(build_wat("span_properties", tmp_path))
    otlp = cluster("otel_collector", collector.port)
    try:
        bootstrap = sidecar_bootstrap(node("ratings-v1"), [
            with_plugin(listener("traced", "INBOUND", "inbound|9080||", tracing=otel_tracing("otel_collector"),
                                 telemetry=False), plugin),
            with_plugin(listener("untraced", "INBOUND", "inbound|9080||", telemetry=False), plugin)],
            [cluster("inbound|9080||", app.port), otlp])
        with running(bootstrap, tmp_path / "sidecar") as sidecar:
            ports = sidecar.listener_ports()
            with tracer.start_as_current_span("client", kind=trace.SpanKind.CLIENT) as root:
                carrier: dict[str, str] = {}
                PROPAGATOR.inject(carrier)
                traced = http_request(ports["traced"], headers=[("host", "ratings:9080"), *carrier.items()])
            untraced = http_request(ports["untraced"], headers=[("host", "ratings:9080"), *carrier.items()])
            spans = _wait(lambda: collector.spans())
    finally:
        app.stop()

    assert traced[0] == 200 and untraced[0] == 200
    seen_traced, seen_untraced = app.received
    assert len(spans) == 1
    span = spans[0]
    trace_id = root.get_span_context().trace_id
    assert seen_traced["x-plugin-trace-id"] == f"{trace_id:032x}" == span.trace_id.hex()
    assert seen_traced["x-plugin-span-id"] == span.span_id.hex()
    assert span.parent_span_id == root.get_span_context().span_id.to_bytes(8, "big")
    tags = {a.key: a.value.string_value for a in span.attributes}
    assert tags["plugin.phase"] == "request"
    assert tags["plugin.log"] == "seen"
    assert "x-plugin-trace-id" not in seen_untraced and "x-plugin-span-id" not in seen_untraced
