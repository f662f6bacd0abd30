"""AuthorizationPolicy → Envoy's RBAC filters (and ext_authz for CUSTOM), as istiod builds them.

Per inbound port of a workload, the policies that apply to it (`applies_to`: same namespace or
the root namespace, selector labels) become, in Istio's order:
- CUSTOM: an RBAC filter with only shadow rules (the CUSTOM policies' rules) and an ext_authz
  filter for the mesh config's provider that runs only when a shadow rule matched;
- DENY (action DENY), AUDIT (action LOG) and ALLOW (action ALLOW) RBAC filters. ALLOW policies
  without rules still produce the filter with no policy, which denies every request (Istio's
  `spec: {}`); no ALLOW policy at all means no ALLOW filter. `istio.io/dry-run` policies go into
  shadow rules.

A rule is one Envoy policy `ns[NS]-policy[NAME]-rule[I]`: its `to` operations are the OR'd
permissions and its `from` sources the OR'd principals, each ANDing its fields; `when`
conditions are ANDed into both sides. Values follow Istio (`*`, `prefix*`, `*suffix`, exact);
paths use `url_path` (no query) and `{*}`/`{**}` templates the URI template matcher; `ports`
and `destination.port` are decided here, since each listener serves one application port;
`requestPrincipals` and `request.auth.*` read the JWT payload that `jwt_authn` stores under the
issuer's name (`_jwt_authn`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controlplane._hosts import fqdn
from controlplane._mesh import Mesh
from controlplane._protos import RBAC_HTTP_TYPE, typed
from controlplane._proxies import Proxy
from controlplane._resources import Resource
from wasmhost.security.authz import PolicyError, parse_policy

JWT_FILTER = "envoy.filters.http.jwt_authn"
RBAC_FILTER = "envoy.filters.http.rbac"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_AUTHZ_PREFIX = "istio-ext-authz"
_ANY_PERMISSION: dict[str, Any] = {"any": True}
_ANY_PRINCIPAL: dict[str, Any] = {"any": True}
_NEVER_PERMISSION: dict[str, Any] = {"not_rule": {"any": True}}
_NEVER_PRINCIPAL: dict[str, Any] = {"not_id": {"any": True}}
_TEMPLATE = re.compile(r"\{\*\*?\}")


def selected_policies(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    """AuthorizationPolicies for `proxy`, oldest first; targetRefs only select gateways by name."""
    out = []
    for resource in mesh.of_kind("AuthorizationPolicy"):
        spec = resource.spec
        refs = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if spec.get("targetRef") else [])
        if refs:
            name = proxy.labels.get("gateway.networking.k8s.io/gateway-name")
            if resource.namespace == proxy.namespace and any(
                    r.get("kind") == "Gateway" and r.get("name") == name for r in refs):
                out.append(resource)
            continue
        try:
            policy = parse_policy(resource.to_manifest())
        except PolicyError:
            continue  # validation reports it
        if policy.applies_to(proxy.namespace, proxy.labels, mesh.root_namespace):
            out.append(resource)
    return out


# ---- values -------------------------------------------------------------------------------------

def string_match(value: str, *, ignore_case: bool = False, prefix: str = "") -> dict[str, Any]:
    """Istio's value forms as an Envoy StringMatcher (`prefix` is prepended to exact/prefix forms)."""
    case = {"ignore_case": True} if ignore_case else {}
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        return {"suffix": value[1:], **case}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1], **case}
    return {"exact": prefix + value, **case}


