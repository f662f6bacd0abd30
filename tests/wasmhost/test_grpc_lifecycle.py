"""gRPC callout tokens in the core, with the C plugin ``grpc_lifecycle``: when a token is valid.

Envoy (``Context::onGrpcReceiveWrapper`` / ``onGrpcCloseWrapper``) ends a unary call itself:
the plugin gets ``on_grpc_receive`` (success) or ``on_grpc_close`` (failure) and nothing else;
the token is still valid inside that callback (a cancel there answers OK) and released when
it returns (a later cancel or close answers NOT_FOUND, a send BAD_ARGUMENT as for any call
token). The embedder here is the test: it plays the answers with ``Plugin.on_grpc_*``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from envoy.config.core.v3 import grpc_service_pb2

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from tests.wasmhost.test_conformance_grpc import start
from wasmhost import CancelGrpc, DispatchGrpcCall, Limits, ResumeStream
from wasmhost._hostcalls_grpc import DispatchGrpcServiceCall, is_finished_stream

Headers = list[tuple[bytes, bytes]]
NOT_FOUND, BAD_ARGUMENT, PARSE_FAILURE, INTERNAL_FAILURE = 1, 2, 4, 10


def service_config(service: grpc_service_pb2.GrpcService) -> str:
    """The plugin's configuration for a serialized GrpcService upstream."""
    return "hex:" + service.SerializeToString().hex()


@pytest.fixture
def host() -> Iterator[ConformanceHost]:
    with ConformanceHost(plugin_path("grpc_lifecycle"), configuration="grpc", callouts={"grpc": (200, "")}) as running:
        yield running


def late(host: ConformanceHost) -> dict[str, str]:
    """The statuses of cancel/close/send on the last token now, and the callbacks seen so far."""
    result = host.request(headers=[("x-grpc-mode", "late")])
    return {k: v for k, v in result["upstream_request"]["headers"] if k.startswith("x-grpc-") and k != "x-grpc-mode"}


def open_tokens(host: ConformanceHost) -> dict[int, bool]:
    assert host.plugin.root is not None
    return dict(host.plugin.root.grpc_calls)


def test_a_unary_answer_ends_the_call_and_a_late_cancel_is_not_found(host: ConformanceHost) -> None:
    stream, request, commands = start(host, (b"x-grpc-mode", b"unary"), (b"x-grpc-message", b"hi"))
    [call] = commands
    assert isinstance(call, DispatchGrpcCall) and call.token == 5 and open_tokens(host) == {5: False}
    host.plugin.on_grpc_receive(5, b"pong")
    assert [type(c) for c in host.runtime.take_commands()] == [ResumeStream]
    assert request[-2:] == [(b"x-grpc-status", b"0"), (b"x-grpc-result", b"pong")]
    assert open_tokens(host) == {}
    # what an embedder may still report for the call reaches nobody
    host.plugin.on_grpc_receive_trailing_metadata(5, [(b"grpc-status", b"0")])
    host.plugin.on_grpc_close(5, 0)
    assert late(host) == {"x-grpc-late-cancel": str(NOT_FOUND), "x-grpc-late-close": str(NOT_FOUND),
                          "x-grpc-late-send": str(BAD_ARGUMENT), "x-grpc-events": "receive:5:pong"}
    stream.finish()


def test_the_token_is_valid_inside_the_ending_callback(host: ConformanceHost) -> None:
    stream, request, _ = start(host, (b"x-grpc-mode", b"unary"), (b"x-grpc-cancel-in-callback", b"1"))
    host.plugin.on_grpc_receive(5, b"pong")
    assert (b"x-grpc-callback-cancel", b"0") in request
    commands = host.runtime.take_commands()
    assert [type(c) for c in commands] == [CancelGrpc, ResumeStream] and open_tokens(host) == {}
    assert late(host)["x-grpc-events"] == "receive:5:pong;cancel:0"
    stream.finish()


