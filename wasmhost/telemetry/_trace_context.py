"""Trace context propagation: W3C Trace Context (``traceparent``/``tracestate``) and B3 (multi and single header).

Sans-io: ``extract`` reads a context from a header getter, ``inject`` writes one through a
header setter. Malformed headers from a client are ignored (a new trace starts), as the
W3C spec requires: an all-zero id, a wrong length, a non-hex digit or version ``ff`` is
invalid.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
B3_TRACE_ID = b"x-b3-traceid"
B3_SPAN_ID = b"x-b3-spanid"
B3_PARENT_SPAN_ID = b"x-b3-parentspanid"
B3_SAMPLED = b"x-b3-sampled"
B3_FLAGS = b"x-b3-flags"
B3_SINGLE = b"b3"
FORCE_TRACE = b"x-envoy-force-trace"
PROPAGATION_HEADERS = (TRACEPARENT, TRACESTATE, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS,
                       B3_SINGLE)
_HEX = frozenset(b"0123456789abcdef")

HeaderGetter = Callable[[bytes], bytes | None]
HeaderSetter = Callable[[bytes, bytes], None]


@dataclass(frozen=True, slots=True)
class SpanContext:
    """What crosses a hop: 128-bit trace id, 64-bit span id, the sampling decision (None: not decided)."""

    trace_id: int
    span_id: int
    sampled: bool | None = None
    tracestate: bytes = b""
    parent_span_id: int = 0  # B3 only: the parent of span_id, when the sender said

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"


def _hex_id(value: bytes, lengths: tuple[int, ...]) -> int | None:
    value = value.strip().lower()
    if len(value) not in lengths or not set(value) <= _HEX:
        return None
    number = int(value, 16)
    return number or None


def parse_traceparent(value: bytes) -> SpanContext | None:
    parts = value.strip().lower().split(b"-")
    if len(parts) < 4 or len(parts[0]) != 2 or not set(parts[0]) <= _HEX or parts[0] == b"ff":
        return None
    if parts[0] == b"00" and len(parts) != 4:
        return None
    trace_id, span_id = _hex_id(parts[1], (32,)), _hex_id(parts[2], (16,))
    if trace_id is None or span_id is None or len(parts[3]) != 2 or not set(parts[3]) <= _HEX:
        return None
    return SpanContext(trace_id, span_id, bool(int(parts[3], 16) & 1))


def _b3_sampled(value: bytes | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value in (b"1", b"true", b"d"):
        return True
    if value in (b"0", b"false"):
        return False
    return None


def parse_b3_single(value: bytes) -> SpanContext | None:
    parts = value.strip().split(b"-")
    if len(parts) == 1:  # "0", "1" or "d": a decision without ids
        return None
    trace_id, span_id = _hex_id(parts[0], (16, 32)), _hex_id(parts[1], (16,))
    if trace_id is None or span_id is None:
        return None
    sampled = _b3_sampled(parts[2]) if len(parts) > 2 else None
    parent = _hex_id(parts[3], (16,)) if len(parts) > 3 else None
    return SpanContext(trace_id, span_id, sampled, parent_span_id=parent or 0)


def extract(get: HeaderGetter) -> SpanContext | None:
    """The incoming context: ``traceparent`` first, then B3 single, then B3 multi headers."""
    value = get(TRACEPARENT)
    if value is not None:
        context = parse_traceparent(value)
        if context is not None:
            state = get(TRACESTATE) or b""
            return SpanContext(context.trace_id, context.span_id, context.sampled, state[:512])
    value = get(B3_SINGLE)
    if value is not None:
        context = parse_b3_single(value)
        if context is not None:
            return context
    trace, span = get(B3_TRACE_ID), get(B3_SPAN_ID)
    if trace is None or span is None:
        return None
    trace_id, span_id = _hex_id(trace, (16, 32)), _hex_id(span, (16,))
    if trace_id is None or span_id is None:
        return None
    sampled = True if (get(B3_FLAGS) or b"").strip() == b"1" else _b3_sampled(get(B3_SAMPLED))
    parent = get(B3_PARENT_SPAN_ID)
    parent_id = _hex_id(parent, (16,)) if parent is not None else None
    return SpanContext(trace_id, span_id, sampled, parent_span_id=parent_id or 0)


def sampling_decision(get: HeaderGetter) -> bool | None:
    """A bare B3 decision (``b3: 0`` or ``x-b3-sampled`` without ids)."""
    single = get(B3_SINGLE)
    if single is not None and b"-" not in single:
        return _b3_sampled(single)
    return _b3_sampled(get(B3_SAMPLED))


def inject_w3c(context: SpanContext, set_header: HeaderSetter) -> None:
    flags = b"01" if context.sampled else b"00"
    set_header(TRACEPARENT, b"00-%s-%s-%s" % (context.trace_id_hex.encode(), context.span_id_hex.encode(), flags))
    if context.tracestate:
        set_header(TRACESTATE, context.tracestate)


def inject_b3(context: SpanContext, set_header: HeaderSetter, *, trace_id_128bit: bool = True) -> None:
    trace = context.trace_id_hex if trace_id_128bit or context.trace_id >> 64 else f"{context.trace_id:016x}"
    set_header(B3_TRACE_ID, trace.encode())
    set_header(B3_SPAN_ID, context.span_id_hex.encode())
    if context.parent_span_id:
        set_header(B3_PARENT_SPAN_ID, f"{context.parent_span_id:016x}".encode())
    set_header(B3_SAMPLED, b"1" if context.sampled else b"0")


class IdGenerator:
    """Random non-zero ids (a seeded ``random.Random`` in tests)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()

    def trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1

    def span_id(self) -> int:
        return self._rng.getrandbits(64) or 1
