"""gRPC callouts from a Wasm plugin (``proxy_grpc_call`` / ``proxy_grpc_stream``) through the sidecar, and Envoy agrees.

The C conformance plugin ``grpc`` (built from ``tests/data/plugins/c/grpc.c``) calls the
``wasmesh.test.Echo`` service of a real grpcio server behind an HTTP/2 cluster, then resumes
the request with what it saw (``x-grpc-status``, ``x-grpc-messages``, the metadata pair
counts) as request headers, which the scripted upstream records. The same bootstrap runs in
real Envoy; both must report the same to the upstream and send the same calls to the server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests._tools import plugin_path
from tests.e2e._envoy import EnvoyProcess, wasm_filter
from tests.e2e._upstream import ScriptedUpstream
from tests.e2e.test_sidecar_wasm import closed_port
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e]

H2_OPTIONS = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}},
}}
#: metadata every gRPC client adds on its own, or that differs by nature between proxies
_VOLATILE_METADATA = ("user-agent", "grpc-accept-encoding", "x-forwarded-proto", "x-request-id")
#: longer than the 5 s timeout grpc.c gives its unary calls
_SLOW_S = 8.0


def _identity(data: bytes) -> bytes:
    return data


class EchoService(grpc.GenericRpcHandler):
    """``Unary`` echoes (``fail`` aborts NOT_FOUND, ``slow`` outlasts the plugin's 5 s timeout); ``Stream``
    answers each message; calls are recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()

    def service(self, handler_call_details: Any) -> Any:
        if handler_call_details.method == "/wasmesh.test.Echo/Unary":
            return grpc.unary_unary_rpc_method_handler(self.unary, _identity, _identity)
        if handler_call_details.method == "/wasmesh.test.Echo/Stream":
            return grpc.stream_stream_rpc_method_handler(self.stream, _identity, _identity)
        return None

    def _record(self, method: str, context: Any) -> dict[str, str]:
        metadata = [(k, v) for k, v in context.invocation_metadata() if k not in _VOLATILE_METADATA
                    and not k.startswith("x-envoy-")]
        with self._lock:
            self.calls.append((method, sorted(metadata)))
        return dict(metadata)

    def unary(self, request: bytes, context: Any) -> bytes:
        # "ping" is what the plugin cancels at once: whether it reaches a server at all is a race
        # (in Envoy too), so it is not recorded
        metadata = self._record("Unary", context) if request != b"ping" else {}
        if request == b"fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "nope")
        if request == b"slow":
            self._released.wait(_SLOW_S)
        context.send_initial_metadata((("x-initial", "i1"),))
        context.set_trailing_metadata((("x-trailer", "t1"),))
        return b"echo:" + request + b":" + metadata.get("x-wasm", "").encode()

    def stream(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        self._record("Stream", context)
        context.send_initial_metadata((("x-initial", "i1"), ("x-initial-2", "i2")))
        context.set_trailing_metadata((("x-trailer", "t1"),))
        for request in requests:
            yield b"r:" + request

    def release(self) -> None:
        """Let slow calls finish (the server is stopping)."""
        self._released.set()

    def take(self) -> list[tuple[str, list[tuple[str, str]]]]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


@contextmanager
def serving(service: EchoService) -> Iterator[int]:
    """A grpcio server on a loopback port for ``service``; stopped (slow calls released) on exit."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((service,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        service.release()
        server.stop(grace=None)


@pytest.fixture
def echo() -> Iterator[tuple[EchoService, int]]:
    service = EchoService()
    with serving(service) as port:
        yield service, port


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(200, [], "ok") as running:
        yield running


def callout_config(target: str, grpc_port: int, upstream_port: int) -> dict[str, Any]:
    """The plugin in front of the router; its gRPC upstream is the cluster named ``target``."""
    clusters = [cluster("backend", upstream_port), cluster("grpc", grpc_port, typed_extension_protocol_options=H2_OPTIONS),
                cluster("dead", closed_port(), typed_extension_protocol_options=H2_OPTIONS)]
    return bootstrap(http_filters=[wasm_filter(plugin_path("grpc"), configuration=target), ROUTER_FILTER],
                     clusters=clusters)


CASES: list[tuple[tuple[str, str], ...]] = [
    (("x-grpc-mode", "unary"), ("x-grpc-message", "hello")),
    (("x-grpc-mode", "unary"), ("x-grpc-message", "fail")),
    (("x-grpc-mode", "stream"),),
    (("x-grpc-mode", "cancel"),),
]


SLOW = (("x-grpc-mode", "unary"), ("x-grpc-message", "slow"))


def observe(port: int, upstream: ScriptedUpstream, cases: list[tuple[tuple[str, str], ...]]) -> list[Any]:
    """Per request: the client's status and the x-grpc-* headers the plugin added upstream."""
    seen = []
    for headers in cases:
        upstream.clear()
        status, _, _ = http_request(port, headers=[("Host", "example.com"), *headers])
        added = [(k.lower(), v) for request in upstream.requests for k, v in request.headers
                 if k.lower().startswith("x-grpc-") and k.lower() not in ("x-grpc-mode", "x-grpc-message")]
        seen.append((status, added))
    return seen


def test_plugin_grpc_calls_reach_the_server_and_report_back(
        tmp_path: Path, echo: tuple[EchoService, int], upstream: ScriptedUpstream) -> None:
    service, grpc_port = echo
    with SidecarProcess(callout_config("grpc", grpc_port, upstream.port), workdir=tmp_path) as sidecar:
        seen = observe(sidecar.listener_ports()["listener_0"], upstream, [*CASES, SLOW])
        stats = sidecar.stats()
    unary, failed, stream, cancelled, slow = seen
    assert unary == (200, [("x-grpc-status", "0"), ("x-grpc-messages", "echo:hello:grpc"),
                           ("x-grpc-initial-metadata", "-1"), ("x-grpc-trailing-metadata", "-1")])
    assert failed[1][0] == ("x-grpc-status", "5") and failed[1][1] == ("x-grpc-messages", "")
    status, stream_headers = stream
    assert status == 200 and stream_headers[:2] == [("x-grpc-status", "0"), ("x-grpc-messages", "r:one,r:two")]
    initial, trailing = (int(v) for _, v in stream_headers[2:])
    assert initial >= 4 and trailing >= 2  # :status, content-type, two x-initial / grpc-status, x-trailer
    assert cancelled == (200, [("x-grpc-cancel-status", "0")])
    # the 5 s timeout: the proxy's timer (UNAVAILABLE, as Envoy's router) and the server's own
    # deadline from grpc-timeout (DEADLINE_EXCEEDED) race, in Envoy too; either ends the call in time
    assert slow[1][0] in (("x-grpc-status", "14"), ("x-grpc-status", "4"))
    calls = service.take()
    assert [method for method, _ in calls][:3] == ["Unary", "Unary", "Stream"]
    assert ("x-wasm", "grpc") in calls[0][1]
    assert stats["cluster.grpc.upstream_rq_total"] >= 3


def test_dispatch_failures_and_unreachable_clusters(
        tmp_path: Path, echo: tuple[EchoService, int], upstream: ScriptedUpstream) -> None:
    _, grpc_port = echo
    cases: list[tuple[tuple[str, str], ...]] = [(("x-grpc-mode", "unary"),), (("x-grpc-mode", "stream"),)]
    with SidecarProcess(callout_config("nowhere", grpc_port, upstream.port), workdir=tmp_path / "a") as sidecar:
        unknown = observe(sidecar.listener_ports()["listener_0"], upstream, cases)
    with SidecarProcess(callout_config("dead", grpc_port, upstream.port), workdir=tmp_path / "b") as sidecar:
        dead = observe(sidecar.listener_ports()["listener_0"], upstream, cases)
    assert unknown == [(200, [("x-grpc-dispatch-status", "4")])] * 2  # as the conformance host says
    assert [headers[0] for _, headers in dead] == [("x-grpc-status", "14")] * 2


@pytest.mark.envoy
@pytest.mark.parametrize("target", ["grpc", "nowhere", "dead"])
def test_plugin_grpc_calls_match_envoy(tmp_path: Path, echo: tuple[EchoService, int], upstream: ScriptedUpstream,
                                       envoy_binary: str, target: str) -> None:
    service, grpc_port = echo
    config = callout_config(target, grpc_port, upstream.port)
    cases = CASES if target == "grpc" else CASES[:1] + CASES[2:3]
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary,
                      component_log_level="wasm:info") as envoy:
        theirs = observe(next(iter(envoy.listener_ports().values())), upstream, cases)
    envoy_calls = service.take()
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        ours = observe(sidecar.listener_ports()["listener_0"], upstream, cases)
    assert ours == theirs
    assert service.take() == envoy_calls
