"""Which listeners and routes the fast lane serves: anything that changes bytes, retries or logs is the full path's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.wasmhost.sidecar._bootstrap import FAULT, ROUTER, ROUTER_FILTER, bootstrap, cluster, hcm_of
from tests.wasmhost.sidecar._core import make_runtime
from wasmhost.sidecar._lane_plan import LanePlan, lane_match, lane_plan

FAULT_FILTER = {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}}


def _plan(config: dict[str, Any]) -> LanePlan | None:
    _, ctx, _ = make_runtime(config)
    return lane_plan(ctx)


def _routes(*routes: dict[str, Any], clusters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return bootstrap([{"name": "all", "domains": ["*"], "routes": list(routes)}],
                     clusters=clusters or [cluster("backend", 9), cluster("other", 10)])


def test_a_router_only_listener_gets_a_lane_with_the_connection_managers_defaults() -> None:
    plan = _plan(bootstrap())
    assert plan is not None
    assert plan.server_name == b"envoy" and plan.server_mode == 0
    assert plan.generate_request_id and not plan.suppress_envoy_headers
    assert plan.max_headers == 100 and plan.max_head_bytes == 60 * 1024


@pytest.mark.parametrize("hcm_extra", [
    {"use_remote_address": True},
    {"via": "proxy"},
    {"always_set_request_id_in_response": True},
    {"normalize_path": True},
    {"merge_slashes": True},
    {"strip_any_host_port": True},
    {"codec_type": "HTTP2"},
    {"common_http_protocol_options": {"max_requests_per_connection": 3}},
    {"http_protocol_options": {"enable_trailers": True}},
    {"access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"}}]},
])
def test_connection_manager_features_that_change_bytes_rule_the_lane_out(hcm_extra: dict[str, Any]) -> None:
    config = bootstrap()
    hcm_of(config).update(hcm_extra)
    assert _plan(config) is None


def test_any_filter_besides_the_router_rules_the_lane_out() -> None:
    assert _plan(bootstrap(http_filters=[FAULT_FILTER, ROUTER_FILTER])) is None


def test_suppressed_envoy_headers_are_known_to_the_lane() -> None:
    config = bootstrap(http_filters=[{"name": "envoy.filters.http.router",
                                      "typed_config": {"@type": ROUTER, "suppress_envoy_headers": True}}])
    plan = _plan(config)
    assert plan is not None and plan.suppress_envoy_headers
    route = plan.route_table.virtual_host(b"x").routes[0]  # type: ignore[union-attr]
    target = plan.target(route)
    assert target is not None and target.expected_timeout_ms is None


def _target_of(route: dict[str, Any], **kwargs: Any) -> Any:
    plan = _plan(_routes(route, **kwargs))
    assert plan is not None
    vhost = plan.route_table.virtual_host(b"example.com")
    assert vhost is not None
    return plan.target(vhost.routes[0])


def test_a_plain_route_is_served_with_its_timeout_and_header() -> None:
    target = _target_of({"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "2.5s"}})
    assert target is not None
    assert target.timeout == 2.5 and target.expected_timeout_ms == b"2500"
    assert target.cluster.plan.name == "backend"


@pytest.mark.parametrize("action", [
    {"cluster": "backend", "prefix_rewrite": "/v2"},
    {"cluster": "backend", "regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}},
    {"cluster": "backend", "host_rewrite_literal": "h"},
    {"cluster": "backend", "timeout": "0s"},
    {"cluster": "backend", "retry_policy": {"retry_on": "5xx", "num_retries": 1}},
    {"cluster": "backend", "request_mirror_policies": [{"cluster": "other"}]},
    {"cluster_header": "x-cluster"},
    {"weighted_clusters": {"clusters": [{"name": "backend", "weight": 1}, {"name": "other", "weight": 1}]}},
    {"cluster": "missing"},
])
def test_routes_that_rewrite_retry_mirror_or_split_are_the_full_paths(action: dict[str, Any]) -> None:
    route = {"match": {"prefix": "/"}, "route": action}
    config = _routes(route)
    if action.get("cluster") == "missing":
        config["static_resources"]["clusters"].append(cluster("missing", 11))
        plan = _plan(config)
        assert plan is not None
        plan.ctx.clusters.pop("missing")
        vhost = plan.route_table.virtual_host(b"x")
        assert vhost is not None and plan.target(vhost.routes[0]) is None
        return
    assert _target_of(route) is None


def test_header_operations_at_any_level_are_the_full_paths() -> None:
    route = {"match": {"prefix": "/"}, "route": {"cluster": "backend"},
             "response_headers_to_add": [{"header": {"key": "x-a", "value": "1"}}]}
    assert _target_of(route) is None
    config = _routes({"match": {"prefix": "/"}, "route": {"cluster": "backend"}})
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "request_headers_to_remove"] = ["x-b"]
    plan = _plan(config)
    assert plan is not None
    vhost = plan.route_table.virtual_host(b"x")
    assert vhost is not None and plan.target(vhost.routes[0]) is None


@pytest.mark.parametrize("extra", [
    {"http2_protocol_options": {}},
    {"lb_policy": "RING_HASH"},
])
def test_http2_and_hashing_clusters_are_the_full_paths(extra: dict[str, Any]) -> None:
    backend = cluster("backend", 9, **{k: v for k, v in extra.items() if k != "lb_policy"},
                      lb_policy=extra.get("lb_policy", "ROUND_ROBIN"))
    assert _target_of({"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
                      clusters=[backend, cluster("other", 10)]) is None


def test_the_lane_tests_plain_prefixes_and_exact_paths_and_leaves_the_rest() -> None:
    plan = _plan(_routes(
        {"match": {"prefix": "/a"}, "route": {"cluster": "backend"}},
        {"match": {"path": "/b"}, "route": {"cluster": "backend"}},
        {"match": {"prefix": "/c", "case_sensitive": False}, "route": {"cluster": "backend"}},
        {"match": {"safe_regex": {"regex": "/d.*"}}, "route": {"cluster": "backend"}},
        {"match": {"prefix": "/e", "headers": [{"name": "x", "present_match": True}]},
         "route": {"cluster": "backend"}},
    ))
    assert plan is not None
    vhost = plan.route_table.virtual_host(b"x")
    assert vhost is not None
    assert [lane_match(route) for route in vhost.routes] == [0, 1, -1, -1, -1]
    assert [(kind, value) for kind, value, _ in plan.routes(vhost)][:3] == [(0, b"/a"), (1, b"/b"), (-1, b"/c")]
