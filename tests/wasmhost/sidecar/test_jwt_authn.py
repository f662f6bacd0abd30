"""The jwt_authn filter, from Envoy's semantics: token locations, requirements, Envoy's failure
messages and codes, payload to metadata and headers, remote JWKS through a cluster callout."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap
from tests.wasmhost.sidecar._core import commands_summary, get_request, make_runtime, new_stream, take
from wasmhost.sidecar import ConfigError, HeaderMap, load_plan
from wasmhost.sidecar._commands import StartUpstream
from wasmhost.sidecar._filter_api import HeadersStatus, HttpCallResult, StreamInfo
from wasmhost.sidecar._jwt_authn import JwtAuthnFilter, parse_jwt_authn

JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
ISSUER = "https://issuer.test"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks(key: ec.EllipticCurvePrivateKey = KEY) -> str:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "k1", "alg": "ES256", "use": "sig"})
    return json.dumps({"keys": [public]})


def token(*, sub: str = "alice", issuer: str = ISSUER, expires_in: int = 600, aud: str = "shop",
          key: ec.EllipticCurvePrivateKey = KEY) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "sub": sub, "aud": aud, "iat": now, "exp": now + expires_in, "groups": ["staff"]}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


def provider(**extra: Any) -> dict[str, Any]:
    return {"issuer": ISSUER, "audiences": ["shop"], "local_jwks": {"inline_string": jwks()},
            "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}], "payload_in_metadata": ISSUER,
            **extra}


def istio_config(**extra: Any) -> dict[str, Any]:
    """What the control plane emits: one provider, required as "this provider or no token"."""
    return {"providers": {"origins-0": provider(**extra)}, "rules": [{"match": {"prefix": "/"}, "requires": {
        "requires_any": {"requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]}}}]}


def run(config: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None, path: str = "/"
        ) -> tuple[int, Any, list[Any]]:
    """200 when the request reaches the upstream (with its headers as sent on), else the local reply."""
    filters = [{"name": "envoy.filters.http.jwt_authn", "typed_config": {"@type": JWT_AUTHN, **config}},
               ROUTER_FILTER]
    _, ctx, _ = make_runtime(bootstrap(http_filters=filters))
    stream = new_stream(ctx)
    request = get_request(path, extra=headers or [])
    stream.on_request_headers(request, True)
    commands = take(ctx)
    if any(isinstance(c, StartUpstream) for c in commands):
        return 200, stream, [request]
    return int(commands_summary(commands)[0][1]), stream, commands_summary(commands)


def bearer(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + value.encode())]


def test_valid_token_passes_and_its_payload_reaches_metadata_and_headers() -> None:
    status, stream, sent = run(istio_config(forward_payload_header="x-jwt-payload"), bearer(token()))
    assert status == 200
    assert stream.info.dynamic_metadata["envoy.filters.http.jwt_authn"][ISSUER]["sub"] == "alice"
    upstream_headers = sent[0]
    assert upstream_headers.get(b"authorization") is None  # not forwarded
    payload = upstream_headers.get(b"x-jwt-payload")
    assert json.loads(jwt.utils.base64url_decode(payload))["sub"] == "alice"


def test_forward_keeps_the_token() -> None:
    status, _, sent = run(istio_config(forward=True), bearer(token()))
    assert status == 200
    assert sent[0].get(b"authorization") is not None


# tokens are minted when the test runs, not at collection: a long suite must not expire them
@pytest.mark.parametrize(("make", "code", "message"), [
    (lambda: token(expires_in=-600), 401, b"Jwt is expired"),
    (lambda: token(issuer="https://other.test"), 401, b"Jwt issuer is not configured"),
    (lambda: token(key=OTHER_KEY), 401, b"Jwt verification fails"),
    (lambda: token(aud="elsewhere"), 403, b"Audiences in Jwt are not allowed"),
    (lambda: "not.a.jwt", 401, b"Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
], ids=["expired", "issuer", "signature", "audience", "malformed"])
def test_invalid_tokens_are_refused_with_envoys_messages(make: Callable[[], str], code: int, message: bytes) -> None:
    status, stream, summary = run(istio_config(), bearer(make()))
    assert status == code
    assert summary[1] == ("SendData", message, True)
    assert stream.info.response_code_details.startswith("jwt_authn_access_denied{")


def test_missing_token_passes_under_allow_missing_and_fails_when_required() -> None:
    status, stream, _ = run(istio_config())
    assert status == 200
    assert "envoy.filters.http.jwt_authn" not in stream.info.dynamic_metadata
    required = {"providers": {"p": provider()}, "rules": [{"match": {"prefix": "/api"},
                                                          "requires": {"provider_name": "p"}}]}
    status, _, summary = run(required, path="/api/x")
    assert (status, summary[1][1]) == (401, b"Jwt is missing")
    assert run(required, path="/other")[0] == 200  # no rule matches: nothing required
    assert run(required, bearer(token()), path="/api/x")[0] == 200


def test_tokens_from_query_parameters() -> None:
    config = istio_config(from_headers=[], from_params=["access_token"])
    assert run(config, path=f"/?access_token={token()}")[0] == 200
    assert run(config, path=f"/?access_token={token(expires_in=-600)}")[0] == 401


def test_requires_all_needs_every_provider() -> None:
    second = provider(issuer="https://second.test", from_headers=[{"name": "x-second", "value_prefix": ""}],
                      payload_in_metadata="second")
    config = {"providers": {"a": provider(), "b": second}, "rules": [{"match": {"prefix": "/"}, "requires": {
        "requires_all": {"requirements": [{"provider_name": "a"}, {"provider_name": "b"}]}}}]}
    both = bearer(token()) + [(b"x-second", token(issuer="https://second.test").encode())]
    assert run(config, both)[0] == 200
    assert run(config, bearer(token()))[0] == 401


@pytest.mark.parametrize(("config", "field"), [
    ({"providers": {"p": {"issuer": ISSUER}}}, "providers['p']"),
    ({"providers": {"p": provider()}, "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "q"}}]},
     "provider_name"),
    ({"providers": {"p": provider(local_jwks={"inline_string": "{}"})}}, "local_jwks"),
    ({"providers": {"p": provider()}, "requirement_map": {"r": {"provider_name": "p"}}}, "requirement_map"),
])
def test_invalid_configs_are_refused_by_path(config: dict[str, Any], field: str) -> None:
    filters = [{"name": "envoy.filters.http.jwt_authn", "typed_config": {"@type": JWT_AUTHN, **config}},
               ROUTER_FILTER]
    with pytest.raises(ConfigError) as caught:
        load_plan(yaml.safe_dump(bootstrap(http_filters=filters)), "test", 1)
    assert field in str(caught.value)


class FakeCallbacks:
    """A fake stream (named as one): records callouts; the test answers them."""

    def __init__(self) -> None:
        self.stream_info = StreamInfo(0.0, 0.0, 1, ("10.0.0.1", 1), ("127.0.0.1", 2))
        self.calls: list[tuple[str, list[Any], Callable[[HttpCallResult], None]]] = []
        self.replies: list[tuple[int, bytes]] = []
        self.continued = 0

    def dispatch_http_call(self, cluster: str, headers: Any, body: bytes, trailers: Any, timeout: float,
                           on_result: Callable[[HttpCallResult], None]) -> int:
        self.calls.append((cluster, list(headers), on_result))
        return len(self.calls)

    def cancel_http_call(self, token: int) -> None:
        pass

    def continue_decoding(self) -> None:
        self.continued += 1

    def send_local_reply(self, status: int, body: bytes = b"", headers: Any = (), details: str = "",
                         grpc_status: int | None = None) -> None:
        self.replies.append((status, body))


def remote_filter() -> tuple[Any, Callable[[], tuple[JwtAuthnFilter, FakeCallbacks]]]:
    from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2
    from google.protobuf import json_format

    remote = provider(remote_jwks={"http_uri": {"uri": "http://keys.test:8000/jwks.json", "cluster": "jwks|keys",
                                                "timeout": "2s"}, "cache_duration": "300s"})
    del remote["local_jwks"]
    message = json_format.ParseDict({"providers": {"p": remote}, "rules": [{"match": {"prefix": "/"}, "requires": {
        "provider_name": "p"}}]}, config_pb2.JwtAuthentication())
    parsed = parse_jwt_authn(message)

    def make() -> tuple[JwtAuthnFilter, FakeCallbacks]:
        callbacks = FakeCallbacks()
        return JwtAuthnFilter(parsed, callbacks, time.time), callbacks  # type: ignore[arg-type]

    return parsed, make


def headers_with(value: str) -> HeaderMap:
    return get_request(extra=bearer(value))


def test_remote_jwks_is_fetched_through_the_cluster_then_cached() -> None:
    _, make = remote_filter()
    first, callbacks = make()
    assert first.decode_headers(headers_with(token()), True) == HeadersStatus.StopAllIterationAndWatermark
    cluster, request, answer = callbacks.calls[0]
    assert cluster == "jwks|keys"
    assert (b":path", b"/jwks.json") in request and (b":authority", b"keys.test:8000") in request
    answer(HttpCallResult(HeaderMap([(b":status", b"200")]), jwks().encode(), None))
    assert callbacks.continued == 1 and callbacks.replies == []
    second, again = make()
    assert second.decode_headers(headers_with(token()), True) == HeadersStatus.Continue  # cached
    assert again.calls == []


def test_remote_jwks_fetch_failure_refuses_the_token() -> None:
    _, make = remote_filter()
    item, callbacks = make()
    item.decode_headers(headers_with(token()), True)
    callbacks.calls[0][2](HttpCallResult(None, b"", None, failure="reset"))
    assert callbacks.replies == [(401, b"Jwks remote fetch is failed")]
    assert callbacks.continued == 0
