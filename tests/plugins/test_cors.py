"""plugins/cors, source and compiled module held to the same expectations."""

from __future__ import annotations

import pytest

from sdk.testing import Action, HostEmulator, PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("cors"))

CONFIG = config({
    "allow_origins": ["https://app.example.com", "https://*.example.org"],
    "allow_methods": ["get", "POST", "put"],
    "allow_headers": ["Content-Type", "authorization"],
    "expose_headers": ["x-request-id"],
    "max_age": 600,
    "allow_credentials": True,
})


def preflight(host: HostEmulator, origin: str, method: str = "PUT") -> tuple[int, Action]:
    stream = host.initialize_http_context()
    action = host.call_on_request_headers(stream, {
        ":method": "OPTIONS", ":path": "/orders", "origin": origin,
        "access-control-request-method": method, "access-control-request-headers": "content-type",
    }, True)
    return stream, action


def exchange(host: HostEmulator, origin: str | None, response: list[tuple[str, str]]) -> list[tuple[str, str]]:
    stream = host.initialize_http_context()
    headers = {":method": "GET", ":path": "/orders"} | ({"origin": origin} if origin else {})
    assert host.call_on_request_headers(stream, headers, True) is Action.CONTINUE
    host.call_on_response_headers(stream, [(":status", "200"), *response], True)
    return host.current_response_headers(stream)


def test_a_preflight_from_an_allowed_origin_is_answered_locally(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    stream, action = preflight(host, "https://app.example.com")
    assert action is Action.PAUSE
    reply = host.local_response(stream)
    assert reply is not None
    assert (reply.status, reply.body) == (204, b"")
    assert reply.headers == [
        ("access-control-allow-origin", "https://app.example.com"),
        ("access-control-allow-methods", "GET, POST, PUT"),
        ("access-control-allow-headers", "content-type, authorization"),
        ("access-control-max-age", "600"),
        ("access-control-allow-credentials", "true"),
        ("vary", "origin"),
    ]
    assert host.logs("debug") == ["cors: preflight from https://app.example.com for PUT"]


@pytest.mark.parametrize("origin", ["https://a.example.org", "https://a.b.example.org", "HTTPS://APP.EXAMPLE.COM"])
def test_wildcard_subdomains_and_case(plugin: PluginLoader, origin: str) -> None:
    host = plugin(plugin_config=CONFIG)
    stream, action = preflight(host, origin)
    assert action is Action.PAUSE
    reply = host.local_response(stream)
    assert reply is not None and reply.headers[0] == ("access-control-allow-origin", origin)


@pytest.mark.parametrize("origin", ["https://example.org", "http://app.example.com", "https://evil.com",
                                    "https://app.example.com.evil.com", "https://.example.org"])
def test_a_preflight_from_another_origin_goes_upstream_untouched(plugin: PluginLoader, origin: str) -> None:
    host = plugin(plugin_config=CONFIG)
    stream, action = preflight(host, origin)
    assert action is Action.CONTINUE and host.local_response(stream) is None
    assert exchange(host, origin, [("x", "1")]) == [(":status", "200"), ("x", "1")]


def test_responses_to_allowed_origins_get_cors_headers(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    headers = exchange(host, "https://app.example.com", [("access-control-allow-origin", "*"), ("vary", "accept")])
    assert headers == [
        (":status", "200"),
        ("vary", "accept,origin"),  # vary is an inline header: Envoy joins its values
        ("access-control-allow-origin", "https://app.example.com"),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "x-request-id"),
    ]


def test_requests_without_origin_are_left_alone(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    assert exchange(host, None, [("x", "1")]) == [(":status", "200"), ("x", "1")]


def test_a_wildcard_without_credentials_answers_star(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"allow_origins": ["*"]}))
    stream, _ = preflight(host, "https://anyone.test", "POST")
    reply = host.local_response(stream)
    assert reply is not None and reply.headers == [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET, HEAD, POST"),
        ("vary", "origin"),
    ]
    assert exchange(host, "https://anyone.test", []) == [
        (":status", "200"), ("access-control-allow-origin", "*"), ("vary", "origin"),
    ]


@pytest.mark.parametrize(("bad", "message"), [
    ({}, "allow_origins: expected a non-empty list of origins"),
    ({"allow_origins": ["example.com"]}, "allow_origins: 'example.com' is not an origin (scheme://host[:port]) or *"),
    ({"allow_origins": ["*"], "allow_methods": ["GET, POST"]}, "allow_methods: 'GET, POST' is not a single name"),
    ({"allow_origins": ["*"], "max_age": -1}, "max_age: expected seconds (an integer >= 0)"),
    ({"allow_origins": ["*"], "origins": []}, "origins: unknown field (use allow_origins, allow_methods, "
                                              "allow_headers, expose_headers, max_age, allow_credentials)"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"cors: {message}"]
