"""AuthorizationPolicy (security.istio.io v1/v1beta1) parsed, checked and compiled.

``parse_policy`` accepts a manifest (or its ``spec`` with a name) from an untrusted source
and raises ``PolicyError`` naming the field path (``rules[0].from[1].source.ipBlocks[2]``).
The compiled ``Rule``/``Source``/``Operation``/``Condition`` objects answer ``matches``.

TCP traffic (Istio's documented behaviour): HTTP-only attributes (hosts, methods, paths,
requestPrincipals, request.* conditions) cannot be evaluated; in a DENY (and CUSTOM) policy
they count as matching, in an ALLOW (and AUDIT) policy the rule that uses them never matches.
``experimental.*`` condition keys, which need Envoy filter metadata we do not have, are
treated the same way.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._match import IpNetwork, PathPattern, StringPattern, ip_in, parse_ip_block
from ._request import AuthzRequest


class PolicyError(ValueError):
    """An AuthorizationPolicy is invalid; the message starts with the field path."""


class Action(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"

    @property
    def lenient(self) -> bool:
        """Do unevaluable attributes count as matching (DENY, CUSTOM) or not (ALLOW, AUDIT)?"""
        return self in (Action.DENY, Action.CUSTOM)


Predicate = Callable[[AuthzRequest], bool]


@dataclass(frozen=True)
class Check:
    """One constraint of a source/operation/condition; ``http_only`` ones are skipped for TCP."""

    describe: str
    predicate: Predicate
    http_only: bool = False
    evaluable: bool = True

    def holds(self, request: AuthzRequest, lenient: bool) -> bool:
        if not self.evaluable or (self.http_only and request.protocol == "tcp"):
            return lenient
        return self.predicate(request)


def _all_hold(checks: tuple[Check, ...], request: AuthzRequest, lenient: bool) -> bool:
    return all(c.holds(request, lenient) for c in checks)


@dataclass(frozen=True)
class Rule:
    sources: tuple[tuple[Check, ...], ...]  # any source (all its checks)
    operations: tuple[tuple[Check, ...], ...]  # any operation
    conditions: tuple[Check, ...]  # all

    def matches(self, request: AuthzRequest, lenient: bool) -> bool:
        """Istio: at least one source, at least one operation and every condition."""
        if self.sources and not any(_all_hold(s, request, lenient) for s in self.sources):
            return False
        if self.operations and not any(_all_hold(o, request, lenient) for o in self.operations):
            return False
        return _all_hold(self.conditions, request, lenient)


@dataclass(frozen=True)
class AuthorizationPolicy:
    name: str
    namespace: str
    action: Action
    rules: tuple[Rule, ...]
    provider: str = ""
    selector: Mapping[str, str] | None = None
    dry_run: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def matching_rule(self, request: AuthzRequest) -> int | None:
        """Index of the first matching rule; None when no rule matches (always when ``rules`` is unset)."""
        for index, rule in enumerate(self.rules):
            if rule.matches(request, self.action.lenient):
                return index
        return None

    def applies_to(self, namespace: str, labels: Mapping[str, str], root_namespace: str = "istio-system") -> bool:
        """Istio scoping: same namespace (or the root namespace) and the selector's labels."""
        if self.namespace not in ("", namespace, root_namespace):
            return False
        return all(labels.get(k) == v for k, v in (self.selector or {}).items())


# --- parsing ---------------------------------------------------------------------------------

def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: must be a list of strings")
    if not value:
        raise PolicyError(f"{where}: must not be empty when set")
    return value


def _known(obj: Any, allowed: set[str], where: str) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise PolicyError(f"{where}: must be an object")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise PolicyError(f"{where}.{unknown[0]}: unknown field")
    return obj


def _any_string(patterns: list[StringPattern], value: str) -> bool:
    return any(p.matches(value) for p in patterns)


