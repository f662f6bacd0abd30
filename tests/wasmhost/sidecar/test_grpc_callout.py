"""gRPC callouts, sans-io: request framing, response decoding and Envoy's status rules.

The callout is driven directly as an ``UpstreamSink`` (the I/O edge's part is played by the
test); the commands it queues stand for what the edge would write.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from wasmhost.sidecar import StatsStore
from wasmhost.sidecar._cluster import Cluster
from wasmhost.sidecar._commands import ResetUpstream, SendUpstreamData, StartUpstream, Timer
from wasmhost.sidecar._grpc_callout import (
    MAX_MESSAGE_BYTES,
    GrpcCallout,
    MessageDecoder,
    UnaryCollector,
    frame,
    grpc_timeout,
    start_grpc_callout,
)
from wasmhost.sidecar._headers import HeaderMap
from wasmhost.sidecar._plan import ClusterPlan, EndpointPlan


@dataclass
class Worker:
    out: list[Any] = field(default_factory=list)
    now: float = 100.0


@dataclass
class Events:
    seen: list[tuple[str, Any]] = field(default_factory=list)

    def on_initial_metadata(self, metadata: list[tuple[bytes, bytes]]) -> None:
        self.seen.append(("initial", dict(metadata)))

    def on_message(self, message: bytes) -> None:
        self.seen.append(("message", message))

    def on_trailing_metadata(self, metadata: list[tuple[bytes, bytes]]) -> None:
        self.seen.append(("trailing", dict(metadata)))

    def on_close(self, status: int, message: bytes) -> None:
        self.seen.append(("close", (status, message)))


def make_cluster(*ports: int) -> Cluster:
    endpoints = tuple(EndpointPlan("127.0.0.1", port, 1) for port in ports)
    plan = ClusterPlan(name="grpc", stat_name="grpc", discovery="STATIC", endpoints=endpoints,
                       lb_policy="ROUND_ROBIN")
    return Cluster(plan, StatsStore(), random.Random(1))


def open_call(message: bytes | None = None, timeout_ms: int = 0,
              metadata: list[tuple[bytes, bytes]] | None = None) -> tuple[GrpcCallout, Worker, Events]:
    worker, events = Worker(), Events()
    call = start_grpc_callout(worker, make_cluster(9000), "pkg.Svc", "Do", metadata or [], message, timeout_ms,
                              events)
    return call, worker, events


def ok_headers(*extra: tuple[bytes, bytes]) -> HeaderMap:
    return HeaderMap([(b":status", b"200"), (b"content-type", b"application/grpc"), *extra])


def test_request_headers_frame_and_half_close_of_a_unary_call() -> None:
    call, worker, _ = open_call(b"hello", 5000, [(b"X-Md", b"1"), (b":path", b"/evil")])
    assert list(call.headers.items()) == [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Do"), (b":authority", b"grpc"),
        (b"te", b"trailers"), (b"grpc-timeout", b"5000m"), (b"content-type", b"application/grpc"),
        (b"x-md", b"1"),
    ]
    timer, start, send = worker.out
    assert isinstance(timer, Timer) and timer.delay == 5.0 and isinstance(start, StartUpstream)
    assert isinstance(send, SendUpstreamData) and (send.data, send.end_stream) == (b"\x00\x00\x00\x00\x05hello", True)
    assert call.cluster.stats.rq_total.value == 1 and call.cluster.rq_active == 1


def test_a_grpc_services_authority_and_metadata_then_the_plugins_with_binary_values_base64() -> None:
    worker, events = Worker(), Events()
    call = start_grpc_callout(
        worker, make_cluster(9000), "pkg.Svc", "Do", [(b"X-Md", b"1"), (b"x-md-bin", b"\xff")], b"m", 0, events,
        authority="echo.example", service_metadata=[(b"x-svc", b"s"), (b"te", b"overwritten"), (b"a-bin", b"\x00")],
    )
    assert list(call.headers.items()) == [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Do"), (b":authority", b"echo.example"),
        (b"te", b"overwritten"), (b"grpc-timeout", b"0m"), (b"content-type", b"application/grpc"), (b"x-svc", b"s"),
        (b"x-md", b"1"),
        (b"a-bin", b"AA=="), (b"x-md-bin", b"/w=="),
    ]


def test_stream_has_no_timeout_and_sends_each_message_then_half_closes_once() -> None:
    call, worker, _ = open_call()
    call.send(b"a", False)
    call.half_close()
    call.half_close()
    call.send(b"late", False)
    assert "grpc-timeout" not in {k.decode() for k, _ in call.headers.items()}
    sends = [(c.data, c.end_stream) for c in worker.out if isinstance(c, SendUpstreamData)]
    assert sends == [(frame(b"a"), False), (b"", True)]


@pytest.mark.parametrize(("ms", "value"), [(1, b"1m"), (99_999_999, b"99999999m"), (100_000_000, b"100000S"),
                                          (2**31 - 1, b"2147483S"), (10**15, b"99999999H")])
def test_grpc_timeout_uses_the_smallest_unit_that_fits(ms: int, value: bytes) -> None:
    assert grpc_timeout(ms) == value


def test_decoder_joins_split_frames_and_refuses_bad_flags_and_huge_lengths() -> None:
    decoder = MessageDecoder()
    wire = frame(b"one") + frame(b"") + frame(b"three")
    got = [m for i in range(len(wire)) for m in decoder.feed(wire[i:i + 1])]
    assert got == [b"one", b"", b"three"] and not decoder.partial
    bad = MessageDecoder()
    assert bad.feed(b"\x80\x00\x00\x00\x00") == [] and "flags" in bad.error
    compressed = MessageDecoder()
    assert compressed.feed(b"\x01\x00\x00\x00\x00" + b"\x01\x00\x00\x00\x01z") == [b""]
    assert "compressed" in compressed.error
    huge = MessageDecoder()
    assert huge.feed(b"\x00" + (MAX_MESSAGE_BYTES + 1).to_bytes(4, "big")) == [] and "exceeds" in huge.error


def test_stream_events_in_order_with_status_from_trailers() -> None:
    call, _, events = open_call()
    call.on_response_headers(ok_headers((b"x-i", b"1")), False)
    call.on_response_data(frame(b"r1") + frame(b"r2")[:3], False)
    call.on_response_data(frame(b"r2")[3:], False)
    call.on_response_trailers(HeaderMap([(b"grpc-status", b"5"), (b"grpc-message", b"nope")]))
    kinds = [kind for kind, _ in events.seen]
    assert kinds == ["initial", "message", "message", "trailing", "close"]
    assert events.seen[0][1][b"x-i"] == b"1" and b"x-envoy-upstream-service-time" in events.seen[0][1]
    assert events.seen[-1] == ("close", (5, b"nope{via_upstream}"))  # with the details, as Envoy
    assert call.finished and call.cluster.rq_active == 0


@pytest.mark.parametrize(("http_status", "grpc_status"), [(503, 14), (404, 12), (401, 16), (403, 7), (400, 13),
                                                        (500, 2)])
def test_a_plain_http_error_maps_to_a_grpc_status_and_resets_the_stream(http_status: int, grpc_status: int) -> None:
    call, worker, events = open_call()
    call.on_response_headers(HeaderMap([(b":status", str(http_status).encode())]), False)
    assert events.seen[-1] == ("close", (grpc_status, b"via_upstream")) and isinstance(worker.out[-1], ResetUpstream)


def test_a_unary_call_without_a_timeout_still_sends_a_zero_grpc_timeout_but_arms_no_timer() -> None:
    call, worker, _ = open_call(b"x", 0)
    assert call.headers.get(b"grpc-timeout") == b"0m"
    assert not any(isinstance(c, Timer) for c in worker.out)


def test_trailers_only_answer_closes_with_its_grpc_status() -> None:
    call, _, events = open_call()
    call.on_response_headers(HeaderMap([(b":status", b"200"), (b"grpc-status", b"7"),
                                        (b"grpc-message", b"denied")]), True)
    assert events.seen[0] == ("initial", {}) and events.seen[-1] == ("close", (7, b"denied{via_upstream}"))


@pytest.mark.parametrize(("trailers", "status"), [(None, 2), (HeaderMap([(b"x", b"y")]), 2),
                                                  (HeaderMap([(b"grpc-status", b"x")]), 2)])
def test_missing_or_garbled_status_is_unknown(trailers: HeaderMap | None, status: int) -> None:
    call, _, events = open_call()
    call.on_response_headers(ok_headers(), False)
    if trailers is None:
        call.on_response_data(frame(b"m"), True)
    else:
        call.on_response_trailers(trailers)
    assert events.seen[-1] == ("close", (status, b"via_upstream"))


def test_malformed_frame_is_internal_and_nothing_after_close_is_reported() -> None:
    call, worker, events = open_call()
    call.on_response_headers(ok_headers(), False)
    call.on_response_data(b"\x02\x00\x00\x00\x01x", False)
    call.on_response_data(frame(b"late"), False)
    call.on_response_trailers(HeaderMap([(b"grpc-status", b"0")]))
    assert events.seen[-1] == ("close", (13, b"via_upstream")) and len(events.seen) == 2
    assert isinstance(worker.out[-1], ResetUpstream)


def test_reset_before_and_after_the_response() -> None:
    before, _, early = open_call()
    before.on_reset("connection termination")
    assert early.seen[0] == ("initial", {})
    assert early.seen[-1] == ("close", (14, b"upstream connect error or disconnect/reset before headers. "
                                            b"reset reason: connection termination"
                                            b"{upstream_reset_before_response_started{connection_termination}}"))
    after, _, late = open_call()
    after.on_response_headers(ok_headers(), False)
    after.on_reset("connection termination")
    assert late.seen[-1] == ("close", (13, b"via_upstream"))


def test_a_refused_connection_keeps_its_transport_failure_in_the_details_only() -> None:
    call, _, events = open_call()
    call.on_pool_failure("remote connection failure", "")
    assert events.seen[-1] == ("close", (14, b"upstream connect error or disconnect/reset before headers. reset reason: "
                                            b"remote connection failure{upstream_reset_before_response_started"
                                            b"{remote_connection_failure|delayed_connect_error:_Connection_refused}}"))


def test_pool_failure_is_the_routers_local_reply_in_grpc_form() -> None:
    call, _, events = open_call()
    call.on_pool_failure("remote connection failure", "delayed connect error: 111")
    assert events.seen[1] == ("trailing", {b":status": b"200", b"content-type": b"application/grpc",
                                           b"grpc-status": b"14", b"grpc-message": b"upstream connect error or "
                                           b"disconnect/reset before headers. reset reason: remote connection "
                                           b"failure, transport failure reason: delayed connect error: 111"})
    assert events.seen[-1][1][0] == 14


def test_timeout_resets_and_reports_unavailable() -> None:
    call, worker, events = open_call(b"x", 100)
    timer = worker.out[0]
    assert isinstance(timer, Timer)
    timer.fire()
    assert events.seen[-1] == ("close", (14, b"upstream request timeout{upstream_response_timeout}"))
    assert isinstance(worker.out[-1], ResetUpstream) and call.cluster.stats.rq_timeout.value == 1


def test_cancel_reports_nothing() -> None:
    call, worker, events = open_call()
    call.cancel()
    call.on_response_headers(ok_headers(), True)
    assert events.seen == [] and isinstance(worker.out[-1], ResetUpstream) and call.cluster.rq_active == 0


def test_no_host_is_no_healthy_upstream_from_the_event_loop() -> None:
    worker, events = Worker(), Events()
    start_grpc_callout(worker, make_cluster(), "s", "m", [], b"x", 0, events)
    assert events.seen == []
    [timer] = [c for c in worker.out if isinstance(c, Timer)]
    timer.fire()
    assert events.seen[-1] == ("close", (14, b"no healthy upstream{no_healthy_upstream}"))


def test_unary_collector_reports_the_last_message_or_the_failure() -> None:
    results: list[Any] = []
    ok = UnaryCollector(lambda m: results.append(("message", m)), lambda s, m: results.append(("close", s, m)))
    ok.on_initial_metadata([(b"a", b"1")])
    ok.on_message(b"first")
    ok.on_message(b"last")
    ok.on_trailing_metadata([])
    ok.on_close(0, b"")
    empty = UnaryCollector(lambda m: results.append(("message", m)), lambda s, m: results.append(("close", s, m)))
    empty.on_close(0, b"")
    failed = UnaryCollector(lambda m: results.append(("message", m)), lambda s, m: results.append(("close", s, m)))
    failed.on_message(b"ignored")
    failed.on_close(4, b"deadline")
    assert results == [("message", b"last"), ("close", 13, b""), ("close", 4, b"deadline")]
