"""``envoy.filters.http.rbac``: Envoy's role-based access control, as the control plane emits it.

Istio's AuthorizationPolicy reaches a sidecar as RBAC filters (DENY, LOG, ALLOW, each with
policies named after the rule they came from). A policy matches a request when one of its
permissions (what is asked: headers, path, port, SNI, ...) and one of its principals (who asks:
peer certificate identity, addresses, headers, the verified JWT in dynamic metadata) match.
ALLOW denies what no policy matches, DENY denies what one matches, LOG never denies. Shadow rules
are evaluated the same way and only recorded in dynamic metadata (``istio.io/dry-run``). Matchers
are compiled once per plan into predicates over a ``RequestView``; anything this module does not
implement (CEL conditions, the generic matcher API) is refused with its field path.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as _rbac_config_pb2  # noqa: F401  (message types)
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as _rbac_http_pb2  # noqa: F401
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2 as _uri_template_pb2

from ._config_support import unpack_any
from ._errors import ConfigError
from ._filter_api import FilterCallbacks, HeadersStatus, HttpFilter, StreamInfo
from ._filter_registry import FilterBuildContext, register_http_filter
from ._headers import HeaderMap
from ._route_build import compile_header_matcher, compile_string_matcher

RBAC_TYPE = "envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_FILTER_NAME = "envoy.filters.http.rbac"
DENIED_BODY = b"RBAC: access denied"
_ALLOW, _DENY, _LOG = 0, 1, 2
_ACTIONS = {_ALLOW: "ALLOW", _DENY: "DENY", _LOG: "LOG"}


@dataclass(frozen=True, slots=True)
class RequestView:
    """What RBAC matchers read about one request."""

    headers: HeaderMap
    info: StreamInfo

    @property
    def path(self) -> bytes:
        """The request path without query or fragment (what ``url_path`` matches)."""
        raw = self.headers.get(b":path") or b""
        return raw.split(b"?", 1)[0].split(b"#", 1)[0]


Predicate = Callable[[RequestView], bool]


def peer_principals(info: StreamInfo) -> list[str]:
    """The peer's identities in Envoy's order: URI SANs, else DNS SANs, else the subject."""
    tls = info.downstream_tls
    if not tls or not tls.get("peer_certificate_presented"):
        return []
    for key in ("uri_san_peer_certificate", "dns_san_peer_certificate"):
        if tls.get(key):
            return list(tls[key])
    subject = tls.get("subject_peer_certificate") or ""
    return [subject] if subject else []


# ---- shared pieces ------------------------------------------------------------------------------

def _cidr(message: Any, path: str) -> Callable[[str], bool]:
    try:
        network = ipaddress.ip_network(f"{message.address_prefix}/{message.prefix_len.value}"
                                       if message.HasField("prefix_len") else message.address_prefix, strict=False)
    except ValueError as err:
        raise ConfigError(path, f"invalid CIDR range: {err}") from None

    def contains(address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in network
        except ValueError:
            return False

    return contains


def _string_of(matcher: Any, path: str) -> Callable[[str], bool]:
    check = compile_string_matcher(matcher, path)
    return lambda value: check(value.encode())


def compile_value_matcher(matcher: Any, path: str) -> Callable[[Any], bool]:
    """``envoy.type.matcher.v3.ValueMatcher`` over a JSON-like value (None when absent)."""
    kind = matcher.WhichOneof("match_pattern")
    if kind == "null_match":
        return lambda value: value is None
    if kind == "present_match":
        expected = matcher.present_match
        return lambda value: (value is not None) == expected
    if kind == "bool_match":
        wanted = matcher.bool_match
        return lambda value: isinstance(value, bool) and value == wanted
    if kind == "string_match":
        check = _string_of(matcher.string_match, f"{path}.string_match")
        return lambda value: isinstance(value, str) and check(value)
    if kind == "double_match":
        double = matcher.double_match
        if double.WhichOneof("match_pattern") == "exact":
            exact = double.exact
            return lambda value: _is_number(value) and float(value) == exact
        start, end = double.range.start, double.range.end
        return lambda value: _is_number(value) and start <= float(value) < end
    if kind == "list_match":
        one = compile_value_matcher(matcher.list_match.one_of, f"{path}.list_match.one_of")
        return lambda value: isinstance(value, list) and any(one(item) for item in value)
    if kind == "or_match":
        each = [compile_value_matcher(m, f"{path}.or_match.value_matchers[{i}]")
                for i, m in enumerate(matcher.or_match.value_matchers)]
        return lambda value: any(check(value) for check in each)
    raise ConfigError(path, "value matcher needs one of null_match, double_match, string_match, bool_match, "
                            "present_match, list_match, or_match")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metadata(matcher: Any, path: str) -> Predicate:
    if not matcher.filter:
        raise ConfigError(f"{path}.filter", "must name the metadata namespace")
    keys = []
    for index, segment in enumerate(matcher.path):
        if not segment.key:
            raise ConfigError(f"{path}.path[{index}].key", "must not be empty")
        keys.append(segment.key)
    if not keys:
        raise ConfigError(f"{path}.path", "must have at least one segment")
    check = compile_value_matcher(matcher.value, f"{path}.value")
    namespace, invert = matcher.filter, matcher.invert

    def match(view: RequestView) -> bool:
        value: Any = view.info.dynamic_metadata.get(namespace)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return check(value) != invert

    return match


def _header(matcher: Any, path: str) -> Predicate:
    check = compile_header_matcher(matcher, path)
    return lambda view: check(view.headers)


def _url_path(matcher: Any, path: str) -> Predicate:
    if matcher.WhichOneof("rule") != "path":
        raise ConfigError(path, "path matcher needs path")
    check = compile_string_matcher(matcher.path, f"{path}.path")
    return lambda view: check(view.path)


def _uri_template(extension: Any, path: str) -> Predicate:
    config = unpack_any(extension.typed_config, f"{path}.typed_config")
    if not isinstance(config, _uri_template_pb2.UriTemplateMatchConfig):
        raise ConfigError(f"{path}.typed_config", "must be an UriTemplateMatchConfig")
    template = config.path_template
    if not template.startswith("/"):
        raise ConfigError(f"{path}.typed_config.path_template", "must start with /")
    parts = []
    for segment in template.split("/")[1:]:
        if segment == "**":
            parts.append("(?:/.*)?")
        elif segment == "*":
            parts.append("/[^/]+")
        else:
            parts.append("/" + re.escape(segment).replace(r"\*\*", ".*").replace(r"\*", "[^/]*"))
    regex = re.compile("".join(parts).encode())
    return lambda view: regex.fullmatch(view.path) is not None


def _all(items: list[Predicate]) -> Predicate:
    return lambda view: all(item(view) for item in items)


def _any(items: list[Predicate]) -> Predicate:
    return lambda view: any(item(view) for item in items)


def _always(view: RequestView) -> bool:
    return True


# ---- permissions and principals ----------------------------------------------------------------

def compile_permission(permission: Any, path: str) -> Predicate:
    """``envoy.config.rbac.v3.Permission``: what is being asked for."""
    kind = permission.WhichOneof("rule")
    at = f"{path}.{kind}"
    if kind == "any":
        if not permission.any:
            raise ConfigError(at, "must be true")
        return _always
    if kind in ("and_rules", "or_rules"):
        items = [compile_permission(p, f"{at}.rules[{i}]") for i, p in enumerate(getattr(permission, kind).rules)]
        return _all(items) if kind == "and_rules" else _any(items)
    if kind == "not_rule":
        inner = compile_permission(permission.not_rule, at)
        return lambda view: not inner(view)
    if kind == "header":
        return _header(permission.header, at)
    if kind == "url_path":
        return _url_path(permission.url_path, at)
    if kind == "uri_template":
        return _uri_template(permission.uri_template, at)
    if kind == "destination_ip":
        inside = _cidr(permission.destination_ip, at)
        return lambda view: inside(view.info.downstream_local_address[0])
    if kind == "destination_port":
        port = permission.destination_port
        return lambda view: view.info.downstream_local_address[1] == port
    if kind == "destination_port_range":
        start, end = permission.destination_port_range.start, permission.destination_port_range.end
        return lambda view: start <= view.info.downstream_local_address[1] < end
    if kind == "requested_server_name":
        check = _string_of(permission.requested_server_name, at)
        return lambda view: check((view.info.downstream_tls or {}).get("sni") or "")
    if kind == "metadata":
        return _metadata(permission.metadata, at)
    if kind is None:
        raise ConfigError(path, "permission needs a rule")
    raise ConfigError(at, "permission kind not supported by the wasmesh sidecar")


def compile_principal(principal: Any, path: str) -> Predicate:
    """``envoy.config.rbac.v3.Principal``: who is asking."""
    kind = principal.WhichOneof("identifier")
    at = f"{path}.{kind}"
    if kind == "any":
        if not principal.any:
            raise ConfigError(at, "must be true")
        return _always
    if kind in ("and_ids", "or_ids"):
        items = [compile_principal(p, f"{at}.ids[{i}]") for i, p in enumerate(getattr(principal, kind).ids)]
        return _all(items) if kind == "and_ids" else _any(items)
    if kind == "not_id":
        inner = compile_principal(principal.not_id, at)
        return lambda view: not inner(view)
    if kind == "authenticated":
        if not principal.authenticated.HasField("principal_name"):
            return lambda view: bool(peer_principals(view.info))
        check = _string_of(principal.authenticated.principal_name, f"{at}.principal_name")
        return lambda view: any(check(name) for name in peer_principals(view.info))
    if kind in ("source_ip", "direct_remote_ip"):
        inside = _cidr(getattr(principal, kind), at)
        return lambda view: inside(view.info.downstream_direct_remote_address[0])
    if kind == "remote_ip":
        inside = _cidr(principal.remote_ip, at)
        return lambda view: inside(view.info.downstream_remote_address[0])
    if kind == "header":
        return _header(principal.header, at)
    if kind == "url_path":
        return _url_path(principal.url_path, at)
    if kind == "metadata":
        return _metadata(principal.metadata, at)
    if kind is None:
        raise ConfigError(path, "principal needs an identifier")
    raise ConfigError(at, "principal kind not supported by the wasmesh sidecar")


@dataclass(frozen=True)
class RbacEngine:
    """One ``envoy.config.rbac.v3.RBAC``: an action and named policies, in configuration order."""

    action: int
    policies: tuple[tuple[str, Predicate], ...]

    def matched_policy(self, view: RequestView) -> str | None:
        for name, matches in self.policies:
            if matches(view):
                return name
        return None

    def allows(self, view: RequestView) -> tuple[bool, str | None]:
        """(allowed, the policy that decided or None)."""
        policy = self.matched_policy(view)
        if self.action == _ALLOW:
            return policy is not None, policy
        if self.action == _DENY:
            return policy is None, policy
        return True, policy


def compile_rbac(rules: Any, path: str) -> RbacEngine:
    if rules.action not in _ACTIONS:
        raise ConfigError(f"{path}.action", f"action {rules.action} is not supported (ALLOW, DENY, LOG)")
    if rules.HasField("audit_logging_options"):
        raise ConfigError(f"{path}.audit_logging_options", "audit loggers are not supported by the wasmesh sidecar")
    policies = []
    for name in sorted(rules.policies):  # Envoy evaluates policies in map-key order
        policy = rules.policies[name]
        at = f"{path}.policies[{name!r}]"
        for field in ("condition", "checked_condition", "cel_config"):
            if policy.HasField(field):
                raise ConfigError(f"{at}.{field}", "CEL conditions are not supported by the wasmesh sidecar")
        if not policy.permissions:
            raise ConfigError(f"{at}.permissions", "must have at least one permission")
        if not policy.principals:
            raise ConfigError(f"{at}.principals", "must have at least one principal")
        permissions = _any([compile_permission(p, f"{at}.permissions[{i}]") for i, p in enumerate(policy.permissions)])
        principals = _any([compile_principal(p, f"{at}.principals[{i}]") for i, p in enumerate(policy.principals)])
        policies.append((name, _both(permissions, principals)))
    return RbacEngine(rules.action, tuple(policies))


def _both(first: Predicate, second: Predicate) -> Predicate:
    return lambda view: first(view) and second(view)


@dataclass(frozen=True)
class RbacConfig:
    enforced: RbacEngine | None  # None: no ``rules`` field, nothing is enforced
    shadow: RbacEngine | None
    shadow_prefix: str
    rules_prefix: str = ""
    stat_root: str = "http.rbac."  # ``http.<hcm stat_prefix>.rbac.``, set when the filter is built


def parse_rbac(config: Any, path: str = "") -> RbacConfig:
    """Validate and compile an ``envoy.extensions.filters.http.rbac.v3.RBAC``."""
    for field in ("matcher", "shadow_matcher"):
        if config.HasField(field):
            raise ConfigError(f"{path}.{field}" if path else field,
                              "the matcher API is not supported by the wasmesh sidecar; use rules")
    prefix = f"{path}." if path else ""
    enforced = compile_rbac(config.rules, f"{prefix}rules") if config.HasField("rules") else None
    shadow = compile_rbac(config.shadow_rules, f"{prefix}shadow_rules") if config.HasField("shadow_rules") else None
    return RbacConfig(enforced, shadow, config.shadow_rules_stat_prefix, config.rules_stat_prefix)


class RbacFilter(HttpFilter):
    """Decides at request headers: continue, or a 403 ``RBAC: access denied``."""

    encodes = False

    def __init__(self, config: RbacConfig, callbacks: FilterCallbacks) -> None:
        self.config = config
        self.callbacks = callbacks

    def _count(self, name: str) -> None:
        """Envoy's ``http.<prefix>.rbac.*`` counters, in the worker's stats store (when the stream has one)."""
        stream = getattr(self.callbacks, "stream", None)
        if stream is not None:
            stream.ctx.worker.stats.counter(self.config.stat_root + name).inc()

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        info = self.callbacks.stream_info
        view = RequestView(headers, info)
        config = self.config
        if config.shadow is not None:
            allowed, policy = config.shadow.allows(view)
            record = info.dynamic_metadata.setdefault(RBAC_FILTER_NAME, {})
            if policy is not None:
                record[f"{config.shadow_prefix}shadow_effective_policy_id"] = policy
            record[f"{config.shadow_prefix}shadow_engine_result"] = "allowed" if allowed else "denied"
            self._count(f"{config.shadow_prefix}shadow_{'allowed' if allowed else 'denied'}")
        if config.enforced is None:
            return HeadersStatus.Continue
        allowed, policy = config.enforced.allows(view)
        if config.enforced.action == _LOG:
            if policy is not None:
                info.dynamic_metadata.setdefault(RBAC_FILTER_NAME, {})["access_log_hint"] = True
            return HeadersStatus.Continue
        self._count(f"{config.rules_prefix}{'allowed' if allowed else 'denied'}")
        if allowed:
            return HeadersStatus.Continue
        self.callbacks.send_local_reply(403, DENIED_BODY, (),
                                        f"rbac_access_denied_matched_policy[{policy or 'none'}]")
        return HeadersStatus.StopIteration


def build_rbac(config: Any, context: FilterBuildContext) -> Any:
    """Config factory for ``envoy.extensions.filters.http.rbac.v3.RBAC``."""
    parsed = dataclasses.replace(parse_rbac(config), stat_root=f"http.{context.stat_prefix}.rbac.")

    def create(callbacks: FilterCallbacks) -> RbacFilter:
        return RbacFilter(parsed, callbacks)

    create.filter_class = RbacFilter  # type: ignore[attr-defined]
    return create


register_http_filter(RBAC_TYPE, build_rbac)
