"""Validation of manifests: the CRD schemas (strict) plus the semantic checks istiod makes.

Every problem becomes a `Diagnostic` naming the file, the document index, the line, the field
path and the reason. Nothing here raises on bad input: manifests are untrusted. Checks that
need more than one resource (subsets referenced by a VirtualService, duplicate names) run over
the whole set in `check_references`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema

from controlplane._hosts import fqdn, host_matches
from controlplane._resources import (
    DEFAULT_NAMESPACE,
    Document,
    Origin,
    ParseProblem,
    Resource,
    manifest_files,
    parse_documents,
    resource_from_body,
)
from controlplane._schemas import KINDS_BY_NAME, Kind, document_schema

ERROR, WARNING, INFO = "Error", "Warning", "Info"
# Istio's analyzer codes where the meaning is the same, so habits and searches carry over.
SCHEMA_ERROR = "IST0106"  # SchemaValidationError
REFERENCE_NOT_FOUND = "IST0101"  # ReferencedResourceNotFound
PARSE_ERROR = "WSM0001"
UNKNOWN_KIND = "WSM0002"
DUPLICATE = "WSM0003"


@dataclass(frozen=True)
class Diagnostic:
    """One finding: severity, code, reason, and where (resource, file, document, line, field)."""

    level: str
    code: str
    message: str
    origin: Origin
    resource: str = ""
    path: str = ""

    @property
    def is_error(self) -> bool:
        return self.level == ERROR

    def render(self) -> str:
        """One line, shaped like `istioctl analyze`."""
        where = [self.resource] if self.resource else []
        if self.origin.file:
            line = self.origin.line_of(self.path) if self.path else self.origin.line
            where.append(f"{self.origin.file}:{line}" if line else self.origin.file)
            where.append(f"document {self.origin.document}")
        field = f"{self.path}: " if self.path else ""
        return f"{self.level} [{self.code}] ({', '.join(where)}) {field}{self.message}"


def _path_text(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@cache
def _validator(kind_name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(document_schema(KINDS_BY_NAME[kind_name]))


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = set(error.schema.get("properties", {}))
        unknown = sorted(str(k) for k in error.instance if k not in known)
        return f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    return error.message


# ---- per-document validation ----------------------------------------------------------------------
class _Checker:
    """Collects semantic problems of one resource; methods are named after the kind they check."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.problems: list[tuple[str, str, str]] = []  # (level, path, message)

    def error(self, path: str, message: str) -> None:
        self.problems.append((ERROR, path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append((WARNING, path, message))

    # shared pieces
    def regex(self, path: str, pattern: str) -> None:
        try:
            re.compile(pattern)
        except re.error as err:
            self.error(path, f"invalid regex {pattern!r}: {err}")
            return
        if re.search(r"\(\?[=!<]|\\[1-9]", pattern):
            self.error(path, f"regex {pattern!r} uses lookaround or backreferences, which RE2 does not support")

    def string_match(self, path: str, match: Any) -> None:
        if not isinstance(match, Mapping):
            return
        present = [k for k in ("exact", "prefix", "regex") if k in match]
        if len(present) > 1:
            self.error(path, f"set only one of exact, prefix, regex (found {', '.join(present)})")
        if "regex" in match and isinstance(match["regex"], str):
            self.regex(f"{path}.regex", match["regex"])

    def percentage(self, path: str, value: Any) -> None:
        if isinstance(value, Mapping) and isinstance(value.get("value"), int | float):
            if not 0 <= value["value"] <= 100:
                self.error(f"{path}.value", f"percentage {value['value']} is outside 0..100")

    def service_port(self, path: str, port: Any) -> None:
        if isinstance(port, Mapping) and port.get("number") == 0:
            self.error(f"{path}.number", "port number must be 1..65535")

    # kinds
    def VirtualService(self, spec: Mapping[str, Any]) -> None:
        if not spec.get("hosts"):
            self.error("spec.hosts", "at least one host is required")
        names: set[str] = set()
        for i, route in enumerate(spec.get("http") or []):
            base = f"spec.http[{i}]"
            if route.get("name"):
                if route["name"] in names:
                    self.error(f"{base}.name", f"duplicate route name {route['name']!r}")
                names.add(route["name"])
            actions = [k for k in ("route", "redirect", "directResponse", "delegate") if route.get(k)]
            if not actions:
                self.error(base, "an HTTP route needs one of route, redirect, directResponse or delegate")
            elif "route" in actions and ("redirect" in actions or "directResponse" in actions):
                self.error(base, "route cannot be combined with redirect or directResponse")
            for j, match in enumerate(route.get("match") or []):
                mpath = f"{base}.match[{j}]"
                for field in ("uri", "scheme", "method", "authority"):
                    self.string_match(f"{mpath}.{field}", match.get(field))
                for group in ("headers", "queryParams", "withoutHeaders"):
                    for name, value in (match.get(group) or {}).items():
                        self.string_match(f"{mpath}.{group}.{name}", value)
            self.weights(f"{base}.route", route.get("route") or [])
            rewrite = route.get("rewrite") or {}
            if rewrite.get("uri") and rewrite.get("uriRegexRewrite"):
                self.error(f"{base}.rewrite", "set only one of uri and uriRegexRewrite")
            if (rewrite.get("uriRegexRewrite") or {}).get("match"):
                self.regex(f"{base}.rewrite.uriRegexRewrite.match", rewrite["uriRegexRewrite"]["match"])
            fault = route.get("fault") or {}
            abort = fault.get("abort") or {}
            if "httpStatus" in abort and not 200 <= abort["httpStatus"] <= 599:
                self.error(f"{base}.fault.abort.httpStatus", f"HTTP status {abort['httpStatus']} is outside 200..599")
            for part in ("delay", "abort"):
                self.percentage(f"{base}.fault.{part}.percentage", (fault.get(part) or {}).get("percentage"))
            if (fault.get("delay") or {}) and not (fault["delay"].get("fixedDelay") or fault["delay"].get("exponentialDelay")):
                self.error(f"{base}.fault.delay", "a delay needs fixedDelay")
            self.percentage(f"{base}.mirrorPercentage", route.get("mirrorPercentage"))
            retries = route.get("retries") or {}
            if retries.get("attempts", 0) < 0:
                self.error(f"{base}.retries.attempts", "attempts cannot be negative")
            redirect = route.get("redirect") or {}
            if redirect.get("redirectCode") and not 300 <= redirect["redirectCode"] <= 399:
                self.error(f"{base}.redirect.redirectCode", "redirect code must be 3xx")
            direct = route.get("directResponse") or {}
            if direct and not 200 <= direct.get("status", 0) <= 599:
                self.error(f"{base}.directResponse.status", "status must be 200..599")
        for proto in ("tcp", "tls"):
            for i, route in enumerate(spec.get(proto) or []):
                self.weights(f"spec.{proto}[{i}].route", route.get("route") or [])

    def weights(self, path: str, destinations: list[Any]) -> None:
        for j, dest in enumerate(destinations):
            if not (dest.get("destination") or {}).get("host"):
                self.error(f"{path}[{j}].destination.host", "destination host is required")
            if dest.get("weight", 0) < 0:
                self.error(f"{path}[{j}].weight", "weight cannot be negative")
        if len(destinations) > 1 or any("weight" in d for d in destinations):
            total = sum(int(d.get("weight", 0)) for d in destinations)
            if len(destinations) == 1 and total == 0:
                return
            if total != 100:
                self.error(path, f"route weights sum to {total}, not 100")

    def DestinationRule(self, spec: Mapping[str, Any]) -> None:
        if not spec.get("host"):
            self.error("spec.host", "host is required")
        seen: set[str] = set()
        for i, subset in enumerate(spec.get("subsets") or []):
            name = subset.get("name")
            if not name:
                self.error(f"spec.subsets[{i}].name", "subset name is required")
            elif name in seen:
                self.error(f"spec.subsets[{i}].name", f"duplicate subset name {name!r}")
            seen.add(name or "")
            self.traffic_policy(f"spec.subsets[{i}].trafficPolicy", subset.get("trafficPolicy") or {})
        self.traffic_policy("spec.trafficPolicy", spec.get("trafficPolicy") or {})

    def traffic_policy(self, path: str, policy: Mapping[str, Any]) -> None:
        lb = policy.get("loadBalancer") or {}
        if lb.get("simple") and lb.get("consistentHash"):
            self.error(f"{path}.loadBalancer", "set only one of simple and consistentHash")
        outlier = policy.get("outlierDetection") or {}
        for field in ("maxEjectionPercent", "minHealthPercent"):
            if field in outlier and not 0 <= outlier[field] <= 100:
                self.error(f"{path}.outlierDetection.{field}", f"{outlier[field]} is outside 0..100")
        for i, level in enumerate(policy.get("portLevelSettings") or []):
            if not (level.get("port") or {}).get("number"):
                self.error(f"{path}.portLevelSettings[{i}].port", "port number is required")

    def ServiceEntry(self, spec: Mapping[str, Any]) -> None:
        if not spec.get("hosts"):
            self.error("spec.hosts", "at least one host is required")
        names: set[str] = set()
        numbers: set[int] = set()
        for i, port in enumerate(spec.get("ports") or []):
            self.service_port(f"spec.ports[{i}]", port)
            if port.get("name") in names:
                self.error(f"spec.ports[{i}].name", f"duplicate port name {port['name']!r}")
            if port.get("number") in numbers:
                self.error(f"spec.ports[{i}].number", f"duplicate port number {port['number']}")
            names.add(port.get("name"))
            numbers.add(port.get("number"))
        if spec.get("endpoints") and spec.get("workloadSelector"):
            self.error("spec", "set only one of endpoints and workloadSelector")
        resolution = spec.get("resolution", "NONE")
        for i, endpoint in enumerate(spec.get("endpoints") or []):
            address = endpoint.get("address", "")
            if not address:
                self.error(f"spec.endpoints[{i}].address", "address is required")
            elif resolution == "STATIC" and not address.startswith("unix://"):
                self._ip(f"spec.endpoints[{i}].address", address)
            for port_name in endpoint.get("ports") or {}:
                if port_name not in names:
                    self.error(f"spec.endpoints[{i}].ports.{port_name}", f"no service port named {port_name!r}")
        for i, host in enumerate(spec.get("hosts") or []):
            if "*" in host[1:]:
                self.error(f"spec.hosts[{i}]", f"wildcard only allowed as the first label: {host!r}")

    def _ip(self, path: str, address: str) -> None:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            self.error(path, f"{address!r} is not an IP address (resolution STATIC)")

    def WorkloadEntry(self, spec: Mapping[str, Any]) -> None:
        if not spec.get("address"):
            self.error("spec.address", "address is required")

    def Gateway(self, spec: Mapping[str, Any]) -> None:
        servers = spec.get("servers") or []
        if not servers:
            self.error("spec.servers", "at least one server is required")
        for i, server in enumerate(servers):
            if not server.get("hosts"):
                self.error(f"spec.servers[{i}].hosts", "at least one host is required")
            if not (server.get("port") or {}).get("number"):
                self.error(f"spec.servers[{i}].port", "port number is required")

    def Sidecar(self, spec: Mapping[str, Any]) -> None:
        for i, egress in enumerate(spec.get("egress") or []):
            for j, host in enumerate(egress.get("hosts") or []):
                if "/" not in host:
                    self.error(f"spec.egress[{i}].hosts[{j}]", f"host {host!r} must be namespace/dnsName")

    def EnvoyFilter(self, spec: Mapping[str, Any]) -> None:
        from controlplane._envoyfilter import check_patch

        for i, patch in enumerate(spec.get("configPatches") or []):
            for path, message in check_patch(patch):
                self.error(f"spec.configPatches[{i}]{path}", message)

    def WasmPlugin(self, spec: Mapping[str, Any]) -> None:
        url = str(spec.get("url", ""))
        parsed = urlparse(url if "://" in url else f"oci://{url}")
        if parsed.scheme not in ("http", "https", "oci", "file"):
            self.error("spec.url", f"unsupported URL scheme {parsed.scheme!r} (use oci, http, https or file)")
        elif parsed.scheme == "file" and not parsed.path.startswith("/"):
            self.error("spec.url", "file:// URLs need an absolute path")
        elif parsed.scheme != "file" and not parsed.netloc:
            self.error("spec.url", f"URL {url!r} has no host")
        if "@sha256:" in url and spec.get("sha256"):
            digest = url.rsplit("@sha256:", 1)[1]
            if digest != spec["sha256"]:
                self.error("spec.sha256", "sha256 does not match the digest in the URL")
        if spec.get("selector") and (spec.get("targetRefs") or spec.get("targetRef")):
            self.error("spec", "set only one of selector and targetRefs")
        seen: set[str] = set()
        for i, env in enumerate((spec.get("vmConfig") or {}).get("env") or []):
            if env.get("name") in seen:
                self.error(f"spec.vmConfig.env[{i}].name", f"duplicate env name {env['name']!r}")
            seen.add(env.get("name"))
            if env.get("valueFrom") == "HOST" and env.get("value"):
                self.error(f"spec.vmConfig.env[{i}].value", "value must be empty when valueFrom is HOST")
        for i, ref in enumerate(spec.get("targetRefs") or []):
            if ref.get("kind") not in ("Gateway", "GatewayClass", "Service", "ServiceEntry"):
                self.error(f"spec.targetRefs[{i}].kind", f"cannot target kind {ref.get('kind')!r}")
        for i, match in enumerate(spec.get("match") or []):
            for j, port in enumerate(match.get("ports") or []):
                self.service_port(f"spec.match[{i}].ports[{j}]", port)

    # security.istio.io: the sidecar's own parsers, so the control plane refuses exactly what a sidecar would
    def PeerAuthentication(self, spec: Mapping[str, Any]) -> None:
        from wasmhost.security import PeerAuthenticationError, parse_peer_authentication

        self._security_parse(parse_peer_authentication, PeerAuthenticationError)

    def AuthorizationPolicy(self, spec: Mapping[str, Any]) -> None:
        from wasmhost.security.authz import PolicyError, parse_policy

        self._security_parse(parse_policy, PolicyError)
        if spec.get("selector") and (spec.get("targetRef") or spec.get("targetRefs")):
            self.error("spec", "set only one of selector and targetRefs")

    def RequestAuthentication(self, spec: Mapping[str, Any]) -> None:
        from wasmhost.security.jwt import JwtRuleError, parse_request_authentication

        self._security_parse(parse_request_authentication, JwtRuleError)
        issuers: dict[str, int] = {}
        for i, rule in enumerate(spec.get("jwtRules") or []):
            if rule.get("issuer") in issuers:
                self.error(f"spec.jwtRules[{i}].issuer", f"issuer {rule['issuer']!r} is already used by jwtRules"
                                                         f"[{issuers[rule['issuer']]}]")
            issuers.setdefault(rule.get("issuer"), i)

    def Telemetry(self, spec: Mapping[str, Any]) -> None:
        from controlplane._telemetry import validate_telemetry

        for path, problem in validate_telemetry(spec):
            self.error(path, problem)
        if spec.get("selector") and (spec.get("targetRef") or spec.get("targetRefs")):
            self.error("spec", "set only one of selector and targetRefs")

    def _security_parse(self, parse: Any, error_type: type[Exception]) -> None:
        """Run a security parser over the manifest; its message starts with the field path."""
        try:
            parse(self.resource.to_manifest())
        except error_type as err:
            path, sep, message = str(err).partition(": ")
            if sep and path.startswith("spec"):
                self.error(path, message)
            else:
                self.error("spec", str(err))


def validate_document(doc: Document, default_namespace: str = DEFAULT_NAMESPACE) -> tuple[Resource | None, list[Diagnostic]]:
    """Check one document; return the resource (None when it has errors or is not ours) and findings."""
    body, origin = doc.body, doc.origin
    if body is None:
        return None, []
    if not isinstance(body, Mapping):
        return None, [Diagnostic(ERROR, PARSE_ERROR, "a manifest document must be a mapping", origin)]
    kind_name, api_version = body.get("kind"), str(body.get("apiVersion", ""))
    kind = KINDS_BY_NAME.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        if ".istio.io/" in api_version:
            return None, [Diagnostic(ERROR, UNKNOWN_KIND, f"unknown kind {kind_name!r} in {api_version}", origin)]
        return None, []  # not a mesh resource (a Deployment, a Service...): not ours to judge
    raw_metadata = body.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    label = f"{kind.kind} {metadata.get('namespace') or default_namespace}/{metadata.get('name', '?')}"
    found: list[Diagnostic] = []
    for error in sorted(_validator(kind.kind).iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        path = _path_text(error.absolute_path)
        found.append(Diagnostic(ERROR, SCHEMA_ERROR, _schema_message(error), origin, label, path))
    if found:
        return None, found
    resource = resource_from_body(body, origin, default_namespace)
    found.extend(_semantic(resource, kind))
    return (None if any(d.is_error for d in found) else resource), found


def _semantic(resource: Resource, kind: Kind) -> list[Diagnostic]:
    checker = _Checker(resource)
    try:
        getattr(checker, kind.kind)(resource.spec)
    except (AttributeError, TypeError, KeyError, ValueError) as err:  # shapes the schema let through
        checker.error("spec", f"cannot interpret spec: {err}")
    return [Diagnostic(level, SCHEMA_ERROR, message, resource.origin, str(resource.key), path)
            for level, path, message in checker.problems]


# ---- whole-set checks -----------------------------------------------------------------------------
def check_references(resources: Iterable[Resource]) -> list[Diagnostic]:
    """Cross-resource checks: duplicate names, and subsets that no DestinationRule defines."""
    found: list[Diagnostic] = []
    seen: dict[Any, Resource] = {}
    subsets: list[tuple[str, str, set[str]]] = []  # (host fqdn, namespace, subset names)
    all_resources = list(resources)
    for res in all_resources:
        if res.key in seen:
            first = seen[res.key].origin.describe() or "another source"
            found.append(Diagnostic(ERROR, DUPLICATE, f"{res.key} is defined twice (first at {first})",
                                    res.origin, str(res.key), "metadata.name"))
        seen[res.key] = res
        if res.kind == "DestinationRule":
            names = {s.get("name", "") for s in res.spec.get("subsets") or []}
            subsets.append((fqdn(str(res.spec.get("host", "")), res.namespace), res.namespace, names))
    for res in all_resources:
        if res.kind != "VirtualService":
            continue
        for path, dest in _destinations(res.spec):
            subset = dest.get("subset")
            if not subset:
                continue
            host = fqdn(str(dest.get("host", "")), res.namespace)
            if not any(subset in names for dr_host, _, names in subsets if host_matches(dr_host, host)):
                found.append(Diagnostic(ERROR, REFERENCE_NOT_FOUND,
                                        f'referenced host+subset in DestinationRule not found: "{host}+{subset}"',
                                        res.origin, str(res.key), f"{path}.subset"))
    return found


def _destinations(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for proto in ("http", "tcp", "tls"):
        for i, route in enumerate(spec.get(proto) or []):
            for j, dest in enumerate(route.get("route") or []):
                yield f"spec.{proto}[{i}].route[{j}].destination", dest.get("destination") or {}
            if proto == "http" and route.get("mirror"):
                yield f"spec.http[{i}].mirror", route["mirror"]


@dataclass
class Analysis:
    """What a set of manifests holds: the valid resources and every finding."""

    resources: list[Resource]
    diagnostics: list[Diagnostic]

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


def analyze_text(text: str, file: str = "", default_namespace: str = DEFAULT_NAMESPACE) -> Analysis:
    resources: list[Resource] = []
    found: list[Diagnostic] = []
    for doc in parse_documents(text, file):
        if isinstance(doc, ParseProblem):
            found.append(Diagnostic(ERROR, PARSE_ERROR, doc.message, doc.origin))
            continue
        resource, problems = validate_document(doc, default_namespace)
        found.extend(problems)
        if resource is not None:
            resources.append(resource)
    return Analysis(resources, found)


def analyze_paths(paths: Iterable[Path], default_namespace: str = DEFAULT_NAMESPACE) -> Analysis:
    """Validate every manifest under `paths`, then run the cross-resource checks."""
    total = Analysis([], [])
    for root in paths:
        for file in manifest_files(root):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                total.diagnostics.append(Diagnostic(ERROR, PARSE_ERROR, f"cannot read: {err}", Origin(str(file))))
                continue
            part = analyze_text(text, str(file), default_namespace)
            total.resources.extend(part.resources)
            total.diagnostics.extend(part.diagnostics)
    total.diagnostics.extend(check_references(total.resources))
    return total


__all__ = [
    "ERROR",
    "INFO",
    "WARNING",
    "Analysis",
    "Diagnostic",
    "analyze_paths",
    "analyze_text",
    "check_references",
    "validate_document",
]
