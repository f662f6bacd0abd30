"""EnvoyFilter patches on generated resources: every applyTo, every operation, the matches."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2

from controlplane._envoyfilter import patch_bootstrap, patches_for
from controlplane._patch_ops import merge
from controlplane._protos import CLUSTER, EXTENSION_CONFIG, LISTENER, ROUTE, from_dict, to_dict, unpack
from tests.controlplane._fixtures import generated, mesh_of, sidecar

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 7000, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
"""
PROXY = sidecar(inbound_ports={9080: 15006})
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
LUA = {"name": "envoy.lua", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
    "default_source_code": {"inline_string": "function envoy_on_request(h) end"}}}


def envoy_filter(*patches: dict[str, Any], name: str = "ef", namespace: str = "default", **spec: Any) -> str:
    return yaml.safe_dump({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                           "metadata": {"name": name, "namespace": namespace},
                           "spec": {"configPatches": list(patches), **spec}})


def snapshot_with(*filters: str, proxy: Any = PROXY) -> Any:
    return generated(mesh_of(SERVICES, *filters), proxy)


def http_filters(snapshot: Any, listener: str) -> list[str]:
    chain = snapshot.resources(LISTENER)[listener].filter_chains[0]
    hcm = next(f for f in chain.filters if f.name == HCM)
    return [f.name for f in unpack(hcm.typed_config).http_filters]


def router_match(context: str = "SIDECAR_OUTBOUND") -> dict[str, Any]:
    return {"context": context, "listener": {"filterChain": {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}}}


@pytest.mark.parametrize(("operation", "expected"), [
    ("INSERT_BEFORE", ["envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.lua", ROUTER]),
    ("INSERT_AFTER", ["envoy.filters.http.fault", "envoy.filters.http.cors", ROUTER, "envoy.lua"]),
    ("INSERT_FIRST", ["envoy.lua", "envoy.filters.http.fault", "envoy.filters.http.cors", ROUTER]),
    ("REPLACE", ["envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.lua"]),
    ("REMOVE", ["envoy.filters.http.fault", "envoy.filters.http.cors"]),
])
def test_http_filter_list_operations(operation: str, expected: list[str]) -> None:
    patch: dict[str, Any] = {"operation": operation}
    if operation != "REMOVE":
        patch["value"] = LUA
    snapshot = snapshot_with(envoy_filter({"applyTo": "HTTP_FILTER", "match": router_match(), "patch": patch}))
    assert http_filters(snapshot, "0.0.0.0_9080") == expected
    assert http_filters(snapshot, "virtualInbound_9080") == [ROUTER]  # context SIDECAR_OUTBOUND only


def test_http_filter_merge_changes_typed_config_in_place() -> None:
    patch = {"applyTo": "HTTP_FILTER", "match": router_match(), "patch": {"operation": "MERGE", "value": {
        "name": ROUTER, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                                         "suppress_envoy_headers": True}}}}
    listener = snapshot_with(envoy_filter(patch)).resources(LISTENER)["0.0.0.0_9080"]
    router = unpack(listener.filter_chains[0].filters[0].typed_config).http_filters[-1]
    assert to_dict(unpack(router.typed_config)) == {"suppress_envoy_headers": True}


def test_filter_class_add_places_after_wasm_filters() -> None:
    wasm = yaml.safe_dump({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                           "metadata": {"name": "w"}, "spec": {"url": "file:///w.wasm"}})
    patch = {"applyTo": "HTTP_FILTER", "match": {"context": "SIDECAR_OUTBOUND"},
             "patch": {"operation": "ADD", "filterClass": "AUTHZ", "value": LUA}}
    snapshot = snapshot_with(wasm, envoy_filter(patch))
    assert http_filters(snapshot, "0.0.0.0_9080")[:3] == ["default.w", "envoy.lua", "envoy.filters.http.fault"]


