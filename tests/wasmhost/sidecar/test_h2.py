"""HTTP/2 codec: frames in, per-stream events out; flow-control windows hold back body bytes."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from wasmhost.sidecar import HeaderMap
from wasmhost.sidecar._h2 import Http2Codec


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_headers(self, stream_id: int, headers: HeaderMap, end_stream: bool) -> None:
        self.events.append(("headers", stream_id, headers.items()[:], end_stream))

    def on_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self.events.append(("data", stream_id, data, end_stream))

    def on_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        self.events.append(("trailers", stream_id, trailers.items()[:]))

    def on_reset(self, stream_id: int, reason: str) -> None:
        self.events.append(("reset", stream_id))

    def on_connection_error(self, reason: str) -> None:
        self.events.append(("error", reason))


def peer(client_side: bool, window: int = 65535) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side, header_encoding=None))
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    conn.initiate_connection()
    return conn


def exchange(codec: Http2Codec, other: h2.connection.H2Connection) -> list[Any]:
    """Move bytes both ways until quiet; return the other side's events."""
    events: list[Any] = []
    for _ in range(10):
        outgoing = other.data_to_send()
        if outgoing:
            codec.feed(outgoing)
        incoming = codec.data_to_send()
        if incoming:
            events.extend(other.receive_data(incoming))
        if not outgoing and not incoming:
            break
    return events


def test_server_turns_a_request_into_events_and_answers() -> None:
    sink = Events()
    codec = Http2Codec(sink, client_side=False)
    client = peer(client_side=True)
    exchange(codec, client)
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x"),
                            (b":authority", b"svc"), (b"x-a", b"1")])
    client.send_data(1, b"body")
    client.send_headers(1, [(b"x-trailer", b"t")], end_stream=True)
    exchange(codec, client)
    assert sink.events == [
        ("headers", 1, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x"), (b":authority", b"svc"),
                        (b"x-a", b"1")], False),
        ("data", 1, b"body", False),
        ("trailers", 1, [(b"x-trailer", b"t")]),
    ]
    codec.send_headers(1, HeaderMap([(b":status", b"200"), (b"connection", b"close"), (b"grpc-x", b"y")]), False)
    codec.send_data(1, b"answer", False)
    codec.send_trailers(1, HeaderMap([(b"grpc-status", b"0")]))
    events = exchange(codec, client)
    response = [e for e in events if isinstance(e, h2.events.ResponseReceived)][0]
    assert (b"connection", b"close") not in response.headers
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"answer"
    assert any(isinstance(e, h2.events.TrailersReceived) for e in events)


def test_body_larger_than_the_peer_window_waits_for_window_updates() -> None:
    sink = Events()
    codec = Http2Codec(sink, client_side=False)
    client = peer(client_side=True, window=1000)
    exchange(codec, client)
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")],
                        end_stream=True)
    exchange(codec, client)
    codec.send_headers(1, HeaderMap([(b":status", b"200")]), False)
    payload = bytes(range(256)) * 40  # 10240 bytes against a 1000-byte stream window
    codec.send_data(1, payload, True)
    received = b""
    ended = False
    for _ in range(50):
        for event in exchange(codec, client):
            if isinstance(event, h2.events.DataReceived):
                received += event.data
                client.acknowledge_received_data(event.flow_controlled_length, 1)
            if isinstance(event, h2.events.StreamEnded):
                ended = True
        if ended:
            break
    assert received == payload and ended


def test_client_side_sends_requests_on_new_streams() -> None:
    sink = Events()
    codec = Http2Codec(sink, client_side=True)
    server = peer(client_side=False)
    first = codec.next_stream_id()
    codec.send_headers(first, HeaderMap([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/a"),
                                         (b":authority", b"h"), (b"te", b"gzip")]), True)
    events = exchange(codec, server)
    request = [e for e in events if isinstance(e, h2.events.RequestReceived)][0]
    assert (b"te", b"gzip") not in request.headers  # only "te: trailers" is legal in HTTP/2
    server.send_headers(first, [(b":status", b"404")], end_stream=True)
    exchange(codec, server)
    assert sink.events == [("headers", first, [(b":status", b"404")], True)]
    assert codec.next_stream_id() == first + 2


def test_reset_and_protocol_error_reach_the_sink() -> None:
    sink = Events()
    codec = Http2Codec(sink, client_side=False)
    client = peer(client_side=True)
    exchange(codec, client)
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")])
    client.reset_stream(1)
    exchange(codec, client)
    assert sink.events[-1] == ("reset", 1)
    fresh = Events()
    Http2Codec(fresh, client_side=False).feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 2)
    assert fresh.events[-1][0] == "error"
