"""The ``wasmesh.span`` properties: what a plugin reads, which filter-state entries become tags."""

from __future__ import annotations

from wasmhost.telemetry._plugin_span import MAX_PLUGIN_TAGS, MAX_TAG_VALUE, plugin_span_tags, span_properties
from wasmhost.telemetry._trace_context import SpanContext


def test_span_properties_are_hex_ids_and_the_sampling_decision() -> None:
    span = SpanContext(0xABC, 0x12, True)
    parent = SpanContext(0xABC, 0x34, True)
    assert span_properties(span, parent) == {
        "wasmesh.span.trace_id": "00000000000000000000000000000abc",
        "wasmesh.span.span_id": "0000000000000012",
        "wasmesh.span.parent_span_id": "0000000000000034",
        "wasmesh.span.sampled": True,
    }
    root = span_properties(SpanContext(1, 2, False), None)
    assert "wasmesh.span.parent_span_id" not in root and root["wasmesh.span.sampled"] is False


def test_only_tag_paths_become_tags_and_they_are_bounded() -> None:
    state = {
        b"wasmesh\0span\0tag\0user": b"alice",
        b"wasmesh\0span\0tag\0": b"no name",
        b"wasmesh\0span\0trace_id": b"not a tag",
        b"other": b"x",
        b"wasmesh\0span\0tag\0big": b"v" * (MAX_TAG_VALUE + 10),
        b"wasmesh\0span\0tag\0bad\xff": b"\xfe",
    }
    tags = plugin_span_tags(state)
    assert tags["user"] == "alice" and len(tags["big"]) == MAX_TAG_VALUE
    assert tags["bad\ufffd"] == "\ufffd"
    assert set(tags) == {"user", "big", "bad\ufffd"}
    many = {b"wasmesh\0span\0tag\0t%d" % i: b"1" for i in range(MAX_PLUGIN_TAGS + 5)}
    assert len(plugin_span_tags(many)) == MAX_PLUGIN_TAGS
