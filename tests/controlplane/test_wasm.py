"""WasmPlugin → ECDS: selection, istiod's ordering, and the rendered extension config."""

from __future__ import annotations

from typing import Any

from controlplane._protos import EXTENSION_CONFIG, LISTENER, to_dict, unpack
from controlplane._proxies import AppPort
from tests.controlplane._fixtures import config, generated, mesh_of, sidecar

SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9090, name: http-admin, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""


def plugin(name: str, namespace: str = "default", **spec: Any) -> str:
    import yaml

    body = {"url": f"file:///plugins/{name}.wasm", **spec}
    return yaml.safe_dump({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                           "metadata": {"name": name, "namespace": namespace}, "spec": body})


def http_filter_names(snapshot: Any, listener: str) -> list[str]:
    item = snapshot.resources(LISTENER)[listener]
    hcm = unpack(item.filter_chains[-1].filters[-1].typed_config)
    return [f.name for f in hcm.http_filters]  # type: ignore[attr-defined]


PROXY = sidecar(inbound_ports={9080: 15006})


def test_phase_then_priority_order_as_istiod() -> None:
    mesh = mesh_of(SERVICE,
                   plugin("stats-low", phase="STATS", priority=1),
                   plugin("none-a"),
                   plugin("authz", phase="AUTHZ"),
                   plugin("authn-low", phase="AUTHN", priority=-5),
                   plugin("authn-none", phase="AUTHN"),  # no priority sorts as the lowest int32
                   plugin("authn-high", phase="AUTHN", priority=10),
                   plugin("stats-high", phase="STATS", priority=2),
                   plugin("none-b"))
    names = http_filter_names(generated(mesh, PROXY), "0.0.0.0_9080")
    assert names == ["default.authn-high", "default.authn-low", "default.authn-none", "default.authz",
                     "default.stats-high", "default.stats-low", "default.none-a", "default.none-b",
                     "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"]


def test_equal_priority_keeps_creation_order() -> None:
    mesh = mesh_of(SERVICE, plugin("zeta", priority=3), plugin("alpha", priority=3))
    assert http_filter_names(generated(mesh, PROXY), "0.0.0.0_9080")[:2] == ["default.zeta", "default.alpha"]


def test_selector_namespace_and_root_namespace() -> None:
    mesh = mesh_of(SERVICE,
                   plugin("mine", selector={"matchLabels": {"app": "productpage"}}),
                   plugin("other-app", selector={"matchLabels": {"app": "reviews"}}),
                   plugin("other-ns", namespace="prod"),
                   plugin("mesh-wide", namespace="istio-system"),
                   plugin("gateway-only", targetRefs=[{"kind": "Gateway", "name": "gw"}]))
    names = http_filter_names(generated(mesh, PROXY), "0.0.0.0_9080")
    assert [n for n in names if "." in n and not n.startswith("envoy")] == ["default.mine", "istio-system.mesh-wide"]
    gateway = sidecar("gw", labels={"gateway.networking.k8s.io/gateway-name": "gw"})
    gateway_names = http_filter_names(generated(mesh, gateway), "0.0.0.0_9080")
    assert "default.gateway-only" in gateway_names and "default.mine" not in gateway_names


def test_match_mode_and_ports_pick_listeners() -> None:
    mesh = mesh_of(SERVICE,
                   plugin("client", match=[{"mode": "CLIENT"}]),
                   plugin("server", match=[{"mode": "SERVER"}]),
                   plugin("admin-port", match=[{"mode": "CLIENT", "ports": [{"number": 9090}]}]),
                   plugin("both"))
    snapshot = generated(mesh, PROXY)
    outbound_9080 = http_filter_names(snapshot, "0.0.0.0_9080")
    outbound_9090 = http_filter_names(snapshot, "0.0.0.0_9090")
    inbound = http_filter_names(snapshot, "virtualInbound_9080")
    assert [n for n in outbound_9080 if n.startswith("default.")] == ["default.client", "default.both"]
    assert [n for n in outbound_9090 if n.startswith("default.")] == ["default.client", "default.admin-port",
                                                                      "default.both"]
    assert [n for n in inbound if n.startswith("default.")] == ["default.server", "default.both"]
    assert set(snapshot.resources(EXTENSION_CONFIG)) == {"default.client", "default.server", "default.admin-port",
                                                         "default.both"}


