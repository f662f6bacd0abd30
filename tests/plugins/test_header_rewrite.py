"""plugins/header_rewrite, source and compiled module held to the same expectations."""

from __future__ import annotations

import pytest

from sdk.testing import PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("header_rewrite"))

CONFIG = config({
    "request": {
        "remove": ["x-debug"],
        "rename": {"x-user": "x-forwarded-user"},
        "set": {"x-env": "prod", "accept": ["text/html", "application/json"]},
        "add": {"x-trace": ["a", "b"]},
    },
    "response": {"remove": ["server"], "set": {"cache-control": "no-store"}, "add": {"x-served-by": "wasmesh"}},
})


def test_request_edits_apply_in_order(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, [
        (":path", "/"), ("x-debug", "1"), ("x-user", "ann"), ("x-user", "bob"), ("x-env", "dev"), ("x-keep", "k"),
    ], True)
    assert host.current_request_headers(stream) == [
        (":path", "/"),
        ("x-keep", "k"),
        ("x-forwarded-user", "ann"),
        ("x-forwarded-user", "bob"),
        ("x-env", "prod"),
        ("accept", "text/html,application/json"),  # an inline header: Envoy joins its values
        ("x-trace", "a"),
        ("x-trace", "b"),
    ]


def test_response_edits(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/"}, True)
    host.call_on_response_headers(stream, [(":status", "200"), ("server", "nginx"), ("cache-control", "max-age=60")], True)
    assert host.current_response_headers(stream) == [
        (":status", "200"), ("cache-control", "no-store"), ("x-served-by", "wasmesh"),
    ]


def test_rename_of_an_absent_header_changes_nothing(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"request": {"rename": {"x-a": "x-b"}}}))
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/", "x-c": "1"}, True)
    assert host.current_request_headers(stream) == [(":path", "/"), ("x-c", "1")]


def test_empty_configuration_passes_everything(plugin: PluginLoader) -> None:
    host = plugin()
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":path": "/", "x-a": "1"}, True)
    assert host.current_request_headers(stream) == [(":path", "/"), ("x-a", "1")]
    assert host.logs() == []


@pytest.mark.parametrize(("bad", "message"), [
    ({"request": {"remove": [":path"]}}, "request.remove: pseudo-header :path cannot be edited"),
    ({"request": {"set": {"bad name": "v"}}}, "request.set.bad name: 'bad name' is not a valid header name"),
    ({"request": {"add": {"x-a": 1}}}, "request.add.x-a: expected a string or a list of strings"),
    ({"request": {"replace": {}}}, "request.replace: unknown field (use remove, rename, set or add)"),
    ({"requests": {}}, "requests: unknown field (use request or response)"),
    ({"response": {"rename": {"x-a": 3}}}, "response.rename.x-a: expected the new header name"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"header_rewrite: {message}"]


def test_malformed_json_is_rejected(plugin: PluginLoader) -> None:
    host = plugin(plugin_config="{", start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == ["header_rewrite: invalid JSON at offset 1: unexpected end"]
