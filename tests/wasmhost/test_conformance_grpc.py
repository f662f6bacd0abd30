"""Conformance: ``grpc`` (C) — gRPC callouts, unary and streaming, through the host API.

Dispatches are commands (``DispatchGrpcCall``, ``SendGrpcMessage``, ``CancelGrpc``) with
Envoy's token numbering (calls 5, 9, ...; streams 6, 10, ...). The embedder delivers the
gRPC events to the root with ``Plugin.on_grpc_*``; the plugin reads maps 4/5, buffer 5 and
``proxy_get_status`` and resumes its stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import CancelGrpc, DispatchGrpcCall, HttpStream, ResumeStream, SendGrpcMessage

Headers = list[tuple[bytes, bytes]]


@pytest.fixture
def host() -> Iterator[ConformanceHost]:
    with ConformanceHost(
        plugin_path("grpc"), configuration="  upstream-grpc \n", callouts={"upstream-grpc": (200, "")}
    ) as running:
        yield running


def start(host: ConformanceHost, *headers: tuple[bytes, bytes]) -> tuple[HttpStream, Headers, list[object]]:
    stream = host.plugin.new_http_stream()
    request = [(b":path", b"/"), *headers]
    stream.on_request_headers(request, True)
    return stream, request, host.runtime.take_commands()


def test_unary_call_resumes_the_request_on_receive(host: ConformanceHost) -> None:
    stream, request, commands = start(host, (b"x-grpc-mode", b"unary"), (b"x-grpc-message", b"hello"))
    [call] = commands
    assert isinstance(call, DispatchGrpcCall)
    assert (call.token, call.cluster, call.service, call.method) == (
        5,
        "upstream-grpc",
        "wasmesh.test.Echo",
        "Unary",
    )
    assert (call.message, call.initial_metadata, call.timeout_ms) == (b"hello", [(b"x-wasm", b"grpc")], 5000)
    host.plugin.on_grpc_receive_initial_metadata(5, [(b"a", b"1"), (b"b", b"2")])  # Envoy never reports it
    host.plugin.on_grpc_receive(5, b"world")
    assert [type(c) for c in host.runtime.take_commands()] == [ResumeStream]
    assert request[-4:] == [
        (b"x-grpc-status", b"0"), (b"x-grpc-messages", b"world"),
        (b"x-grpc-initial-metadata", b"-1"), (b"x-grpc-trailing-metadata", b"-1"),
    ]  # fmt: skip
    # the answer ended the call: nothing more reaches the plugin
    host.plugin.on_grpc_receive_trailing_metadata(5, [(b"grpc-status", b"0")])
    host.plugin.on_grpc_close(5, 0)
    assert 5 not in host.plugin.root.grpc_calls  # type: ignore[union-attr]
    assert [e["message"] for e in host.environment.take()] == ["grpc: receive token=5 size=5 data=world"]
    stream.finish()


def test_stream_sends_half_closes_and_resumes_on_close_with_the_status(host: ConformanceHost) -> None:
    stream, request, commands = start(host, (b"x-grpc-mode", b"stream"))
    assert [type(c) for c in commands] == [DispatchGrpcCall, SendGrpcMessage, SendGrpcMessage, CancelGrpc]
    opened, one, two, close = commands
    assert isinstance(opened, DispatchGrpcCall) and (opened.token, opened.method, opened.message) == (
        6,
        "Stream",
        None,
    )
    assert isinstance(one, SendGrpcMessage) and (one.message, one.end_stream) == (b"one", False)
    assert isinstance(two, SendGrpcMessage) and two.message == b"two"
    assert isinstance(close, CancelGrpc) and close.half_close
    host.plugin.on_grpc_receive_initial_metadata(6, [(b"a", b"1"), (b"b", b"2")])
    host.plugin.on_grpc_receive(6, b"r1")
    host.plugin.on_grpc_receive(6, b"r2")
    host.plugin.on_grpc_receive_trailing_metadata(6, [(b"grpc-status", b"14")])
    host.plugin.on_grpc_close(6, 14, b"unavailable")
    assert [type(c) for c in host.runtime.take_commands()] == [ResumeStream]
    assert request[-4:] == [
        (b"x-grpc-status", b"14"), (b"x-grpc-messages", b"r1,r2"),
        (b"x-grpc-initial-metadata", b"2"), (b"x-grpc-trailing-metadata", b"1"),
    ]  # fmt: skip
    logs = [e["message"] for e in host.environment.take()]
    assert logs[0] == "grpc: stream token=6 send=0,0 close=0"
    assert logs[-1] == "grpc: close token=6 status=14 get_status=14 message=unavailable"
    stream.finish()


@pytest.mark.parametrize("mode", [b"cancel", b"stream-cancel"])
def test_cancel_stops_the_call_and_nothing_follows(host: ConformanceHost, mode: bytes) -> None:
    stream, request, commands = start(host, (b"x-grpc-mode", mode))
    assert isinstance(commands[-1], CancelGrpc) and not commands[-1].half_close
    assert (b"x-grpc-cancel-status", b"0") in request
    token = commands[0].token  # type: ignore[attr-defined]
    host.plugin.on_grpc_receive(token, b"late")  # the call is gone: not delivered
    assert host.environment.take() == []
    stream.finish()


def test_unknown_cluster_is_a_parse_failure_and_the_request_continues() -> None:
    with ConformanceHost(plugin_path("grpc")) as host:
        result = host.request(headers=[("x-grpc-mode", "unary")])
        assert ["x-grpc-dispatch-status", "4"] in result["upstream_request"]["headers"]


def test_requests_without_a_mode_are_untouched(host: ConformanceHost) -> None:
    result = host.request(headers=[("x-other", "1")])
    assert [k for k, _ in result["upstream_request"]["headers"] if k.startswith("x-grpc")] == []
