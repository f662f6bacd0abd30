"""Conformance: ``body`` (C) — request/response body buffers through the host.

The plugin buffers the request body (Pause until end of stream), upper-cases it in place
(``proxy_set_buffer_bytes`` replacing everything), and appends its configured suffix to the
response body (``proxy_set_buffer_bytes`` at the end). Reads past the end return OK with no
bytes, as in cpp-host; ``proxy_get_buffer_status`` reports the buffered size with flags 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost._filter_status import DATA_CONTINUE, DATA_STOP_BUFFER


@pytest.fixture(scope="module")
def host() -> Iterator[ConformanceHost]:
    with ConformanceHost(plugin_path("body"), configuration=" [sfx] ") as running:
        yield running


def test_request_body_reaches_the_upstream_upper_cased(host: ConformanceHost) -> None:
    result = host.request(method="POST", body="hello, World 42", response_body="ok")
    upstream = result["upstream_request"]
    assert upstream["body"] == "HELLO, WORLD 42"
    assert "content-length" not in [k for k, _ in upstream["headers"]]
    assert result["logs"] == [
        {
            "level": "info",
            # the final call sees the whole buffered body; the read past the end is OK and empty
            "message": "body: request size=15 status_size=15 flags=0 past_end_status=0 past_end_len=0",
        },
        {"level": "info", "message": "body: response size=0 append_status=0"},
    ]


def test_response_body_gets_the_configured_suffix_verbatim(host: ConformanceHost) -> None:
    result = host.request(response_body="upstream says hi")
    assert result["response"]["body"] == "upstream says hi [sfx] "
    assert "content-length" not in [k for k, _ in result["response"]["headers"]]


def test_empty_configuration_means_the_default_suffix() -> None:
    with ConformanceHost(plugin_path("body")) as plain:
        assert plain.request(response_body="x")["response"]["body"] == "x[body-plugin]"


def test_chunks_are_accumulated_while_the_plugin_pauses(host: ConformanceHost) -> None:
    stream = host.plugin.new_http_stream()
    stream.on_request_headers([(b":path", b"/"), (b"content-length", b"9")], False)
    first = stream.on_request_body(b"abc", False)
    second = stream.on_request_body(b"def", False)
    assert (first.status, first.forward) == (DATA_STOP_BUFFER, None)
    assert (second.status, second.forward) == (DATA_STOP_BUFFER, None)
    last = stream.on_request_body(b"ghi", True)
    assert (last.status, last.forward) == (DATA_CONTINUE, b"ABCDEFGHI")
    assert host.environment.take() == [
        {
            "level": "info",
            "message": "body: request size=9 status_size=9 flags=0 past_end_status=0 past_end_len=0",
        }
    ]
    stream.finish()
    host.runtime.take_commands()


def test_response_chunks_pass_through_until_the_last(host: ConformanceHost) -> None:
    stream = host.plugin.new_http_stream()
    stream.on_request_headers([(b":path", b"/")], True)
    stream.on_response_headers([(b":status", b"200")], False)
    assert stream.on_response_body(b"part1 ", False).forward == b"part1 "
    assert stream.on_response_body(b"part2", True).forward == b"part2 [sfx] "
    stream.finish()
    host.environment.take()
