"""RequestAuthentication with real keys, real PyJWT tokens and a JWKS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
import time

import jwt as pyjwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wasmhost.security.authz import AuthorizationEngine, AuthzRequest, parse_policy
from wasmhost.security.jwt import JwksCache, JwtAuthenticator, JwtRuleError, parse_request_authentication

ISSUER = "https://issuer.example"


def jwk_of(key, kid, alg):
    algo = pyjwt.algorithms.RSAAlgorithm if alg.startswith("RS") else pyjwt.algorithms.ECAlgorithm
    data = json.loads(algo.to_jwk(key.public_key()))
    data.update({"kid": kid, "alg": alg, "use": "sig"})
    return data


class JwksServer:
    """Serves ``/jwks.json`` from ``self.keys`` and counts the fetches."""

    def __init__(self):
        self.keys = []
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture
def jwks_server(rsa_key):
    with JwksServer() as server:
        server.keys = [jwk_of(rsa_key, "k1", "RS256")]
        yield server


def token(key, kid="k1", alg="RS256", **claims):
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "alice", "aud": "shop-api", "iat": now, "exp": now + 600}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return pyjwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def authenticator(uri, *, cache=None, **rule):
    spec = {"jwtRules": [{"issuer": ISSUER, "jwksUri": uri, "audiences": ["shop-api"], **rule}]}
    return JwtAuthenticator(parse_request_authentication(spec), jwks=cache or JwksCache())


def authn(auth, headers, path="/"):
    return asyncio.run(auth.authenticate(headers, path))


def test_valid_token_sets_request_auth_strips_the_header_and_outputs_payload(jwks_server, rsa_key):
    auth = authenticator(jwks_server.uri, outputPayloadToHeader="x-jwt-payload",
                         outputClaimToHeaders=[{"header": "x-sub", "claim": "sub"}])
    tok = token(rsa_key, groups=["admins"])
    outcome = authn(auth, [("authorization", f"Bearer {tok}"), ("accept", "*/*")])
    assert outcome.status == "ok" and outcome.http_status is None
    assert outcome.auth.principal == f"{ISSUER}/alice"
    assert outcome.auth.claims["groups"] == ["admins"]
    forwarded = dict(outcome.apply([("authorization", f"Bearer {tok}"), ("accept", "*/*")]))
    assert "authorization" not in forwarded and forwarded["x-sub"] == "alice"
    payload = json.loads(base64.urlsafe_b64decode(forwarded["x-jwt-payload"] + "=="))
    assert payload["sub"] == "alice"


def test_forward_original_token_keeps_the_header(jwks_server, rsa_key):
    auth = authenticator(jwks_server.uri, forwardOriginalToken=True)
    outcome = authn(auth, [("authorization", f"Bearer {token(rsa_key)}")])
    assert outcome.status == "ok" and outcome.remove_headers == ()


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"aud": "other-api"}, "audience"),
    ],
    ids=["expired", "not-yet-valid", "wrong-audience"],
)
def test_invalid_claims_give_401(jwks_server, rsa_key, claims, message):
    outcome = authn(authenticator(jwks_server.uri), [("authorization", f"Bearer {token(rsa_key, **claims)}")])
    assert outcome.http_status == 401 and message in outcome.message.lower()


def test_bad_signature_gives_401(jwks_server):
    impostor = rsa.generate_private_key(65537, 2048)  # same kid, other key
    outcome = authn(authenticator(jwks_server.uri), [("authorization", f"Bearer {token(impostor)}")])
    assert outcome.http_status == 401 and "signature" in outcome.message.lower()


def test_tampered_payload_gives_401(jwks_server, rsa_key):
    head, _, sig = token(rsa_key).split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"iss": ISSUER, "sub": "root", "aud": "shop-api"}).encode()).rstrip(b"=")
    outcome = authn(authenticator(jwks_server.uri), [("authorization", f"Bearer {head}.{forged.decode()}.{sig}")])
    assert outcome.http_status == 401


def test_alg_confusion_hs256_with_the_public_key_is_refused(jwks_server, rsa_key):
    from cryptography.hazmat.primitives import serialization

    public_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "k1"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps({"iss": ISSUER, "sub": "x", "aud": "shop-api"}).encode()).rstrip(b"=").decode()
    import hashlib
    import hmac
    sig = base64.urlsafe_b64encode(hmac.new(public_pem, f"{forged}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    outcome = authn(authenticator(jwks_server.uri), [("authorization", f"Bearer {forged}.{body}.{sig}")])
    assert outcome.http_status == 401 and "kid or alg" in outcome.message


def test_wrong_issuer_is_refused_as_envoy_does(jwks_server, rsa_key):
    """Real Envoy (jwt_authn as Istio configures it) answers 401 "Jwt issuer is not configured"."""
    outcome = authn(authenticator(jwks_server.uri), [("authorization", f"Bearer {token(rsa_key, iss='https://evil')}")])
    assert outcome.status == "invalid" and outcome.auth is None
    assert "issuer is not configured" in outcome.message


def test_malformed_token_gives_401(jwks_server):
    outcome = authn(authenticator(jwks_server.uri), [("authorization", "Bearer not-a-jwt")])
    assert outcome.http_status == 401 and "Header.Payload.Signature" in outcome.message


def test_missing_token_passes_authn(jwks_server):
    outcome = authn(authenticator(jwks_server.uri), [("accept", "*/*")])
    assert outcome.status == "missing" and outcome.http_status is None
    assert jwks_server.fetches == 0  # no token, no key lookup


def test_unknown_kid_refetches_the_jwks_once_then_rate_limits(jwks_server, rsa_key):
    cache = JwksCache(min_refetch_interval=0.0)
    auth = authenticator(jwks_server.uri, cache=cache)
    assert authn(auth, [("authorization", f"Bearer {token(rsa_key)}")]).status == "ok"
    assert jwks_server.fetches == 1
    rotated = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [jwk_of(rsa_key, "k1", "RS256"), jwk_of(rotated, "k2", "ES256")]
    outcome = authn(auth, [("authorization", f"Bearer {token(rotated, kid='k2', alg='ES256')}")])
    assert outcome.status == "ok" and jwks_server.fetches == 2

    limited = JwksCache(min_refetch_interval=60.0)
    auth = authenticator(jwks_server.uri, cache=limited)
    assert authn(auth, [("authorization", f"Bearer {token(rsa_key)}")]).status == "ok"
    before = jwks_server.fetches
    for kid in ("nope-1", "nope-2", "nope-3"):
        outcome = authn(auth, [("authorization", f"Bearer {token(rsa_key, kid=kid)}")])
        assert outcome.http_status == 401
    assert jwks_server.fetches == before  # within the interval an unknown kid does not refetch


def test_cached_jwks_is_refreshed_after_the_cache_duration(jwks_server, rsa_key):
    now = [1000.0]
    cache = JwksCache(cache_duration=300, min_refetch_interval=3600, clock=lambda: now[0])
    auth = authenticator(jwks_server.uri, cache=cache)
    for _ in range(3):
        assert authn(auth, [("authorization", f"Bearer {token(rsa_key)}")]).status == "ok"
    assert jwks_server.fetches == 1
    now[0] += 301
    assert authn(auth, [("authorization", f"Bearer {token(rsa_key)}")]).status == "ok"
    assert jwks_server.fetches == 2


def test_concurrent_lookups_share_one_fetch(jwks_server, rsa_key):
    auth = authenticator(jwks_server.uri)

    async def many():
        return await asyncio.gather(*[auth.authenticate([("authorization", f"Bearer {token(rsa_key)}")])
                                      for _ in range(10)])

    assert all(o.status == "ok" for o in asyncio.run(many()))
    assert jwks_server.fetches == 1


def test_unreachable_jwks_gives_401():
    auth = authenticator("http://127.0.0.1:1/jwks.json", timeout="1s")
    key = rsa.generate_private_key(65537, 2048)
    outcome = authn(auth, [("authorization", f"Bearer {token(key)}")])
    assert outcome.http_status == 401 and "fetch" in outcome.message


def test_custom_header_prefix_params_cookies_and_inline_jwks(rsa_key):
    jwks = json.dumps({"keys": [jwk_of(rsa_key, "k1", "RS256")]})
    rules = parse_request_authentication({"spec": {"jwtRules": [{
        "issuer": ISSUER, "jwks": jwks,
        "fromHeaders": [{"name": "X-Token", "prefix": "JWT "}], "fromParams": ["tok"], "fromCookies": ["session"],
    }]}})
    auth = JwtAuthenticator(rules)
    tok = token(rsa_key)
    assert authn(auth, [("x-token", f"JWT {tok}")]).status == "ok"
    assert authn(auth, [("x-token", f"Bearer {tok}")]).status == "missing"  # prefix does not match
    assert authn(auth, [("authorization", f"Bearer {tok}")]).status == "missing"  # default location replaced
    assert authn(auth, [], f"/x?tok={tok}").status == "ok"
    assert authn(auth, [("cookie", f"a=b; session={tok}")]).status == "ok"


def test_default_locations_are_bearer_header_and_access_token_param(jwks_server, rsa_key):
    auth = authenticator(jwks_server.uri)
    assert authn(auth, [], f"/p?access_token={token(rsa_key)}").status == "ok"


REQUIRE_JWT = "rules: [{from: [{source: {requestPrincipals: ['*']}}]}]"


@pytest.mark.parametrize(("policies", "allowed"), [([], True), ([REQUIRE_JWT], False)],
                         ids=["no-policy", "policy-requires-jwt"])
def test_missing_token_with_and_without_a_policy_requiring_one(jwks_server, policies, allowed):
    outcome = authn(authenticator(jwks_server.uri), [])
    engine = AuthorizationEngine(parse_policy(yaml.safe_load(p)) for p in policies)
    assert engine.check(AuthzRequest(auth=outcome.auth, path="/")).allowed is allowed


def test_valid_token_satisfies_a_policy_on_claims(jwks_server, rsa_key):
    outcome = authn(authenticator(jwks_server.uri), [("authorization", f"Bearer {token(rsa_key, groups=['admins'])}")])
    engine = AuthorizationEngine([parse_policy(yaml.safe_load(
        "rules: [{from: [{source: {requestPrincipals: ['https://issuer.example/*']}}], "
        "when: [{key: 'request.auth.claims[groups]', values: [admins]}]}]"))])
    assert engine.check(AuthzRequest(auth=outcome.auth)).allowed


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"jwksUri": "http://x"}, r"jwtRules\[0\].issuer: required"),
        ({"issuer": "a"}, "needs jwksUri or jwks"),
        ({"issuer": "a", "jwksUri": "ftp://x"}, "jwksUri: must be an http"),
        ({"issuer": "a", "jwks": "{nope"}, "jwks: not JSON"),
        ({"issuer": "a", "jwks": "{}"}, "'keys' list"),
        ({"issuer": "a", "jwksUri": "http://x", "fromHeaders": [{"prefix": "x"}]}, r"fromHeaders\[0\].name: required"),
        ({"issuer": "a", "jwksUri": "http://x", "timeout": "soon"}, "timeout: 'soon'"),
        ({"issuer": "a", "jwksUri": "http://x", "bogus": 1}, "bogus: unknown field"),
    ],
)
def test_invalid_rules_are_refused_naming_the_field(rule, message):
    with pytest.raises(JwtRuleError, match=message):
        parse_request_authentication({"spec": {"jwtRules": [rule]}})