def _string_check(name: str, values: list[str], get: Callable[[AuthzRequest], str], *, negate: bool,
                  http_only: bool = False, ignore_case: bool = False) -> Check:
    patterns = [StringPattern(v, ignore_case) for v in values]
    if negate:
        return Check(f"{name} not in {values}", lambda r: not _any_string(patterns, get(r)), http_only)
    return Check(f"{name} in {values}", lambda r: _any_string(patterns, get(r)), http_only)


def _ip_check(name: str, values: list[str], get: Callable[[AuthzRequest], str], *, negate: bool, where: str) -> Check:
    try:
        blocks = [parse_ip_block(v, f"{where}[{i}]") for i, v in enumerate(values)]
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc
    if negate:
        return Check(f"{name} not in {values}", lambda r: not ip_in(get(r), blocks))
    return Check(f"{name} in {values}", lambda r: ip_in(get(r), blocks))


def _strip_spiffe(value: str) -> str:
    return value.removeprefix("spiffe://")


def _auth_principal(r: AuthzRequest) -> str:
    return r.auth.principal if r.auth else ""


_SOURCE_STRING_FIELDS: dict[str, tuple[Callable[[AuthzRequest], str], bool]] = {
    "principals": (lambda r: r.source_principal, False),
    "requestPrincipals": (_auth_principal, True),
    "namespaces": (lambda r: r.source_namespace, False),
}
_SOURCE_IP_FIELDS: dict[str, Callable[[AuthzRequest], str]] = {
    "ipBlocks": lambda r: r.source_ip,
    "remoteIpBlocks": lambda r: r.client_ip,
}
_SOURCE_FIELDS = {f for base in [*_SOURCE_STRING_FIELDS, *_SOURCE_IP_FIELDS] for f in (base, "not" + base[0].upper() + base[1:])}


def _negated(name: str) -> str:
    return "not" + name[0].upper() + name[1:]


def _parse_source(obj: Any, where: str) -> tuple[Check, ...]:
    spec = _known(obj, _SOURCE_FIELDS, where)
    checks: list[Check] = []
    for base, (get, http_only) in _SOURCE_STRING_FIELDS.items():
        for name, negate in ((base, False), (_negated(base), True)):
            if name in spec:
                values = _strings(spec[name], f"{where}.{name}")
                if base == "principals":
                    values = [_strip_spiffe(v) for v in values]
                checks.append(_string_check(name, values, get, negate=negate, http_only=http_only))
    for base, get_ip in _SOURCE_IP_FIELDS.items():
        for name, negate in ((base, False), (_negated(base), True)):
            if name in spec:
                checks.append(_ip_check(name, _strings(spec[name], f"{where}.{name}"), get_ip, negate=negate,
                                        where=f"{where}.{name}"))
    return tuple(checks)


def _port_values(values: list[str], where: str) -> set[int]:
    ports: set[int] = set()
    for index, text in enumerate(values):
        if not text.isdigit() or not 0 <= int(text) <= 65535:
            raise PolicyError(f"{where}[{index}]: {text!r} is not a port number in [0, 65535]")
        ports.add(int(text))
    return ports


def _port_predicate(ports: set[int], negate: bool) -> Predicate:
    def holds(r: AuthzRequest) -> bool:
        return (r.destination_port in ports) != negate

    return holds


def _path_predicate(patterns: list[PathPattern], negate: bool) -> Predicate:
    def holds(r: AuthzRequest) -> bool:
        return any(p.matches(r.url_path) for p in patterns) != negate

    return holds


_OPERATION_FIELDS = {f for base in ("hosts", "ports", "methods", "paths") for f in (base, _negated(base))}


