"""Golden translations of Istio's documented tasks (bookinfo request routing, fault
injection, traffic shifting, httpbin circuit breaking), expectations written by hand in
Envoy's JSON shape."""

from __future__ import annotations

from typing import Any

from controlplane._protos import CLUSTER, ENDPOINT, ROUTE
from tests.controlplane._fixtures import config, generated, mesh_of

BOOKINFO = ("bookinfo/services.yaml", "bookinfo/workloads.yaml", "bookinfo/destination-rule-all.yaml")
REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
DEFAULT_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
    "host_selection_retry_max_attempts": "5",
}
JASON = {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]}


def _vhost(route_config: dict[str, Any], host: str) -> dict[str, Any]:
    return next(v for v in route_config["virtual_hosts"] if v["name"] == f"{host}:9080")


def _strip(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Routes without their names and istio metadata (not what the golden files are about)."""
    return [{k: v for k, v in r.items() if k not in ("name", "metadata")} for r in routes]


def test_all_v1_routes_every_service_to_its_v1_subset() -> None:
    snapshot = generated(mesh_of(*BOOKINFO, "bookinfo/virtual-service-all-v1.yaml"))
    route_config = config(snapshot, ROUTE, "9080")
    assert [v["name"] for v in route_config["virtual_hosts"]] == [
        "details.default.svc.cluster.local:9080", "productpage.default.svc.cluster.local:9080",
        f"{RATINGS}:9080", f"{REVIEWS}:9080"]
    reviews = _vhost(route_config, REVIEWS)
    assert reviews["domains"] == [REVIEWS, f"{REVIEWS}:9080", "reviews.default", "reviews.default:9080",
                                  "reviews.default.svc", "reviews.default.svc:9080", "reviews", "reviews:9080"]
    assert _strip(reviews["routes"]) == [{
        "match": {"prefix": "/"},
        "route": {"cluster": f"outbound|9080|v1|{REVIEWS}", "timeout": "0s", "retry_policy": DEFAULT_RETRY},
    }]


def test_reviews_test_v2_sends_jason_to_v2_and_others_to_v1() -> None:
    snapshot = generated(mesh_of(*BOOKINFO, "tasks/reviews-test-v2.yaml"))
    reviews = _vhost(config(snapshot, ROUTE, "9080"), REVIEWS)
    assert _strip(reviews["routes"]) == [
        {"match": JASON,
         "route": {"cluster": f"outbound|9080|v2|{REVIEWS}", "timeout": "0s", "retry_policy": DEFAULT_RETRY}},
        {"match": {"prefix": "/"},
         "route": {"cluster": f"outbound|9080|v1|{REVIEWS}", "timeout": "0s", "retry_policy": DEFAULT_RETRY}},
    ]


def test_ratings_delay_injects_seven_seconds_for_jason_only() -> None:
    snapshot = generated(mesh_of(*BOOKINFO, "tasks/ratings-test-delay.yaml"))
    routes = _vhost(config(snapshot, ROUTE, "9080"), RATINGS)["routes"]
    assert routes[0]["match"] == JASON
    assert routes[0]["typed_per_filter_config"] == {"envoy.filters.http.fault": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "delay": {"fixed_delay": "7s", "percentage": {"numerator": 1000000, "denominator": "MILLION"}}}}
    assert routes[0]["route"]["cluster"] == f"outbound|9080|v1|{RATINGS}"
    assert "typed_per_filter_config" not in routes[1]


def test_ratings_abort_answers_500_for_jason() -> None:
    snapshot = generated(mesh_of(*BOOKINFO, "tasks/ratings-test-abort.yaml"))
    routes = _vhost(config(snapshot, ROUTE, "9080"), RATINGS)["routes"]
    assert routes[0]["typed_per_filter_config"]["envoy.filters.http.fault"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"http_status": 500, "percentage": {"numerator": 1000000, "denominator": "MILLION"}}}


def test_traffic_shifting_splits_reviews_fifty_fifty() -> None:
    snapshot = generated(mesh_of(*BOOKINFO, "tasks/reviews-50-v3.yaml"))
    routes = _strip(_vhost(config(snapshot, ROUTE, "9080"), REVIEWS)["routes"])
    assert routes == [{"match": {"prefix": "/"}, "route": {
        "weighted_clusters": {"clusters": [{"name": f"outbound|9080|v1|{REVIEWS}", "weight": 50},
                                           {"name": f"outbound|9080|v3|{REVIEWS}", "weight": 50}]},
        "timeout": "0s", "retry_policy": DEFAULT_RETRY}}]


def test_subset_endpoints_are_filtered_by_labels() -> None:
    snapshot = generated(mesh_of(*BOOKINFO))

    def ports(cluster: str) -> list[int]:
        cla = config(snapshot, ENDPOINT, cluster)
        return [e["endpoint"]["address"]["socket_address"]["port_value"]
                for group in cla.get("endpoints", []) for e in group["lb_endpoints"]]

    assert ports(f"outbound|9080||{REVIEWS}") == [19081, 19082, 19083]
    assert ports(f"outbound|9080|v1|{REVIEWS}") == [19081]
    assert ports(f"outbound|9080|v3|{REVIEWS}") == [19083]
    assert ports(f"outbound|9080|v2|{RATINGS}") == []


def test_circuit_breaker_becomes_thresholds_and_outlier_detection() -> None:
    snapshot = generated(mesh_of("tasks/httpbin-circuit-breaker.yaml"))
    cluster = config(snapshot, CLUSTER, "outbound|8000||httpbin.default.svc.cluster.local")
    assert cluster["type"] == "EDS"
    assert cluster["eds_cluster_config"] == {"eds_config": {"ads": {}, "resource_api_version": "V3"},
                                             "service_name": "outbound|8000||httpbin.default.svc.cluster.local"}
    assert cluster["circuit_breakers"] == {"thresholds": [{
        "max_connections": 1, "max_pending_requests": 1, "max_requests": 4294967295, "max_retries": 4294967295,
        "track_remaining": True}]}
    assert cluster["outlier_detection"] == {"consecutive_5xx": 1, "enforcing_consecutive_5xx": 100, "interval": "1s",
                                            "base_ejection_time": "180s", "max_ejection_percent": 100}
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"] == {"max_requests_per_connection": 1}
    cla = config(snapshot, ENDPOINT, "outbound|8000||httpbin.default.svc.cluster.local")
    assert cla["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 80}  # targetPort
