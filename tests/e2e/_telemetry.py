"""Mesh-shaped sidecar bootstraps for the telemetry tests: Istio node metadata, an inbound and
an outbound listener carrying ``istio.metadata_exchange`` and ``istio.stats`` (and, when asked,
HCM tracing), and an Istio-style Prometheus listener that routes ``/stats/prometheus`` to the
admin endpoint — what istiod and istio-agent give an Envoy sidecar.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.wasmhost.sidecar._bootstrap import HCM, ROUTER_FILTER, cluster
from tests.wasmhost.sidecar._process import SidecarProcess

PEER_METADATA = "type.googleapis.com/io.istio.http.peer_metadata.Config"
STATS = "type.googleapis.com/stats.PluginConfig"


def free_port() -> int:
    """A port the kernel just handed out (for the admin address a Prometheus listener points at)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node(workload: str, namespace: str = "default", app: str = "", version: str = "v1") -> dict[str, Any]:
    app = app or workload.rsplit("-", 1)[0]
    return {
        "id": f"sidecar~127.0.0.1~{workload}-6d8f7c9b4-x2x4k.{namespace}~{namespace}.svc.cluster.local",
        "cluster": f"{app}.{namespace}",
        "metadata": {
            "NAME": f"{workload}-6d8f7c9b4-x2x4k", "NAMESPACE": namespace, "WORKLOAD_NAME": workload,
            "CLUSTER_ID": "Kubernetes", "MESH_ID": "cluster.local", "ISTIO_VERSION": "1.26.0",
            "LABELS": {"app": app, "version": version, "service.istio.io/canonical-name": app,
                       "service.istio.io/canonical-revision": version},
        },
    }


def _mx(direction: str) -> dict[str, Any]:
    headers = [{"istio_headers": {}}]
    if direction == "INBOUND":
        return {"@type": PEER_METADATA, "downstream_discovery": headers, "downstream_propagation": headers}
    return {"@type": PEER_METADATA, "upstream_discovery": headers, "upstream_propagation": headers}


def listener(name: str, direction: str, cluster_name: str, *, port: int = 0, stats: dict[str, Any] | None = None,
             tracing: dict[str, Any] | None = None, telemetry: bool = True) -> dict[str, Any]:
    filters = []
    if telemetry:
        filters = [{"name": "istio.metadata_exchange", "typed_config": _mx(direction)},
                   {"name": "istio.stats", "typed_config": {"@type": STATS, **(stats or {})}}]
    hcm: dict[str, Any] = {
        "@type": HCM, "stat_prefix": name,
        "route_config": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster_name, "timeout": "5s"}}]}]},
        "http_filters": [*filters, dict(ROUTER_FILTER)],
    }
    if tracing is not None:
        hcm["tracing"] = tracing
    return {"name": name, "traffic_direction": direction,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def prometheus_listener(admin_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Istio's 15090-style listener: ``/stats/prometheus`` routed to the admin endpoint."""
    hcm = {"@type": HCM, "stat_prefix": "stats",
           "route_config": {"name": "prometheus", "virtual_hosts": [{"name": "prometheus", "domains": ["*"], "routes": [
               {"match": {"prefix": "/stats/prometheus"}, "route": {"cluster": "prometheus_stats"}}]}]},
           "http_filters": [dict(ROUTER_FILTER)]}
    return ({"name": "prometheus", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
             "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                             "typed_config": hcm}]}]},
            cluster("prometheus_stats", admin_port))


def sidecar_bootstrap(identity: dict[str, Any], listeners: list[dict[str, Any]], clusters: list[dict[str, Any]],
                      *, admin_port: int = 0, prometheus: bool = False) -> dict[str, Any]:
    listeners, clusters = list(listeners), list(clusters)
    if prometheus:
        extra_listener, extra_cluster = prometheus_listener(admin_port)
        listeners.append(extra_listener)
        clusters.append(extra_cluster)
    return {"node": identity,
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


@contextmanager
def running(bootstrap: dict[str, Any], workdir: Path) -> Iterator[SidecarProcess]:
    process = SidecarProcess(bootstrap, workdir=workdir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def outbound_cluster(service_host: str, port: int, target_port: int) -> dict[str, Any]:
    """An istiod-named outbound cluster (``outbound|PORT||HOST``) to a peer sidecar's inbound listener."""
    return cluster(f"outbound|{port}||{service_host}", target_port)
