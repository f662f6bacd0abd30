"""plugins/body_rewrite, source and compiled module held to the same expectations."""

from __future__ import annotations

import pytest

from sdk.testing import Action, HostEmulator, PluginLoader, PluginStartError, StreamType, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("body_rewrite"))

CONFIG = config({
    "request": [{"from": "http://internal", "to": "https://public.example"}, {"from": "a", "to": "A"}],
    "response": [{"from": "secret", "to": "******"}],
    "content_types": ["text/", "application/json"],
})


def post(host: HostEmulator, chunks: list[bytes], headers: dict[str, str]) -> tuple[int, list[Action]]:
    stream = host.initialize_http_context()
    total = str(sum(len(c) for c in chunks))
    request = {":method": "POST", ":path": "/", "content-length": total, **headers}
    assert host.call_on_request_headers(stream, request, False) is Action.CONTINUE
    actions = [host.call_on_request_body(stream, chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks)]
    return stream, actions


def test_a_request_body_is_buffered_and_rewritten(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    stream, actions = post(host, [b"see http://inte", b"rnal/x and a"], {"content-type": "text/plain"})
    assert actions == [Action.PAUSE, Action.CONTINUE]
    assert host.current_request_body(stream) == b"see https://public.exAmple/x And A"  # rules apply in order
    # the length changed: content-length went as the headers passed, the proxy frames the body
    assert host.current_request_headers(stream) == [(":method", "POST"), (":path", "/"), ("content-type", "text/plain")]
    assert host.logs("debug") == ["body_rewrite: request body 27 -> 34 bytes"]


def test_same_length_rules_keep_content_length(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/"}, True)
    host.call_on_response_headers(stream, {":status": "200", "content-type": "application/json",
                                           "content-length": "22"}, False)
    assert host.call_on_response_body(stream, b'{"token": "secret", ', False) is Action.PAUSE
    assert host.call_on_response_body(stream, b"}", True) is Action.CONTINUE
    assert host.current_response_body(stream) == b'{"token": "******", }'
    assert ("content-length", "22") in host.current_response_headers(stream)


@pytest.mark.parametrize("headers", [
    {"content-type": "image/png"},
    {"content-type": "text/plain", "content-encoding": "gzip"},
    {},
])
def test_other_content_is_left_alone(plugin: PluginLoader, headers: dict[str, str]) -> None:
    host = plugin(plugin_config=CONFIG)
    stream, actions = post(host, [b"a http://internal"], headers)
    assert actions == [Action.CONTINUE]
    assert host.current_request_body(stream) == b"a http://internal"
    assert ("content-length", "17") in host.current_request_headers(stream)


def test_any_type_without_a_content_type_list(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"request": [{"from": "x", "to": "yy"}]}))
    stream, actions = post(host, [b"xax"], {"content-type": "application/octet-stream"})
    assert actions == [Action.CONTINUE]
    assert host.current_request_body(stream) == b"yyayy"


def test_a_body_over_the_limit_passes_unchanged(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"request": [{"from": "a", "to": "b"}], "max_body_bytes": 8}))
    stream, actions = post(host, [b"aaaa", b"aaaa", b"aaaa"], {})
    assert actions == [Action.PAUSE, Action.PAUSE, Action.CONTINUE]
    assert host.current_request_body(stream) == b"a" * 12
    assert not host.is_paused(stream, StreamType.HTTP_REQUEST)
    assert host.logs("warn") == ["body_rewrite: request body over 8 bytes; sent as it is"]


def test_no_rules_no_buffering(plugin: PluginLoader) -> None:
    host = plugin()
    stream, actions = post(host, [b"one", b"two"], {"content-type": "text/plain"})
    assert actions == [Action.CONTINUE, Action.CONTINUE]
    assert host.current_request_body(stream) == b"onetwo"


@pytest.mark.parametrize(("bad", "message"), [
    ({"request": {"from": "a", "to": "b"}}, 'request: expected a list of {"from", "to"} objects'),
    ({"response": [{"from": "a"}]}, "response[0]: expected strings from and to"),
    ({"response": [{"from": "", "to": "b"}]}, "response[0].from: may not be empty"),
    ({"response": [{"from": "a", "to": "b", "count": 1}]}, "response[0].count: unknown field (use from and to)"),
    ({"content_types": "text/"}, "content_types: expected a list of content-type prefixes"),
    ({"max_body_bytes": 0}, "max_body_bytes: expected a positive integer"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"body_rewrite: {message}"]
