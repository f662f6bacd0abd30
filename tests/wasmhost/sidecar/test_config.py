"""Bootstrap loading: what is accepted, and that everything else is refused with its field path."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.wasmhost.sidecar._bootstrap import FAULT, ROUTER_FILTER, bootstrap, cluster, hcm_of
from wasmhost.sidecar import ConfigError, load_plan

HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"


def load(config: dict[str, Any]) -> Any:
    return load_plan(yaml.safe_dump(config), "test.yaml", 1)


def refused(config: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(config)
    return info.value


def test_minimal_bootstrap_builds_a_plan() -> None:
    plan = load(bootstrap(clusters=[cluster("backend", 8080, 8081)]))
    assert [listener.name for listener in plan.listeners] == ["listener_0"]
    backend = plan.clusters["backend"]
    assert [(e.address, e.port) for e in backend.endpoints] == [("127.0.0.1", 8080), ("127.0.0.1", 8081)]
    assert backend.connect_timeout == 1.0
    assert plan.listeners[0].hcm.stat_prefix == "ingress_http"
    assert plan.admin is not None and plan.admin.address == "127.0.0.1"


def test_json_bootstrap_is_accepted() -> None:
    plan = load_plan(json.dumps(bootstrap()), "test.json", 1)
    assert plan.listeners[0].hcm.route_table.virtual_host(b"anything") is not None


def test_unknown_field_is_named() -> None:
    config = bootstrap()
    config["static_resources"]["clusters"][0]["bogus"] = 1
    err = refused(config)
    assert err.path == "static_resources.clusters[0].bogus"
    assert "unknown field" in err.reason


def test_wrong_value_type_is_named() -> None:
    config = bootstrap()
    config["static_resources"]["clusters"][0]["connect_timeout"] = "soon"
    assert refused(config).path == "static_resources.clusters[0].connect_timeout"


def test_unsupported_http_filter_names_its_index() -> None:
    config = bootstrap(http_filters=[
        {"name": "lua", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}},
        ROUTER_FILTER,
    ])
    err = refused(config)
    assert err.path == f"{HCM_PATH}.http_filters[0]"
    assert "unsupported filter type envoy.extensions.filters.http.lua.v3.Lua" in err.reason


def test_optional_unsupported_filter_is_skipped() -> None:
    config = bootstrap(http_filters=[
        {"name": "lua", "is_optional": True,
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}},
        ROUTER_FILTER,
    ])
    plan = load(config)
    assert [entry.name for entry in plan.listeners[0].hcm.filters] == ["envoy.filters.http.router"]


def test_unknown_type_url_is_named() -> None:
    config = bootstrap(http_filters=[{"name": "x", "typed_config": {"@type": "type.googleapis.com/no.Such"}}])
    err = refused(config)
    assert err.path == f"{HCM_PATH}.http_filters[0].typed_config.@type"


def test_router_must_be_last() -> None:
    config = bootstrap(http_filters=[ROUTER_FILTER, {"name": "fault", "typed_config": {"@type": FAULT}}])
    err = refused(config)
    assert err.path == f"{HCM_PATH}.http_filters"
    assert "must be the last filter" in err.reason


def test_chain_without_terminal_filter_is_refused() -> None:
    config = bootstrap(http_filters=[{"name": "fault", "typed_config": {"@type": FAULT}}])
    assert "is the last filter" in refused(config).reason


def test_dynamic_resources_without_a_control_plane_are_refused_clearly() -> None:
    config = bootstrap()
    config["dynamic_resources"] = {"ads_config": {"api_type": "GRPC"}}
    err = refused(config)
    assert err.path == "dynamic_resources.ads_config.grpc_services"
    assert "gRPC service" in err.reason


def test_unsupported_supported_message_field_is_named() -> None:
    config = bootstrap()
    hcm_of(config)["route_config"]["virtual_hosts"][0]["cors"] = {}
    err = refused(config)
    assert err.path == f"{HCM_PATH}.route_config.virtual_hosts[0].cors"


def test_unknown_cluster_in_route_is_refused() -> None:
    config = bootstrap(virtual_hosts=[{"name": "v", "domains": ["*"],
                                       "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "nope"}}]}])
    err = refused(config)
    assert err.path == f"{HCM_PATH}.route_config.virtual_hosts[0].routes[0].route.cluster"
    assert "unknown cluster 'nope'" in err.reason


def test_unknown_cluster_allowed_when_not_validated() -> None:
    config = bootstrap(virtual_hosts=[{"name": "v", "domains": ["*"],
                                       "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "nope"}}]}],
                       route_config_extra={"validate_clusters": False})
    assert load(config).listeners[0].hcm.route_table.default is not None


def test_duplicate_domains_are_refused() -> None:
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
    config = bootstrap(virtual_hosts=[{"name": "a", "domains": ["x.com"], "routes": routes},
                                      {"name": "b", "domains": ["X.com"], "routes": routes}])
    err = refused(config)
    assert err.path == f"{HCM_PATH}.route_config.virtual_hosts[1].domains[0]"


def test_bad_regex_is_named() -> None:
    config = bootstrap(virtual_hosts=[{"name": "v", "domains": ["*"], "routes": [
        {"match": {"safe_regex": {"regex": "(unclosed"}}, "route": {"cluster": "backend"}}]}])
    assert refused(config).path == f"{HCM_PATH}.route_config.virtual_hosts[0].routes[0].match.safe_regex.regex"


def test_unsupported_lb_policy_and_discovery_type() -> None:
    config = bootstrap(clusters=[cluster("backend", 9, lb_policy="MAGLEV")])
    assert refused(config).path == "static_resources.clusters[0].lb_policy"
    config = bootstrap(clusters=[{**cluster("backend", 9), "type": "EDS"}])
    assert refused(config).path == "static_resources.clusters[0].type"


def test_static_cluster_needs_ip_addresses() -> None:
    config = bootstrap(clusters=[cluster("backend", 9)])
    config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"]["socket_address"]["address"] = "example.com"
    err = refused(config)
    assert err.path.endswith("lb_endpoints[0].endpoint.address.socket_address.address")


def test_logical_dns_needs_exactly_one_endpoint() -> None:
    config = bootstrap(clusters=[{**cluster("backend", 9, 10), "type": "LOGICAL_DNS"}])
    assert refused(config).path == "static_resources.clusters[0].load_assignment"


def test_duplicate_cluster_names() -> None:
    config = bootstrap(clusters=[cluster("backend", 9), cluster("backend", 10)])
    assert refused(config).path == "static_resources.clusters[1].name"


def test_fault_filter_errors_are_relative_to_its_config() -> None:
    config = bootstrap(http_filters=[
        {"name": "fault", "typed_config": {"@type": FAULT, "abort": {"http_status": 700,
                                                                      "percentage": {"numerator": 100}}}},
        ROUTER_FILTER,
    ])
    err = refused(config)
    assert err.path == f"{HCM_PATH}.http_filters[0].typed_config.abort.http_status"


def test_header_mutation_on_host_is_refused() -> None:
    config = bootstrap(route_config_extra={"request_headers_to_add": [{"header": {"key": "host", "value": "x"}}]})
    assert refused(config).path == f"{HCM_PATH}.route_config.request_headers_to_add[0].header.key"


def test_unknown_command_operator_is_refused() -> None:
    config = bootstrap(route_config_extra={"request_headers_to_add": [
        {"header": {"key": "x-a", "value": "%NOT_AN_OPERATOR%"}}]})
    err = refused(config)
    assert err.path == f"{HCM_PATH}.route_config.request_headers_to_add[0].header.value"
    assert "%NOT_AN_OPERATOR%" in err.reason


def test_listener_needs_exactly_the_connection_manager() -> None:
    config = bootstrap()
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "t", "cluster": "backend"}
    err = refused(config)
    assert err.path == HCM_PATH
    assert "unsupported network filter" in err.reason


def test_tls_certificate_file_errors_are_named(tmp_path: Any) -> None:
    config = bootstrap()
    config["static_resources"]["clusters"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                         "common_tls_context": {"validation_context": {
                             "trusted_ca": {"filename": str(tmp_path / "missing-ca.pem")}}}}}
    err = refused(config)
    assert err.path == ("static_resources.clusters[0].transport_socket.typed_config.common_tls_context."
                        "validation_context.trusted_ca.filename")
    assert "cannot read" in err.reason


def test_unsupported_tls_option_is_refused() -> None:
    config = bootstrap()
    config["static_resources"]["clusters"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                         "allow_renegotiation": True}}
    err = refused(config)
    assert err.path == "static_resources.clusters[0].transport_socket.typed_config.allow_renegotiation"


def test_yaml_syntax_error_reports_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_plan("static_resources:\n  clusters: [\n", "broken.yaml", 1)
    assert "line" in info.value.reason


def test_non_mapping_document_is_refused() -> None:
    with pytest.raises(ConfigError):
        load_plan("- a\n- b\n", "list.yaml", 1)


def test_defaults_follow_envoy() -> None:
    plan = load(bootstrap())
    hcm = plan.listeners[0].hcm
    assert hcm.stream_idle_timeout == 300.0
    assert hcm.server_name == b"envoy"
    assert hcm.generate_request_id
    backend = plan.clusters["backend"]
    assert (backend.thresholds.max_connections, backend.thresholds.max_retries) == (1024, 3)
    route = hcm.route_table.default.routes[0]  # type: ignore[union-attr]
    assert route.action.timeout == 15.0


def test_outlier_and_circuit_breaker_values() -> None:
    config = bootstrap(clusters=[cluster(
        "backend", 9,
        circuit_breakers={"thresholds": [{"max_connections": 2, "max_pending_requests": 3, "max_requests": 4,
                                          "max_retries": 5}]},
        outlier_detection={"consecutive_5xx": 2, "interval": "0.5s", "base_ejection_time": "1s",
                           "max_ejection_percent": 100},
    )])
    backend = load(config).clusters["backend"]
    assert (backend.thresholds.max_connections, backend.thresholds.max_pending_requests,
            backend.thresholds.max_requests, backend.thresholds.max_retries) == (2, 3, 4, 5)
    assert backend.outlier is not None
    assert (backend.outlier.consecutive_5xx, backend.outlier.interval, backend.outlier.max_ejection_percent) == (
        2, 0.5, 100)
