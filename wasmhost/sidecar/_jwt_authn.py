"""``envoy.filters.http.jwt_authn``: JWT verification as the control plane emits it for RequestAuthentication.

Each provider names an issuer, audiences, where tokens are found (headers with a prefix, query
parameters, cookies) and where keys come from: an inline JWKS, or a remote JWKS fetched through a
named cluster (an HTTP callout, cached per plan for ``cache_duration``). A rule picks the
requirement for a path: one provider, any of several (``requires_any``), all of them, or
``allow_missing`` (no token passes, an invalid one fails). Failures answer 401 with Envoy's
messages (403 for a disallowed audience); a verified token's payload goes to dynamic metadata
(``payload_in_metadata``, read by RBAC) and optionally to a header; the token header is removed
unless ``forward``. Key parsing is ``wasmhost.security.jwt``'s; signatures are checked with PyJWT.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

import jwt as pyjwt
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as _jwt_pb2  # noqa: F401  (message types)
from jwt import PyJWK

from wasmhost.security.jwt import JwksError, parse_jwks

from ._errors import ConfigError
from ._filter_api import FilterCallbacks, HeadersStatus, HttpCallResult, HttpFilter, UnknownClusterError
from ._filter_registry import FilterBuildContext, register_http_filter
from ._headers import HeaderMap
from ._route_build import compile_regex, read_data_source, seconds

JWT_AUTHN_TYPE = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
JWT_AUTHN_FILTER_NAME = "envoy.filters.http.jwt_authn"
MISSING = "Jwt is missing"
BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
EXPIRED = "Jwt is expired"
NOT_YET_VALID = "Jwt not yet valid"
VERIFICATION_FAILS = "Jwt verification fails"
UNKNOWN_ISSUER = "Jwt issuer is not configured"
AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
FETCH_FAILED = "Jwks remote fetch is failed"


class JwtFailure(Exception):
    """A token was refused; the message is Envoy's status text."""


@dataclass
class KeySource:
    """Keys of one provider: inline, or fetched from ``uri`` through ``cluster`` and cached."""

    inline: dict[str, PyJWK] | None
    uri: str = ""
    cluster: str = ""
    timeout: float = 1.0
    cache_duration: float = 600.0
    cached: dict[str, PyJWK] | None = None
    fetched_at: float = 0.0

    def current(self, now: float) -> dict[str, PyJWK] | None:
        """Keys usable now, or None when a fetch is needed."""
        if self.inline is not None:
            return self.inline
        if self.cached is not None and now - self.fetched_at < self.cache_duration:
            return self.cached
        return None


@dataclass(frozen=True)
class Provider:
    name: str
    issuer: str
    audiences: tuple[str, ...]
    keys: KeySource
    forward: bool
    headers: tuple[tuple[bytes, str], ...]  # (lower-case name, value prefix)
    params: tuple[str, ...]
    cookies: tuple[str, ...]
    payload_header: bytes
    payload_in_metadata: str
    claim_headers: tuple[tuple[bytes, str], ...]
    clock_skew: float


@dataclass(frozen=True)
class Requirement:
    """``kind``: provider, any, all, allow_missing, allow_missing_or_failed."""

    kind: str
    provider: Provider | None = None
    children: tuple[Requirement, ...] = field(default=())


@dataclass(frozen=True)
class Found:
    token: str
    header: bytes  # b"" unless the token came from a header


def extract(provider: Provider, headers: HeaderMap) -> Found | None:
    """The first token in the provider's locations."""
    for name, prefix in provider.headers:
        for value in headers.get_all(name):
            text = value.decode("latin-1")
            if text.startswith(prefix) and text[len(prefix):].strip():
                return Found(text[len(prefix):].strip(), name)
    if provider.params:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit((headers.get(b":path") or b"").decode("latin-1")).query)
        for param in provider.params:
            if query.get(param):
                return Found(query[param][0], b"")
    if provider.cookies:
        jar: dict[str, str] = {}
        for value in headers.get_all(b"cookie"):
            try:
                jar.update({k: m.value for k, m in SimpleCookie(value.decode("latin-1")).items()})
            except CookieError:
                continue
        for cookie in provider.cookies:
            if jar.get(cookie):
                return Found(jar[cookie], b"")
    return None


