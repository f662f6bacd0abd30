"""gRPC through the sidecar: h2c downstream, HTTP/2 upstream, trailers and status codes — and Envoy agrees.

A real grpcio server (generic handlers, raw bytes messages) sits behind a cluster with
HTTP/2 protocol options; a real grpcio client calls through the listener (codec AUTO,
prior-knowledge h2c). The same calls go through real Envoy with the same bootstrap.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e]

H2_OPTIONS = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}},
}}


def _identity(data: bytes) -> bytes:
    return data


class EchoService(grpc.GenericRpcHandler):
    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        if method == "/test.Echo/Say":
            return grpc.unary_unary_rpc_method_handler(self.say, _identity, _identity)
        if method == "/test.Echo/Count":
            return grpc.unary_stream_rpc_method_handler(self.count, _identity, _identity)
        if method == "/test.Echo/Join":
            return grpc.stream_unary_rpc_method_handler(self.join, _identity, _identity)
        return None

    def say(self, request: bytes, context: Any) -> bytes:
        metadata = dict(context.invocation_metadata())
        if request == b"missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        context.set_trailing_metadata((("x-trailer", "t1"),))
        return b"echo:" + request + b":" + metadata.get("x-tag", "").encode()

    def count(self, request: bytes, context: Any) -> Iterator[bytes]:
        for index in range(int(request)):
            yield str(index).encode() * 1000

    def join(self, requests: Iterator[bytes], context: Any) -> bytes:
        return b"+".join(requests)


@pytest.fixture
def grpc_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((EchoService(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None)


def grpc_config(port: int) -> dict[str, Any]:
    return bootstrap(clusters=[cluster("backend", port, typed_extension_protocol_options=H2_OPTIONS)])


def exercise(port: int) -> list[Any]:
    """The same calls against a proxy port; results as plain values."""
    results: list[Any] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        say = channel.unary_unary("/test.Echo/Say", _identity, _identity)
        reply, call = say.with_call(b"hello", metadata=(("x-tag", "abc"),), timeout=10)
        results.append((reply, dict(call.trailing_metadata()).get("x-trailer")))
        try:
            say(b"missing", timeout=10)
            results.append("no error")
        except grpc.RpcError as err:
            results.append((err.code(), err.details()))
        count = channel.unary_stream("/test.Echo/Count", _identity, _identity)
        results.append([len(m) for m in count(b"50", timeout=10)])
        join = channel.stream_unary("/test.Echo/Join", _identity, _identity)
        results.append(join(iter([b"a", b"b" * 100000, b"c"]), timeout=10)[:10])
        missing = channel.unary_unary("/test.Nope/Gone", _identity, _identity)
        try:
            missing(b"x", timeout=10)
            results.append("no error")
        except grpc.RpcError as err:
            results.append(err.code())
    return results


def test_grpc_through_the_sidecar(tmp_path: Path, grpc_server: int) -> None:
    with SidecarProcess(grpc_config(grpc_server), workdir=tmp_path) as sidecar:
        port = sidecar.listener_ports()["listener_0"]
        results = exercise(port)
        # plain HTTP/1.1 still works on the same AUTO listener
        assert http_request(port)[0] in (200, 415, 404, 503)
        stats = sidecar.stats()
    assert results[0] == (b"echo:hello:abc", "t1")
    assert results[1] == (grpc.StatusCode.NOT_FOUND, "no such thing")
    assert results[2] == [len(str(i)) * 1000 for i in range(50)]
    assert results[3] == b"a+bbbbbbbb"
    assert results[4] == grpc.StatusCode.UNIMPLEMENTED
    assert stats["http.ingress_http.downstream_cx_http2_total"] >= 1
    assert stats["cluster.backend.upstream_cx_total"] == 1  # requests multiplexed on one connection


@pytest.mark.envoy
def test_grpc_results_match_envoy(tmp_path: Path, grpc_server: int, envoy_binary: str) -> None:
    config = grpc_config(grpc_server)
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary,
                      component_log_level="misc:info") as envoy:
        envoy_results = exercise(next(iter(envoy.listener_ports().values())))
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        ours = exercise(sidecar.listener_ports()["listener_0"])
    assert ours == envoy_results
