"""Route configurations: one per outbound service port (named by the port, as istiod does),
with a virtual host per service and the VirtualService HTTP routes translated into Envoy
routes: matches, weighted destinations, rewrites, redirects, direct responses, retries,
timeouts, fault injection, mirroring, CORS and header manipulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane._clusters import cluster_name, merge_policy, policy_for_port
from controlplane._hosts import fqdn, short_names
from controlplane._mesh import Mesh
from controlplane._protos import duration, typed
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource
from controlplane._services import Service, ServicePort

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
_REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                   308: "PERMANENT_REDIRECT"}


def _string_match(match: Mapping[str, Any], ignore_case: bool = False) -> dict[str, Any]:
    out: dict[str, Any]
    if "exact" in match:
        out = {"exact": match["exact"]}
    elif "prefix" in match:
        out = {"prefix": match["prefix"]}
    elif "regex" in match:
        out = {"safe_regex": {"regex": match["regex"]}}
    else:
        out = {"prefix": ""}
    if ignore_case:
        out["ignore_case"] = True
    return out


def _header_matcher(name: str, match: Mapping[str, Any], invert: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if not match:
        out["present_match"] = True
    else:
        out["string_match"] = _string_match(match)
    if invert:
        out["invert_match"] = True
    return out


def route_match(match: Mapping[str, Any]) -> dict[str, Any]:
    """An Istio HTTPMatchRequest as an Envoy RouteMatch."""
    out: dict[str, Any] = {}
    uri = match.get("uri") or {}
    if "exact" in uri:
        out["path"] = uri["exact"]
    elif "regex" in uri:
        out["safe_regex"] = {"regex": uri["regex"]}
    else:
        out["prefix"] = uri.get("prefix", "/")
    if match.get("ignoreUriCase"):
        out["case_sensitive"] = False
    headers = [_header_matcher(name, value) for name, value in sorted((match.get("headers") or {}).items())]
    for pseudo, field in ((":method", "method"), (":authority", "authority"), (":scheme", "scheme")):
        if match.get(field):
            headers.append(_header_matcher(pseudo, match[field]))
    headers += [_header_matcher(name, value, invert=True)
                for name, value in sorted((match.get("withoutHeaders") or {}).items())]
    if headers:
        out["headers"] = headers
    params = []
    for name, value in sorted((match.get("queryParams") or {}).items()):
        if not value:
            params.append({"name": name, "present_match": True})
        else:
            params.append({"name": name, "string_match": _string_match(value)})
    if params:
        out["query_parameters"] = params
    return out


def _header_ops(ops: Mapping[str, Any] | None, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not ops:
        return out
    adds = [{"header": {"key": k, "value": str(v)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in (ops.get("set") or {}).items()]
    adds += [{"header": {"key": k, "value": str(v)}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
             for k, v in (ops.get("add") or {}).items()]
    if adds:
        out[f"{prefix}_headers_to_add"] = adds
    if ops.get("remove"):
        out[f"{prefix}_headers_to_remove"] = list(ops["remove"])
    return out


def _headers(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    spec = spec or {}
    return {**_header_ops(spec.get("request"), "request"), **_header_ops(spec.get("response"), "response")}


def _fraction(percentage: Mapping[str, Any] | None, default: float = 100.0) -> dict[str, Any]:
    value = float((percentage or {}).get("value", default))
    return {"numerator": int(round(value * 10000)), "denominator": "MILLION"}


def _destination_cluster(dest: Mapping[str, Any], vs_namespace: str, listener_port: int, mesh: Mesh) -> str:
    host = fqdn(str(dest.get("host", "")), vs_namespace)
    port = int((dest.get("port") or {}).get("number") or 0)
    if not port:
        service = mesh.registry.service(host)
        port = service.ports[0].number if service is not None and len(service.ports) == 1 else listener_port
    return cluster_name("outbound", port, str(dest.get("subset", "")), host)


def _retry_policy(retries: Mapping[str, Any] | None) -> dict[str, Any] | None:
    retries = retries if retries is not None else {"attempts": 2}
    attempts = int(retries.get("attempts", 2 if "retryOn" not in retries else 2))
    if attempts <= 0:
        return None
    retry_on = str(retries.get("retryOn") or DEFAULT_RETRY_ON)
    conditions, codes = [], []
    for item in (part.strip() for part in retry_on.split(",")):
        if item.isdigit():
            codes.append(int(item))
        elif item:
            conditions.append(item)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    policy: dict[str, Any] = {
        "retry_on": ",".join(conditions), "num_retries": attempts,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": typed(
            "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate", {})}],
        "host_selection_retry_max_attempts": "5",
    }
    if codes:
        policy["retriable_status_codes"] = codes
    if retries.get("perTryTimeout"):
        policy["per_try_timeout"] = duration(retries["perTryTimeout"])
    return policy


def _fault(fault: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    delay = fault.get("delay") or {}
    if delay.get("fixedDelay"):
        pct = delay.get("percentage") or ({"value": delay["percent"]} if "percent" in delay else None)
        out["delay"] = {"fixed_delay": duration(delay["fixedDelay"]), "percentage": _fraction(pct)}
    abort = fault.get("abort") or {}
    if abort:
        entry: dict[str, Any] = {"percentage": _fraction(abort.get("percentage"))}
        if "httpStatus" in abort:
            entry["http_status"] = abort["httpStatus"]
        elif abort.get("grpcStatus"):
            entry["grpc_status"] = _GRPC_CODES.get(str(abort["grpcStatus"]), 2)
        out["abort"] = entry
    return typed("type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", out)


_GRPC_CODES = {name: number for number, name in enumerate(
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED "
    "RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE "
    "DATA_LOSS UNAUTHENTICATED".split())}


def _cors(cors: Mapping[str, Any]) -> dict[str, Any]:
    origins = [_string_match(m) for m in cors.get("allowOrigins") or []]
    origins += [{"exact": o} for o in cors.get("allowOrigin") or []]
    out: dict[str, Any] = {"allow_origin_string_match": origins}
    for ours, envoys in (("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"),
                         ("exposeHeaders", "expose_headers")):
        if cors.get(ours):
            out[envoys] = ",".join(cors[ours])
    if cors.get("maxAge"):
        out["max_age"] = str(int(float(duration(cors["maxAge"])[:-1])))
    if "allowCredentials" in cors:
        out["allow_credentials"] = bool(cors["allowCredentials"])
    return typed("type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy", out)


def http_routes(vs: Resource, mesh: Mesh, proxy: Proxy, listener_port: int, gateway: str = "mesh",
                ) -> list[dict[str, Any]]:
    """Envoy routes for one VirtualService on one listener port, in the VirtualService's order.

    `gateway` is where the routes are served ("mesh" for sidecars, "ns/name" for a Gateway):
    a match naming other gateways does not apply there."""
    out = []
    for index, http in enumerate(vs.spec.get("http") or []):
        matches = [m for m in (http.get("match") or [{}])
                   if (not m.get("port") or m["port"] == listener_port)
                   and _on_gateway(m.get("gateways"), gateway, vs.namespace)
                   and labels_match(m.get("sourceLabels"), proxy.labels)
                   and (not m.get("sourceNamespace") or m["sourceNamespace"] == proxy.namespace)]
        for match in matches:
            route: dict[str, Any] = {"match": route_match(match), **_headers(http.get("headers"))}
            name = str(http.get("name") or "")
            if match.get("name"):
                name = f"{name}.{match['name']}" if name else str(match["name"])
            route["name"] = name or f"{vs.namespace}.{vs.name}.{index}"
            route["metadata"] = {"filter_metadata": {"istio": {"config": f"/apis/networking.istio.io/v1/namespaces/{vs.namespace}/virtual-service/{vs.name}"}}}
            _route_action(route, http, vs, mesh, listener_port)
            add_hash_policy(route, mesh, proxy)
            per_filter: dict[str, Any] = {}
            if http.get("fault"):
                per_filter[FAULT_FILTER] = _fault(http["fault"])
            if http.get("corsPolicy"):
                per_filter[CORS_FILTER] = _cors(http["corsPolicy"])
            if per_filter:
                route["typed_per_filter_config"] = per_filter
            out.append(route)
    return out


def _on_gateway(wanted: Any, gateway: str, namespace: str) -> bool:
    if not wanted:
        return True
    return any(g == gateway or f"{namespace}/{g}" == gateway for g in wanted)


def _route_action(route: dict[str, Any], http: Mapping[str, Any], vs: Resource, mesh: Mesh, port: int) -> None:
    if http.get("redirect"):
        redirect = http["redirect"]
        action: dict[str, Any] = {}
        if redirect.get("uri"):
            action["path_redirect"] = redirect["uri"]
        if redirect.get("authority"):
            action["host_redirect"] = redirect["authority"]
        if redirect.get("port"):
            action["port_redirect"] = redirect["port"]
        if redirect.get("scheme"):
            action["scheme_redirect"] = redirect["scheme"]
        action["response_code"] = _REDIRECT_CODES.get(int(redirect.get("redirectCode") or 301), "MOVED_PERMANENTLY")
        route["redirect"] = action
        return
    if http.get("directResponse"):
        direct = http["directResponse"]
        response: dict[str, Any] = {"status": direct.get("status", 200)}
        body = direct.get("body") or {}
        if "string" in body:
            response["body"] = {"inline_string": body["string"]}
        elif "bytes" in body:
            response["body"] = {"inline_bytes": body["bytes"]}
        route["direct_response"] = response
        return
    destinations = http.get("route") or []
    action = {"timeout": duration(http.get("timeout", "0s"))}
    if len(destinations) == 1:
        action["cluster"] = _destination_cluster(destinations[0].get("destination") or {}, vs.namespace, port, mesh)
        for key, value in _headers(destinations[0].get("headers")).items():
            route.setdefault(key, []).extend(value)
    else:
        clusters = []
        for dest in destinations:
            if int(dest.get("weight", 0)) <= 0:
                continue
            entry: dict[str, Any] = {"name": _destination_cluster(dest.get("destination") or {}, vs.namespace, port, mesh),
                                     "weight": int(dest["weight"])}
            entry.update(_headers(dest.get("headers")))
            clusters.append(entry)
        action["weighted_clusters"] = {"clusters": clusters}
    rewrite = http.get("rewrite") or {}
    if rewrite.get("uri"):
        action["prefix_rewrite"] = rewrite["uri"]
    if rewrite.get("uriRegexRewrite"):
        action["regex_rewrite"] = {"pattern": {"regex": rewrite["uriRegexRewrite"].get("match", "")},
                                   "substitution": rewrite["uriRegexRewrite"].get("rewrite", "")}
    if rewrite.get("authority"):
        action["host_rewrite_literal"] = rewrite["authority"]
    retry = _retry_policy(http.get("retries"))
    if retry is not None:
        action["retry_policy"] = retry
    mirrors = list(http.get("mirrors") or [])
    if http.get("mirror"):
        pct = http.get("mirrorPercentage") or ({"value": http["mirrorPercent"]} if "mirrorPercent" in http else None)
        mirrors.insert(0, {"destination": http["mirror"], "percentage": pct})
    if mirrors:
        action["request_mirror_policies"] = [
            {"cluster": _destination_cluster(m.get("destination") or {}, vs.namespace, port, mesh),
             "runtime_fraction": {"default_value": _fraction(m.get("percentage"))}} for m in mirrors]
    route["route"] = action


def default_route(service: Service, port: ServicePort) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster_name("outbound", port.number, "", service.hostname), "timeout": "0s"}
    retry = _retry_policy(None)
    if retry is not None:
        action["retry_policy"] = retry
    return {"name": "default", "match": {"prefix": "/"}, "route": action}


def add_hash_policy(route: dict[str, Any], mesh: Mesh, proxy: Proxy) -> None:
    """Consistent-hash load balancing needs the route to say what to hash: take it from the
    DestinationRule (port and subset settings included) of the route's single destination."""
    action = route.get("route") or {}
    parts = str(action.get("cluster", "")).split("|")
    if len(parts) != 4:
        return
    port, subset, host = int(parts[1]), parts[2], parts[3]
    service = mesh.registry.service(host)
    rule = mesh.destination_rule_for(proxy, host, service.namespace if service else proxy.namespace)
    if rule is None:
        return
    policy = policy_for_port(rule.spec.get("trafficPolicy"), port)
    for item in rule.spec.get("subsets") or []:
        if subset and item.get("name") == subset:
            policy = merge_policy(policy, policy_for_port(item.get("trafficPolicy"), port))
    consistent = (policy.get("loadBalancer") or {}).get("consistentHash") or {}
    hashes: list[dict[str, Any]] = []
    if consistent.get("httpHeaderName"):
        hashes.append({"header": {"header_name": consistent["httpHeaderName"]}})
    if consistent.get("httpCookie"):
        cookie = consistent["httpCookie"]
        entry: dict[str, Any] = {"name": cookie.get("name", "")}
        if cookie.get("path"):
            entry["path"] = cookie["path"]
        if cookie.get("ttl"):
            entry["ttl"] = duration(cookie["ttl"])
        hashes.append({"cookie": entry})
    if consistent.get("useSourceIp"):
        hashes.append({"connection_properties": {"source_ip": True}})
    if consistent.get("httpQueryParameterName"):
        hashes.append({"query_parameter": {"name": consistent["httpQueryParameterName"]}})
    if hashes:
        action["hash_policy"] = hashes


