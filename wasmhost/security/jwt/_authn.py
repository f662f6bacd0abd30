"""RequestAuthentication at the sidecar: find JWTs, verify them, feed ``request.auth``.

Istio's behaviour, which this follows: a request without a token passes (authorization
decides; ``requestPrincipals: ["*"]`` is how a policy demands one); a token that fails
verification (signature, expiry, not-before, audience, unknown key) gets 401, and so does a
token whose issuer no rule names (Envoy: "Jwt issuer is not configured"; Istio's
``allow_missing`` admits only an absent token). Unless
``forwardOriginalToken``, the header carrying a verified token is removed before the request
goes upstream; ``outputPayloadToHeader`` and ``outputClaimToHeaders`` add headers.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any, Literal

import jwt as pyjwt
from jwt import PyJWK

from ..authz import RequestAuth
from ._jwks import JwksCache, JwksError, candidates, parse_jwks
from ._rules import JwtRule

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class JwtOutcome:
    """``ok`` (auth set), ``missing`` (no usable token: not an error) or ``invalid`` (401)."""

    status: Literal["ok", "missing", "invalid"]
    auth: RequestAuth | None = None
    message: str = ""
    remove_headers: tuple[str, ...] = ()
    add_headers: tuple[tuple[str, str], ...] = ()

    @property
    def http_status(self) -> int | None:
        return 401 if self.status == "invalid" else None

    def apply(self, headers: Headers) -> list[tuple[str, str]]:
        """The request headers to send upstream after this outcome."""
        drop = {h.lower() for h in self.remove_headers} | {name for name, _ in self.add_headers}
        return [(k, v) for k, v in headers if k.lower() not in drop] + list(self.add_headers)


@dataclass(frozen=True)
class _Found:
    token: str
    header: str  # "" unless the token came from a header
    rules: tuple[JwtRule, ...]  # the rules that look in this location


def _cookies(headers: Headers) -> dict[str, str]:
    jar: dict[str, str] = {}
    for name, value in headers:
        if name.lower() == "cookie":
            try:
                parsed = SimpleCookie(value)
            except CookieError:
                continue
            jar.update({k: m.value for k, m in parsed.items()})
    return jar


def extract_tokens(rules: Sequence[JwtRule], headers: Headers, path: str) -> list[_Found]:
    """Every distinct token in the locations the rules name, with the rules that name them."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    cookies = _cookies(headers)
    found: dict[tuple[str, str], list[JwtRule]] = {}
    for rule in rules:
        for location in rule.from_headers:
            for name, value in headers:
                if name.lower() == location.name and value.startswith(location.prefix):
                    token = value[len(location.prefix):].strip()
                    if token:
                        found.setdefault((token, location.name), []).append(rule)
        for param in rule.from_params:
            for token in query.get(param, []):
                found.setdefault((token, ""), []).append(rule)
        for cookie in rule.from_cookies:
            if cookies.get(cookie):
                found.setdefault((cookies[cookie], ""), []).append(rule)
    return [_Found(token, header, tuple(rs)) for (token, header), rs in found.items()]


class JwtAuthenticator:
    """Verifies JWTs for one workload's RequestAuthentication rules."""

    def __init__(self, rules: Sequence[JwtRule], *, jwks: JwksCache | None = None, leeway: float = 60.0) -> None:
        self.rules = list(rules)
        self.jwks = jwks or JwksCache()
        self.leeway = leeway
        self._inline = {id(r): parse_jwks(r.jwks, f"issuer {r.issuer} jwks") for r in self.rules if r.jwks}

    async def _keys(self, rule: JwtRule, kid: str) -> list[PyJWK]:
        if rule.jwks:
            return candidates(self._inline[id(rule)], kid)
        return await self.jwks.keys(rule.jwks_uri, kid, timeout=rule.timeout)

    async def _verify(self, token: str, rule: JwtRule, header: Mapping[str, Any]) -> dict[str, Any]:
        try:
            keys = await self._keys(rule, str(header.get("kid", "")))
        except JwksError as exc:
            raise pyjwt.InvalidTokenError(f"Jwks remote fetch failed: {exc}") from exc
        keys = [k for k in keys if k.algorithm_name == header.get("alg")]
        if not keys:
            raise pyjwt.InvalidTokenError("Jwks doesn't have key to match kid or alg from Jwt")
        last: Exception | None = None
        for key in keys:
            try:
                return dict(pyjwt.decode(
                    token, key, algorithms=[key.algorithm_name], issuer=rule.issuer,
                    audience=list(rule.audiences) or None, leeway=self.leeway,
                    options={"verify_aud": bool(rule.audiences)},
                ))
            except pyjwt.InvalidSignatureError as exc:
                last = exc
        raise pyjwt.InvalidTokenError(f"Jwt verification fails: {last}")

    async def authenticate(self, headers: Headers, path: str = "/") -> JwtOutcome:
        auth: RequestAuth | None = None
        removals: list[str] = []
        additions: list[tuple[str, str]] = []
        for found in extract_tokens(self.rules, headers, path):
            try:
                header = pyjwt.get_unverified_header(found.token)
                issuer = pyjwt.decode(found.token, options={"verify_signature": False}).get("iss")
            except pyjwt.PyJWTError:
                return JwtOutcome("invalid", message="Jwt is not in the form of Header.Payload.Signature")
            rule = next((r for r in found.rules if r.issuer == issuer), None)
            if rule is None:
                return JwtOutcome("invalid", message="Jwt issuer is not configured")
            try:
                claims = await self._verify(found.token, rule, header)
            except pyjwt.PyJWTError as exc:
                return JwtOutcome("invalid", message=f"Jwt verification fails: {exc}")
            if auth is None:
                auth = RequestAuth(f"{claims.get('iss', '')}/{claims.get('sub', '')}", claims)
            if found.header and not rule.forward_original_token:
                removals.append(found.header)
            if rule.output_payload_to_header:
                additions.append((rule.output_payload_to_header, found.token.split(".")[1]))
            for header_name, claim in rule.output_claim_to_headers:
                value = claims.get(claim)
                if isinstance(value, str | int | float | bool):
                    additions.append((header_name, json.dumps(value) if isinstance(value, bool) else str(value)))
        if auth is None:
            return JwtOutcome("missing")
        return JwtOutcome("ok", auth, remove_headers=tuple(removals), add_headers=tuple(additions))
