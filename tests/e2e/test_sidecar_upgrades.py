"""HTTP/1.1 upgrades (WebSocket) through the sidecar, compared with real Envoy.

Without ``upgrade_configs`` Envoy refuses an ``Upgrade`` request with 403; with
``upgrade_configs: [{upgrade_type: websocket}]`` it forwards the request with its
``connection``/``upgrade`` headers and, once the upstream answers 101, carries bytes both
ways. The upstream here is a small RFC 6455 echo server (handshake, masked client frames in,
unmasked frames out, close handshake); the client speaks WebSocket over a plain socket.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.e2e._socket_server import serving
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster, hcm_of
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TIMEOUT_S = 10.0
_VOLATILE = ("date", "server", "x-request-id", "x-forwarded-proto", "content-length")
TEXT, CLOSE = 0x1, 0x8


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_exact(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_frame(connection: socket.socket) -> tuple[int, bytes]:
    first, second = read_exact(connection, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", read_exact(connection, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", read_exact(connection, 8))[0]
    key = read_exact(connection, 4) if second & 0x80 else b""
    payload = read_exact(connection, size)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, payload


def read_head(connection: socket.socket) -> tuple[str, list[tuple[str, str]]]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += read_exact(connection, 1)
    lines = data.decode("latin-1").split("\r\n")[:-2]
    headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:])]
    return lines[0], headers


class EchoWebSocketServer:
    """Answers the handshake with 101 (or 400 on ``/refuse``), then echoes text frames until a close."""

    def __init__(self) -> None:
        self.port = 0
        self.heads: list[tuple[str, list[tuple[str, str]]]] = []

    def session(self, connection: socket.socket) -> None:
        line, headers = read_head(connection)
        self.heads.append((line, headers))
        if line.startswith("GET /refuse"):
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 7\r\n\r\nrefused")
            return
        key = dict(headers).get("sec-websocket-key", "").encode()
        connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                           b"connection: Upgrade\r\nsec-websocket-accept: " + accept_key(key) + b"\r\n\r\n")
        while True:
            opcode, payload = read_frame(connection)
            if opcode == CLOSE:
                connection.sendall(encode_frame(CLOSE, payload, mask=False))
                return
            connection.sendall(encode_frame(TEXT, b"echo:" + payload, mask=False))


@pytest.fixture
def echo_server() -> Iterator[EchoWebSocketServer]:
    with serving(EchoWebSocketServer()) as peer:
        yield peer


def upgrade_config(port: int, *, websocket: bool) -> dict[str, Any]:
    config = bootstrap(clusters=[cluster("backend", port)])
    if websocket:
        hcm_of(config)["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    return config


def comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers if k not in _VOLATILE and not k.startswith("x-envoy-"))


def conversation(port: int, path: str = "/chat") -> list[Any]:
    """Handshake, three messages (one of 100 KB), close handshake; the transcript as plain values."""
    key = base64.b64encode(os.urandom(16))
    transcript: list[Any] = []
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as connection:
        connection.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: example.com\r\nupgrade: websocket\r\n"
                           b"connection: Upgrade\r\nsec-websocket-key: " + key + b"\r\n"
                           b"sec-websocket-version: 13\r\n\r\n")
        line, headers = read_head(connection)
        accepted = dict(headers).get("sec-websocket-accept") == accept_key(key).decode()
        transcript.append((line, comparable([h for h in headers if h[0] != "sec-websocket-accept"]), accepted))
        if not line.startswith("HTTP/1.1 101"):
            length = int(dict(headers).get("content-length", "0"))
            transcript.append(read_exact(connection, length))
            return transcript
        for message in (b"hello", b"x" * 100_000, b"bye"):
            connection.sendall(encode_frame(TEXT, message, mask=True))
            opcode, payload = read_frame(connection)
            transcript.append((opcode, len(payload), payload[:12]))
        connection.sendall(encode_frame(CLOSE, b"\x03\xe8", mask=True))
        transcript.append(read_frame(connection))
        transcript.append(connection.recv(1))  # then the proxy closes the connection: b""
    return transcript


def upstream_view(server: EchoWebSocketServer) -> list[Any]:
    views = [(line, comparable([h for h in headers if h[0] != "sec-websocket-key"])) for line, headers in server.heads]
    server.heads.clear()
    return views


def test_websocket_is_proxied_as_a_tunnel_when_configured(tmp_path: Path, echo_server: EchoWebSocketServer) -> None:
    with SidecarProcess(upgrade_config(echo_server.port, websocket=True), workdir=tmp_path) as sidecar:
        transcript = conversation(sidecar.listener_ports()["listener_0"])
        refused = conversation(sidecar.listener_ports()["listener_0"], "/refuse")
    head, *messages, close, end = transcript
    assert head[0] == "HTTP/1.1 101 Switching Protocols" and head[2] is True
    assert ("upgrade", "websocket") in head[1] and ("connection", "upgrade") in [(k, v.lower()) for k, v in head[1]]
    assert messages == [(TEXT, 10, b"echo:hello"), (TEXT, 100_005, b"echo:xxxxxxx"), (TEXT, 8, b"echo:bye")]
    assert close == (CLOSE, b"\x03\xe8") and end == b""
    assert refused[0][0] == "HTTP/1.1 400 Bad Request" and refused[1] == b"refused"
    [(line, headers), _] = upstream_view(echo_server)
    assert line == "GET /chat HTTP/1.1" and ("upgrade", "websocket") in headers


def test_upgrade_without_upgrade_configs_is_refused(tmp_path: Path, echo_server: EchoWebSocketServer) -> None:
    with SidecarProcess(upgrade_config(echo_server.port, websocket=False), workdir=tmp_path) as sidecar:
        transcript = conversation(sidecar.listener_ports()["listener_0"])
    assert transcript[0][0] == "HTTP/1.1 403 Forbidden" and echo_server.heads == []


@pytest.mark.envoy
@pytest.mark.parametrize("websocket", [True, False])
def test_upgrades_match_envoy(tmp_path: Path, echo_server: EchoWebSocketServer, envoy_binary: str,
                              websocket: bool) -> None:
    config = upgrade_config(echo_server.port, websocket=websocket)
    paths = ["/chat", "/refuse"] if websocket else ["/chat"]
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary) as envoy:
        port = next(iter(envoy.listener_ports().values()))
        theirs = [conversation(port, path) for path in paths], upstream_view(echo_server)
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        port = sidecar.listener_ports()["listener_0"]
        ours = [conversation(port, path) for path in paths], upstream_view(echo_server)
    assert ours == theirs
