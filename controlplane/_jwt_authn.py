"""RequestAuthentication → Envoy's `jwt_authn` filter and the clusters its JWKS are fetched from.

Every RequestAuthentication that applies to a workload (its namespace or the root namespace,
selector labels) contributes its `jwtRules`; each rule is one provider `origins-N` with the
rule's issuer, audiences, token locations (`fromHeaders` with prefix, `fromParams`,
`fromCookies`; by default `Authorization: Bearer` and `access_token`), `forwardOriginalToken`,
`outputPayloadToHeader` and `outputClaimToHeaders`. Keys come from the inline `jwks` or from
`jwksUri`, fetched by the proxy through a cluster (the mesh service's outbound cluster when the
URI names one, else a `jwks|HOST|PORT` cluster) and cached for five minutes.

One requirement covers all paths: any provider's valid token, or no token (`allow_missing`),
as Istio configures it: an invalid token is refused with 401 here, a missing one is left to
AuthorizationPolicy (`requestPrincipals`). A verified token's payload is kept in dynamic
metadata under its issuer's name for the RBAC filters.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from typing import Any
from urllib.parse import urlparse

from controlplane._mesh import Mesh
from controlplane._protos import typed
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource
from wasmhost.security.jwt import JwtRule, JwtRuleError, parse_request_authentication

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWKS_CACHE = "300s"


def selected_request_authentications(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    """RequestAuthentications for `proxy`, oldest first."""
    out = []
    for resource in mesh.of_kind("RequestAuthentication"):
        spec = resource.spec
        refs = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if spec.get("targetRef") else [])
        if refs:
            name = proxy.labels.get("gateway.networking.k8s.io/gateway-name")
            if resource.namespace == proxy.namespace and any(
                    r.get("kind") == "Gateway" and r.get("name") == name for r in refs):
                out.append(resource)
        elif resource.namespace in (proxy.namespace, mesh.root_namespace) and labels_match(
                (spec.get("selector") or {}).get("matchLabels"), proxy.labels):
            out.append(resource)
    return out


def jwt_rules(mesh: Mesh, proxy: Proxy) -> list[JwtRule]:
    rules: list[JwtRule] = []
    for resource in selected_request_authentications(mesh, proxy):
        try:
            rules.extend(parse_request_authentication(resource.to_manifest()))
        except JwtRuleError:
            continue  # validation reports it
    return rules


def issuers(mesh: Mesh, proxy: Proxy) -> list[str]:
    """Issuers whose tokens the proxy verifies (the metadata keys RBAC reads), in order."""
    return list(dict.fromkeys(rule.issuer for rule in jwt_rules(mesh, proxy)))


def _jwks_target(uri: str) -> tuple[str, int, bool]:
    parsed = urlparse(uri)
    secure = parsed.scheme == "https"
    return parsed.hostname or "", parsed.port or (443 if secure else 80), secure


def jwks_cluster_name(mesh: Mesh, proxy: Proxy, uri: str) -> str:
    host, port, _ = _jwks_target(uri)
    for service in mesh.services_for(proxy):
        if host in (service.hostname, service.hostname.split(".")[0]) and service.port(port) is not None:
            return f"outbound|{port}||{service.hostname}"
    return f"jwks|{host}|{port}"


def _provider(mesh: Mesh, proxy: Proxy, rule: JwtRule) -> dict[str, Any]:
    provider: dict[str, Any] = {"issuer": rule.issuer, "forward": rule.forward_original_token,
                                "payload_in_metadata": rule.issuer}
    if rule.audiences:
        provider["audiences"] = list(rule.audiences)
    if rule.jwks is not None:
        provider["local_jwks"] = {"inline_string": json.dumps(rule.jwks)}
    else:
        provider["remote_jwks"] = {"http_uri": {"uri": rule.jwks_uri, "cluster": jwks_cluster_name(mesh, proxy, rule.jwks_uri),
                                                "timeout": f"{rule.timeout:g}s"},
                                   "cache_duration": JWKS_CACHE, "async_fetch": {}}
    provider["from_headers"] = [{"name": h.name, "value_prefix": h.prefix} for h in rule.from_headers]
    if rule.from_params:
        provider["from_params"] = list(rule.from_params)
    if rule.from_cookies:
        provider["from_cookies"] = list(rule.from_cookies)
    if rule.output_payload_to_header:
        provider["forward_payload_header"] = rule.output_payload_to_header
    if rule.output_claim_to_headers:
        provider["claim_to_headers"] = [{"header_name": h, "claim_name": c} for h, c in rule.output_claim_to_headers]
    return provider


def jwt_filter(mesh: Mesh, proxy: Proxy) -> dict[str, Any] | None:
    """The jwt_authn HTTP filter for the proxy's inbound traffic, or None without RequestAuthentication."""
    rules = jwt_rules(mesh, proxy)
    if not rules:
        return None
    providers = {f"origins-{index}": _provider(mesh, proxy, rule) for index, rule in enumerate(rules)}
    requirements: list[dict[str, Any]] = [{"provider_name": name} for name in providers]
    requirements.append({"allow_missing": {}})
    return {"name": JWT_FILTER, "typed_config": typed(
        "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", {
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": requirements}}}],
            "bypass_cors_preflight": True})}


def jwks_clusters(mesh: Mesh, proxy: Proxy) -> list[dict[str, Any]]:
    """Clusters for `jwksUri` hosts that are not mesh services."""
    out: dict[str, dict[str, Any]] = {}
    for rule in jwt_rules(mesh, proxy):
        if not rule.jwks_uri:
            continue
        name = jwks_cluster_name(mesh, proxy, rule.jwks_uri)
        if not name.startswith("jwks|") or name in out:
            continue
        host, port, secure = _jwks_target(rule.jwks_uri)
        try:
            ipaddress.ip_address(host)
            kind = "STATIC"
        except ValueError:
            kind = "STRICT_DNS"
        cluster: dict[str, Any] = {
            "name": name, "type": kind, "connect_timeout": "5s", "dns_lookup_family": "V4_ONLY",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}}}}]}]}}
        if secure:
            context: dict[str, Any] = {"sni": host}
            cafile = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
            if cafile:
                context["common_tls_context"] = {"validation_context": {
                    "trusted_ca": {"filename": cafile},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}]}}
            cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": typed(
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", context)}
        out[name] = cluster
    return list(out.values())


__all__ = ["JWT_FILTER", "issuers", "jwks_cluster_name", "jwks_clusters", "jwt_filter", "jwt_rules",
           "selected_request_authentications"]