def _parse_operation(obj: Any, where: str) -> tuple[Check, ...]:
    spec = _known(obj, _OPERATION_FIELDS, where)
    checks: list[Check] = []
    for name, negate in (("hosts", False), ("notHosts", True)):
        if name in spec:
            checks.append(_string_check(name, _strings(spec[name], f"{where}.{name}"), lambda r: r.host,
                                        negate=negate, http_only=True, ignore_case=True))
    for name, negate in (("methods", False), ("notMethods", True)):
        if name in spec:
            checks.append(_string_check(name, _strings(spec[name], f"{where}.{name}"), lambda r: r.method,
                                        negate=negate, http_only=True))
    for name, negate in (("ports", False), ("notPorts", True)):
        if name in spec:
            ports = _port_values(_strings(spec[name], f"{where}.{name}"), f"{where}.{name}")
            checks.append(Check(f"{name} {sorted(ports)}", _port_predicate(ports, negate)))
    for name, negate in (("paths", False), ("notPaths", True)):
        if name in spec:
            values = _strings(spec[name], f"{where}.{name}")
            try:
                patterns = [PathPattern.compile(v, f"{where}.{name}[{i}]") for i, v in enumerate(values)]
            except ValueError as exc:
                raise PolicyError(str(exc)) from exc
            checks.append(Check(f"{name} {values}", _path_predicate(patterns, negate), http_only=True))
    return tuple(checks)


_BRACKETED = re.compile(r"^(request\.headers|request\.auth\.claims)((?:\[[^\[\]]+\])+)$")


def _claim_values(r: AuthzRequest, path: list[str]) -> list[str]:
    node: Any = r.auth.claims if r.auth else None
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return []
        node = node[part]
    items = node if isinstance(node, list) else [node]
    return [str(i).lower() if isinstance(i, bool) else str(i) for i in items if not isinstance(i, Mapping | list)]


def _attribute(key: str, where: str) -> tuple[Callable[[AuthzRequest], list[str]], bool, str]:
    """(getter of the attribute's values, http_only, kind) where kind is string/ip/port/unsupported."""
    bracketed = _BRACKETED.match(key)
    if bracketed:
        names = re.findall(r"\[([^\[\]]+)\]", bracketed.group(2))
        if bracketed.group(1) == "request.headers":
            if len(names) != 1:
                raise PolicyError(f"{where}: {key!r} names more than one header")
            header = names[0]
            return (lambda r: [v] if (v := r.header(header)) is not None else []), True, "string"
        return (lambda r: _claim_values(r, names)), True, "string"
    simple: dict[str, tuple[Callable[[AuthzRequest], list[str]], bool, str]] = {
        "source.ip": (lambda r: [r.source_ip], False, "ip"),
        "remote.ip": (lambda r: [r.client_ip], False, "ip"),
        "destination.ip": (lambda r: [r.destination_ip], False, "ip"),
        "destination.port": (lambda r: [str(r.destination_port)], False, "port"),
        "source.namespace": (lambda r: [r.source_namespace], False, "string"),
        "source.principal": (lambda r: [r.source_principal], False, "string"),
        "connection.sni": (lambda r: [r.sni], False, "string"),
        "request.auth.principal": (lambda r: [_auth_principal(r)], True, "string"),
        "request.auth.audiences": (lambda r: r.auth.audiences if r.auth else [], True, "string"),
        "request.auth.presenter": (lambda r: [r.auth.presenter] if r.auth else [], True, "string"),
    }
    if key in simple:
        return simple[key]
    if key.startswith("experimental.envoy.filters."):
        return (lambda r: []), False, "unsupported"
    raise PolicyError(f"{where}: unsupported condition key {key!r}")


def _value_matcher(kind: str, values: list[str], where: str) -> Callable[[list[str]], bool]:
    if kind == "ip":
        blocks: list[IpNetwork] = [parse_ip_block(v, f"{where}[{i}]") for i, v in enumerate(values)]
        return lambda got: any(ip_in(g, blocks) for g in got)
    if kind == "port":
        ports = {str(p) for p in _port_values(values, where)}
        return lambda got: any(g in ports for g in got)
    patterns = [StringPattern(v) for v in values]
    return lambda got: any(_any_string(patterns, g) for g in (got or [""]))


