"""HTTP/1.1 trailers on and off (``enable_trailers``): Envoy's codec drops them in both directions when off."""

from __future__ import annotations

import pytest

from tests.wasmhost.sidecar.test_h1 import ClientEvents, server
from wasmhost.sidecar import HeaderMap
from wasmhost.sidecar._h1 import Http1ClientCodec

CHUNKED_REQUEST = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\n\r\n")
CHUNKED_RESPONSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: t\r\n\r\n"
TRAILERS = HeaderMap([(b"x-t", b"t"), (b":pseudo", b"never")])


@pytest.mark.parametrize("enabled", [True, False])
def test_request_trailers_reach_the_stream_only_when_enabled(enabled: bool) -> None:
    codec, sink = server()
    codec.trailers = enabled
    codec.feed(CHUNKED_REQUEST)
    if enabled:
        assert sink.events[-2:] == [("data", b"abc", False), ("trailers", [(b"x-checksum", b"42")])]
    else:
        assert sink.events[-1] == ("data", b"abc", True)
        assert not any(event[0] == "trailers" for event in sink.events)


@pytest.mark.parametrize(("enabled", "wire"), [(True, b"0\r\nx-t: t\r\n\r\n"), (False, b"0\r\n\r\n")])
def test_response_trailers_are_written_only_when_enabled(enabled: bool, wire: bytes) -> None:
    codec, _ = server()
    codec.trailers = enabled
    codec.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    codec.encode_headers(HeaderMap([(b":status", b"200")]), False, close=False)
    assert codec.encode_trailers(TRAILERS) == wire


@pytest.mark.parametrize("enabled", [True, False])
def test_upstream_side_follows_the_clusters_setting(enabled: bool) -> None:
    sink = ClientEvents()
    codec = Http1ClientCodec(sink)
    codec.trailers = enabled
    request = HeaderMap([(b":method", b"POST"), (b":path", b"/"), (b":authority", b"svc")])
    codec.encode_request(request, False)
    assert codec.encode_trailers(TRAILERS) == (b"0\r\nx-t: t\r\n\r\n" if enabled else b"0\r\n\r\n")
    codec.feed(CHUNKED_RESPONSE)
    if enabled:
        assert sink.events[-2:] == [("data", b"hi", False), ("trailers", [(b"x-t", b"t")])]
    else:
        assert sink.events[-1] == ("data", b"hi", True)