@pytest.mark.parametrize("cancel_in_callback", [False, True])
def test_a_failed_unary_call_closes_once_and_then_is_gone(host: ConformanceHost, cancel_in_callback: bool) -> None:
    flag = [(b"x-grpc-cancel-in-callback", b"1")] if cancel_in_callback else []
    stream, request, _ = start(host, (b"x-grpc-mode", b"unary"), *flag)
    host.plugin.on_grpc_receive_initial_metadata(5, [])  # Envoy never reports metadata of a unary call
    host.plugin.on_grpc_close(5, 5, b"nope")
    assert (b"x-grpc-status", b"5") in request and (b"x-grpc-result", b"nope") in request
    assert ((b"x-grpc-callback-cancel", b"0") in request) is cancel_in_callback
    host.plugin.on_grpc_close(5, 14, b"again")
    seen = late(host)
    assert seen["x-grpc-late-cancel"] == str(NOT_FOUND)
    assert seen["x-grpc-events"] == "close:5:5:nope" + (";cancel:0" if cancel_in_callback else "")
    stream.finish()


def test_a_stream_the_plugin_did_not_close_answers_one_late_cancel(host: ConformanceHost) -> None:
    stream, request, commands = start(host, (b"x-grpc-mode", b"stream"))
    assert isinstance(commands[0], DispatchGrpcCall) and commands[0].token == 6
    host.plugin.on_grpc_receive_initial_metadata(6, [(b"a", b"1")])
    host.plugin.on_grpc_receive(6, b"r:one")
    assert open_tokens(host) == {6: True}  # a stream's message does not end it
    host.plugin.on_grpc_receive_trailing_metadata(6, [(b"grpc-status", b"0")])
    host.plugin.on_grpc_close(6, 0)
    host.plugin.on_grpc_close(6, 0)  # reported once only
    assert (b"x-grpc-status", b"0") in request
    assert open_tokens(host) == {}  # no longer pending (it does not count against the callout limit)
    seen = late(host)  # Envoy: the plugin never half-closed it, so one cancel still finds it, then it is gone
    assert seen["x-grpc-events"] == "initial:6;receive:6:r:one;trailing:6;close:6:0:"
    assert (seen["x-grpc-late-cancel"], seen["x-grpc-late-close"], seen["x-grpc-late-send"]) == (
        "0", str(NOT_FOUND), str(NOT_FOUND))
    stream.finish()


def test_a_half_closed_stream_is_released_by_the_remote_close(host: ConformanceHost) -> None:
    stream, _, commands = start(host, (b"x-grpc-mode", b"stream"), (b"x-grpc-half-close", b"1"))
    assert isinstance(commands[-1], CancelGrpc) and commands[-1].half_close and open_tokens(host) == {6: True}
    host.plugin.on_grpc_close(6, 0)
    seen = late(host)
    assert (seen["x-grpc-late-cancel"], seen["x-grpc-late-close"]) == (str(NOT_FOUND), str(NOT_FOUND))
    stream.finish()


def test_finished_streams_are_remembered_within_the_callout_limit_only() -> None:
    with ConformanceHost(plugin_path("grpc_lifecycle"), configuration="grpc", callouts={"grpc": (200, "")},
                         limits=Limits(max_pending_callouts=2)) as host:
        for token in (6, 10, 14):  # three streams finish without the plugin closing them
            stream, _, _ = start(host, (b"x-grpc-mode", b"stream"))
            host.plugin.on_grpc_close(token, 0)
            stream.finish()
        root = host.plugin.root
        assert root is not None and open_tokens(host) == {}
        assert [is_finished_stream(root, token) for token in (6, 10, 14)] == [False, True, True]  # oldest forgotten
        assert late(host)["x-grpc-late-cancel"] == "0" and not is_finished_stream(root, 14)


# -- serialized GrpcService upstreams ----------------------------------------------------------------

def service(cluster: str = "grpc", authority: str = "", **extra: object) -> grpc_service_pb2.GrpcService:
    message = grpc_service_pb2.GrpcService(**extra)  # type: ignore[arg-type]
    message.envoy_grpc.cluster_name = cluster
    message.envoy_grpc.authority = authority
    return message


