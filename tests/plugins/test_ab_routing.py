"""plugins/ab_routing, source and compiled module held to the same expectations."""

from __future__ import annotations

import pytest

from sdk.testing import Action, HostEmulator, PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("ab_routing"))

CONFIG = config({
    "header": "X-Route-Variant",
    "rules": [
        {"header": "x-user-group", "exact": "beta", "variant": "b"},
        {"header": "cookie", "contains": "ab=b", "variant": "b"},
        {"header": "x-canary", "present": True, "variant": "canary"},
        {"header": "user-agent", "prefix": "curl/", "variant": "a"},
    ],
    "split": {"header": "x-user-id", "weights": {"a": 90, "b": 10}},
    "default": "a",
})


def fnv1a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def route(host: HostEmulator, headers: dict[str, str]) -> tuple[str | None, int]:
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {":path": "/", **headers}, True) is Action.CONTINUE
    return dict(host.current_request_headers(stream)).get("x-route-variant"), host.route_cache_clears(stream)


@pytest.mark.parametrize(("headers", "variant", "why"), [
    ({"x-user-group": "beta", "x-canary": "1"}, "b", "rule 0"),
    ({"x-user-group": "beta2", "cookie": "x=1; ab=b"}, "b", "rule 1"),
    ({"x-canary": ""}, "canary", "rule 2"),
    ({"user-agent": "curl/8.0", "x-route-variant": "b"}, "a", "rule 3"),  # what the client sent is replaced
    ({}, "a", "default"),
])
def test_rules_decide_in_order_then_the_default(plugin: PluginLoader, headers: dict[str, str], variant: str,
                                                why: str) -> None:
    host = plugin(plugin_config=CONFIG)
    assert route(host, headers) == (variant, 1)
    assert host.logs("debug") == [f"ab_routing: variant {variant} ({why})"]


def test_the_split_is_sticky_and_weighted(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    users = [f"user-{i}" for i in range(200)]
    seen = [route(host, {"x-user-id": u})[0] for u in users]
    expected = ["a" if fnv1a(u.encode()) % 100 < 90 else "b" for u in users]
    assert seen == expected
    assert 5 <= seen.count("b") <= 40  # the hash spreads users roughly by weight
    assert [route(host, {"x-user-id": u})[0] for u in users[:20]] == seen[:20]  # same user, same variant


def test_without_a_default_unmatched_requests_are_untouched(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"rules": [{"header": "x-g", "exact": "1", "variant": "b"}]}))
    assert route(host, {"x-g": "2"}) == (None, 0)
    assert route(host, {"x-g": "1"}) == ("b", 1)


def test_a_host_without_clear_route_cache_is_warned_about_once(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG, foreign_functions={"clear_route_cache": lambda _: (12, b"")})
    assert route(host, {}) == ("a", 0)
    assert route(host, {}) == ("a", 0)
    assert host.logs("warn") == [
        "ab_routing: the host cannot clear the route cache (proxy_call_foreign_function: UNIMPLEMENTED); routes see "
        "the header only where they are matched after this filter"
    ]


@pytest.mark.parametrize(("bad", "message"), [
    ({"rules": [{"header": "x", "variant": "b"}]}, "rules[0]: give exactly one of exact, prefix, contains, present"),
    ({"rules": [{"header": "x", "exact": "1", "prefix": "1", "variant": "b"}]},
     "rules[0]: give exactly one of exact, prefix, contains, present"),
    ({"rules": [{"header": "x", "present": "yes", "variant": "b"}]}, "rules[0].present: expected true or false"),
    ({"rules": [{"header": ":path", "exact": "/", "variant": "b"}]}, "rules[0].header: expected a header name"),
    ({"rules": [{"header": "x", "exact": "1", "variant": ""}]}, "rules[0].variant: expected a non-empty string"),
    ({"rules": [{"header": "x", "regex": "1", "variant": "b"}]},
     "rules[0].regex: unknown field (use header, variant and one of exact, prefix, contains, present)"),
    ({"split": {"header": "x-u", "weights": {"a": 0}}}, "split.weights: at least one weight must be positive"),
    ({"split": {"header": "x-u", "weights": {"a": -1}}}, "split.weights.a: expected a weight >= 0"),
    ({"split": {"weights": {"a": 1}}}, "split.header: expected a header name"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"ab_routing: {message}"]
