"""Clusters and endpoints: one cluster per service port and per DestinationRule subset.

Names follow istiod (`outbound|9080|v1|reviews.default.svc.cluster.local`,
`inbound|8080||`) so EnvoyFilter matches, dashboards and habits carry over. A
DestinationRule's traffic policy becomes the cluster's load balancer, circuit breakers
(connectionPool), outlier detection and TLS; subset policies override the top-level one and
port-level settings override both, field by field, as istiod merges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane._mesh import Mesh, subset_labels
from controlplane._mtls import apply_mesh_tls, endpoint_metadata, endpoint_tls_mode
from controlplane._protos import duration, typed
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource
from controlplane._services import Endpoint, Service, ServicePort

MAX_U32 = 4294967295
DEFAULT_CONNECT_TIMEOUT = "10s"
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_LB = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_CONN": "LEAST_REQUEST", "LEAST_REQUEST": "LEAST_REQUEST",
       "RANDOM": "RANDOM", "UNSPECIFIED": "LEAST_REQUEST", "PASSTHROUGH": "CLUSTER_PROVIDED"}


def cluster_name(direction: str, port: int, subset: str, host: str) -> str:
    return f"{direction}|{port}|{subset}|{host}"


def merge_policy(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers override earlier ones per top-level part (loadBalancer, connectionPool...)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key != "portLevelSettings":
                out[key] = value
    return out


def policy_for_port(policy: Mapping[str, Any] | None, port: int) -> dict[str, Any]:
    level = next((p for p in (policy or {}).get("portLevelSettings") or []
                  if (p.get("port") or {}).get("number") == port), None)
    return merge_policy(policy, level)


def _apply_policy(cluster: dict[str, Any], policy: Mapping[str, Any], port: ServicePort | None) -> None:
    lb = policy.get("loadBalancer") or {}
    if lb.get("consistentHash"):
        consistent = lb["consistentHash"]
        cluster["lb_policy"] = "MAGLEV" if consistent.get("maglev") else "RING_HASH"
        ring = (consistent.get("ringHash") or {}).get("minimumRingSize") or consistent.get("minimumRingSize")
        if ring and not consistent.get("maglev"):
            cluster["ring_hash_lb_config"] = {"minimum_ring_size": ring}
        if (consistent.get("maglev") or {}).get("tableSize"):
            cluster["maglev_lb_config"] = {"table_size": consistent["maglev"]["tableSize"]}
    else:
        cluster["lb_policy"] = _LB.get(str(lb.get("simple") or "UNSPECIFIED"), "LEAST_REQUEST")
    pool = policy.get("connectionPool") or {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    threshold = {
        "max_connections": tcp.get("maxConnections") or MAX_U32,
        "max_pending_requests": http.get("http1MaxPendingRequests") or MAX_U32,
        "max_requests": http.get("http2MaxRequests") or MAX_U32,
        "max_retries": http.get("maxRetries") or MAX_U32,
        "track_remaining": True,
    }
    cluster["circuit_breakers"] = {"thresholds": [threshold]}
    if tcp.get("connectTimeout"):
        cluster["connect_timeout"] = duration(tcp["connectTimeout"])
    if tcp.get("maxConnectionDuration") or tcp.get("tcpKeepalive"):
        keepalive = tcp.get("tcpKeepalive") or {}
        if keepalive:
            cluster["upstream_connection_options"] = {"tcp_keepalive": {
                k: v for k, v in {"keepalive_probes": keepalive.get("probes"),
                                  "keepalive_time": _seconds(keepalive.get("time")),
                                  "keepalive_interval": _seconds(keepalive.get("interval"))}.items() if v}}
    common: dict[str, Any] = {}
    if http.get("idleTimeout"):
        common["idle_timeout"] = duration(http["idleTimeout"])
    if http.get("maxRequestsPerConnection"):
        common["max_requests_per_connection"] = http["maxRequestsPerConnection"]
    if tcp.get("maxConnectionDuration"):
        common["max_connection_duration"] = duration(tcp["maxConnectionDuration"])
    http2 = bool(port and port.is_http2) or http.get("h2UpgradePolicy") == "UPGRADE"
    if common or http2 or http.get("useClientProtocol"):
        options: dict[str, Any] = {"common_http_protocol_options": common} if common else {}
        if http.get("useClientProtocol"):
            options["use_downstream_protocol_config"] = {"http_protocol_options": {}, "http2_protocol_options": {}}
        elif http2:
            streams = {"max_concurrent_streams": http["maxConcurrentStreams"]} if http.get("maxConcurrentStreams") else {}
            options["explicit_http_config"] = {"http2_protocol_options": streams}
        else:
            options["explicit_http_config"] = {"http_protocol_options": {}}
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS_KEY: typed(
            "type.googleapis.com/" + HTTP_OPTIONS_KEY, options)}
    outlier = policy.get("outlierDetection") or {}
    if outlier:
        detection: dict[str, Any] = {}
        errors_5xx = outlier.get("consecutive5xxErrors", outlier.get("consecutiveErrors"))
        detection["consecutive_5xx"] = errors_5xx or 0
        detection["enforcing_consecutive_5xx"] = 100 if errors_5xx else 0
        if outlier.get("consecutiveGatewayErrors"):
            detection["consecutive_gateway_failure"] = outlier["consecutiveGatewayErrors"]
            detection["enforcing_consecutive_gateway_failure"] = 100
        for ours, envoys in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time"),
                             ("maxEjectionPercent", "max_ejection_percent")):
            if ours in outlier:
                detection[envoys] = outlier[ours] if ours == "maxEjectionPercent" else duration(outlier[ours])
        if outlier.get("splitExternalLocalOriginErrors"):
            detection["split_external_local_origin_errors"] = True
            if outlier.get("consecutiveLocalOriginFailures"):
                detection["consecutive_local_origin_failure"] = outlier["consecutiveLocalOriginFailures"]
        cluster["outlier_detection"] = detection
        if "minHealthPercent" in outlier:
            cluster.setdefault("common_lb_config", {})["healthy_panic_threshold"] = {"value": outlier["minHealthPercent"]}
    tls = policy.get("tls") or {}
    if tls.get("mode") in ("SIMPLE", "MUTUAL"):
        context: dict[str, Any] = {"sni": tls.get("sni", "")} if tls.get("sni") else {}
        common_tls: dict[str, Any] = {}
        if tls.get("caCertificates") and not tls.get("insecureSkipVerify"):
            validation: dict[str, Any] = {"trusted_ca": {"filename": tls["caCertificates"]}}
            if tls.get("subjectAltNames"):
                validation["match_typed_subject_alt_names"] = [
                    {"san_type": "DNS", "matcher": {"exact": san}} for san in tls["subjectAltNames"]]
            common_tls["validation_context"] = validation
        if tls.get("mode") == "MUTUAL":
            common_tls["tls_certificates"] = [{"certificate_chain": {"filename": tls.get("clientCertificate", "")},
                                               "private_key": {"filename": tls.get("privateKey", "")}}]
        if common_tls:
            context["common_tls_context"] = common_tls
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": typed(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", context)}


def _seconds(duration: Any) -> int | None:
    if not duration:
        return None
    text = str(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    for unit in ("ms", "h", "m", "s"):
        if text.endswith(unit):
            try:
                return max(1, int(float(text[: -len(unit)]) * units[unit]))
            except ValueError:
                return None
    return None


def _lb_endpoints(endpoints: list[Endpoint]) -> list[dict[str, Any]]:
    return [{"endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}},
             "load_balancing_weight": max(1, e.weight), **endpoint_metadata(e)} for e in endpoints]


def _localities(endpoints: list[Endpoint]) -> list[dict[str, Any]]:
    """Endpoints grouped by locality, each group weighted and with a (possibly empty) locality:
    gRPC rejects a group without one and ignores unweighted groups."""
    groups: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        groups.setdefault(endpoint.locality, []).append(endpoint)
    out = []
    for locality, members in sorted(groups.items()):
        region, zone, subzone = (locality.split("/") + ["", "", ""])[:3]
        entry: dict[str, Any] = {"lb_endpoints": _lb_endpoints(members),
                                 "load_balancing_weight": sum(max(1, e.weight) for e in members),
                                 "locality": {k: v for k, v in (("region", region), ("zone", zone),
                                                                ("sub_zone", subzone)) if v}}
        out.append(entry)
    return out


def _dns_endpoints(service: Service, port: ServicePort, mesh: Mesh) -> list[Endpoint]:
    endpoints = mesh.registry.endpoints(service, port)
    return endpoints or [Endpoint(service.hostname, port.target_port or port.number)]


def outbound_clusters(mesh: Mesh, proxy: Proxy) -> list[dict[str, Any]]:
    """Every outbound cluster this proxy may route to (default and subset clusters)."""
    out = []
    for service in mesh.services_for(proxy):
        rule = mesh.destination_rule_for(proxy, service.hostname, service.namespace)
        spec = rule.spec if rule is not None else {}
        for port in service.ports:
            out.append(_cluster(mesh, service, port, "", policy_for_port(spec.get("trafficPolicy"), port.number),
                                proxy=proxy))
            for subset in spec.get("subsets") or []:
                policy = merge_policy(policy_for_port(spec.get("trafficPolicy"), port.number),
                                      policy_for_port(subset.get("trafficPolicy"), port.number))
                out.append(_cluster(mesh, service, port, str(subset.get("name", "")), policy,
                                    dict(subset.get("labels") or {}), proxy=proxy))
    return out


def _cluster(mesh: Mesh, service: Service, port: ServicePort, subset: str, policy: Mapping[str, Any],
             labels: Mapping[str, str] | None = None, *, proxy: Proxy | None = None) -> dict[str, Any]:
    name = cluster_name("outbound", port.number, subset, service.hostname)
    cluster: dict[str, Any] = {"name": name, "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
                               "metadata": {"filter_metadata": {"istio": {
                                   "services": [{"host": service.hostname, "namespace": service.namespace}],
                                   **({"subset": subset} if subset else {})}}}}
    if service.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        cluster["type"] = "STRICT_DNS" if service.resolution == "DNS" else "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
        endpoints = [endpoint_tls_mode(mesh, service, port.target_port or port.number, e)
                     for e in _dns_endpoints(service, port, mesh) if labels_match(labels, e.labels)]
        cluster["load_assignment"] = {"cluster_name": name, "endpoints": [{"lb_endpoints": _lb_endpoints(endpoints)}]}
    else:
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {"eds_config": ADS_SOURCE, "service_name": name}
    _apply_policy(cluster, policy, port)
    if proxy is not None:
        tls_mode = (policy.get("tls") or {}).get("mode") if policy.get("tls") else None
        chosen = [e for e in mesh.registry.endpoints(service, port) if labels_match(labels, e.labels)]
        apply_mesh_tls(cluster, mesh, proxy, service, port.number, port.target_port or port.number, tls_mode,
                       chosen)
    return cluster


def outbound_endpoints(mesh: Mesh, proxy: Proxy) -> list[dict[str, Any]]:
    """ClusterLoadAssignments for every EDS cluster: a subset keeps the endpoints its labels select."""
    out = []
    for service in mesh.services_for(proxy):
        if service.resolution in ("DNS", "DNS_ROUND_ROBIN"):
            continue
        rule = mesh.destination_rule_for(proxy, service.hostname, service.namespace)
        subsets = [""] + [str(s.get("name", "")) for s in (rule.spec.get("subsets") or [] if rule else [])]
        for port in service.ports:
            endpoints = mesh.registry.endpoints(service, port)
            for subset in subsets:
                labels = subset_labels(rule, subset) if subset else None
                chosen = [endpoint_tls_mode(mesh, service, port.target_port or port.number, e)
                          for e in endpoints if labels_match(labels, e.labels)]
                name = cluster_name("outbound", port.number, subset, service.hostname)
                out.append({"cluster_name": name, "endpoints": _localities(chosen)})
    return out


def inbound_clusters(proxy: Proxy) -> list[dict[str, Any]]:
    """One static cluster per application port that has an inbound listener: the local app."""
    out = []
    for app_port in sorted(proxy.inbound_ports):
        name = cluster_name("inbound", app_port, "", "")
        out.append({"name": name, "type": "STATIC", "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": _lb_endpoints(
                        [Endpoint("127.0.0.1", app_port)])}]}})
    return out


def destination_rule_of(mesh: Mesh, proxy: Proxy, service: Service) -> Resource | None:
    return mesh.destination_rule_for(proxy, service.hostname, service.namespace)


__all__ = ["cluster_name", "inbound_clusters", "merge_policy", "outbound_clusters", "outbound_endpoints",
           "policy_for_port"]
