"""Conformance: ``headers`` (C) — header and trailer maps, and Envoy's header-map edit rules.

The plugin applies ``add|replace|remove request|response NAME [VALUE]`` lines from its
configuration, reports what it read (pairs, ``:path``, the absent-key status, the map size)
and round-trips the response map through get/set pairs. Edits follow Envoy 1.40's
HeaderMapImpl as measured through ``tests/e2e``: replace removes every occurrence and appends,
a second value of a header Envoy stores inline is joined with ",", pseudo-headers stay first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost._filter_status import HEADERS_CONTINUE, TRAILERS_CONTINUE

CONFIG = "\n".join(
    [
        "add request x-added one two",
        "replace request x-keep replaced",
        "remove request x-remove-me",
        "add request user-agent second",
        "add request x-multi b",
        "add response x-resp-added yes",
        "replace response x-up",
        "remove response x-gone",
        "add response content-type json",
        "bogus line here",
    ]
)


@pytest.fixture(scope="module")
def host() -> Iterator[ConformanceHost]:
    with ConformanceHost(plugin_path("headers"), configuration=CONFIG) as running:
        yield running


def test_unknown_config_lines_are_logged_and_skipped(host: ConformanceHost) -> None:
    assert host.startup_logs == [{"level": "warn", "message": "headers: ignoring config line 10"}]


def test_request_edits_follow_envoys_header_map(host: ConformanceHost) -> None:
    result = host.request(
        headers=[
            ("x-remove-me", "1"),
            ("x-keep", "v1"),
            ("user-agent", "first"),
            ("x-multi", "a"),
            ("x-keep", "v2"),
        ]
    )
    assert result["upstream_request"]["headers"] == [
        [":authority", "example.com"],
        [":path", "/"],
        [":method", "GET"],
        [":scheme", "http"],
        ["user-agent", "first,second"],  # inline in Envoy: values joined
        ["x-multi", "a"],
        ["x-forwarded-proto", "http"],
        ["x-added", "one two"],
        ["x-keep", "replaced"],  # replace = remove every occurrence, then append
        ["x-multi", "b"],  # not inline: a second entry
    ]


def test_request_callback_reports_what_it_read(host: ConformanceHost) -> None:
    result = host.request(path="/some/path?x=1", headers=[("x-a", "1")])
    assert result["logs"] == [
        {"level": "info", "message": "headers: request n=6 pairs=6 eos=1 path=/some/path?x=1"}
    ]
    response = dict((k, v) for k, v in result["response"]["headers"])
    assert response["x-echo-path"] == "/some/path?x=1"
    assert response["x-request-header-count"] == "6"
    assert response["x-absent-status"] == "1"  # NOT_FOUND under ABI 0.2.x
    # Envoy's byteSize: the sum of name and value lengths of the request map as it was read
    expected_size = sum(
        len(k) + len(v)
        for k, v in [(":authority", "example.com"), (":path", "/some/path?x=1"), (":method", "GET"),
                     (":scheme", "http"), ("x-a", "1"), ("x-forwarded-proto", "http")]
    )  # fmt: skip
    assert response["x-request-header-map-size"] == str(expected_size)


def test_response_edits_and_pairs_round_trip(host: ConformanceHost) -> None:
    result = host.request(response_headers=[("x-up", "1"), ("x-gone", "1"), ("content-type", "text")])
    headers = result["response"]["headers"]
    names = [k for k, _ in headers]
    assert "x-gone" not in names
    assert ["content-type", "text,json"] in headers
    assert ["x-up", ""] in headers  # replace without a value sets it empty
    assert names.index("x-up") > names.index("content-length")  # moved to the end by replace
    # the pairs read back were every header before this one, plus :status
    assert headers[-1] == ["x-pairs-roundtrip", str(len(headers))]
    assert result["response"]["status"] == 200


def test_trailers_are_edited_in_their_callbacks(host: ConformanceHost) -> None:
    stream = host.plugin.new_http_stream()
    assert stream.on_request_headers([(b":path", b"/")], False) == HEADERS_CONTINUE
    request_trailers = [(b"x-trailer-seen", b"old"), (b"grpc-x", b"1")]
    assert stream.on_request_trailers(request_trailers) == TRAILERS_CONTINUE
    assert request_trailers == [(b"grpc-x", b"1"), (b"x-trailer-seen", b"request")]
    assert stream.on_response_headers([(b":status", b"200")], False) == HEADERS_CONTINUE
    response_trailers = [(b"grpc-status", b"0")]
    assert stream.on_response_trailers(response_trailers) == TRAILERS_CONTINUE
    assert response_trailers == [(b"grpc-status", b"0"), (b"x-trailer-seen", b"response")]
    stream.finish()
    host.runtime.take_commands()
    host.environment.take()


def test_without_configuration_nothing_but_the_report_changes() -> None:
    with ConformanceHost(plugin_path("headers")) as plain:
        assert plain.startup_logs == []
        result = plain.request(headers=[("x-a", "1"), ("x-a", "2")], response_headers=[("x-up", "1")])
    assert result["upstream_request"]["headers"][4:6] == [["x-a", "1"], ["x-a", "2"]]
    names = [k for k, _ in result["response"]["headers"]]
    assert names == [
        "x-up", "content-length", "x-echo-path", "x-request-header-count", "x-request-header-map-size",
        "x-absent-status", "x-pairs-roundtrip",
    ]  # fmt: skip
