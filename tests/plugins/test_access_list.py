"""plugins/access_list, source and compiled module held to the same expectations."""

from __future__ import annotations

import pytest

from sdk.testing import Action, PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("access_list"))

CONFIG = config({
    "allow_methods": ["get", "HEAD", "POST"],
    "deny_methods": ["TRACE"],
    "deny_paths": [{"prefix": "/admin"}, {"suffix": ".php"}],
    "allow_paths": [{"prefix": "/api/"}, {"exact": "/healthz"}],
    "deny_body": "nope\n",
})


def send(host, method: str, path: str):  # noqa: ANN001, ANN201 - a test helper
    stream = host.initialize_http_context()
    action = host.call_on_request_headers(stream, {":method": method, ":path": path}, True)
    return action, host.local_response(stream)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/orders"), ("POST", "/api/orders?x=/admin"), ("HEAD", "/healthz"), ("GET", "/healthz?probe=1"),
])
def test_allowed_requests_continue(plugin: PluginLoader, method: str, path: str) -> None:
    host = plugin(plugin_config=CONFIG)
    assert send(host, method, path) == (Action.CONTINUE, None)
    assert host.logs() == []


@pytest.mark.parametrize(("method", "path", "why"), [
    ("GET", "/admin/users", "path /admin/users matches prefix /admin"),
    ("GET", "/api/x.php", "path /api/x.php matches suffix .php"),
    ("GET", "/other", "path /other not allowed"),
    ("GET", "/healthz/deep", "path /healthz/deep not allowed"),
    ("TRACE", "/api/x", "method TRACE"),
])
def test_denied_paths_get_the_configured_reply(plugin: PluginLoader, method: str, path: str, why: str) -> None:
    host = plugin(plugin_config=CONFIG)
    action, reply = send(host, method, path)
    assert action is Action.PAUSE
    assert reply is not None and (reply.status, reply.headers, reply.body) == (403, [], b"nope\n")
    assert host.logs("info") == [f"access_list: denied ({why})"]


def test_a_method_outside_the_allow_list_gets_405_with_allow(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    action, reply = send(host, "DELETE", "/api/orders/1")
    assert action is Action.PAUSE
    assert reply is not None and (reply.status, reply.headers) == (405, [("allow", "GET, HEAD, POST")])


def test_deny_lists_win_over_allow_lists(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"allow_paths": [{"prefix": "/"}], "deny_paths": [{"exact": "/secret"}],
                                        "deny_status": 404}))
    assert send(host, "GET", "/public")[0] is Action.CONTINUE
    _, reply = send(host, "GET", "/secret")
    assert reply is not None and (reply.status, reply.body) == (404, b"access denied\n")


def test_without_configuration_everything_passes(plugin: PluginLoader) -> None:
    host = plugin()
    assert send(host, "PATCH", "/anything") == (Action.CONTINUE, None)


@pytest.mark.parametrize(("bad", "message"), [
    ({"allow_paths": [{"regex": ".*"}]}, "allow_paths[0].regex: unknown matcher (use prefix, exact or suffix)"),
    ({"deny_paths": ["/admin"]}, "deny_paths[0]: expected one of prefix, exact or suffix"),
    ({"deny_paths": {"prefix": "/a"}}, 'deny_paths: expected a list of {"prefix"|"exact"|"suffix": path} objects'),
    ({"allow_methods": ["GET /"]}, "allow_methods: 'GET /' is not an HTTP method"),
    ({"deny_status": 99}, "deny_status: expected an HTTP status from 200 to 599"),
    ({"deny": []}, "deny: unknown field (use allow_methods, deny_methods, allow_paths, deny_paths, deny_status, "
                   "deny_body)"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"access_list: {message}"]