def _any_of(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return items[0] if len(items) == 1 else {f"or_{key}": {key: items}}


def _principal(value: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": string_match(value.removeprefix("spiffe://"), prefix="spiffe://")}}


def _namespace(value: str) -> dict[str, Any]:
    if value == "*":
        pattern = "[^/]+"
    elif value.startswith("*"):
        pattern = "[^/]*" + re.escape(value[1:])
    elif value.endswith("*"):
        pattern = re.escape(value[:-1]) + "[^/]*"
    else:
        pattern = re.escape(value)
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{pattern}/.*"}}}}


def _cidr(value: str) -> dict[str, Any]:
    address, _, length = value.strip().partition("/")
    if not length:
        length = "128" if ":" in address else "32"
    return {"address_prefix": address, "prefix_len": int(length)}


def _header(name: str, value: str, *, ignore_case: bool = False) -> dict[str, Any]:
    if value == "*":
        return {"header": {"name": name, "present_match": True}}
    return {"header": {"name": name, "string_match": string_match(value, ignore_case=ignore_case)}}


def _path(value: str) -> dict[str, Any]:
    if _TEMPLATE.search(value):
        return {"uri_template": {"name": "uri-template", "typed_config": typed(
            "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
            {"path_template": value.replace("{**}", "**").replace("{*}", "*")})}}
    return {"url_path": {"path": string_match(value)}}


def _jwt_value(path: list[str], value: str, issuers: Sequence[str]) -> dict[str, Any]:
    """A JWT payload field (string or list) of any issuer's verified token matches `value`."""
    if value == "*":
        matcher: dict[str, Any] = {"present_match": True}
    else:
        single = {"string_match": string_match(value)}
        matcher = {"or_match": {"value_matchers": [single, {"list_match": {"one_of": single}}]}}
    ids = [{"metadata": {"filter": JWT_FILTER, "path": [{"key": issuer}] + [{"key": p} for p in path],
                         "value": matcher}} for issuer in issuers]
    return _any_of(ids, "ids") if ids else dict(_NEVER_PRINCIPAL)


def _request_principal(value: str, issuers: Sequence[str]) -> dict[str, Any]:
    """`iss/sub` patterns over the verified token of each issuer (jwt_authn keeps iss and sub apart)."""
    def token_of(issuer: str) -> dict[str, Any]:
        return {"metadata": {"filter": JWT_FILTER, "path": [{"key": issuer}], "value": {"present_match": True}}}

    def sub_of(issuer: str, matcher: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"filter": JWT_FILTER, "path": [{"key": issuer}, {"key": "sub"}],
                             "value": {"string_match": matcher}}}

    ids: list[dict[str, Any]] = []
    for issuer in issuers:
        head = issuer + "/"
        if value == "*":
            ids.append(token_of(issuer))
        elif value.startswith("*"):
            tail = value[1:]
            ids.append(sub_of(issuer, {"suffix": tail}))
            cut = tail.rfind("/")
            if cut >= 0 and head.endswith(tail[:cut + 1]):  # the suffix reaches into the issuer
                ids.append(sub_of(issuer, {"exact": tail[cut + 1:]}))
        elif value.endswith("*"):
            start = value[:-1]
            if start.startswith(head):
                ids.append(sub_of(issuer, {"prefix": start[len(head):]}))
            elif head.startswith(start):
                ids.append(token_of(issuer))
        elif value.startswith(head):
            ids.append(sub_of(issuer, {"exact": value[len(head):]}))
    return _any_of(ids, "ids") if ids else dict(_NEVER_PRINCIPAL)


# ---- rules --------------------------------------------------------------------------------------

def _negatable(spec: Mapping[str, Any], base: str, build: Callable[[str], dict[str, Any]], key: str,
               never: dict[str, Any]) -> list[dict[str, Any]]:
    """The positive (`base`) and negative (`notBase`) matchers of one field."""
    out = []
    not_key = "not_rule" if key == "rules" else "not_id"
    if base in spec:
        out.append(_any_of([build(v) for v in spec[base]], key) if spec[base] else dict(never))
    negative = "not" + base[0].upper() + base[1:]
    if spec.get(negative):
        out.append({not_key: _any_of([build(v) for v in spec[negative]], key)})
    return out


def _static_port(port: int, values: Sequence[str], negate: bool) -> dict[str, Any]:
    hit = str(port) in [str(v) for v in values]
    return dict(_ANY_PERMISSION) if hit != negate else dict(_NEVER_PERMISSION)


def _operation(spec: Mapping[str, Any], port: int) -> list[dict[str, Any]]:
    rules = []
    rules += _negatable(spec, "hosts", lambda v: _header(":authority", v, ignore_case=True), "rules", _NEVER_PERMISSION)
    rules += _negatable(spec, "methods", lambda v: _header(":method", v), "rules", _NEVER_PERMISSION)
    rules += _negatable(spec, "paths", _path, "rules", _NEVER_PERMISSION)
    if "ports" in spec:
        rules.append(_static_port(port, spec["ports"], False))
    if spec.get("notPorts"):
        rules.append(_static_port(port, spec["notPorts"], True))
    return rules


def _source(spec: Mapping[str, Any], issuers: Sequence[str]) -> list[dict[str, Any]]:
    ids = []
    ids += _negatable(spec, "principals", _principal, "ids", _NEVER_PRINCIPAL)
    ids += _negatable(spec, "requestPrincipals", lambda v: _request_principal(v, issuers), "ids", _NEVER_PRINCIPAL)
    ids += _negatable(spec, "namespaces", _namespace, "ids", _NEVER_PRINCIPAL)
    ids += _negatable(spec, "ipBlocks", lambda v: {"direct_remote_ip": _cidr(v)}, "ids", _NEVER_PRINCIPAL)
    ids += _negatable(spec, "remoteIpBlocks", lambda v: {"remote_ip": _cidr(v)}, "ids", _NEVER_PRINCIPAL)
    return ids


_BRACKETS = re.compile(r"\[([^\[\]]+)\]")


def _condition(when: Mapping[str, Any], port: int, issuers: Sequence[str]) -> tuple[str, Callable[[str], dict[str, Any]]]:
    """('rules' or 'ids', a builder for one value) of a `when` condition."""
    key = str(when.get("key", ""))
    names = _BRACKETS.findall(key)
    if key.startswith("request.headers["):
        return "ids", lambda v: _header(names[0].lower(), v)
    if key.startswith("request.auth.claims["):
        return "ids", lambda v: _jwt_value(names, v, issuers)
    if key.startswith("experimental.envoy.filters."):
        filter_name = key.split("[", 1)[0].removeprefix("experimental.")
        return "ids", lambda v: {"metadata": {"filter": filter_name, "path": [{"key": n} for n in names],
                                              "value": {"string_match": string_match(v)}}}
    simple: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
        "source.ip": ("ids", lambda v: {"direct_remote_ip": _cidr(v)}),
        "remote.ip": ("ids", lambda v: {"remote_ip": _cidr(v)}),
        "source.namespace": ("ids", _namespace),
        "source.principal": ("ids", _principal),
        "request.auth.principal": ("ids", lambda v: _request_principal(v, issuers)),
        "request.auth.audiences": ("ids", lambda v: _jwt_value(["aud"], v, issuers)),
        "request.auth.presenter": ("ids", lambda v: _jwt_value(["azp"], v, issuers)),
        "destination.ip": ("rules", lambda v: {"destination_ip": _cidr(v)}),
        "destination.port": ("rules", lambda v: dict(_ANY_PERMISSION) if v == str(port) else dict(_NEVER_PERMISSION)),
        "connection.sni": ("rules", lambda v: {"requested_server_name": string_match(v)}),
    }
    return simple[key]


