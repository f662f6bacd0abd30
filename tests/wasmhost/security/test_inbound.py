"""PERMISSIVE sniffing (sans-io) and the inbound HTTP security order (CUSTOM, JWT, RBAC)."""

from __future__ import annotations

import asyncio
import json
import time

import jwt as pyjwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.security import InboundSecurity, check_inbound, looks_like_tls
from wasmhost.security.authz import AuthorizationEngine, AuthzRequest, ExtAuthzResult, parse_policy
from wasmhost.security.jwt import JwtAuthenticator, parse_request_authentication


@pytest.mark.parametrize(
    ("prefix", "verdict"),
    [
        (b"", None), (b"\x16", None), (b"\x16\x03", None),
        (b"\x16\x03\x01", True), (b"\x16\x03\x03\x00\x05", True),
        (b"GET", False), (b"PRI", False), (b"\x16\x02", False), (b"\x16\x03\x09", False), (b"\x17\x03\x03", False),
    ],
)
def test_tls_record_detection(prefix, verdict):
    assert looks_like_tls(prefix) is verdict


class RecordingProvider:
    """An ExtAuthzProvider test double with a scripted answer (the real HTTP/gRPC ones are
    tested against real servers in test_authz_custom.py)."""

    name = "ext"

    def __init__(self, result):
        self.result, self.calls = result, []

    async def check(self, request):
        self.calls.append(request)
        return self.result


KEY = ec.generate_private_key(ec.SECP256R1())


def security(provider, policies):
    jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
    rules = parse_request_authentication({"jwtRules": [{"issuer": "idp", "jwks": json.dumps({"keys": [jwk]})}]})
    engine = AuthorizationEngine(parse_policy(yaml.safe_load(p), name=f"p{i}", namespace="ns") for i, p in enumerate(policies))
    return InboundSecurity(engine, JwtAuthenticator(rules), {"ext": provider})


CUSTOM_ALL = "{action: CUSTOM, provider: {name: ext}, rules: [{}]}"


def run(sec, headers, path="/"):
    request = AuthzRequest(path=path, method="GET", headers=dict(headers))
    return asyncio.run(check_inbound(sec, request, headers))


def test_custom_deny_answers_with_the_provider_reply_before_jwt_is_checked():
    provider = RecordingProvider(ExtAuthzResult(False, 418, b"teapot", headers_to_downstream=(("x-why", "no"),)))
    verdict = run(security(provider, [CUSTOM_ALL]), [("authorization", "Bearer garbage")])
    assert (verdict.allowed, verdict.status, verdict.body) == (False, 418, b"teapot")
    assert verdict.response_headers == (("x-why", "no"),)


def test_custom_allow_adds_headers_then_invalid_jwt_is_401():
    provider = RecordingProvider(ExtAuthzResult(True, 200, headers_to_upstream=(("x-user", "bob"),)))
    verdict = run(security(provider, [CUSTOM_ALL]), [("authorization", "Bearer garbage")])
    assert (verdict.allowed, verdict.status) == (False, 401)
    assert len(provider.calls) == 1


def test_valid_jwt_reaches_rbac_and_the_token_header_is_not_forwarded():
    provider = RecordingProvider(ExtAuthzResult(True, 200, headers_to_upstream=(("x-user", "bob"),)))
    tok = pyjwt.encode({"iss": "idp", "sub": "alice", "exp": int(time.time()) + 60}, KEY, algorithm="ES256")
    allow_jwt = "rules: [{from: [{source: {requestPrincipals: ['idp/alice']}}]}]"
    verdict = run(security(provider, [CUSTOM_ALL, allow_jwt]), [("authorization", f"Bearer {tok}"), ("x-user", "eve")])
    assert verdict.allowed and verdict.request.auth.principal == "idp/alice"
    assert dict(verdict.upstream_headers) == {"x-user": "bob"}


def test_rbac_denial_is_403():
    verdict = run(security(RecordingProvider(None), ["{}"]), [])
    assert (verdict.allowed, verdict.status, verdict.body) == (False, 403, b"RBAC: access denied")
