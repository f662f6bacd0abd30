"""HTTP/1.1 codec: parsing both directions into Envoy-style header maps, and framing on the way out."""

from __future__ import annotations

from typing import Any

from wasmhost.sidecar import HeaderMap
from wasmhost.sidecar._h1 import Http1ClientCodec, Http1ServerCodec


class ServerEvents:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_request_headers(self, headers: HeaderMap, end_stream: bool, protocol: str, upgrade: bool) -> None:
        self.events.append(("headers", headers.items()[:], end_stream, protocol, upgrade))

    def on_request_data(self, data: bytes, end_stream: bool) -> None:
        self.events.append(("data", data, end_stream))

    def on_request_trailers(self, trailers: HeaderMap) -> None:
        self.events.append(("trailers", trailers.items()[:]))

    def on_codec_error(self, status: int, details: str) -> None:
        self.events.append(("error", status, details))


def server() -> tuple[Http1ServerCodec, ServerEvents]:
    sink = ServerEvents()
    return Http1ServerCodec(sink), sink


def test_request_becomes_a_header_map_with_pseudo_headers() -> None:
    codec, sink = server()
    codec.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nX-Custom: V\r\n\r\n")
    assert sink.events == [("headers", [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/a?b=1"),
                                        (b":authority", b"Example.com"), (b"x-custom", b"V")], True, "HTTP/1.1",
                            False)]


def test_content_length_body_arrives_with_end_stream() -> None:
    codec, sink = server()
    codec.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel")
    codec.feed(b"lo")
    assert sink.events[1:] == [("data", b"hel", False), ("data", b"lo", True)]


def test_chunked_body_and_trailers() -> None:
    codec, sink = server()
    codec.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 42\r\n\r\n")
    kinds = [event[0] for event in sink.events]
    assert kinds[0] == "headers" and sink.events[0][2] is False
    body = b"".join(event[1] for event in sink.events if event[0] == "data")
    assert body == b"abcde"
    assert sink.events[-1] == ("trailers", [(b"x-checksum", b"42")])


def test_pipelined_requests_wait_for_the_response() -> None:
    codec, sink = server()
    codec.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(sink.events) == 1 and codec.has_pending
    codec.response_complete()
    assert len(sink.events) == 2 and sink.events[1][1][2] == (b":path", b"/2")
    assert not codec.has_pending


def test_malformed_request_is_a_400_error_event() -> None:
    codec, sink = server()
    codec.feed(b"NOT HTTP\r\n\r\n")
    assert sink.events == [("error", 400, "http1.codec_error")]
    codec.feed(b"GET / HTTP/1.1\r\n\r\n")  # nothing more is parsed after a failure
    assert len(sink.events) == 1


def test_oversized_headers_are_431() -> None:
    sink = ServerEvents()
    codec = Http1ServerCodec(sink, max_header_bytes=64)
    codec.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 100 + b"\r\n\r\n")
    assert sink.events == [("error", 431, "http1.headers_too_large")]


