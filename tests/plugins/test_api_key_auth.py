"""plugins/api_key_auth, source and compiled module held to the same expectations."""

from __future__ import annotations

import pytest

from sdk.testing import Action, PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("api_key_auth"))

KEYS = [{"client": "mobile", "key": "k-9f3a"}, {"client": "partner", "key": "k 77/d0"}]
CONFIG = config({"keys": KEYS, "query_param": "api_key", "forward_client_header": "x-api-client"})
HIDING = config({"keys": KEYS, "query_param": "api_key", "hide_credentials": True})


def send(host, path: str, headers: dict[str, str] | None = None):  # noqa: ANN001, ANN201 - a test helper
    stream = host.initialize_http_context()
    action = host.call_on_request_headers(stream, {":path": path, **(headers or {})}, True)
    return stream, action, host.local_response(stream)


@pytest.mark.parametrize(("path", "headers", "client"), [
    ("/v1/items", {"x-api-key": "k-9f3a"}, "mobile"),
    ("/v1/items?api_key=k-9f3a", {}, "mobile"),
    ("/v1/items?x=1&api_key=k+77%2Fd0", {}, "partner"),
    ("/v1/items?api_key=wrong", {"x-api-key": "k-9f3a"}, "mobile"),  # the header is looked at first
])
def test_a_known_key_admits_and_names_the_client(plugin: PluginLoader, path: str, headers: dict[str, str],
                                                  client: str) -> None:
    host = plugin(plugin_config=CONFIG)
    stream, action, reply = send(host, path, headers)
    assert (action, reply) == (Action.CONTINUE, None)
    assert host.current_request_headers(stream)[-1] == ("x-api-client", client)
    assert host.current_request_headers(stream)[0] == (":path", path)  # not hidden by default


def test_no_key_is_401_with_a_challenge(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    _, action, reply = send(host, "/v1/items?other=1")
    assert action is Action.PAUSE
    assert reply is not None
    assert (reply.status, reply.headers, reply.body) == (401, [("www-authenticate", "ApiKey")], b"missing API key\n")
    assert host.logs("info") == ["api_key_auth: missing API key"]


@pytest.mark.parametrize(("path", "headers"), [
    ("/", {"x-api-key": "k-9f3b"}),
    ("/?api_key=", {}),
    ("/?api_key=K-9F3A", {}),
])
def test_an_unknown_key_is_403(plugin: PluginLoader, path: str, headers: dict[str, str]) -> None:
    host = plugin(plugin_config=CONFIG)
    _, action, reply = send(host, path, headers)
    assert action is Action.PAUSE
    assert reply is not None and (reply.status, reply.body) == (403, b"invalid API key\n")
    assert host.logs("info") == ["api_key_auth: unknown API key"]


@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("/a?api_key=k-9f3a", {}, [(":path", "/a")]),
    ("/a?x=1&api_key=k-9f3a&y=2", {}, [(":path", "/a?x=1&y=2")]),
    ("/a?x=1", {"x-api-key": "k-9f3a", "x-other": "o"}, [(":path", "/a?x=1"), ("x-other", "o")]),
])
def test_hide_credentials_removes_the_key(plugin: PluginLoader, path: str, headers: dict[str, str],
                                          expected: list[tuple[str, str]]) -> None:
    host = plugin(plugin_config=HIDING)
    stream, action, _ = send(host, path, headers)
    assert action is Action.CONTINUE
    assert host.current_request_headers(stream) == expected


def test_a_custom_header_only(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"keys": KEYS, "header": "Authorization-Key"}))
    assert send(host, "/", {"authorization-key": "k-9f3a"})[1] is Action.CONTINUE
    assert send(host, "/?api_key=k-9f3a")[1] is Action.PAUSE


@pytest.mark.parametrize(("bad", "message"), [
    ({}, 'keys: expected a non-empty list of {"client", "key"} objects'),
    ({"keys": [{"client": "a"}]}, "keys[0]: expected non-empty strings client and key"),
    ({"keys": [{"client": "a", "key": "k"}, {"client": "b", "key": "k"}]},
     "keys[1].key: the same key is configured twice"),
    ({"keys": KEYS, "header": ":path"}, "header: expected a header name"),
    ({"keys": KEYS, "header": ""}, "header: give a header, a query_param, or both"),
    ({"keys": KEYS, "query": "k"}, "query: unknown field (use keys, header, query_param, forward_client_header, "
                                   "hide_credentials)"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"api_key_auth: {message}"]
