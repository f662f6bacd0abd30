"""Configuration for proxyless gRPC clients (node metadata GENERATOR=grpc), as istiod's
gRPC generator shapes it: one API listener per service port named `host:port` (what an
`xds:///host:port` target asks for), a route configuration of the same name with that
service's routes, and the ordinary EDS clusters with a balancer gRPC implements.
"""

from __future__ import annotations

from typing import Any

from controlplane._clusters import ADS_SOURCE
from controlplane._mesh import Mesh
from controlplane._protos import HCM_TYPE, ROUTER_NAME, typed
from controlplane._proxies import Proxy
from controlplane._routes import default_route, domains, http_routes

GRPC_GENERATOR = "grpc"
GRPC_LB_POLICIES = ("ROUND_ROBIN", "RING_HASH")  # grpcio 1.85 NACKs LEAST_REQUEST


def is_grpc(proxy: Proxy) -> bool:
    return str(proxy.metadata.get("GENERATOR", "")) == GRPC_GENERATOR


def api_listeners(mesh: Mesh, proxy: Proxy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(listeners, route configurations) for every HTTP/gRPC service port."""
    listeners, routes = [], []
    for service in mesh.services_for(proxy):
        vs = mesh.virtual_service_for(proxy, service.hostname)
        for port in service.ports:
            if not port.is_http:
                continue
            name = f"{service.hostname}:{port.number}"
            hcm = {"rds": {"config_source": ADS_SOURCE, "route_config_name": name},
                   "http_filters": [{"name": ROUTER_NAME, "typed_config": typed(
                       "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", {})}]}
            listeners.append({"name": name, "api_listener": {"api_listener": typed(HCM_TYPE, hcm)}})
            service_routes = http_routes(vs, mesh, proxy, port.number) if vs is not None else []
            if not service_routes:
                service_routes = [default_route(service, port)]
            for route in service_routes:  # gRPC ignores what it does not implement, but not retries on 0s
                route.get("route", {}).pop("retry_policy", None)
            routes.append({"name": name, "virtual_hosts": [{"name": name, "domains": domains(service, port, proxy),
                                                            "routes": service_routes}]})
    return listeners, routes


def adapt_cluster(cluster: dict[str, Any]) -> dict[str, Any]:
    if cluster.get("lb_policy") not in GRPC_LB_POLICIES:
        cluster["lb_policy"] = "ROUND_ROBIN"
    return cluster


__all__ = ["GRPC_GENERATOR", "adapt_cluster", "api_listeners", "is_grpc"]
