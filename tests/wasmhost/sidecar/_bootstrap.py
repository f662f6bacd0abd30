"""Bootstrap builders for sidecar tests: a valid Envoy v3 bootstrap as a dict, easy to vary."""

from __future__ import annotations

import copy
from typing import Any

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER_FILTER = {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}


def cluster(name: str, *ports: int, lb_policy: str = "ROUND_ROBIN", **extra: Any) -> dict[str, Any]:
    """A STATIC cluster on 127.0.0.1 with one endpoint per port."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": lb_policy,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                for port in ports
            ]}],
        },
        **extra,
    }


def bootstrap(
    virtual_hosts: list[dict[str, Any]] | None = None,
    clusters: list[dict[str, Any]] | None = None,
    http_filters: list[dict[str, Any]] | None = None,
    listener_port: int = 0,
    admin_port: int | None = 0,
    route_config_extra: dict[str, Any] | None = None,
    hcm_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One listener with an HTTP connection manager, the given routes and clusters."""
    if virtual_hosts is None:
        virtual_hosts = [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                                       "route": {"cluster": "backend"}}]}]
    if clusters is None:
        clusters = [cluster("backend", 9)]
    hcm: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": "ingress_http",
        "route_config": {"name": "local_route", "virtual_hosts": virtual_hosts, **(route_config_extra or {})},
        "http_filters": copy.deepcopy(http_filters) if http_filters is not None else [dict(ROUTER_FILTER)],
        **(hcm_extra or {}),
    }
    config: dict[str, Any] = {
        "static_resources": {
            "listeners": [{
                "name": "listener_0",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        }
    }
    if admin_port is not None:
        config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    return config


def hcm_of(config: dict[str, Any]) -> dict[str, Any]:
    """The HTTP connection manager config inside a bootstrap built by ``bootstrap``."""
    result: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    return result
