"""Conformance: ``local_reply`` (C) and the local-reply path of ``HttpStream``.

Envoy 1.40 (measured through ``tests/e2e``) runs a local reply sent from a request callback
through the same plugin's response callbacks: ``on_response_headers`` sees ``:status``, the
plugin's headers, ``content-length`` and ``content-type: text/plain``, and may still edit them;
``on_response_body`` sees the whole body with ``end_of_stream``. A reply sent from a response
callback is not run through the plugin again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import SendLocalReply
from wasmhost._filter_status import HEADERS_CONTINUE, HEADERS_STOP_ALL_WATERMARK
from wasmhost._http_stream import local_reply_headers


@pytest.fixture(scope="module")
def host() -> Iterator[ConformanceHost]:
    with ConformanceHost(plugin_path("local_reply")) as running:
        yield running


def test_request_with_x_deny_gets_the_plugins_403_and_never_reaches_upstream(host: ConformanceHost) -> None:
    result = host.request(headers=[("x-deny", "yes")], response_body="from upstream")
    assert result["upstream_request"] is None
    assert result["response"] == {
        "status": 403,
        "headers": [
            ["x-denied-by", "local_reply"],
            ["content-type", "text/plain"],
            ["content-length", "19"],
            ["x-local-reply-checked", "1"],  # on_response_headers ran for the local reply, as in Envoy
        ],
        "body": "access denied: yes\n",
    }
    assert result["logs"] == [{"level": "info", "message": "local_reply: denied status=0"}]


def test_request_without_x_deny_passes_unchanged(host: ConformanceHost) -> None:
    result = host.request(headers=[("x-other", "1")], response_headers=[("x-up", "1")], response_body="hi")
    assert result["upstream_request"]["headers"] == [
        [":authority", "example.com"], [":path", "/"], [":method", "GET"], [":scheme", "http"],
        ["x-other", "1"], ["x-forwarded-proto", "http"],
    ]  # fmt: skip
    assert result["response"] == {
        "status": 200,
        "headers": [["x-up", "1"], ["content-length", "2"], ["x-local-reply-checked", "1"]],
        "body": "hi",
    }
    assert result["logs"] == []


def test_denied_value_is_echoed_in_the_body(host: ConformanceHost) -> None:
    result = host.request(headers=[("x-deny", "token 42")])
    assert result["response"]["body"] == "access denied: token 42\n"


def test_http_stream_continues_the_response_callbacks_of_its_own_local_reply(host: ConformanceHost) -> None:
    """The sans-io contract behind the driver: only the callback that replied is stopped."""
    runtime = host.runtime
    runtime.take_commands()
    stream = host.plugin.new_http_stream()
    assert (
        stream.on_request_headers([(b":path", b"/"), (b"x-deny", b"1")], True) == HEADERS_STOP_ALL_WATERMARK
    )
    [reply] = [c for c in runtime.take_commands() if isinstance(c, SendLocalReply)]
    assert (reply.status, reply.details, reply.grpc_status) == (403, "denied_by_wasm", None)
    headers = local_reply_headers(reply)
    assert stream.on_response_headers(headers, False) == HEADERS_CONTINUE
    assert headers[-1] == (b"x-local-reply-checked", b"1")
    verdict = stream.on_response_body(reply.body, True)
    assert verdict.forward == reply.body
    assert runtime.take_commands() == []  # no second reply
    stream.finish()
    host.environment.take()


def test_local_reply_headers_match_envoys_shape() -> None:
    reply = SendLocalReply(None, 429, b"slow down", [(b"retry-after", b"1")], "x", None)  # type: ignore[arg-type]
    assert local_reply_headers(reply) == [
        (b":status", b"429"), (b"retry-after", b"1"), (b"content-length", b"9"), (b"content-type", b"text/plain"),
    ]  # fmt: skip
    typed = SendLocalReply(None, 403, b"{}", [(b"content-type", b"application/json")], "x", None)  # type: ignore[arg-type]
    assert local_reply_headers(typed)[-1] == (b"content-length", b"2")
    empty = SendLocalReply(None, 503, b"", [], "x", 14)  # type: ignore[arg-type]
    assert local_reply_headers(empty) == [(b":status", b"503")]  # the codec frames it later
