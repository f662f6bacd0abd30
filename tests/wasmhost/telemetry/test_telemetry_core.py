"""Sans-io telemetry pieces: trace context parsing/injection, peer headers, the CEL subset, labels."""

from __future__ import annotations

import base64

import pytest

from wasmhost.telemetry import (
    ExpressionError,
    Reporter,
    RequestFacts,
    WorkloadMetadata,
    compile_expression,
    decode_peer_header,
    encode_peer_header,
    parse_tagged,
    standard_tags,
    tagged_name,
)
from wasmhost.telemetry._trace_context import SpanContext, extract, inject_b3, inject_w3c


def test_traceparent_roundtrip_and_invalid_values() -> None:
    headers = {b"traceparent": b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b"tracestate": b"a=b"}
    context = extract(headers.get)
    assert context == SpanContext(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, True, b"a=b")
    out: dict[bytes, bytes] = {}
    inject_w3c(context, out.__setitem__)
    assert out[b"traceparent"] == headers[b"traceparent"]
    for bad in (b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", b"00-xyz"):
        assert extract({b"traceparent": bad}.get) is None


def test_b3_multi_and_single() -> None:
    multi = {b"x-b3-traceid": b"80f198ee56343ba864fe8b2a57d3eff7", b"x-b3-spanid": b"e457b5a2e4d86bd1",
             b"x-b3-parentspanid": b"05e3ac9a4f6e3b90", b"x-b3-sampled": b"0"}
    context = extract(multi.get)
    assert context is not None and context.sampled is False and context.parent_span_id == 0x05e3ac9a4f6e3b90
    single = extract({b"b3": b"80f198ee56343ba8-e457b5a2e4d86bd1-d"}.get)
    assert single is not None and single.sampled is True and single.trace_id == 0x80f198ee56343ba8
    out: dict[bytes, bytes] = {}
    inject_b3(context, out.__setitem__)
    assert out[b"x-b3-traceid"] == b"80f198ee56343ba864fe8b2a57d3eff7" and out[b"x-b3-sampled"] == b"0"


def test_peer_header_roundtrip_and_garbage() -> None:
    value = encode_peer_header({"WORKLOAD_NAME": "reviews-v1", "NAMESPACE": "shop",
                                "LABELS": {"app": "reviews", "version": "v1"}})
    peer = decode_peer_header(value, b"sidecar~1")
    assert peer is not None and (peer.workload_name, peer.namespace, peer.app, peer.version) == (
        "reviews-v1", "shop", "reviews", "v1")
    assert decode_peer_header(b"!!!not base64") is None
    assert decode_peer_header(base64.b64encode(b"\xff\xff\xff")) is None
    assert decode_peer_header(b"A" * 9000) is None


class Attrs:
    def __init__(self, values: dict[tuple[str, ...], object]) -> None:
        self.values = values

    def lookup(self, path: tuple[str, ...]) -> object:
        return self.values.get(path)


def test_expressions_subset() -> None:
    attrs = Attrs({("request", "headers", "x-api-version"): "v2", ("response", "code"): 503})
    assert compile_expression("request.headers['x-api-version'] | 'v0'").text(attrs) == "v2"
    assert compile_expression("request.headers['missing'] | 'v0'").text(attrs) == "v0"
    assert compile_expression("response.code >= 500 && response.code != 504").truth(attrs)
    for bad in ("size(request.headers)", "request.headers['a'].startsWith('x')", "a ? b : c", ""):
        with pytest.raises(ExpressionError):
            compile_expression(bad)


def test_standard_tags_and_tagged_names() -> None:
    local = WorkloadMetadata(workload_name="productpage-v1", namespace="default", app="productpage", version="v1",
                             canonical_service="productpage", canonical_revision="v1")
    facts = RequestFacts(peer=None, host="reviews:9080", cluster_name="outbound|9080||reviews.default.svc.cluster.local",
                         response_code=200)
    tags = dict(standard_tags(Reporter.SOURCE, local, facts))
    assert tags["reporter"] == "source" and tags["destination_workload"] == "unknown"
    assert tags["destination_service"] == "reviews.default.svc.cluster.local"
    assert tags["destination_service_name"] == "reviews" and tags["connection_security_policy"] == "unknown"
    name = tagged_name("istio_requests_total", [("a", 'x"y\\z'), ("b", "1.2")])
    assert parse_tagged(name.split(".", 1)[1]) == ("istio_requests_total", {"a": 'x"y\\z', "b": "1.2"})