def test_network_filter_insert_and_listener_port_match() -> None:
    value = {"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC", "stat_prefix": "x"}}
    patch = {"applyTo": "NETWORK_FILTER", "match": {"listener": {"portNumber": 7000, "filterChain": {
        "filter": {"name": "envoy.filters.network.tcp_proxy"}}}}, "patch": {"operation": "INSERT_BEFORE", "value": value}}
    listeners = snapshot_with(envoy_filter(patch)).resources(LISTENER)
    assert [f.name for f in listeners["0.0.0.0_7000"].filter_chains[0].filters] == [
        "envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
    assert [f.name for f in listeners["0.0.0.0_9080"].filter_chains[0].filters] == [HCM]


def test_listener_add_merge_remove_and_filter_chain_ops() -> None:
    new_listener = {"name": "extra", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                    "filter_chains": [{"name": "c0", "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "x", "cluster": "c"}}]}]}
    snapshot = snapshot_with(envoy_filter(
        {"applyTo": "LISTENER", "match": {"context": "SIDECAR_OUTBOUND"}, "patch": {"operation": "ADD", "value": new_listener}},
        {"applyTo": "LISTENER", "match": {"listener": {"name": "0.0.0.0_7000"}}, "patch": {"operation": "REMOVE"}},
        {"applyTo": "LISTENER", "match": {"listener": {"portNumber": 9080}, "context": "SIDECAR_OUTBOUND"},
         "patch": {"operation": "MERGE", "value": {"per_connection_buffer_limit_bytes": 1024}}},
        {"applyTo": "FILTER_CHAIN", "match": {"listener": {"name": "extra"}},
         "patch": {"operation": "ADD", "value": {"name": "c1", "filters": new_listener["filter_chains"][0]["filters"]}}},
        {"applyTo": "FILTER_CHAIN", "match": {"listener": {"name": "extra", "filterChain": {"name": "c0"}}},
         "patch": {"operation": "REMOVE"}},
    ))
    listeners = snapshot.resources(LISTENER)
    assert set(listeners) == {"0.0.0.0_9080", "virtualInbound_9080", "extra"}
    assert listeners["0.0.0.0_9080"].per_connection_buffer_limit_bytes.value == 1024
    assert listeners["virtualInbound_9080"].per_connection_buffer_limit_bytes.value == 0
    assert [c.name for c in listeners["extra"].filter_chains] == ["c1"]


def test_route_configuration_virtual_host_and_route_patches() -> None:
    snapshot = snapshot_with(envoy_filter(
        {"applyTo": "ROUTE_CONFIGURATION", "match": {"routeConfiguration": {"portNumber": 9080}},
         "patch": {"operation": "MERGE", "value": {"response_headers_to_add": [{"header": {"key": "x-rc", "value": "1"}}]}}},
        {"applyTo": "VIRTUAL_HOST", "match": {"routeConfiguration": {"vhost": {"name": "ratings.default.svc.cluster.local:9080"}}},
         "patch": {"operation": "REMOVE"}},
        {"applyTo": "VIRTUAL_HOST", "match": {"context": "SIDECAR_OUTBOUND"},
         "patch": {"operation": "ADD", "value": {"name": "extra", "domains": ["extra.local"],
                                                 "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 204}}]}}},
        {"applyTo": "HTTP_ROUTE", "match": {"routeConfiguration": {"vhost": {
            "domainName": "reviews", "route": {"name": "default"}}}},
         "patch": {"operation": "INSERT_BEFORE", "value": {"name": "health", "match": {"path": "/healthz"},
                                                           "direct_response": {"status": 200}}}},
        {"applyTo": "HTTP_ROUTE", "match": {"routeConfiguration": {"vhost": {
            "domainName": "reviews", "route": {"action": "ROUTE"}}}},
         "patch": {"operation": "MERGE", "value": {"route": {"timeout": "3s"}}}},
    ))
    rc = to_dict(snapshot.resources(ROUTE)["9080"])
    assert rc["response_headers_to_add"] == [{"header": {"key": "x-rc", "value": "1"}}]
    assert [v["name"] for v in rc["virtual_hosts"]] == ["reviews.default.svc.cluster.local:9080", "extra"]
    routes = rc["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes] == ["health", "default"]
    assert routes[1]["route"]["timeout"] == "3s" and "route" not in routes[0]
    # inline inbound route configurations are patched with context SIDECAR_INBOUND
    inbound = snapshot_with(envoy_filter({"applyTo": "ROUTE_CONFIGURATION", "match": {"context": "SIDECAR_INBOUND"},
                                          "patch": {"operation": "MERGE", "value": {"name": "patched-inbound"}}}))
    hcm = unpack(inbound.resources(LISTENER)["virtualInbound_9080"].filter_chains[0].filters[0].typed_config)
    assert hcm.route_config.name == "patched-inbound"  # type: ignore[attr-defined]
    assert inbound.resources(ROUTE)["9080"].name == "9080"


def test_cluster_patches_by_name_service_subset_and_port() -> None:
    snapshot = snapshot_with(envoy_filter(
        {"applyTo": "CLUSTER", "match": {"cluster": {"service": "reviews.default.svc.cluster.local", "subset": "v1"}},
         "patch": {"operation": "MERGE", "value": {"connect_timeout": "2s"}}},
        {"applyTo": "CLUSTER", "match": {"cluster": {"portNumber": 7000}}, "patch": {"operation": "REMOVE"}},
        {"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND"},
         "patch": {"operation": "ADD", "value": {"name": "added", "type": "STATIC", "connect_timeout": "1s"}}},
        {"applyTo": "CLUSTER", "match": {"cluster": {"name": "added"}},
         "patch": {"operation": "MERGE_AND_REPLACE_LIST", "value": {"dns_resolvers": []}}},
    ))
    clusters = snapshot.resources(CLUSTER)
    assert clusters["outbound|9080|v1|reviews.default.svc.cluster.local"].connect_timeout.seconds == 2
    assert clusters["outbound|9080||reviews.default.svc.cluster.local"].connect_timeout.seconds == 10
    assert "outbound|7000||ratings.default.svc.cluster.local" not in clusters
    assert "added" in clusters


def test_extension_config_add_is_served_when_a_filter_references_it() -> None:
    wasm = {"name": "my-wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "my-wasm", "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                                                    "code": {"local": {"filename": "/w.wasm"}}}}}}
    reference = {"name": "my-wasm", "config_discovery": {"config_source": {"ads": {}},
                                                         "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}}
    snapshot = snapshot_with(envoy_filter(
        {"applyTo": "EXTENSION_CONFIG", "patch": {"operation": "ADD", "value": wasm}},
        {"applyTo": "HTTP_FILTER", "match": router_match(), "patch": {"operation": "INSERT_BEFORE", "value": reference}}))
    assert "my-wasm" in http_filters(snapshot, "0.0.0.0_9080")
    assert set(snapshot.resources(EXTENSION_CONFIG)) == {"my-wasm"}


def test_workload_selector_priority_and_namespaces() -> None:
    add = {"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {"name": "c", "connect_timeout": "1s"}}}
    mine = envoy_filter(add, name="mine", workloadSelector={"labels": {"app": "productpage"}})
    theirs = envoy_filter({**add, "patch": {"operation": "ADD", "value": {"name": "d", "connect_timeout": "1s"}}},
                          name="theirs", workloadSelector={"labels": {"app": "reviews"}})
    first = envoy_filter({"applyTo": "CLUSTER", "match": {"cluster": {"name": "c"}},
                          "patch": {"operation": "MERGE", "value": {"connect_timeout": "5s"}}}, name="late", priority=10)
    root = envoy_filter({"applyTo": "CLUSTER", "match": {"cluster": {"name": "c"}},
                         "patch": {"operation": "MERGE", "value": {"connect_timeout": "7s"}}}, name="root",
                        namespace="istio-system", priority=-1)
    elsewhere = envoy_filter(add, name="elsewhere", namespace="prod")
    mesh = mesh_of(SERVICES, first, root, mine, theirs, elsewhere)
    assert [p.source for p in patches_for(mesh, PROXY)] == [
        "EnvoyFilter istio-system/root", "EnvoyFilter default/mine", "EnvoyFilter default/late"]
    clusters = generated(mesh, PROXY).resources(CLUSTER)
    assert "d" not in clusters and clusters["c"].connect_timeout.seconds == 5  # ADD first, then the later MERGE


def test_proxy_metadata_match() -> None:
    patch = {"applyTo": "CLUSTER", "match": {"proxy": {"metadata": {"ROLE": "edge"}}},
             "patch": {"operation": "ADD", "value": {"name": "edge-only", "connect_timeout": "1s"}}}
    assert "edge-only" not in snapshot_with(envoy_filter(patch)).resources(CLUSTER)
    edge = sidecar(metadata={"ROLE": "edge"})
    assert "edge-only" in snapshot_with(envoy_filter(patch), proxy=edge).resources(CLUSTER)


def test_merge_appends_lists_and_merges_inside_any() -> None:
    dst = from_dict(cluster_pb2.Cluster, {"name": "a", "dns_resolvers": [{"socket_address": {"address": "1.1.1.1"}}]})
    src = from_dict(cluster_pb2.Cluster, {"dns_resolvers": [{"socket_address": {"address": "2.2.2.2"}}],
                                          "connect_timeout": "3s"})
    merge(dst, src)
    assert [r.socket_address.address for r in dst.dns_resolvers] == ["1.1.1.1", "2.2.2.2"]
    assert dst.name == "a" and dst.connect_timeout.seconds == 3
    merge(dst, src, replace_lists=True)
    assert [r.socket_address.address for r in dst.dns_resolvers] == ["2.2.2.2"]


def test_bootstrap_merge() -> None:
    patch = {"applyTo": "BOOTSTRAP", "patch": {"operation": "MERGE", "value": {
        "stats_flush_interval": "7s", "node": {"metadata": {"EXTRA": "1"}}}}}
    mesh = mesh_of(SERVICES, envoy_filter(patch))
    boot = from_dict(bootstrap_pb2.Bootstrap, {"node": {"id": "n", "metadata": {"NAME": "x"}}})
    patch_bootstrap(boot, patches_for(mesh, PROXY))  # type: ignore[arg-type]
    assert to_dict(boot) == {"node": {"id": "n", "metadata": {"NAME": "x", "EXTRA": "1"}}, "stats_flush_interval": "7s"}
