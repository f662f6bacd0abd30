"""RequestAuthentication (security.istio.io) ``jwtRules``, parsed from untrusted manifests.

Errors name the field path, e.g. ``spec.jwtRules[1].fromHeaders[0].name: required``.
Defaults follow Istio: with no ``fromHeaders``/``fromParams``/``fromCookies`` a token is
looked for in ``Authorization: Bearer <token>`` and the ``access_token`` query parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class JwtRuleError(ValueError):
    """A RequestAuthentication is invalid; the message starts with the field path."""


@dataclass(frozen=True)
class HeaderLocation:
    name: str
    prefix: str = ""


@dataclass(frozen=True)
class JwtRule:
    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: Mapping[str, Any] | None = None  # inline JWKS document
    from_headers: tuple[HeaderLocation, ...] = (HeaderLocation("authorization", "Bearer "),)
    from_params: tuple[str, ...] = ("access_token",)
    from_cookies: tuple[str, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)
    timeout: float = 5.0
    extra: Mapping[str, Any] = field(default_factory=dict)


_RULE_FIELDS = {
    "issuer", "audiences", "jwksUri", "jwks", "fromHeaders", "fromParams", "fromCookies", "forwardOriginalToken",
    "outputPayloadToHeader", "outputClaimToHeaders", "timeout",
}


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise JwtRuleError(f"{where}: must be a list of non-empty strings")
    return tuple(value)


def _timeout(value: Any, where: str) -> float:
    text = str(value)
    try:
        seconds = float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))
    except ValueError as exc:
        raise JwtRuleError(f"{where}: {text!r} is not a duration like '5s' or '500ms'") from exc
    if seconds <= 0:
        raise JwtRuleError(f"{where}: must be positive")
    return seconds


def parse_jwt_rule(obj: Any, where: str = "jwtRules[0]") -> JwtRule:
    if not isinstance(obj, Mapping):
        raise JwtRuleError(f"{where}: must be an object")
    unknown = sorted(set(obj) - _RULE_FIELDS)
    if unknown:
        raise JwtRuleError(f"{where}.{unknown[0]}: unknown field")
    issuer = obj.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise JwtRuleError(f"{where}.issuer: required")
    if "jwks" in obj and "jwksUri" in obj:
        raise JwtRuleError(f"{where}: set jwksUri or jwks, not both")
    jwks: Mapping[str, Any] | None = None
    if "jwks" in obj:
        try:
            jwks = json.loads(obj["jwks"]) if isinstance(obj["jwks"], str) else None
        except json.JSONDecodeError as exc:
            raise JwtRuleError(f"{where}.jwks: not JSON ({exc.msg} at {exc.pos})") from exc
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise JwtRuleError(f"{where}.jwks: must be a JWKS JSON string with a 'keys' list")
    jwks_uri = obj.get("jwksUri", "")
    if jwks_uri and (not isinstance(jwks_uri, str) or not jwks_uri.startswith(("http://", "https://"))):
        raise JwtRuleError(f"{where}.jwksUri: must be an http(s) URL")
    if not jwks and not jwks_uri:
        raise JwtRuleError(f"{where}: needs jwksUri or jwks (OpenID discovery is not supported)")
    headers: list[HeaderLocation] = []
    for index, item in enumerate(obj.get("fromHeaders") or []):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise JwtRuleError(f"{where}.fromHeaders[{index}].name: required")
        headers.append(HeaderLocation(item["name"].lower(), str(item.get("prefix", ""))))
    params = _string_list(obj["fromParams"], f"{where}.fromParams") if "fromParams" in obj else ()
    cookies = _string_list(obj["fromCookies"], f"{where}.fromCookies") if "fromCookies" in obj else ()
    explicit = bool(headers or params or cookies)
    claim_headers: list[tuple[str, str]] = []
    for index, item in enumerate(obj.get("outputClaimToHeaders") or []):
        if not isinstance(item, Mapping) or not item.get("header") or not item.get("claim"):
            raise JwtRuleError(f"{where}.outputClaimToHeaders[{index}]: needs header and claim")
        claim_headers.append((str(item["header"]).lower(), str(item["claim"])))
    return JwtRule(
        issuer=issuer,
        audiences=_string_list(obj["audiences"], f"{where}.audiences") if obj.get("audiences") else (),
        jwks_uri=jwks_uri,
        jwks=jwks,
        from_headers=tuple(headers) if explicit else JwtRule.from_headers,
        from_params=params if explicit else JwtRule.from_params,
        from_cookies=cookies,
        forward_original_token=bool(obj.get("forwardOriginalToken", False)),
        output_payload_to_header=str(obj.get("outputPayloadToHeader", "")).lower(),
        output_claim_to_headers=tuple(claim_headers),
        timeout=_timeout(obj["timeout"], f"{where}.timeout") if "timeout" in obj else 5.0,
    )


def parse_request_authentication(manifest: Mapping[str, Any]) -> list[JwtRule]:
    """The ``jwtRules`` of a RequestAuthentication manifest (or of its bare ``spec``)."""
    if not isinstance(manifest, Mapping):
        raise JwtRuleError("RequestAuthentication: must be an object")
    spec = manifest.get("spec", manifest) if "kind" in manifest or "spec" in manifest else manifest
    if not isinstance(spec, Mapping):
        raise JwtRuleError("spec: must be an object")
    rules = spec.get("jwtRules") or []
    if not isinstance(rules, list):
        raise JwtRuleError("spec.jwtRules: must be a list")
    return [parse_jwt_rule(rule, f"spec.jwtRules[{i}]") for i, rule in enumerate(rules)]