def test_filter_fetches_its_config_over_ecds_and_blocks_until_it_arrives() -> None:
    snapshot = generated(mesh_of(SERVICE, plugin("p")), PROXY)
    hcm = unpack(snapshot.resources(LISTENER)["0.0.0.0_9080"].filter_chains[0].filters[0].typed_config)
    assert to_dict(hcm.http_filters[0]) == {  # type: ignore[attr-defined]
        "name": "default.p",
        "config_discovery": {
            "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                          "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"]}}


def test_local_module_extension_config() -> None:
    text = plugin("auth", pluginName="my_root", pluginConfig={"b": [1, 2], "a": "x"}, failStrategy="FAIL_OPEN",
                  vmConfig={"env": [{"name": "MODE", "value": "strict"}, {"name": "POD_NAME", "valueFrom": "HOST"}]})
    snapshot = generated(mesh_of(SERVICE, text), PROXY)
    assert config(snapshot, EXTENSION_CONFIG, "default.auth") == {
        "name": "default.auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "default.auth",
                "root_id": "my_root",
                "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": "/plugins/auth.wasm"}},
                              "environment_variables": {"host_env_keys": ["POD_NAME"], "key_values": {"MODE": "strict"}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": '{"a":"x","b":[1,2]}'},
                "failure_policy": "FAIL_OPEN",
            }}}


def test_remote_module_carries_checksum_and_agent_settings() -> None:
    digest = "c" * 64
    text = plugin("remote", url="oci://registry.local/plugins/auth:v1", sha256=digest, imagePullPolicy="Always",
                  imagePullSecret="pull-creds", failStrategy="FAIL_RELOAD")
    mesh = mesh_of(SERVICE, text)
    snapshot = generated(mesh, PROXY)
    cfg = config(snapshot, EXTENSION_CONFIG, "default.remote")["typed_config"]["config"]
    assert cfg["vm_config"]["code"] == {"remote": {
        "http_uri": {"uri": "oci://registry.local/plugins/auth:v1", "timeout": "30s", "cluster": "_"}, "sha256": digest}}
    version = mesh.of_kind("WasmPlugin")[0].resource_version
    assert cfg["vm_config"]["environment_variables"]["key_values"] == {
        "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": version,
        "ISTIO_META_WASM_IMAGE_PULL_POLICY": "Always",
        "ISTIO_META_WASM_IMAGE_PULL_SECRET": ""}  # no Secret source: empty, as istiod sends when unreadable
    assert cfg["failure_policy"] == "FAIL_RELOAD"
    no_scheme = generated(mesh_of(SERVICE, plugin("bare", url="registry.local/x")), PROXY)
    assert config(no_scheme, EXTENSION_CONFIG, "default.bare")["typed_config"]["config"]["vm_config"]["code"][
        "remote"]["http_uri"]["uri"] == "oci://registry.local/x"


def test_network_plugin_is_a_network_filter() -> None:
    snapshot = generated(mesh_of(SERVICE, plugin("l4", type="NETWORK")), PROXY)
    chain = snapshot.resources(LISTENER)["0.0.0.0_9080"].filter_chains[0]
    assert [f.name for f in chain.filters] == ["default.l4", "envoy.filters.network.http_connection_manager"]
    assert list(chain.filters[0].config_discovery.type_urls) == [
        "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
        "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"]
    assert config(snapshot, EXTENSION_CONFIG, "default.l4")["typed_config"]["@type"] == \
        "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"


def test_inbound_listener_forwards_to_the_local_app() -> None:
    proxy = sidecar(inbound_ports={9080: 15006}, app_ports=(AppPort(9080, "http"),))
    listener = config(generated(mesh_of(SERVICE), proxy), LISTENER, "virtualInbound_9080")
    assert listener["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 15006}}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "inbound|9080||"
