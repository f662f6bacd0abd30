"""plugins/route_metrics, source and compiled module held to the same expectations."""

from __future__ import annotations

import pytest

from sdk.testing import HostEmulator, PluginLoader, PluginStartError, plugin_fixture
from tests.plugins._paths import config, source

plugin = plugin_fixture(source("route_metrics"))

CONFIG = config({
    "prefix": "shop",
    "routes": [
        {"name": "orders", "prefix": "/orders", "methods": ["get", "POST"]},
        {"name": "health", "exact": "/healthz"},
    ],
})


def request(host: HostEmulator, method: str, path: str, status: str | None, duration_ms: int = 0) -> None:
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":method": method, ":path": path}, True)
    host.advance_time(duration_ms)
    if status is not None:
        host.call_on_response_headers(stream, {":status": status}, True)
    host.complete_http_context(stream)


def counters(host: HostEmulator, route: str) -> dict[str, object]:
    base = f"shop_{route}_"
    return {k.removeprefix(base): v for k, v in host.metrics().items() if k.startswith(base)}


def test_every_route_gets_its_metrics_defined_at_start(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    assert sorted(host.metrics()) == sorted(
        f"shop_{route}_{metric}"
        for route in ("orders", "health", "other")
        for metric in ("requests_total", "requests_active", "duration_ms",
                       "responses_1xx_total", "responses_2xx_total", "responses_3xx_total",
                       "responses_4xx_total", "responses_5xx_total")
    )


def test_requests_are_counted_per_route_and_status_class(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    request(host, "GET", "/orders/7?full=1", "200", 12)
    request(host, "POST", "/orders", "503", 30)
    request(host, "GET", "/healthz", "204")
    request(host, "DELETE", "/orders/7", "404")  # method not listed: falls to the default route
    request(host, "GET", "/healthz/x", None)  # no response: counted as a request only
    orders = counters(host, "orders")
    assert orders["requests_total"] == 2
    assert orders["responses_2xx_total"] == 1 and orders["responses_5xx_total"] == 1
    assert orders["requests_active"] == 0
    assert orders["duration_ms"] == {"count": 2, "sum": 42}
    assert counters(host, "health")["requests_total"] == 1
    other = counters(host, "other")
    assert (other["requests_total"], other["responses_4xx_total"], other["duration_ms"]) == (
        2, 1, {"count": 2, "sum": 0}
    )


def test_the_gauge_counts_requests_in_flight(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=CONFIG)
    streams = [host.initialize_http_context() for _ in range(3)]
    for stream in streams:
        host.call_on_request_headers(stream, {":method": "GET", ":path": "/orders"}, True)
    assert host.metric("shop_orders_requests_active") == 3
    host.complete_http_context(streams[0])
    assert host.metric("shop_orders_requests_active") == 2


def test_without_a_default_route_unmatched_requests_are_not_counted(plugin: PluginLoader) -> None:
    host = plugin(plugin_config=config({"routes": [{"name": "api", "prefix": "/api"}], "default_route": ""}))
    request(host, "GET", "/web", "200")
    request(host, "GET", "/api/x", "200")
    assert host.metrics() == {
        "route_api_requests_total": 1, "route_api_requests_active": 0,
        "route_api_duration_ms": {"count": 1, "sum": 0},
        "route_api_responses_1xx_total": 0, "route_api_responses_2xx_total": 1, "route_api_responses_3xx_total": 0,
        "route_api_responses_4xx_total": 0, "route_api_responses_5xx_total": 0,
    }


@pytest.mark.parametrize(("bad", "message"), [
    ({}, "routes: expected a list of routes"),
    ({"routes": [{"name": "a.b", "prefix": "/"}]}, "routes[0].name: expected letters, digits and underscores"),
    ({"routes": [{"name": "a"}]}, "routes[0]: give exactly one of exact, prefix or suffix (a string)"),
    ({"routes": [{"name": "a", "prefix": "/"}, {"name": "a", "exact": "/"}]}, "routes[1].name: 'a' is used twice"),
    ({"routes": [{"name": "a", "prefix": "/", "method": "GET"}]},
     "routes[0].method: unknown field (use name, exact, prefix, suffix, methods)"),
    ({"routes": [], "prefix": "my-shop"}, "prefix: expected letters, digits and underscores"),
    ({"routes": [{"name": "a", "prefix": "/"}], "default_route": "a"}, "default_route: 'a' is also a configured route"),
])
def test_a_bad_configuration_is_rejected_naming_the_field(plugin: PluginLoader, bad: object, message: str) -> None:
    host = plugin(plugin_config=config(bad), start=False)
    with pytest.raises(PluginStartError):
        host.start_plugin()
    assert host.logs("error") == [f"route_metrics: {message}"]
