"""Gateways: what a router proxy (node id `router~…`) serves, from the Gateway resources
whose selector matches it and the VirtualServices bound to them (`gateways: [ns/name]`).

One listener per server port (`0.0.0.0_80`, bound where OUTBOUND_PORTS maps it), routes from
RDS `http.80` as istiod names them, one virtual host per VirtualService host the server
admits. HTTP servers only; TLS termination belongs with the mesh CA work.
"""

from __future__ import annotations

from typing import Any

from controlplane._clusters import ADS_SOURCE
from controlplane._hosts import fqdn, host_matches
from controlplane._mesh import Mesh
from controlplane._protos import HCM_NAME, HCM_TYPE, typed
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource
from controlplane._routes import http_routes

HTTP_SERVER_PROTOCOLS = ("HTTP", "HTTP2", "GRPC")


def selected_gateways(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    out = []
    for gateway in mesh.of_kind("Gateway"):
        selector = gateway.spec.get("selector") or {}
        if selector and labels_match(selector, proxy.labels):
            out.append(gateway)
    return out


def _admits(server_host: str, gateway: Resource, vs: Resource, host: str) -> bool:
    space, _, name = server_host.rpartition("/")
    if space not in ("", "*") and space != (vs.namespace if space != "." else gateway.namespace):
        return False
    return host_matches(name, host) or host_matches(host, name)


def _bound(vs: Resource, gateway: Resource) -> bool:
    names = vs.spec.get("gateways") or []
    return f"{gateway.namespace}/{gateway.name}" in names or (vs.namespace == gateway.namespace and gateway.name in names)


def gateway_config(mesh: Mesh, proxy: Proxy, http_filters: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(listeners, route configurations) for a router proxy. `http_filters(port)` builds the chain."""
    ports: dict[int, list[tuple[Resource, dict[str, Any]]]] = {}
    for gateway in selected_gateways(mesh, proxy):
        for server in gateway.spec.get("servers") or []:
            port = server.get("port") or {}
            if str(port.get("protocol", "HTTP")).upper() in HTTP_SERVER_PROTOCOLS and port.get("number"):
                ports.setdefault(int(port["number"]), []).append((gateway, server))
    listeners, routes = [], []
    for number, servers in sorted(ports.items()):
        vhosts: dict[str, dict[str, Any]] = {}
        for gateway, server in servers:
            for vs in mesh.of_kind("VirtualService"):
                if not _bound(vs, gateway):
                    continue
                for host in vs.spec.get("hosts") or []:
                    host = str(host) if "*" in str(host) else fqdn(str(host), vs.namespace) if "." not in str(host) else str(host)
                    if host in vhosts or not any(_admits(str(h), gateway, vs, host) for h in server.get("hosts") or []):
                        continue
                    vhosts[host] = {"name": f"{host}:{number}", "domains": [host, f"{host}:{number}"],
                                    "routes": http_routes(vs, mesh, proxy, number, f"{gateway.namespace}/{gateway.name}")}
        name = f"http.{number}"
        routes.append({"name": name, "virtual_hosts": [vhosts[h] for h in sorted(vhosts)], "validate_clusters": False})
        local = proxy.outbound_ports.get(number)
        address: dict[str, Any] = ({"address": {"socket_address": {"address": "127.0.0.1", "port_value": local}}}
                                   if local is not None else
                                   {"address": {"socket_address": {"address": "0.0.0.0", "port_value": number}},
                                    "bind_to_port": False})
        hcm = {"stat_prefix": f"outbound_0.0.0.0_{number}", "rds": {"config_source": ADS_SOURCE, "route_config_name": name},
               "http_filters": http_filters(number), "use_remote_address": True, "normalize_path": True}
        listeners.append({"name": f"0.0.0.0_{number}", **address, "traffic_direction": "OUTBOUND",
                          "filter_chains": [{"filters": [{"name": HCM_NAME, "typed_config": typed(HCM_TYPE, hcm)}]}]})
    return listeners, routes


__all__ = ["gateway_config", "selected_gateways"]
