"""WebSocket over HTTP/2 (extended CONNECT, RFC 8441) to an HTTP/1.1 upstream, compared with real Envoy.

With ``http2_protocol_options.allow_connect`` the proxy offers SETTINGS_ENABLE_CONNECT_PROTOCOL;
a ``CONNECT`` stream with ``:protocol websocket`` goes upstream as an HTTP/1.1 ``Upgrade`` GET
(``upgrade_configs`` must allow it, else 403), the upstream's 101 comes back as 200 and the
stream's DATA frames carry the WebSocket bytes both ways. The upstream is the RFC 6455 echo
server of the HTTP/1.1 upgrade tests; the client speaks HTTP/2 through ``h2``.
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.e2e._h2_peers import DEADLINE_S, H2Client
from tests.e2e._socket_server import serving
from tests.e2e._upstream import ScriptedUpstream
from tests.e2e.test_sidecar_upgrades import (
    CLOSE,
    TEXT,
    EchoWebSocketServer,
    accept_key,
    comparable,
    encode_frame,
    upstream_view,
)
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster, hcm_of
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def echo_server() -> Iterator[EchoWebSocketServer]:
    with serving(EchoWebSocketServer()) as peer:
        yield peer


def connect_config(port: int, *, websocket: bool) -> dict[str, Any]:
    config = bootstrap(clusters=[cluster("backend", port)],
                       hcm_extra={"codec_type": "AUTO", "http2_protocol_options": {"allow_connect": True}})
    if websocket:
        hcm_of(config)["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    return config


def next_frame(client: H2Client, stream_id: int, offset: int) -> tuple[int, bytes, int]:
    """The server frame at ``offset`` of the stream's body, once it has fully arrived: (opcode, payload, end)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        with client.lock:
            data = bytes(client.bodies[stream_id][offset:])
        if len(data) >= 2:
            size, start = data[1] & 0x7F, 2
            if size == 126:
                size, start = (struct.unpack("!H", data[2:4])[0] if len(data) >= 4 else -1), 4
            elif size == 127:
                size, start = (struct.unpack("!Q", data[2:10])[0] if len(data) >= 10 else -1), 10
            if size >= 0 and len(data) >= start + size:
                return data[0] & 0x0F, data[start:start + size], offset + start + size
        if client.ended[stream_id].is_set():
            break
        time.sleep(0.01)
    raise AssertionError(f"no complete frame at {offset} (failure {client.failure!r})")


def h2_conversation(port: int, path: str = "/chat") -> list[Any]:
    """Handshake, three messages (one of 100 KB), close handshake; the transcript as plain values."""
    key = base64.b64encode(os.urandom(16))
    transcript: list[Any] = []
    with H2Client(port, keep_bodies=True) as client:
        stream = client.request("CONNECT", path, open_ended=True, extra=[
            (b":protocol", b"websocket"), (b"sec-websocket-key", key), (b"sec-websocket-version", b"13")])
        head = client.wait_head(stream)
        with client.lock:
            offered = client.conn.remote_settings.enable_connect_protocol
            headers = [(k.decode(), v.decode()) for k, v in client.head_lists.get(stream, [])]
        accepted = head.get(b"sec-websocket-accept") == accept_key(key)
        transcript.append((offered, head.get(b":status"), accepted,
                           comparable([h for h in headers if h[0] != "sec-websocket-accept"])))
        if head.get(b":status") != b"200":
            client.wait(stream)
            transcript.append(bytes(client.bodies[stream]))
            return transcript
        offset = 0
        for message in (b"hello", b"x" * 100_000, b"bye"):
            client.send_bytes(stream, encode_frame(TEXT, message, mask=True))
            opcode, payload, offset = next_frame(client, stream, offset)
            transcript.append((opcode, len(payload), payload[:12]))
        client.send_bytes(stream, encode_frame(CLOSE, b"\x03\xe8", mask=True))
        opcode, payload, offset = next_frame(client, stream, offset)
        transcript.append((opcode, payload))
        client.wait(stream)  # the upstream closed its side: the stream ends
        transcript.append((len(client.bodies[stream]) == offset, client.failure))
    return transcript


def test_websocket_over_http2_is_tunnelled_to_an_http1_upstream(tmp_path: Path,
                                                                echo_server: EchoWebSocketServer) -> None:
    with SidecarProcess(connect_config(echo_server.port, websocket=True), workdir=tmp_path) as sidecar:
        transcript = h2_conversation(sidecar.listener_ports()["listener_0"])
        refused = h2_conversation(sidecar.listener_ports()["listener_0"], "/refuse")
    head, *messages, close, end = transcript
    assert head[:3] == (1, b"200", True)
    assert messages == [(TEXT, 10, b"echo:hello"), (TEXT, 100_005, b"echo:xxxxxxx"), (TEXT, 8, b"echo:bye")]
    assert close == (CLOSE, b"\x03\xe8") and end == (True, None)
    assert refused[0][1] == b"400" and refused[1] == b"refused"
    [(line, headers), _] = upstream_view(echo_server)
    assert line == "GET /chat HTTP/1.1"
    assert ("upgrade", "websocket") in headers and ("connection", "upgrade") in headers


def test_extended_connect_without_upgrade_configs_is_refused(tmp_path: Path,
                                                             echo_server: EchoWebSocketServer) -> None:
    with SidecarProcess(connect_config(echo_server.port, websocket=False), workdir=tmp_path) as sidecar:
        transcript = h2_conversation(sidecar.listener_ports()["listener_0"])
    assert transcript[0][:2] == (1, b"403") and echo_server.heads == []


def test_extended_connect_is_reset_unless_allowed(tmp_path: Path) -> None:
    with ScriptedUpstream() as upstream:
        upstream.set_response(200, [("content-type", "text/plain")], b"plain")
        config = connect_config(upstream.port, websocket=True)
        del hcm_of(config)["http2_protocol_options"]
        with SidecarProcess(config, workdir=tmp_path) as sidecar:
            with H2Client(sidecar.listener_ports()["listener_0"], keep_bodies=True) as client:
                stream = client.request("CONNECT", "/chat", open_ended=True, extra=[(b":protocol", b"websocket")])
                client.wait(stream)
                other = client.request("GET", "/plain")
                answer = client.wait(other)
                with client.lock:
                    offered = client.conn.remote_settings.enable_connect_protocol
                    head = client.heads.get(stream)
        paths = [request.path for request in upstream.requests]
    assert (offered, client.failure, head) == (0, None, None)  # not offered; the stream is reset, not answered
    assert answer == (b"200", 5, b"plain") and paths == ["/plain"]  # the connection goes on serving


@pytest.mark.envoy
def test_extended_connect_matches_envoy(tmp_path: Path, echo_server: EchoWebSocketServer, envoy_binary: str) -> None:
    """The tunnel and a refused handshake alike. (Without ``upgrade_configs`` both answer 403; Envoy
    then also drains the whole connection with GOAWAY, which the ``h2`` client here cannot follow.)"""
    config = connect_config(echo_server.port, websocket=True)
    paths = ["/chat", "/refuse"]
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary) as envoy:
        port = next(iter(envoy.listener_ports().values()))
        theirs = [h2_conversation(port, path) for path in paths], upstream_view(echo_server)
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        port = sidecar.listener_ports()["listener_0"]
        ours = [h2_conversation(port, path) for path in paths], upstream_view(echo_server)
    assert ours == theirs
