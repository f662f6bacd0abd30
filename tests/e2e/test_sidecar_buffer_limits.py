"""Buffer limits and back-pressure through the sidecar, with Envoy as the reference for the answers.

A plugin that holds headers and buffers whole bodies (``tests/data/plugins/c/buffer_all.c``)
makes the host buffer; over the listener's ``per_connection_buffer_limit_bytes`` a request
is answered 413 and a response whose headers are still held 500, as Envoy does.

Without a buffering filter, bodies stream; a side that stops reading must stop the other
side too (the proxy pauses reading), so the proxy never holds more than its limits. The
tests stop one peer from reading, wait until the sender stalls (its progress stops moving),
and check it stalled far below the body size; then the reader resumes and every byte arrives.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._tools import plugin_path
from tests.e2e._envoy import EnvoyProcess, wasm_filter
from tests.e2e._socket_server import SocketServer
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e]

LIMIT = 64 * 1024
#: streamed bodies: far more than every socket buffer and proxy buffer on the way together
STREAMED = 256 * 1024 * 1024
#: a sender stalled below this has been held back by the proxy: the test's own sockets keep small
#: buffers, the proxy's two (autotuned, at most net.ipv4.tcp_rmem/tcp_wmem, 32 + 4 MiB on common
#: kernels) hold the rest; measured here: about 10 MiB (download) and 30 MiB (upload)
STALL_BOUND = 96 * 1024 * 1024
_SMALL_SOCKET_BUFFER = 256 * 1024
_CHUNK = 64 * 1024
_DEADLINE_S = 60.0


def limited(config: dict[str, Any], limit: int = LIMIT) -> dict[str, Any]:
    """The bootstrap with ``per_connection_buffer_limit_bytes`` on the listener and every cluster."""
    resources = config["static_resources"]
    for listener in resources["listeners"]:
        listener["per_connection_buffer_limit_bytes"] = limit
    for entry in resources["clusters"]:
        entry["per_connection_buffer_limit_bytes"] = limit
    return config


def buffering_config(upstream_port: int, *, held_response: bool) -> dict[str, Any]:
    """``buffer_all`` buffers the bodies; with ``held_response`` a second instance in front of it
    holds the response headers, so the buffered response has not started when it overflows."""
    filters = [wasm_filter(plugin_path("buffer_all"), name="buffer")]
    if held_response:
        filters.insert(0, wasm_filter(plugin_path("buffer_all"), name="hold", configuration="hold-headers"))
    return limited(bootstrap(http_filters=[*filters, ROUTER_FILTER], clusters=[cluster("backend", upstream_port)]))


Case = tuple[str, bytes | None, bytes]  # method, request body, response body


def exchange(port: int, upstream: ScriptedUpstream, cases: list[Case]) -> list[Any]:
    """Per case: status, body (or its size), content type, upstream body sizes."""
    seen: list[Any] = []
    for method, body, answer in cases:
        upstream.clear()
        upstream.set_response(200, [("content-type", "application/octet-stream")], answer)
        try:
            status, headers, reply = http_request(port, method, "/", [("Host", "example.com")], body)
        except (ConnectionError, http.client.HTTPException) as error:
            seen.append(("failed", type(error).__name__))
            continue
        seen.append((status, reply if status != 200 else len(reply), dict(headers).get("content-type"),
                     [len(request.body) for request in upstream.requests]))
    return seen


SMALL: Case = ("POST", b"a" * 10_000, b"b" * 10_000)
LARGE_REQUEST: Case = ("POST", b"a" * (LIMIT * 2), b"ok")
LARGE_RESPONSE: Case = ("GET", None, b"c" * (LIMIT * 2))


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as running:
        yield running


def test_buffered_bodies_over_the_limit_get_413_and_500(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with SidecarProcess(buffering_config(upstream.port, held_response=False), workdir=tmp_path / "a") as sidecar:
        small, large_request = exchange(sidecar.listener_ports()["listener_0"], upstream, [SMALL, LARGE_REQUEST])
    with SidecarProcess(buffering_config(upstream.port, held_response=True), workdir=tmp_path / "b") as sidecar:
        [large_response] = exchange(sidecar.listener_ports()["listener_0"], upstream, [LARGE_RESPONSE])
    assert small == (200, 10_000, "application/octet-stream", [10_000])
    assert large_request == (413, b"Payload Too Large", "text/plain", [])
    assert large_response[:2] == (500, b"Internal Server Error")


@pytest.mark.envoy
@pytest.mark.parametrize("held_response", [False, True])
def test_buffer_limit_answers_match_envoy(tmp_path: Path, upstream: ScriptedUpstream, envoy_binary: str,
                                          held_response: bool) -> None:
    config = buffering_config(upstream.port, held_response=held_response)
    cases = [LARGE_RESPONSE] if held_response else [SMALL, LARGE_REQUEST, LARGE_RESPONSE]
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary) as envoy:
        theirs = exchange(next(iter(envoy.listener_ports().values())), upstream, cases)
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        ours = exchange(sidecar.listener_ports()["listener_0"], upstream, cases)
    assert ours == theirs


# --- back-pressure on streamed bodies ----------------------------------------------------------------


class Progress:
    """A byte counter shared with a sending thread; ``stalled()`` waits until it stops moving."""

    def __init__(self) -> None:
        self.count = 0
        self.failure: BaseException | None = None

    def stalled(self, quiet_s: float = 1.0) -> int:
        deadline = time.monotonic() + _DEADLINE_S
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.count != last:
                last, since = self.count, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return last
            time.sleep(0.05)
        raise AssertionError(f"the sender never stalled (at {self.count} bytes)")


class RawUpstream:
    """An HTTP/1.1 upstream on a plain socket with small socket buffers, scripted per test."""

    def __init__(self) -> None:
        self.port = 0
        self.release = threading.Event()
        self.sent = Progress()
        self.received = 0
        self._server: SocketServer | None = None

    def serve(self, handler: Any) -> RawUpstream:
        def session(connection: socket.socket) -> None:
            connection.settimeout(_DEADLINE_S)
            try:
                handler(self, connection)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                self.sent.failure = error

        self._server = SocketServer(session, receive_buffer=_SMALL_SOCKET_BUFFER)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.stop()


def read_head(connection: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def huge_response(upstream: RawUpstream, connection: socket.socket) -> None:
    read_head(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % STREAMED)
    block = b"x" * _CHUNK
    while upstream.sent.count < STREAMED:
        connection.sendall(block)
        upstream.sent.count += len(block)


def slow_reader(upstream: RawUpstream, connection: socket.socket) -> None:
    _, rest = read_head(connection)
    upstream.release.wait(_DEADLINE_S)
    received = len(rest)
    while received < STREAMED:
        chunk = connection.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    upstream.received = received
    body = str(received).encode()
    connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


@pytest.fixture
def raw_upstream() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    try:
        yield upstream
    finally:
        upstream.stop()


def client(port: int) -> socket.socket:
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL_SOCKET_BUFFER)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL_SOCKET_BUFFER)
    connection.settimeout(_DEADLINE_S)
    connection.connect(("127.0.0.1", port))
    return connection


def streaming_config(upstream_port: int) -> dict[str, Any]:
    return limited(bootstrap(clusters=[cluster("backend", upstream_port)]))


def test_a_slow_client_holds_back_the_upstream(tmp_path: Path, raw_upstream: RawUpstream) -> None:
    raw_upstream.serve(huge_response)
    with SidecarProcess(streaming_config(raw_upstream.port), workdir=tmp_path) as sidecar:
        with client(sidecar.listener_ports()["listener_0"]) as connection:
            connection.sendall(b"GET /big HTTP/1.1\r\nhost: example.com\r\n\r\n")
            stalled = raw_upstream.sent.stalled()
            received = 0
            while received < STREAMED:
                chunk = connection.recv(1 << 20)
                assert chunk, f"closed after {received} bytes"
                received += len(chunk)
    assert raw_upstream.sent.failure is None
    assert stalled < STALL_BOUND, f"the upstream wrote {stalled} bytes to a client that read none"
    assert received > STREAMED  # the head and every body byte arrived once the client read


def test_a_slow_upstream_holds_back_the_client(tmp_path: Path, raw_upstream: RawUpstream) -> None:
    raw_upstream.serve(slow_reader)
    sent = Progress()
    with SidecarProcess(streaming_config(raw_upstream.port), workdir=tmp_path) as sidecar:
        with client(sidecar.listener_ports()["listener_0"]) as connection:
            connection.sendall(b"POST /up HTTP/1.1\r\nhost: example.com\r\ncontent-length: %d\r\n\r\n" % STREAMED)

            def upload() -> None:
                block = b"y" * _CHUNK
                try:
                    while sent.count < STREAMED:
                        connection.sendall(block)
                        sent.count += len(block)
                except BaseException as error:  # noqa: BLE001 - reported below
                    sent.failure = error

            sender = threading.Thread(target=upload, daemon=True)
            sender.start()
            stalled = sent.stalled()
            raw_upstream.release.set()
            sender.join(timeout=_DEADLINE_S)
            reply = b""
            while not reply.endswith(str(STREAMED).encode()):
                chunk = connection.recv(65536)
                assert chunk, f"closed with {reply!r}"
                reply += chunk
    assert sent.failure is None and raw_upstream.sent.failure is None
    assert stalled < STALL_BOUND, f"the client wrote {stalled} bytes to an upstream that read none"
    assert reply.startswith(b"HTTP/1.1 200") and raw_upstream.received == STREAMED