def _parse_condition(obj: Any, where: str) -> Check:
    spec = _known(obj, {"key", "values", "notValues"}, where)
    key = spec.get("key")
    if not isinstance(key, str) or not key:
        raise PolicyError(f"{where}.key: required")
    if "values" not in spec and "notValues" not in spec:
        raise PolicyError(f"{where}: at least one of values or notValues must be set")
    try:
        get, http_only, kind = _attribute(key, f"{where}.key")
        if kind == "unsupported":
            return Check(f"{key} (not evaluable)", lambda r: False, evaluable=False)
        positive = _value_matcher(kind, _strings(spec["values"], f"{where}.values"), f"{where}.values") \
            if "values" in spec else None
        negative = _value_matcher(kind, _strings(spec["notValues"], f"{where}.notValues"), f"{where}.notValues") \
            if "notValues" in spec else None
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc

    def holds(r: AuthzRequest) -> bool:
        got = get(r)
        if positive is not None and not positive(got):
            return False
        return negative is None or not negative(got)

    return Check(f"when {key}", holds, http_only)


def _parse_rule(obj: Any, where: str) -> Rule:
    spec = _known(obj, {"from", "to", "when"}, where)
    sources, operations, conditions = [], [], []
    for i, item in enumerate(spec.get("from") or []):
        body = _known(item, {"source"}, f"{where}.from[{i}]")
        sources.append(_parse_source(body.get("source"), f"{where}.from[{i}].source"))
    for i, item in enumerate(spec.get("to") or []):
        body = _known(item, {"operation"}, f"{where}.to[{i}]")
        operations.append(_parse_operation(body.get("operation"), f"{where}.to[{i}].operation"))
    for i, item in enumerate(spec.get("when") or []):
        conditions.append(_parse_condition(item, f"{where}.when[{i}]"))
    return Rule(tuple(sources), tuple(operations), tuple(conditions))


_SPEC_FIELDS = {"selector", "targetRef", "targetRefs", "rules", "action", "provider"}


def parse_policy(manifest: Mapping[str, Any], *, name: str = "", namespace: str = "") -> AuthorizationPolicy:
    """Compile a manifest (``apiVersion/kind/metadata/spec``) or a bare ``spec``."""
    if not isinstance(manifest, Mapping):
        raise PolicyError("policy: must be an object")
    if "spec" in manifest or "kind" in manifest:
        if manifest.get("kind", "AuthorizationPolicy") != "AuthorizationPolicy":
            raise PolicyError(f"kind: {manifest.get('kind')!r} is not AuthorizationPolicy")
        metadata = manifest.get("metadata") or {}
        name = str(metadata.get("name", name))
        namespace = str(metadata.get("namespace", namespace))
        dry_run = str((metadata.get("annotations") or {}).get("istio.io/dry-run", "")).lower() == "true"
        spec = _known(manifest.get("spec") or {}, _SPEC_FIELDS, "spec")
        prefix = "spec."
    else:
        dry_run = False
        spec = _known(manifest, _SPEC_FIELDS, "spec")
        prefix = "spec."
    action_text = spec.get("action", "ALLOW")
    try:
        action = Action(action_text)
    except ValueError as exc:
        raise PolicyError(f"{prefix}action: {action_text!r} is not ALLOW, DENY, AUDIT or CUSTOM") from exc
    provider = ""
    if action is Action.CUSTOM:
        provider_spec = _known(spec.get("provider"), {"name"}, f"{prefix}provider")
        provider = str(provider_spec.get("name", ""))
        if not provider:
            raise PolicyError(f"{prefix}provider.name: required for action CUSTOM")
    elif "provider" in spec:
        raise PolicyError(f"{prefix}provider: only allowed with action CUSTOM")
    rules_spec = spec.get("rules")
    if rules_spec is not None and not isinstance(rules_spec, list):
        raise PolicyError(f"{prefix}rules: must be a list")
    rules = tuple(_parse_rule(r, f"{prefix}rules[{i}]") for i, r in enumerate(rules_spec or []))
    selector = _known(spec.get("selector"), {"matchLabels"}, f"{prefix}selector").get("matchLabels")
    return AuthorizationPolicy(
        name=name, namespace=namespace, action=action, rules=rules, provider=provider,
        selector=dict(selector) if selector else None, dry_run=dry_run,
    )
