"""HTTP/1.1 chunked trailers through the sidecar, compared with real Envoy.

Envoy's HTTP/1 codec drops trailers unless ``http_protocol_options.enable_trailers`` is set
for it: the connection manager's for the client side, the cluster's
(``explicit_http_config.http_protocol_options``) for the upstream side. A raw upstream reads
the chunked request with its trailers and answers chunked with trailers of its own; the
client sends a chunked request with trailers. Both proxies run the same bootstrap, and what
each end saw must be the same.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.e2e._socket_server import serving
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster, hcm_of
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e]

_TIMEOUT_S = 10.0
_VOLATILE = ("date", "server", "x-request-id", "x-forwarded-proto", "user-agent")


@dataclass
class Message:
    """One parsed HTTP/1.1 message: status or path, headers, body and trailers (names lower-cased)."""

    first: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False
    _in_trailers: bool = False

    def on_url(self, url: bytes) -> None:
        self.first += url.decode()

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode().lower(), value.decode())
        (self.trailers if self._in_trailers else self.headers).append(pair)

    def on_headers_complete(self) -> None:
        self._in_trailers = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def view(self) -> tuple[str, list[tuple[str, str]], bytes, list[tuple[str, str]]]:
        headers = sorted((k, v) for k, v in self.headers if k not in _VOLATILE and not k.startswith("x-envoy-"))
        return self.first, headers, self.body, sorted(self.trailers)


def read_message(connection: socket.socket, parser_type: Any, message: Message) -> Message:
    parser = parser_type(message)
    while not message.complete:
        data = connection.recv(65536)
        if not data:
            raise ConnectionError("closed before the message ended")
        parser.feed_data(data)
    if parser_type is httptools.HttpResponseParser:
        message.first = str(parser.get_status_code())
    return message


class TrailerUpstream:
    """Reads one chunked request per connection and answers chunked, with a trailer."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Message] = []

    def session(self, connection: socket.socket) -> None:
        try:
            self.requests.append(read_message(connection, httptools.HttpRequestParser, Message()))
        except httptools.HttpParserError:
            return
        connection.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                           b"5\r\nhello\r\n0\r\nx-upstream-trailer: u1\r\n\r\n")


@pytest.fixture
def upstream() -> Iterator[TrailerUpstream]:
    with serving(TrailerUpstream()) as peer:
        yield peer


def trailer_config(port: int, *, downstream: bool, upstream: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if upstream:
        extra["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
        }}
    config = bootstrap(clusters=[cluster("backend", port, **extra)])
    if downstream:
        hcm_of(config)["http_protocol_options"] = {"enable_trailers": True}
    return config


def exchange(port: int, upstream: TrailerUpstream) -> tuple[Any, Any]:
    """A chunked POST with a trailer: (what the upstream saw, what the client saw)."""
    upstream.requests.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as connection:
        connection.sendall(b"POST /t HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\n0\r\nx-client-trailer: c1\r\n\r\n")
        response = read_message(connection, httptools.HttpResponseParser, Message())
    [request] = upstream.requests
    return request.view(), response.view()


CASES = [(False, False), (True, True), (True, False), (False, True)]


@pytest.mark.parametrize(("downstream", "upstream_side"), CASES)
def test_trailers_follow_enable_trailers(tmp_path: Path, upstream: TrailerUpstream, downstream: bool,
                                         upstream_side: bool) -> None:
    config = trailer_config(upstream.port, downstream=downstream, upstream=upstream_side)
    with SidecarProcess(config, workdir=tmp_path) as sidecar:
        seen, answered = exchange(sidecar.listener_ports()["listener_0"], upstream)
    assert seen[2] == b"abc" and answered[2] == b"hello"
    both = downstream and upstream_side
    assert seen[3] == ([("x-client-trailer", "c1")] if both else [])
    assert answered[3] == ([("x-upstream-trailer", "u1")] if both else [])


@pytest.mark.envoy
@pytest.mark.parametrize(("downstream", "upstream_side"), CASES)
def test_trailers_match_envoy(tmp_path: Path, upstream: TrailerUpstream, envoy_binary: str, downstream: bool,
                              upstream_side: bool) -> None:
    config = trailer_config(upstream.port, downstream=downstream, upstream=upstream_side)
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary) as envoy:
        theirs = exchange(next(iter(envoy.listener_ports().values())), upstream)
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        ours = exchange(sidecar.listener_ports()["listener_0"], upstream)
    assert ours == theirs
