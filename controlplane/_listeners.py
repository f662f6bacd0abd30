"""Listeners: outbound per service port (`0.0.0.0_9080`, routes from RDS `9080`) and inbound
per application port, each HTTP connection manager carrying the Wasm filters for its
direction and port in phase order, then fault and CORS, then the router.

There is no traffic capture here, so a listener binds only where the proxy's node metadata
asks (OUTBOUND_PORTS / INBOUND_PORTS); others are sent with `bind_to_port: false`, exactly
like istiod's per-port listeners, so EnvoyFilter matches and `proxy-config` see the same tree.
"""

from __future__ import annotations

from typing import Any

from controlplane._clusters import ADS_SOURCE, cluster_name
from controlplane._hosts import fqdn
from controlplane._mesh import Mesh
from controlplane._mtls import inbound_chains
from controlplane._protos import HCM_NAME, HCM_TYPE, ROUTER_NAME, typed
from controlplane._proxies import Proxy
from controlplane._routes import CORS_FILTER, FAULT_FILTER, inbound_route_config
from controlplane._security_filters import SecurityFilters, inbound_security_filters, ordered_http_filters
from controlplane._telemetry import telemetry_filters, telemetry_hcm
from controlplane._wasm import CLIENT, PHASES, SERVER, ecds_filter, plugins_by_phase, selected_plugins

LOOPBACK = "127.0.0.1"
INBOUND_PREFIX = "virtualInbound_"