def _and(items: list[dict[str, Any]], key: str, anything: dict[str, Any]) -> dict[str, Any]:
    if not items:
        return dict(anything)
    return items[0] if len(items) == 1 else {f"and_{key}": {key: items}}


def rule_policy(rule: Mapping[str, Any], port: int, issuers: Sequence[str]) -> dict[str, Any]:
    """One Envoy RBAC policy from one AuthorizationPolicy rule."""
    extra_rules: list[dict[str, Any]] = []
    extra_ids: list[dict[str, Any]] = []
    for when in rule.get("when") or []:
        side, build = _condition(when, port, issuers)
        target = extra_rules if side == "rules" else extra_ids
        never = _NEVER_PERMISSION if side == "rules" else _NEVER_PRINCIPAL
        negate = "not_rule" if side == "rules" else "not_id"
        if "values" in when:
            target.append(_any_of([build(v) for v in when["values"]], side) if when["values"] else dict(never))
        if when.get("notValues"):
            target.append({negate: _any_of([build(v) for v in when["notValues"]], side)})
    operations = [_operation((item or {}).get("operation") or {}, port) for item in rule.get("to") or []]
    sources = [_source((item or {}).get("source") or {}, issuers) for item in rule.get("from") or []]
    permissions = [_and(op + extra_rules, "rules", _ANY_PERMISSION) for op in operations] or [
        _and(extra_rules, "rules", _ANY_PERMISSION)]
    principals = [_and(src + extra_ids, "ids", _ANY_PRINCIPAL) for src in sources] or [
        _and(extra_ids, "ids", _ANY_PRINCIPAL)]
    return {"permissions": permissions, "principals": principals}