def verify(provider: Provider, token: str, keys: dict[str, PyJWK], now: float) -> dict[str, Any]:
    """The token's claims, or ``JwtFailure`` with Envoy's message."""
    try:
        header = pyjwt.get_unverified_header(token)
        claims = pyjwt.decode(token, options={"verify_signature": False})
    except pyjwt.PyJWTError:
        raise JwtFailure(BAD_FORMAT) from None
    if provider.issuer and claims.get("iss") != provider.issuer:
        raise JwtFailure(UNKNOWN_ISSUER)
    kid = str(header.get("kid", ""))
    usable = [keys[kid]] if kid and kid in keys else ([] if kid else list(keys.values()))
    usable = [k for k in usable if k.algorithm_name == header.get("alg")]
    if not usable:
        raise JwtFailure(NO_KEY)
    for key in usable:
        try:
            pyjwt.decode(token, key, algorithms=[key.algorithm_name], options={
                "verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                "verify_iss": False})
            break
        except pyjwt.PyJWTError:
            continue
    else:
        raise JwtFailure(VERIFICATION_FAILS)
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, int | float) and now > exp + provider.clock_skew:
        raise JwtFailure(EXPIRED)
    if isinstance(nbf, int | float) and now + provider.clock_skew < nbf:
        raise JwtFailure(NOT_YET_VALID)
    if provider.audiences:
        audience = claims.get("aud")
        given = audience if isinstance(audience, list) else [audience]
        if not any(a in provider.audiences for a in given if isinstance(a, str)):
            raise JwtFailure(AUDIENCE_NOT_ALLOWED)
    return dict(claims)


# ---- configuration ------------------------------------------------------------------------------

def _provider(name: str, message: Any, path: str) -> Provider:
    for unsupported in ("subjects", "max_lifetime", "jwt_cache_config", "normalize_payload_in_metadata"):
        if message.HasField(unsupported):
            raise ConfigError(f"{path}.{unsupported}", "not supported by the wasmesh sidecar")
    for unsupported in ("header_in_metadata", "failed_status_in_metadata", "require_expiration"):
        if getattr(message, unsupported):
            raise ConfigError(f"{path}.{unsupported}", "not supported by the wasmesh sidecar")
    kind = message.WhichOneof("jwks_source_specifier")
    if kind == "local_jwks":
        try:
            keys = KeySource(parse_jwks(read_data_source(message.local_jwks, f"{path}.local_jwks"), name))
        except JwksError as err:
            raise ConfigError(f"{path}.local_jwks", str(err)) from None
    elif kind == "remote_jwks":
        remote = message.remote_jwks
        if not remote.http_uri.uri or not remote.http_uri.cluster:
            raise ConfigError(f"{path}.remote_jwks.http_uri", "needs uri and cluster")
        if remote.HasField("retry_policy"):
            raise ConfigError(f"{path}.remote_jwks.retry_policy", "not supported by the wasmesh sidecar")
        keys = KeySource(None, remote.http_uri.uri, remote.http_uri.cluster,
                         seconds(remote.http_uri.timeout) if remote.http_uri.HasField("timeout") else 1.0,
                         seconds(remote.cache_duration) if remote.HasField("cache_duration") else 600.0)
    else:
        raise ConfigError(path, "provider needs local_jwks or remote_jwks")
    headers = tuple((h.name.lower().encode(), h.value_prefix) for h in message.from_headers)
    params = tuple(message.from_params)
    if not headers and not params and not message.from_cookies:
        headers, params = ((b"authorization", "Bearer "),), ("access_token",)
    return Provider(
        name, message.issuer, tuple(message.audiences), keys, message.forward, headers, params,
        tuple(message.from_cookies), message.forward_payload_header.lower().encode(), message.payload_in_metadata,
        tuple((c.header_name.lower().encode(), c.claim_name) for c in message.claim_to_headers),
        float(message.clock_skew_seconds or 60))


def _requirement(message: Any, providers: dict[str, Provider], path: str) -> Requirement:
    kind = message.WhichOneof("requires_type")
    if kind == "provider_name":
        if message.provider_name not in providers:
            raise ConfigError(f"{path}.provider_name", f"unknown provider {message.provider_name!r}")
        return Requirement("provider", providers[message.provider_name])
    if kind in ("requires_any", "requires_all"):
        items = getattr(message, kind).requirements
        if len(items) < 2:
            raise ConfigError(f"{path}.{kind}.requirements", "needs at least two requirements")
        children = tuple(_requirement(r, providers, f"{path}.{kind}.requirements[{i}]") for i, r in enumerate(items))
        return Requirement("any" if kind == "requires_any" else "all", children=children)
    if kind in ("allow_missing", "allow_missing_or_failed"):
        return Requirement(kind)
    if kind is None:
        return Requirement("none")
    raise ConfigError(f"{path}.{kind}", "not supported by the wasmesh sidecar")


RuleMatch = Callable[[bytes], bool]


def _route_match(message: Any, path: str) -> RuleMatch:
    if message.headers or message.query_parameters or message.HasField("runtime_fraction"):
        raise ConfigError(path, "only prefix, path and safe_regex rule matches are supported")
    kind = message.WhichOneof("path_specifier")
    if kind == "prefix":
        prefix = message.prefix.encode()
        return lambda p: p.startswith(prefix)
    if kind == "path":
        exact = message.path.encode()
        return lambda p: p == exact
    if kind == "safe_regex":
        regex = compile_regex(message.safe_regex.regex, f"{path}.safe_regex.regex")
        return lambda p: regex.fullmatch(p) is not None
    raise ConfigError(path, "rule match needs prefix, path or safe_regex")


@dataclass(frozen=True)
class JwtConfig:
    providers: dict[str, Provider]
    rules: tuple[tuple[RuleMatch, Requirement], ...]
    bypass_cors_preflight: bool


def parse_jwt_authn(config: Any) -> JwtConfig:
    for unsupported in ("filter_state_rules", "requirement_map"):
        if config.HasField(unsupported) if unsupported == "filter_state_rules" else len(config.requirement_map):
            raise ConfigError(unsupported, "not supported by the wasmesh sidecar")
    providers = {name: _provider(name, config.providers[name], f"providers[{name!r}]")
                 for name in sorted(config.providers)}
    rules = []
    for index, rule in enumerate(config.rules):
        at = f"rules[{index}]"
        if rule.requirement_name:
            raise ConfigError(f"{at}.requirement_name", "not supported by the wasmesh sidecar")
        requirement = _requirement(rule.requires, providers, f"{at}.requires") if rule.HasField("requires") \
            else Requirement("none")
        rules.append((_route_match(rule.match, f"{at}.match"), requirement))
    return JwtConfig(providers, tuple(rules), config.bypass_cors_preflight)


# ---- the filter ---------------------------------------------------------------------------------

class JwtAuthnFilter(HttpFilter):
    """Verifies the tokens the matched requirement asks for; waits for JWKS fetches when needed."""

    encodes = False

    def __init__(self, config: JwtConfig, callbacks: FilterCallbacks, clock: Callable[[], float]) -> None:
        self.config = config
        self.callbacks = callbacks
        self.clock = clock
        self.headers: HeaderMap | None = None
        self.requirement: Requirement | None = None
        self.pending = 0  # outstanding JWKS fetches
        self.waiting = False
        self.tokens: list[int] = []

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        if self.config.bypass_cors_preflight and headers.get(b":method") == b"OPTIONS" \
                and b"origin" in headers and b"access-control-request-method" in headers:
            return HeadersStatus.Continue
        path = (headers.get(b":path") or b"/").split(b"?", 1)[0]
        requirement = next((req for match, req in self.config.rules if match(path)), None)
        if requirement is None or requirement.kind == "none":
            return HeadersStatus.Continue
        self.headers, self.requirement = headers, requirement
        for provider in self._providers_with_tokens(requirement, headers):
            if provider.keys.current(time.time()) is None:
                self._fetch(provider)
        if self.pending:
            self.waiting = True
            return HeadersStatus.StopAllIterationAndWatermark
        return self._decide()

    def _providers_with_tokens(self, requirement: Requirement, headers: HeaderMap) -> list[Provider]:
        out: list[Provider] = []
        if requirement.provider is not None and extract(requirement.provider, headers) is not None:
            out.append(requirement.provider)
        for child in requirement.children:
            out.extend(p for p in self._providers_with_tokens(child, headers) if p not in out)
        if requirement.kind in ("allow_missing", "allow_missing_or_failed"):
            out.extend(p for p in self.config.providers.values() if p not in out and extract(p, headers))
        return out

    def _fetch(self, provider: Provider) -> None:
        source = provider.keys
        target = urllib.parse.urlsplit(source.uri)
        request = [(b":method", b"GET"), (b":path", (target.path or "/").encode() + (
            b"?" + target.query.encode() if target.query else b"")), (b":authority", target.netloc.encode()),
                   (b":scheme", target.scheme.encode() or b"http")]

        def on_result(result: HttpCallResult) -> None:
            self.pending -= 1
            status = result.headers.get(b":status") if result.headers is not None else None
            if not result.failure and status == b"200":
                try:
                    source.cached = parse_jwks(result.body, source.uri)
                    source.fetched_at = time.time()
                except JwksError:
                    pass
            if self.pending == 0 and self.waiting:
                self.waiting = False
                if self._decide() == HeadersStatus.Continue:
                    self.callbacks.continue_decoding()

        try:
            self.tokens.append(self.callbacks.dispatch_http_call(source.cluster, request, b"", (), source.timeout,
                                                                 on_result))
            self.pending += 1
        except UnknownClusterError:
            pass  # decided as a failed fetch

    def _decide(self) -> HeadersStatus:
        assert self.headers is not None and self.requirement is not None
        outcome = self._evaluate(self.requirement, self.headers)
        if outcome is None:
            return HeadersStatus.Continue
        code = 403 if outcome == AUDIENCE_NOT_ALLOWED else 401
        host = (self.headers.get(b":authority") or b"").decode("latin-1")
        path = (self.headers.get(b":path") or b"/").decode("latin-1").split("?", 1)[0]
        challenge = f'Bearer realm="http://{host}{path}", error="invalid_token"'
        self.callbacks.send_local_reply(code, outcome.encode(), [(b"www-authenticate", challenge.encode())],
                                        f"jwt_authn_access_denied{{{outcome.replace(' ', '_')}}}")
        return HeadersStatus.StopIteration

    def _evaluate(self, requirement: Requirement, headers: HeaderMap) -> str | None:
        """None when satisfied, else the failure message."""
        kind = requirement.kind
        if kind == "provider":
            assert requirement.provider is not None
            return self._check(requirement.provider, headers)
        if kind in ("allow_missing", "allow_missing_or_failed"):
            results = [self._check(p, headers) for p in self.config.providers.values()]
            failures = [r for r in results if r != MISSING]
            if kind == "allow_missing_or_failed" or None in results or not failures:
                return None
            known = [r for r in failures if r != UNKNOWN_ISSUER]  # another provider's token is not a failure
            return known[0] if known else UNKNOWN_ISSUER
        failures = [self._evaluate(child, headers) for child in requirement.children]
        if kind == "all":
            return next((f for f in failures if f is not None), None)
        if any(f is None for f in failures):
            return None
        return next((f for f in failures if f != MISSING), failures[0])

    def _check(self, provider: Provider, headers: HeaderMap) -> str | None:
        found = extract(provider, headers)
        if found is None:
            return MISSING
        keys = provider.keys.current(time.time())
        try:
            if keys is None:
                raise JwtFailure(FETCH_FAILED)
            claims = verify(provider, found.token, keys, self.clock())
        except JwtFailure as failure:
            return str(failure)
        self._apply(provider, found, claims, headers)
        return None

    def _apply(self, provider: Provider, found: Found, claims: dict[str, Any], headers: HeaderMap) -> None:
        if provider.payload_in_metadata:
            metadata = self.callbacks.stream_info.dynamic_metadata.setdefault(JWT_AUTHN_FILTER_NAME, {})
            metadata[provider.payload_in_metadata] = claims
        if found.header and not provider.forward:
            headers.remove(found.header)
        if provider.payload_header:
            payload = found.token.split(".")[1]
            headers.set(provider.payload_header, payload.encode())
        for name, claim in provider.claim_headers:
            value = claims.get(claim)
            if isinstance(value, bool):
                headers.set(name, b"true" if value else b"false")
            elif isinstance(value, str | int | float):
                headers.set(name, str(value).encode())
            elif isinstance(value, list | dict):
                headers.set(name, base64.b64encode(json.dumps(value).encode()))

    def on_destroy(self) -> None:
        if self.pending:
            for token in self.tokens:
                self.callbacks.cancel_http_call(token)
        self.pending = 0
        self.waiting = False


def build_jwt_authn(config: Any, context: FilterBuildContext) -> Any:
    """Config factory for ``envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication``."""
    parsed = parse_jwt_authn(config)  # an unknown JWKS cluster fails the fetch at request time, as in Envoy

    def create(callbacks: FilterCallbacks) -> JwtAuthnFilter:
        return JwtAuthnFilter(parsed, callbacks, time.time)

    create.filter_class = JwtAuthnFilter  # type: ignore[attr-defined]
    return create


register_http_filter(JWT_AUTHN_TYPE, build_jwt_authn)
