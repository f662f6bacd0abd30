"""The active span as seen by Wasm plugins (a wasmesh extension to the property catalogue).

Envoy's attribute catalogue has no trace attributes, so a plugin there cannot learn the trace
it runs in. wasmesh adds a ``wasmesh.span`` namespace:

- read with ``proxy_get_property``: ``wasmesh.span.trace_id`` (32 lowercase hex digits),
  ``wasmesh.span.span_id`` (16 hex digits, this hop's span), ``wasmesh.span.parent_span_id``
  (16 hex digits; absent at the root of a trace) and ``wasmesh.span.sampled`` (bool);
- write with ``proxy_set_property``: ``wasmesh.span.tag.<name>`` adds the tag ``<name>`` to
  this hop's span (the value is UTF-8 text). The host keeps the value in filter state as it
  keeps every set property; the tracing filter reads those entries when it finishes the span,
  so tags set in any callback up to and including ``proxy_on_log`` are recorded.

The properties exist only on a listener with HCM ``tracing``; elsewhere they are NOT_FOUND.
Sans-io: the sidecar's tracing filter stores the span under ``ACTIVE_SPAN`` in the stream's
filter state; its Wasm filter copies ``span_properties`` into the plugin's view.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._trace_context import SpanContext

#: key of the active SpanContext in the sidecar stream's filter state
ACTIVE_SPAN = "wasmesh.span"
#: filter-state key prefix (path components joined by NUL) under which plugins set span tags
TAG_PREFIX = b"wasmesh\0span\0tag\0"
#: a plugin may add at most this many tags to one span, each value at most MAX_TAG_VALUE bytes
MAX_PLUGIN_TAGS = 64
MAX_TAG_VALUE = 4096


def span_properties(span: SpanContext, parent: SpanContext | None) -> dict[str, object]:
    """The ``wasmesh.span.*`` property values for a plugin on the stream of ``span``."""
    values: dict[str, object] = {
        "wasmesh.span.trace_id": span.trace_id_hex,
        "wasmesh.span.span_id": span.span_id_hex,
        "wasmesh.span.sampled": bool(span.sampled),
    }
    if parent is not None:
        values["wasmesh.span.parent_span_id"] = parent.span_id_hex
    return values


def plugin_span_tags(state: Mapping[bytes, bytes]) -> dict[str, str]:
    """The tags a plugin set through ``wasmesh.span.tag.<name>`` (bounded; empty names ignored)."""
    tags: dict[str, str] = {}
    for key, value in state.items():
        if not key.startswith(TAG_PREFIX) or len(key) == len(TAG_PREFIX):
            continue
        if len(tags) >= MAX_PLUGIN_TAGS:
            break
        name = key[len(TAG_PREFIX):].decode("utf-8", "replace")
        tags[name] = value[:MAX_TAG_VALUE].decode("utf-8", "replace")
    return tags