def policy_rules(resource: Resource, port: int, issuers: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """Envoy policies (by name) of every rule of one AuthorizationPolicy."""
    return {f"{prefix}ns[{resource.namespace}]-policy[{resource.name}]-rule[{index}]": rule_policy(rule, port, issuers)
            for index, rule in enumerate(resource.spec.get("rules") or [])}


def _dry_run(resource: Resource) -> bool:
    return str(resource.annotations.get("istio.io/dry-run", "")).lower() == "true"


def _rbac_filter(action: str, policies: dict[str, Any], shadow: dict[str, Any], stat_prefix: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if policies is not None:
        config["rules"] = {"action": action, "policies": policies}
    if shadow:
        config["shadow_rules"] = {"action": action, "policies": shadow}
        config["shadow_rules_stat_prefix"] = stat_prefix
    return {"name": RBAC_FILTER, "typed_config": typed(RBAC_HTTP_TYPE, config)}


def rbac_filters(mesh: Mesh, proxy: Proxy, port: int, issuers: Sequence[str]) -> list[dict[str, Any]]:
    """DENY, AUDIT (LOG) and ALLOW RBAC filters for an inbound port, in Istio's order."""
    selected = [r for r in selected_policies(mesh, proxy) if r.spec.get("action", "ALLOW") != "CUSTOM"]
    out = []
    for action, envoy_action in (("DENY", "DENY"), ("AUDIT", "LOG"), ("ALLOW", "ALLOW")):
        chosen = [r for r in selected if r.spec.get("action", "ALLOW") == action]
        if not chosen:
            continue
        enforced: dict[str, Any] = {}
        shadow: dict[str, Any] = {}
        for resource in chosen:
            (shadow if _dry_run(resource) else enforced).update(policy_rules(resource, port, issuers))
        if not enforced and all(_dry_run(r) for r in chosen):
            out.append({"name": RBAC_FILTER, "typed_config": typed(RBAC_HTTP_TYPE, {
                "shadow_rules": {"action": envoy_action, "policies": shadow},
                "shadow_rules_stat_prefix": f"istio_dry_run_{action.lower()}_"})})
            continue
        out.append(_rbac_filter(envoy_action, enforced, shadow, f"istio_dry_run_{action.lower()}_"))
    return out


def custom_filters(mesh: Mesh, proxy: Proxy, port: int, issuers: Sequence[str]) -> list[dict[str, Any]]:
    """CUSTOM policies: a shadow RBAC filter marking requests they match, then ext_authz for those.

    An unknown provider (or one whose service the proxy cannot reach) denies what the policy
    matches, as istiod does, rather than letting those requests through unchecked.
    """
    chosen = [r for r in selected_policies(mesh, proxy) if r.spec.get("action") == "CUSTOM"]
    if not chosen:
        return []
    by_provider: dict[str, list[Resource]] = {}
    for resource in chosen:
        by_provider.setdefault(str((resource.spec.get("provider") or {}).get("name", "")), []).append(resource)
    out: list[dict[str, Any]] = []
    broken: dict[str, Any] = {}
    usable: dict[str, Any] = {}
    for name, resources in sorted(by_provider.items()):
        provider = ext_authz_config(mesh, proxy, mesh.config.extension_providers.get(name))
        rules = {k: v for r in resources for k, v in policy_rules(r, port, issuers, f"{EXT_AUTHZ_PREFIX}-").items()}
        if provider is None:
            broken.update(rules)
            continue
        usable.update(rules)
        out.append({"name": EXT_AUTHZ_FILTER, "typed_config": typed(
            "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", {
                **provider, "filter_enabled_metadata": {
                    "filter": RBAC_FILTER, "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
                    "value": {"string_match": {"prefix": EXT_AUTHZ_PREFIX}}}})})
    head = []
    if usable:
        head.append({"name": RBAC_FILTER, "typed_config": typed(RBAC_HTTP_TYPE, {
            "shadow_rules": {"action": "ALLOW", "policies": usable}, "shadow_rules_stat_prefix": "istio_ext_authz_"})})
    if broken:
        head.append(_rbac_filter("DENY", broken, {}, ""))
    return head + out


def ext_authz_config(mesh: Mesh, proxy: Proxy, provider: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ExtAuthz config of an `envoyExtAuthzHttp`/`envoyExtAuthzGrpc` provider (None if unusable)."""
    if provider is None:
        return None
    http, grpc = provider.get("envoyExtAuthzHttp"), provider.get("envoyExtAuthzGrpc")
    settings = http or grpc
    if not isinstance(settings, Mapping) or not settings.get("service") or not settings.get("port"):
        return None
    host, port = str(settings["service"]), int(settings["port"])
    service = next((s for s in mesh.services_for(proxy)
                    if s.hostname in (host, fqdn(host, proxy.namespace)) and s.port(port) is not None), None)
    if service is None:
        return None
    cluster = f"outbound|{port}||{service.hostname}"
    timeout = str(settings.get("timeout") or "0.6s")
    common: dict[str, Any] = {"transport_api_version": "V3", "failure_mode_allow": bool(settings.get("failOpen"))}
    if settings.get("statusOnError"):
        common["status_on_error"] = {"code": int(settings["statusOnError"])}
    if grpc:
        return {**common, "grpc_service": {"envoy_grpc": {"cluster_name": cluster, "authority": host},
                                           "timeout": timeout}}

    def patterns(names: Any) -> dict[str, Any]:
        """A non-empty ListStringMatcher, or nothing (Envoy refuses an empty pattern list)."""
        items = [string_match(str(n), ignore_case=True) for n in names or []]
        return {"patterns": items} if items else {}

    request: dict[str, Any] = {}
    if allowed := patterns(settings.get("includeRequestHeadersInCheck")):
        request["allowed_headers"] = allowed
    if settings.get("includeAdditionalHeadersInCheck"):
        request["headers_to_add"] = [{"key": k, "value": str(v)}
                                     for k, v in settings["includeAdditionalHeadersInCheck"].items()]
    response: dict[str, Any] = {}
    if upstream := patterns(settings.get("headersToUpstreamOnAllow")):
        response["allowed_upstream_headers"] = upstream
    if client := patterns(settings.get("headersToDownstreamOnDeny")):
        response["allowed_client_headers"] = client
    service_config: dict[str, Any] = {
        "server_uri": {"uri": f"http://{host}:{port}", "cluster": cluster, "timeout": timeout},
        "path_prefix": str(settings.get("pathPrefix", "")),
        **({"authorization_request": request} if request else {}),
        **({"authorization_response": response} if response else {}),
    }
    return {**common, "http_service": service_config}


__all__ = ["custom_filters", "ext_authz_config", "rbac_filters", "rule_policy", "selected_policies", "string_match"]
