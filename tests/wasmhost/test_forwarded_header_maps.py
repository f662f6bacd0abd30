"""A header map closes once it is forwarded (Envoy clears its map pointer on Continue).

Driven through ``HttpStream`` with the ``late_headers`` C plugin, which touches the request
headers from ``proxy_on_request_body`` and the response headers from ``proxy_on_response_body``
and logs every status. Envoy 1.40's answers, measured by ``tests/e2e/test_sidecar_late_headers``:
value and size BAD_ARGUMENT (2), pairs OK and empty, every write BAD_ARGUMENT, for headers
and trailers alike; the header maps are readable again in ``proxy_on_log``; a stream paused
in its header callback keeps its map open until it is resumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import CapturingEnvironment
from wasmhost import HttpStream, Plugin, PluginSpec, ResumeStream, Runtime, SetTickPeriod
from wasmhost._filter_status import (
    DATA_CONTINUE,
    HEADERS_CONTINUE,
    HEADERS_STOP_ALL_WATERMARK,
    TRAILERS_CONTINUE,
)

CLOSED_REQUEST = "request_body get=2:- pairs=0 size=2 add=2 replace=2 remove=2"
RESPONSE_HEADERS = "response_headers request_get=2 request_add=2 trailers_get=2 trailers_add=2"
CLOSED_RESPONSE = "response_body get=2:- pairs=0 size=2 add=2 replace=2 remove=2 request_add=2"
#: what the plugin logs once the request has gone: the response callbacks, then on_log
AFTER_REQUEST = [RESPONSE_HEADERS, CLOSED_RESPONSE, "log request=0:original response=0:backend"]


@pytest.fixture
def running() -> Iterator[tuple[Plugin, CapturingEnvironment]]:
    environment = CapturingEnvironment()
    runtime = Runtime(environment=environment)
    try:
        plugin = Plugin(runtime, runtime.compile(plugin_path("late_headers").read_bytes()),
                        PluginSpec(name="late_headers"))
        plugin.start()
        environment.take()
        yield plugin, environment
    finally:
        runtime.close()


def request(mode: str) -> list[tuple[bytes, bytes]]:
    return [(b":authority", b"example.com"), (b":path", b"/"), (b":method", b"POST"),
            (b"x-client", b"original"), (b"x-remove-me", b"1"), (b"x-mode", mode.encode())]


def plugin_lines(environment: CapturingEnvironment) -> list[str]:
    return [line["message"].removeprefix("late_headers: ") for line in environment.take()]


def respond(stream: HttpStream) -> list[tuple[bytes, bytes]]:
    """Response headers (continued), a one-chunk body, then the log phase."""
    response = [(b":status", b"200"), (b"x-upstream", b"backend"), (b"x-drop", b"1")]
    assert stream.on_response_headers(response, False) == HEADERS_CONTINUE
    assert stream.on_response_body(b"hi", True).status == DATA_CONTINUE
    stream.finish()
    return response


def test_continued_maps_refuse_reads_and_writes_until_log_time(
        running: tuple[Plugin, CapturingEnvironment]) -> None:
    plugin, environment = running
    headers = request("continue")
    before = list(headers)
    stream = plugin.new_http_stream()
    assert stream.on_request_headers(headers, False) == HEADERS_CONTINUE
    assert stream.on_request_body(b"body", True).status == DATA_CONTINUE
    response = respond(stream)
    assert headers == before  # nothing the plugin tried after Continue reached the forwarded block
    assert response == [(b":status", b"200"), (b"x-upstream", b"backend"), (b"x-drop", b"1")]
    assert plugin_lines(environment) == [CLOSED_REQUEST, *AFTER_REQUEST]


def test_a_paused_map_stays_open_until_the_stream_resumes(running: tuple[Plugin, CapturingEnvironment]) -> None:
    plugin, environment = running
    headers = request("pause")
    stream = plugin.new_http_stream()
    assert stream.on_request_headers(headers, False) == HEADERS_STOP_ALL_WATERMARK
    assert any(isinstance(command, SetTickPeriod) for command in plugin.runtime.take_commands())
    plugin.on_tick()  # the plugin adds a header to the held map, then resumes the stream
    assert any(isinstance(command, ResumeStream) for command in plugin.runtime.take_commands())
    assert (b"x-held-add", b"tick") in headers
    assert stream.resume_body(request=True) == b""  # the embedder forwards the headers now
    forwarded = list(headers)
    assert stream.on_request_body(b"body", True).status == DATA_CONTINUE
    respond(stream)
    assert headers == forwarded
    assert plugin_lines(environment) == ["tick held_add=0", CLOSED_REQUEST, *AFTER_REQUEST]


def test_continued_trailers_are_closed_to_later_callbacks(running: tuple[Plugin, CapturingEnvironment]) -> None:
    plugin, environment = running
    trailers = [(b"x-trailer", b"t")]
    stream = plugin.new_http_stream()
    assert stream.on_request_headers(request("continue"), False) == HEADERS_CONTINUE
    assert stream.on_request_body(b"body", False).status == DATA_CONTINUE  # not the end: no host call
    assert stream.on_request_trailers(trailers) == TRAILERS_CONTINUE
    respond(stream)
    assert trailers == [(b"x-trailer", b"t")]
    assert plugin_lines(environment) == AFTER_REQUEST
