"""gRPC callout token lifetime and serialized GrpcService upstreams: the sidecar and real Envoy agree.

The C plugin ``grpc_lifecycle`` (``tests/data/plugins/c/grpc_lifecycle.c``) calls a grpcio
server through a cluster given as a serialized ``envoy.config.core.v3.GrpcService`` (or a
name); the server answers with what reached it (``:authority``, the service's and the
plugin's metadata, the deadline in whole seconds). The plugin resumes each request with the
outcome and, on a later ``late`` request, reports what cancel/close/send answer on the
finished token and which callbacks it saw. The same requests run through real Envoy and the
sidecar; both must report the same to the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import grpc_service_pb2

from tests._tools import plugin_path
from tests.e2e._envoy import EnvoyProcess, wasm_filter
from tests.e2e._upstream import ScriptedUpstream
from tests.e2e.test_sidecar_grpc_callout import H2_OPTIONS, EchoService, serving
from tests.e2e.test_sidecar_wasm import closed_port
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e]

Case = tuple[tuple[str, str], ...]


class ReflectService(EchoService):
    """``Unary`` answers with what reached the server (``fail`` aborts NOT_FOUND); ``Stream`` echoes."""

    def unary(self, request: bytes, context: Any) -> bytes:
        if request == b"fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "nope")
        metadata = dict(context.invocation_metadata())
        # grpcio has no public accessor for the request's :authority; its call details hold it
        authority = context._rpc_event.call_details.host.decode()
        remaining = context.time_remaining()
        deadline = "none" if remaining is None or remaining > 1e6 else str(round(remaining))
        binary = metadata.get("x-svc-bin", b"")
        fields = [request.decode(), authority, str(metadata.get("x-svc", "-")),
                  binary.hex() if isinstance(binary, bytes) else "?", str(metadata.get("x-wasm", "-")), deadline]
        return "|".join(fields).encode()

    def stream(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            yield b"r:" + request


@pytest.fixture
def grpc_port() -> Iterator[int]:
    with serving(ReflectService()) as port:
        yield port


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(200, [], "ok") as running:
        yield running


def grpc_service(cluster_name: str) -> grpc_service_pb2.GrpcService:
    """A service with an authority, metadata and a 1 s timeout (which Envoy does not apply here)."""
    service = grpc_service_pb2.GrpcService()
    service.envoy_grpc.cluster_name = cluster_name
    service.envoy_grpc.authority = "echo.example"
    service.timeout.seconds = 1
    service.initial_metadata.add(key="x-svc", value="from-service")
    service.initial_metadata.add(key="x-svc-bin", value="ab")  # sent base64-encoded, decoded by the server
    return service


def config(upstream_spec: str, grpc_port: int, upstream_port: int, busy_port: int) -> dict[str, Any]:
    """Clusters: ``grpc`` (the server), ``dead`` (nothing listens), ``busy`` (HTTP 503 to everything)."""
    clusters = [cluster("backend", upstream_port), cluster("grpc", grpc_port, typed_extension_protocol_options=H2_OPTIONS),
                cluster("dead", closed_port(), typed_extension_protocol_options=H2_OPTIONS),
                cluster("busy", busy_port)]
    return bootstrap(http_filters=[wasm_filter(plugin_path("grpc_lifecycle"), configuration=upstream_spec),
                                   ROUTER_FILTER], clusters=clusters)


def unary(message: str, *extra: tuple[str, str]) -> Case:
    return (("x-grpc-mode", "unary"), ("x-grpc-message", message), *extra)


LATE: Case = (("x-grpc-mode", "late"),)
SERVICE_CASES: list[Case] = [
    unary("hi", ("x-grpc-timeout-ms", "3000")), LATE,
    unary("again", ("x-grpc-cancel-in-callback", "1")), LATE,
    unary("fail"), LATE,
    (("x-grpc-mode", "stream"),), LATE,
    (("x-grpc-mode", "stream"), ("x-grpc-half-close", "1")), LATE,
    unary("no deadline", ("x-grpc-timeout-ms", "0")),
]
MISSING_CLUSTER_CASES: list[Case] = [unary("hi"), LATE, (("x-grpc-mode", "stream"),), LATE]


def observe(port: int, upstream: ScriptedUpstream, cases: list[Case]) -> list[tuple[int, list[tuple[str, str]]]]:
    """Per request: the client's status and the x-grpc-* headers the plugin added upstream."""
    seen = []
    for headers in cases:
        upstream.clear()
        status, _, _ = http_request(port, headers=[("Host", "example.com"), *headers])
        added = [(k.lower(), v) for request in upstream.requests for k, v in request.headers
                 if k.lower().startswith("x-grpc-") and k.lower() not in {name for name, _ in headers}]
        seen.append((status, added))
    return seen


