"""xDS resources for sidecar tests, shaped like the control plane's (istiod's) output.

Each builder returns the resource as a message; ``response`` packs resources into a
DiscoveryResponse and ``decoded`` turns them into the ``XdsResource`` map an update takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from tests.wasmhost.sidecar._bootstrap import HCM, ROUTER_FILTER
from wasmhost.sidecar._config_load import parse_bootstrap_dict
from wasmhost.sidecar._xds_resources import XdsResource, decode_resources, resource_name

ADS = {"ads": {}, "resource_api_version": "V3"}
WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def _parse(data: dict[str, Any], message: Any) -> Any:
    from wasmhost.sidecar._config_load import parse_message_dict

    parse_message_dict(data, message, "")
    return message


def ecds_filter(name: str, **extra: Any) -> dict[str, Any]:
    """An HTTP filter whose config comes over ECDS, as istiod writes it for a WasmPlugin."""
    source = {**ADS, "initial_fetch_timeout": "0s"}
    return {"name": name, "config_discovery": {"config_source": source, "type_urls": [WASM, RBAC], **extra}}


def listener(name: str, port: int, route: str | None = None, filters: list[dict[str, Any]] | None = None,
             **extra: Any) -> Any:
    hcm: dict[str, Any] = {"@type": HCM, "stat_prefix": f"outbound_{name}",
                           "http_filters": [*(filters or []), dict(ROUTER_FILTER)]}
    if route is not None:
        hcm["rds"] = {"config_source": ADS, "route_config_name": route}
    else:
        hcm["route_config"] = {"name": "inline", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]}
    data = {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}], **extra}
    return _parse(data, listener_pb2.Listener())


def route_config(name: str, cluster: str, **route_extra: Any) -> Any:
    data = {"name": name, "virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": cluster, **route_extra}}]}]}
    return _parse(data, route_pb2.RouteConfiguration())


def eds_cluster(name: str, **extra: Any) -> Any:
    data = {"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": ADS, "service_name": name}, **extra}
    return _parse(data, cluster_pb2.Cluster())


def assignment(name: str, *ports: int, address: str = "127.0.0.1") -> Any:
    data = {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}} for port in ports]}]}
    return _parse(data, endpoint_pb2.ClusterLoadAssignment())


def wasm_extension(name: str, module: Path | str, configuration: Any = None, **config_extra: Any) -> Any:
    """The TypedExtensionConfig the control plane serves for a WasmPlugin."""
    config: dict[str, Any] = {"name": name, "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                                                           "code": {"local": {"filename": str(module)}}},
                              "failure_policy": "FAIL_CLOSED", **config_extra}
    if configuration is not None:
        text = configuration if isinstance(configuration, str) else json.dumps(configuration)
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": text}
    data = {"name": name, "typed_config": {"@type": WASM, "config": config}}
    return _parse(data, extension_pb2.TypedExtensionConfig())


def response(type_url: str, version: str, nonce: str, *messages: Any) -> Any:
    packed = []
    for message in messages:
        item = any_pb2.Any()
        item.Pack(message)
        packed.append(item)
    return discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce, resources=packed)


def decoded(type_url: str, version: str, *messages: Any) -> dict[str, XdsResource]:
    resources, errors = decode_resources(type_url, version, response(type_url, version, "n", *messages).resources)
    assert not errors, errors
    assert set(resources) == {resource_name(type_url, m) for m in messages}
    return resources


def static_bootstrap(xds_port: int = 15010, **extra: Any) -> Any:
    """What ``wasmesh bootstrap`` prints, as a parsed message (admin on port 0)."""
    data = {
        "node": {"id": "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local",
                 "cluster": "productpage.default", "metadata": {"NAME": "productpage", "NAMESPACE": "default",
                                                                "LABELS": {"app": "productpage"}}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                             "set_node_on_first_message_only": True,
                                             "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
                              "lds_config": ADS, "cds_config": ADS},
        "static_resources": {"clusters": [{
            "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": xds_port}}}}]}]}}]},
        **extra,
    }
    return parse_bootstrap_dict(data)


def as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result