def domains(service: Service, port: ServicePort, proxy: Proxy) -> list[str]:
    names = short_names(service.hostname, proxy.namespace) + list(service.addresses)
    return [d for name in names for d in (name, f"{name}:{port.number}")]


def outbound_route_configs(mesh: Mesh, proxy: Proxy) -> list[dict[str, Any]]:
    """One RouteConfiguration per HTTP service port, named by the port number."""
    by_port: dict[int, list[dict[str, Any]]] = {}
    for service in mesh.services_for(proxy):
        vs = mesh.virtual_service_for(proxy, service.hostname)
        for port in service.ports:
            if not port.is_http:
                continue
            routes = http_routes(vs, mesh, proxy, port.number) if vs is not None else []
            if vs is None or (not routes and not vs.spec.get("http")):
                routes = [default_route(service, port)]
                add_hash_policy(routes[0], mesh, proxy)
            by_port.setdefault(port.number, []).append({
                "name": f"{service.hostname}:{port.number}",
                "domains": domains(service, port, proxy),
                "routes": routes,
                "include_request_attempt_count": True,
            })
    return [{"name": str(port), "virtual_hosts": vhosts, "validate_clusters": False}
            for port, vhosts in sorted(by_port.items())]


def inbound_route_config(app_port: int) -> dict[str, Any]:
    cluster = cluster_name("inbound", app_port, "", "")
    return {"name": cluster, "validate_clusters": False, "virtual_hosts": [{
        "name": f"inbound|http|{app_port}", "domains": ["*"],
        "routes": [{"name": "default", "match": {"prefix": "/"},
                    "route": {"cluster": cluster, "timeout": "0s", "max_stream_duration": {"max_stream_duration": "0s"}}}],
    }]}


__all__ = ["http_routes", "inbound_route_config", "outbound_route_configs", "route_match"]