def both(tmp_path: Path, envoy_binary: str, upstream_spec: str, grpc_port: int, upstream: ScriptedUpstream,
         cases: list[Case]) -> tuple[list[Any], list[Any]]:
    """The same requests through real Envoy and through the sidecar: (Envoy's, ours)."""
    with ScriptedUpstream(503, [], "busy") as busy:
        bootstrap_config = config(upstream_spec, grpc_port, upstream.port, busy.port)
        with EnvoyProcess(bootstrap_config, workdir=tmp_path / "envoy", binary=envoy_binary) as envoy:
            theirs = observe(next(iter(envoy.listener_ports().values())), upstream, cases)
        with SidecarProcess(bootstrap_config, workdir=tmp_path / "sidecar") as sidecar:
            ours = observe(sidecar.listener_ports()["listener_0"], upstream, cases)
    return theirs, ours


@pytest.mark.envoy
def test_unary_token_lifetime_and_a_grpc_service_match_envoy(
        tmp_path: Path, grpc_port: int, upstream: ScriptedUpstream, envoy_binary: str) -> None:
    spec = "hex:" + grpc_service("grpc").SerializeToString().hex()
    theirs, ours = both(tmp_path, envoy_binary, spec, grpc_port, upstream, SERVICE_CASES)
    assert ours == theirs
    answered, late_ok, cancelled, late_cancelled, failed, late_failed, stream, late_stream, _, late_closed, \
        no_deadline = ours
    # the service's authority and metadata arrive; the deadline is the call's own 3 s, not the service's 1 s
    assert answered == (200, [("x-grpc-status", "0"), ("x-grpc-result", "hi|echo.example|from-service|6162|lifecycle|3")])
    assert late_ok[1][:3] == [("x-grpc-late-cancel", "1"), ("x-grpc-late-close", "1"), ("x-grpc-late-send", "2")]
    assert late_ok[1][3] == ("x-grpc-events", "receive:5:hi|echo.example|from-service|6162|lifecycle|3")
    assert ("x-grpc-callback-cancel", "0") in cancelled[1] and late_cancelled[1][0] == ("x-grpc-late-cancel", "1")
    assert failed[1][:2] == [("x-grpc-status", "5"), ("x-grpc-result", "nope{via_upstream}")]
    assert late_failed[1][3] == ("x-grpc-events", "close:13:5:nope{via_upstream}")
    assert stream[1] == [("x-grpc-status", "0"), ("x-grpc-result", "via_upstream")]
    # the plugin never half-closed the stream: its token outlives the remote close until cancelled
    assert late_stream[1][:3] == [("x-grpc-late-cancel", "0"), ("x-grpc-late-close", "1"), ("x-grpc-late-send", "1")]
    # one it half-closed is released by the remote close
    assert late_closed[1][:3] == [("x-grpc-late-cancel", "1"), ("x-grpc-late-close", "1"), ("x-grpc-late-send", "1")]
    # a unary call with timeout 0 carries "grpc-timeout: 0m", which the server takes as already expired
    assert no_deadline[1] == [("x-grpc-status", "4"), ("x-grpc-result", "Deadline Exceeded{via_upstream}")]


@pytest.mark.envoy
def test_a_service_naming_an_unknown_cluster_matches_envoy(
        tmp_path: Path, grpc_port: int, upstream: ScriptedUpstream, envoy_binary: str) -> None:
    spec = "hex:" + grpc_service("nowhere").SerializeToString().hex()
    theirs, ours = both(tmp_path, envoy_binary, spec, grpc_port, upstream, MISSING_CLUSTER_CASES)
    assert ours == theirs
    assert ours[0] == (200, [("x-grpc-dispatch-status", "10")])
    assert ours[1][1][3] == ("x-grpc-events", "close:5:14:Cluster not available")


_REFUSED = ("upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
            "{upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}}")


@pytest.mark.envoy
@pytest.mark.parametrize(("target", "expected"), [
    ("dead", [(200, [("x-grpc-status", "14"), ("x-grpc-result", _REFUSED)])] * 2),  # nothing listens
    ("busy", [(200, [("x-grpc-status", "14"), ("x-grpc-result", "via_upstream")])] * 2),  # HTTP 503: UNAVAILABLE
    ("malformed", [(200, [("x-grpc-dispatch-status", "4")])] * 2),  # neither a service nor a cluster
])
def test_failing_upstreams_report_as_in_envoy(tmp_path: Path, grpc_port: int, upstream: ScriptedUpstream,
                                               envoy_binary: str, target: str, expected: list[Any]) -> None:
    spec = "hex:0a05ff" if target == "malformed" else "hex:" + grpc_service(target).SerializeToString().hex()
    theirs, ours = both(tmp_path, envoy_binary, spec, grpc_port, upstream, [unary("hi"), (("x-grpc-mode", "stream"),)])
    assert ours == theirs == expected