def dispatch_with(upstream: str, *headers: tuple[bytes, bytes]) -> tuple[ConformanceHost, Headers, list[object]]:
    host = ConformanceHost(plugin_path("grpc_lifecycle"), configuration=upstream, callouts={"grpc": (200, "")})
    host.start()
    _, request, commands = start(host, (b"x-grpc-mode", b"unary"), *headers)
    return host, request, commands


def test_a_service_gives_its_authority_and_metadata_and_the_calls_own_timeout() -> None:
    grpc_service = service(authority="echo.example", timeout={"seconds": 1})
    grpc_service.initial_metadata.add(key="X-Svc", value="from-service")
    grpc_service.initial_metadata.add(key="x-svc-bin", value="ab", raw_value=b"ignored, as by Envoy")
    host, _, commands = dispatch_with(service_config(grpc_service), (b"x-grpc-timeout-ms", b"3000"))
    try:
        [call] = commands
        assert isinstance(call, DispatchGrpcServiceCall)
        assert (call.cluster, call.authority, call.timeout_ms) == ("grpc", "echo.example", 3000)
        assert call.service_metadata == [(b"x-svc", b"from-service"), (b"x-svc-bin", b"ab")]
        assert call.initial_metadata == [(b"x-wasm", b"lifecycle")]
    finally:
        host.close()


def test_a_plain_service_is_an_ordinary_call() -> None:
    host, _, commands = dispatch_with(service_config(service()))
    try:
        [call] = commands
        assert type(call) is DispatchGrpcCall and call.cluster == "grpc"
    finally:
        host.close()


@pytest.mark.parametrize(("upstream", "status"), [
    ("nowhere", PARSE_FAILURE),  # a name of no cluster
    ("hex:0a05ff", PARSE_FAILURE),  # truncated bytes: not a service, so a name, unknown
    ("hex:", PARSE_FAILURE),
])
def test_bytes_that_are_no_service_and_no_cluster_are_a_parse_failure(upstream: str, status: int) -> None:
    host, request, commands = dispatch_with(upstream)
    try:
        assert commands == [] and (b"x-grpc-dispatch-status", str(status).encode()) in request
    finally:
        host.close()


def refused(grpc_service: grpc_service_pb2.GrpcService, caplog: pytest.LogCaptureFixture) -> str:
    host, request, commands = dispatch_with(service_config(grpc_service))
    try:
        assert commands == [] and (b"x-grpc-dispatch-status", str(BAD_ARGUMENT).encode()) in request
        assert open_tokens(host) == {}
    finally:
        host.close()
    [record] = [r for r in caplog.records if r.name == "wasmhost.grpc"]
    return record.getMessage()


def test_google_grpc_is_refused_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    google = grpc_service_pb2.GrpcService()
    google.google_grpc.target_uri = "127.0.0.1:1"
    google.google_grpc.stat_prefix = "g"
    assert "google_grpc is not supported" in refused(google, caplog)


@pytest.mark.parametrize(("key", "value", "reason"), [
    (":authority", "x", "initial_metadata[0]: key ':authority' would replace the request line"),
    ("host", "x", "initial_metadata[0]: key 'host' would replace the request line"),
    ("bad key", "x", "not a valid header name"),
    ("x-a", "%REQ(x)%", "substitution formatters"),
    ("x-a", "a\r\nb", "CR, LF or NUL"),
])
def test_metadata_that_cannot_be_sent_as_given_is_refused(
        key: str, value: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    grpc_service = service()
    grpc_service.initial_metadata.add(key=key, value=value)
    assert reason in refused(grpc_service, caplog)


def test_a_service_naming_an_unknown_cluster_fails_to_start_then_closes_unavailable() -> None:
    host, request, commands = dispatch_with(service_config(service("nowhere")))
    try:
        assert (b"x-grpc-dispatch-status", str(INTERNAL_FAILURE).encode()) in request
        [call] = commands
        assert isinstance(call, DispatchGrpcServiceCall) and call.cluster == "nowhere"
        host.plugin.on_grpc_close(call.token, 14, b"Cluster not available")  # what every embedder answers
        assert late(host)["x-grpc-events"] == "close:5:14:Cluster not available"
    finally:
        host.close()
