"""Route table: virtual host selection and route matching, as Envoy does them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from wasmhost.sidecar import HeaderMap, load_plan
from wasmhost.sidecar._routes import ForwardAction, RouteTable


def table(virtual_hosts: list[dict[str, Any]], **route_config: Any) -> RouteTable:
    config = bootstrap(virtual_hosts=virtual_hosts, clusters=[cluster(n, 9) for n in ("a", "b", "c", "d")],
                       route_config_extra=route_config)
    return load_plan(yaml.safe_dump(config), "t", 1).listeners[0].hcm.route_table


def request(path: str = "/", authority: str = "example.com", **headers: str) -> HeaderMap:
    items = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path.encode()),
             (b":authority", authority.encode())]
    items += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return HeaderMap(items)


def cluster_for(routes: RouteTable, headers: HeaderMap, random_value: int = 0) -> str | None:
    route = routes.route(headers, random_value)
    if route is None:
        return None
    assert isinstance(route.action, ForwardAction)
    return route.action.cluster


def vhost(name: str, domains: list[str], cluster_name: str) -> dict[str, Any]:
    return {"name": name, "domains": domains, "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster_name}}]}


DOMAINS = table([
    vhost("exact", ["api.example.com"], "a"),
    vhost("suffix", ["*.example.com"], "b"),
    vhost("longer-suffix", ["*.eu.example.com"], "c"),
    vhost("prefix", ["api.*"], "d"),
    vhost("any", ["*"], "a"),
])


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("www.example.com", "suffix"),
        ("x.eu.example.com", "longer-suffix"),
        ("example.com", "any"),  # a wildcard matches at least one character
        ("api.other.org", "prefix"),
        ("api.example.com:8080", "prefix"),  # the port is part of the host by default
        ("nothing.org", "any"),
    ],
)
def test_virtual_host_selection(authority: str, expected: str) -> None:
    found = DOMAINS.virtual_host(authority.encode())
    assert found is not None and found.name == expected


def test_ignore_port_in_host_matching() -> None:
    routes = table([vhost("exact", ["api.example.com"], "a")], ignore_port_in_host_matching=True)
    assert routes.virtual_host(b"api.example.com:8080") is not None
    strict = table([vhost("exact", ["api.example.com"], "a")])
    assert strict.virtual_host(b"api.example.com:8080") is None


def routes_of(*routes: dict[str, Any]) -> RouteTable:
    return table([{"name": "v", "domains": ["*"], "routes": list(routes)}])


def test_prefix_sees_the_query_but_path_does_not() -> None:
    routes = routes_of(
        {"match": {"path": "/exact"}, "route": {"cluster": "a"}},
        {"match": {"prefix": "/exact?x"}, "route": {"cluster": "b"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "c"}},
    )
    assert cluster_for(routes, request("/exact?x=1")) == "a"
    assert cluster_for(routes, request("/exact")) == "a"
    assert cluster_for(routes, request("/exactly")) == "c"


def test_case_insensitive_prefix_and_path() -> None:
    routes = routes_of(
        {"match": {"prefix": "/API", "case_sensitive": False}, "route": {"cluster": "a"}},
        {"match": {"path": "/Login", "case_sensitive": False}, "route": {"cluster": "b"}},
    )
    assert cluster_for(routes, request("/api/v1")) == "a"
    assert cluster_for(routes, request("/LOGIN")) == "b"
    sensitive = routes_of({"match": {"prefix": "/API"}, "route": {"cluster": "a"}})
    assert cluster_for(sensitive, request("/api")) is None


def test_safe_regex_matches_the_whole_path_without_query() -> None:
    routes = routes_of({"match": {"safe_regex": {"regex": "/items/[0-9]+"}}, "route": {"cluster": "a"}})
    assert cluster_for(routes, request("/items/42?full=1")) == "a"
    assert cluster_for(routes, request("/items/42/more")) is None
    assert cluster_for(routes, request("/x/items/42")) is None


def test_path_separated_prefix() -> None:
    routes = routes_of({"match": {"path_separated_prefix": "/api"}, "route": {"cluster": "a"}})
    assert cluster_for(routes, request("/api")) == "a"
    assert cluster_for(routes, request("/api/users")) == "a"
    assert cluster_for(routes, request("/api?q=1")) == "a"
    assert cluster_for(routes, request("/apis")) is None


def test_header_matchers() -> None:
    routes = routes_of(
        {"match": {"prefix": "/", "headers": [{"name": "x-version", "string_match": {"exact": "2"}}]},
         "route": {"cluster": "a"}},
        {"match": {"prefix": "/", "headers": [{"name": "x-debug", "present_match": True}]},
         "route": {"cluster": "b"}},
        {"match": {"prefix": "/", "headers": [{"name": "x-tier", "string_match": {"prefix": "gold"},
                                               "invert_match": True},
                                              {"name": "x-tier", "present_match": True}]},
         "route": {"cluster": "c"}},
        {"match": {"prefix": "/", "headers": [{"name": "x-n", "range_match": {"start": 10, "end": 20}}]},
         "route": {"cluster": "d"}},
    )
    assert cluster_for(routes, request(x_version="2")) == "a"
    assert cluster_for(routes, request(x_version="3", x_debug="")) == "b"
    assert cluster_for(routes, request(x_tier="silver")) == "c"
    assert cluster_for(routes, request(x_tier="gold-plus")) is None
    assert cluster_for(routes, request(x_n="15")) == "d"
    assert cluster_for(routes, request(x_n="20")) is None
    assert cluster_for(routes, request(x_n="abc")) is None


def test_absent_header_with_present_match_false() -> None:
    routes = routes_of({"match": {"prefix": "/", "headers": [{"name": "x-canary", "present_match": False}]},
                        "route": {"cluster": "a"}})
    assert cluster_for(routes, request()) == "a"
    assert cluster_for(routes, request(x_canary="1")) is None


def test_repeated_headers_are_matched_joined_with_commas() -> None:
    routes = routes_of({"match": {"prefix": "/", "headers": [{"name": "x-a", "string_match": {"exact": "1,2"}}]},
                        "route": {"cluster": "a"}})
    headers = request()
    headers.add(b"x-a", b"1")
    headers.add(b"x-a", b"2")
    assert cluster_for(routes, headers) == "a"


def test_string_matcher_ignore_case_and_suffix_contains() -> None:
    routes = routes_of(
        {"match": {"prefix": "/", "headers": [{"name": "user-agent",
                                               "string_match": {"suffix": "BOT", "ignore_case": True}}]},
         "route": {"cluster": "a"}},
        {"match": {"prefix": "/", "headers": [{"name": "user-agent", "string_match": {"contains": "curl"}}]},
         "route": {"cluster": "b"}},
    )
    assert cluster_for(routes, request(user_agent="googlebot")) == "a"
    assert cluster_for(routes, request(user_agent="x curl/8")) == "b"


def test_query_parameter_matchers() -> None:
    routes = routes_of(
        {"match": {"prefix": "/", "query_parameters": [{"name": "debug", "present_match": True}]},
         "route": {"cluster": "a"}},
        {"match": {"prefix": "/", "query_parameters": [{"name": "v", "string_match": {"exact": "a b"}}]},
         "route": {"cluster": "b"}},
    )
    assert cluster_for(routes, request("/x?debug")) == "a"
    assert cluster_for(routes, request("/x?v=a%20b")) == "b"
    assert cluster_for(routes, request("/x?v=ab")) is None


def test_runtime_fraction_uses_the_stream_random_value() -> None:
    routes = routes_of({"match": {"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 30}}},
                        "route": {"cluster": "a"}},
                       {"match": {"prefix": "/"}, "route": {"cluster": "b"}})
    assert cluster_for(routes, request(), random_value=129) == "a"  # 129 % 100 = 29 < 30
    assert cluster_for(routes, request(), random_value=130) == "b"


def test_grpc_match() -> None:
    routes = routes_of({"match": {"prefix": "/", "grpc": {}}, "route": {"cluster": "a"}},
                       {"match": {"prefix": "/"}, "route": {"cluster": "b"}})
    assert cluster_for(routes, request(content_type="application/grpc+proto")) == "a"
    assert cluster_for(routes, request(content_type="application/json")) == "b"


def test_first_match_wins() -> None:
    routes = routes_of({"match": {"prefix": "/a"}, "route": {"cluster": "a"}},
                       {"match": {"prefix": "/ab"}, "route": {"cluster": "b"}})
    assert cluster_for(routes, request("/abc")) == "a"


def test_weighted_pick_is_proportional() -> None:
    routes = routes_of({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
        {"name": "a", "weight": 1}, {"name": "b", "weight": 3}]}}})
    route = routes.route(request(), 0)
    assert route is not None and isinstance(route.action, ForwardAction)
    picks = [route.action.pick_weighted(value).name for value in range(400)]
    assert picks.count("a") == 100 and picks.count("b") == 300


@pytest.mark.parametrize(
    ("match", "action", "path", "expected"),
    [
        ({"prefix": "/api/"}, {"prefix_rewrite": "/"}, "/api/users?x=1", "/users?x=1"),
        ({"prefix": "/api"}, {"prefix_rewrite": "/v2"}, "/api/users", "/v2/users"),
        ({"path": "/old"}, {"prefix_rewrite": "/new"}, "/old?q", "/new?q"),
        ({"prefix": "/"}, {"regex_rewrite": {"pattern": {"regex": "^/service/([^/]+)(/.*)$"},
                                              "substitution": "\\2/instance/\\1"}},
         "/service/foo/v1/api?k=v", "/v1/api/instance/foo?k=v"),
    ],
)
def test_path_rewrites(match: dict[str, Any], action: dict[str, Any], path: str, expected: str) -> None:
    routes = routes_of({"match": match, "route": {"cluster": "a", **action}})
    route = routes.route(request(path), 0)
    assert route is not None and isinstance(route.action, ForwardAction)
    rewritten = route.rewrite_path(path.encode(), route.action.prefix_rewrite, route.action.regex_rewrite)
    assert rewritten == expected.encode()