def _http_filters(mesh: Mesh, proxy: Proxy, mode: str, port: int, gateway: bool = False) -> list[dict[str, Any]]:
    phases = plugins_by_phase(selected_plugins(mesh, proxy, mode, port))
    plugins = {phase: [ecds_filter(p) for p in phases[phase]] for phase in PHASES}
    secured = mode == SERVER or gateway  # policies apply where traffic enters a workload or a gateway
    security = inbound_security_filters(mesh, proxy, port) if secured else SecurityFilters()
    filters = ordered_http_filters(security, plugins)
    if not gateway:
        filters += telemetry_filters(mesh, proxy, mode)  # peer metadata exchange, istio.stats
    if mode == CLIENT:
        filters.append({"name": FAULT_FILTER, "typed_config": typed(
            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", {})})
        filters.append({"name": CORS_FILTER, "typed_config": typed(
            "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors", {})})
    filters.append({"name": ROUTER_NAME, "typed_config": typed(
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", {})})
    return filters


def gateway_filters(mesh: Mesh, proxy: Proxy, port: int) -> list[dict[str, Any]]:
    """A gateway's HTTP filters: its security policies, Wasm plugins for client traffic (as Istio
    treats gateways), then the rest."""
    return _http_filters(mesh, proxy, CLIENT, port, gateway=True)


def _network_wasm(mesh: Mesh, proxy: Proxy, mode: str, port: int) -> list[dict[str, Any]]:
    phases = plugins_by_phase(selected_plugins(mesh, proxy, mode, port, network=True))
    return [ecds_filter(p) for phase in PHASES for p in phases[phase]]


def _address(port: int, local: int | None) -> dict[str, Any]:
    if local is None:
        return {"address": {"socket_address": {"address": "0.0.0.0", "port_value": port}}, "bind_to_port": False}
    return {"address": {"socket_address": {"address": LOOPBACK, "port_value": local}}}


def outbound_listeners(mesh: Mesh, proxy: Proxy) -> list[dict[str, Any]]:
    """One listener per outbound service port: HTTP ports via RDS, TCP ports via tcp_proxy."""
    http_ports: set[int] = set()
    tcp_ports: dict[int, list[str]] = {}
    for service in mesh.services_for(proxy):
        for port in service.ports:
            if port.is_http:
                http_ports.add(port.number)
            else:
                tcp_ports.setdefault(port.number, []).append(service.hostname)
    out = []
    for number in sorted(http_ports):
        hcm = {"stat_prefix": f"outbound_0.0.0.0_{number}",
               "rds": {"config_source": ADS_SOURCE, "route_config_name": str(number)},
               "http_filters": _http_filters(mesh, proxy, CLIENT, number),
               "use_remote_address": False, "normalize_path": True, **telemetry_hcm(mesh, proxy, CLIENT)}
        filters = _network_wasm(mesh, proxy, CLIENT, number)
        filters.append({"name": HCM_NAME, "typed_config": typed(HCM_TYPE, hcm)})
        out.append({"name": f"0.0.0.0_{number}", **_address(number, proxy.outbound_ports.get(number)),
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [{"name": f"0.0.0.0_{number}", "filters": filters}]})
    for number, hosts in sorted(tcp_ports.items()):
        if number in http_ports:
            continue
        host = sorted(hosts)[0]  # without a VIP to tell them apart, the first service owns the port
        filters = _network_wasm(mesh, proxy, CLIENT, number)
        filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": typed(
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            _tcp_route(mesh, proxy, host, number))})
        out.append({"name": f"0.0.0.0_{number}", **_address(number, proxy.outbound_ports.get(number)),
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [{"name": f"0.0.0.0_{number}", "filters": filters}]})
    return out


def _tcp_route(mesh: Mesh, proxy: Proxy, host: str, port: int) -> dict[str, Any]:
    """A TcpProxy config: the VirtualService's first `tcp` route for this port, else the service."""
    default = cluster_name("outbound", port, "", host)
    config: dict[str, Any] = {"stat_prefix": default, "cluster": default}
    vs = mesh.virtual_service_for(proxy, host)
    if vs is None:
        return config
    for route in vs.spec.get("tcp") or []:
        if not all(not m.get("port") or m["port"] == port for m in route.get("match") or [{}]):
            continue
        names = []
        for dest in route.get("route") or []:
            target = dest.get("destination") or {}
            names.append((cluster_name("outbound", int((target.get("port") or {}).get("number") or port),
                                       str(target.get("subset", "")), fqdn(str(target.get("host", "")), vs.namespace)),
                          int(dest.get("weight", 0))))
        if len(names) == 1:
            config["cluster"] = names[0][0]
        elif names:
            del config["cluster"]
            config["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in names if w > 0]}
        break
    return config


def inbound_listeners(mesh: Mesh, proxy: Proxy) -> list[dict[str, Any]]:
    """One listener per application port with an inbound binding, forwarding to the local app."""
    names = {p.number: p.name for p in proxy.app_ports}
    out = []
    for app_port, local in sorted(proxy.inbound_ports.items()):
        filters = _network_wasm(mesh, proxy, SERVER, app_port)
        if names.get(app_port, "").startswith("tcp"):
            filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": typed(
                "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                {"stat_prefix": cluster_name("inbound", app_port, "", ""),
                 "cluster": cluster_name("inbound", app_port, "", "")})})
        else:
            hcm = {"stat_prefix": f"inbound_0.0.0.0_{app_port}", "route_config": inbound_route_config(app_port),
                   "http_filters": _http_filters(mesh, proxy, SERVER, app_port),
                   "use_remote_address": False, "normalize_path": True, **telemetry_hcm(mesh, proxy, SERVER)}
            filters.append({"name": HCM_NAME, "typed_config": typed(HCM_TYPE, hcm)})
        http = not names.get(app_port, "").startswith("tcp")
        out.append({"name": f"{INBOUND_PREFIX}{app_port}",
                    "address": {"socket_address": {"address": LOOPBACK, "port_value": local}},
                    "traffic_direction": "INBOUND",
                    **inbound_chains(mesh, proxy, app_port, f"0.0.0.0_{app_port}", filters, http)})
    return out


__all__ = ["INBOUND_PREFIX", "gateway_filters", "inbound_listeners", "outbound_listeners"]