def test_too_many_headers_are_431() -> None:
    sink = ServerEvents()
    codec = Http1ServerCodec(sink, max_headers=2)
    codec.feed(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert sink.events == [("error", 431, "http1.too_many_headers")]


def test_underscore_headers_can_be_dropped_or_rejected() -> None:
    sink = ServerEvents()
    Http1ServerCodec(sink, underscores="DROP_HEADER").feed(b"GET / HTTP/1.1\r\nHost: h\r\nX_A: 1\r\n\r\n")
    assert (b"x_a", b"1") not in sink.events[0][1]
    sink = ServerEvents()
    Http1ServerCodec(sink, underscores="REJECT_REQUEST").feed(b"GET / HTTP/1.1\r\nHost: h\r\nX_A: 1\r\n\r\n")
    assert sink.events[0][:2] == ("error", 400)


def test_upgrade_request_is_flagged() -> None:
    codec, sink = server()
    codec.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert sink.events[0][4] is True


def test_response_framing() -> None:
    codec, _ = server()
    codec.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = codec.encode_headers(HeaderMap([(b":status", b"200"), (b"content-type", b"text/plain"),
                                           (b"connection", b"keep-alive")]), False, close=False)
    assert head == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
    assert codec.encode_data(b"abc", False) == b"3\r\nabc\r\n"
    assert codec.encode_data(b"", True) == b"0\r\n\r\n"
    assert codec.encode_headers(HeaderMap([(b":status", b"404")]), True, close=True) == (
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


def test_head_response_keeps_length_and_drops_body() -> None:
    codec, _ = server()
    codec.feed(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = codec.encode_headers(HeaderMap([(b":status", b"200"), (b"content-length", b"5")]), False, close=False)
    assert b"content-length: 5" in head and b"chunked" not in head
    assert codec.encode_data(b"hello", True) == b""


def test_http10_client_gets_close_delimited_body() -> None:
    codec, _ = server()
    codec.feed(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
    head = codec.encode_headers(HeaderMap([(b":status", b"200")]), False, close=False)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in head
    assert codec.encode_data(b"raw", True) == b"raw"


class ClientEvents:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_response_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        self.events.append(("headers", headers.items()[:], end_stream))

    def on_response_data(self, data: bytes, end_stream: bool) -> None:
        self.events.append(("data", data, end_stream))

    def on_response_trailers(self, trailers: HeaderMap) -> None:
        self.events.append(("trailers", trailers.items()[:]))


def test_request_encoding_puts_host_first_and_frames_the_body() -> None:
    codec = Http1ClientCodec(ClientEvents())
    request = HeaderMap([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x"),
                         (b":authority", b"svc"), (b"x-a", b"1")])
    assert codec.encode_request(request, False) == (
        b"POST /x HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n")
    assert codec.encode_data(b"hi", True) == b"2\r\nhi\r\n0\r\n\r\n"
    get = HeaderMap([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"svc")])
    assert codec.encode_request(get, True) == b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n"


def test_response_parsing_delivers_body_with_end_stream() -> None:
    sink = ClientEvents()
    codec = Http1ClientCodec(sink)
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc")
    assert sink.events == [("headers", [(b":status", b"200"), (b"content-length", b"3"), (b"x-a", b"b")], False),
                           ("data", b"abc", True)]
    assert codec.keep_alive and codec.response_ended


def test_response_split_across_reads() -> None:
    sink = ClientEvents()
    codec = Http1ClientCodec(sink)
    codec.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab")
    codec.feed(b"cd\r\n0\r\n\r\n")
    body = b"".join(event[1] for event in sink.events if event[0] == "data")
    assert body == b"abcd" and sink.events[-1][2] is True


def test_head_response_ends_at_headers() -> None:
    sink = ClientEvents()
    codec = Http1ClientCodec(sink)
    codec.encode_request(HeaderMap([(b":method", b"HEAD"), (b":path", b"/"), (b":authority", b"h")]), True)
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert sink.events == [("headers", [(b":status", b"200"), (b"content-length", b"10")], True)]
    codec.encode_request(HeaderMap([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"h")]), True)
    codec.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert sink.events[-1][2] is True


def test_close_delimited_response_ends_at_eof() -> None:
    sink = ClientEvents()
    codec = Http1ClientCodec(sink)
    codec.feed(b"HTTP/1.1 200 OK\r\n\r\npartial")
    assert not codec.keep_alive
    assert codec.eof()
    assert sink.events[-1] == ("data", b"", True)


def test_interim_100_continue_is_skipped() -> None:
    sink = ClientEvents()
    codec = Http1ClientCodec(sink)
    codec.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert sink.events == [("headers", [(b":status", b"200"), (b"content-length", b"0")], True)]


def test_headers_of_each_response_stay_apart() -> None:
    """Interim responses, HEAD answers and trailers never leak into the next response's headers."""
    sink = ClientEvents()
    codec = Http1ClientCodec(sink)
    get = HeaderMap([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"h")])
    codec.encode_request(get, True)
    codec.feed(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n")
    codec.encode_request(HeaderMap([(b":method", b"HEAD"), (b":path", b"/"), (b":authority", b"h")]), True)
    codec.feed(b"HTTP/1.1 200 OK\r\nX-B: 2\r\nContent-Length: 5\r\n\r\n")
    codec.encode_request(get, True)
    codec.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-C: 3\r\n\r\n1\r\na\r\n0\r\nX-T: t\r\n\r\n")
    codec.encode_request(get, True)
    codec.feed(b"HTTP/1.1 200 OK\r\nX-D: 4\r\nContent-Length: 1\r\n\r\nb")
    assert [event[1] for event in sink.events if event[0] == "headers"] == [
        [(b":status", b"200"), (b"x-a", b"1"), (b"content-length", b"0")],
        [(b":status", b"200"), (b"x-b", b"2"), (b"content-length", b"5")],
        [(b":status", b"200"), (b"transfer-encoding", b"chunked"), (b"x-c", b"3")],
        [(b":status", b"200"), (b"x-d", b"4"), (b"content-length", b"1")],
    ]
    assert [event for event in sink.events if event[0] == "trailers"] == [("trailers", [(b"x-t", b"t")])]
    assert sink.events[-1] == ("data", b"b", True)
