"""Every ready plugin in `plugins/` gives the same results in real Envoy (V8) and in our host.

Each scenario builds the plugin from source (`sdk.scaffold.build_plugin_tree`), starts one Envoy
with it (`EnvoyPluginSession`) and sends a sequence of requests; the same requests go through
our host with `wasmhost.run_request` (the engine of `wasmesh plugin run`), one run per request.
Both results go through `comparable()` and must be equal, request by request; the expected
statuses are asserted too, so two hosts failing alike cannot pass.

State across requests: Envoy keeps the plugin running between requests; our runs start the
plugin afresh each time, so plugin state that must carry over lives where the plugins keep it —
proxy-wasm shared data — which our runs share through a state file (`WASMESH_SHARED_STATE`, the
store the sidecar's worker processes share). Metrics are compared per request: Envoy reports
totals, turned into the change each request made; our runs report one request's worth.

Normalised on purpose, beyond `comparable()`:
- `retry-after` of the rate limiter counts seconds until the next refill from the real clock,
  which moves differently in the two runs; its value is checked to be 3599 or 3600 (a one-hour
  interval minus the test's elapsed time) and then compared as present;
- `connection: close`, which Envoy's HTTP/1.1 codec adds when it answers without reading a body.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdk.scaffold import build_plugin_tree
from tests._tools import ROOT
from tests.e2e._envoy import EnvoyPluginSession, comparable
from wasmhost import RunRequest, run_request

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]

ONE_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Exchange:
    """One request and the upstream's answer to it; ``status`` is what the client must get."""

    status: int
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    response_status: int = 200
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: str = ""


@dataclass(frozen=True)
class Scenario:
    id: str
    plugin: str
    config: dict[str, Any]
    exchanges: tuple[Exchange, ...]




def basic(credentials: bytes) -> tuple[str, str]:
    return ("authorization", "Basic " + base64.b64encode(credentials).decode())


BASIC_ANN = basic(b"ann:open sesame")
BASIC_BAD = basic(b"ann:wrong")
BASIC_BOB = basic(b"bob:correct horse")
SHA256_HORSE = hashlib.sha256(b"correct horse").hexdigest()

SCENARIOS = [
    Scenario("header_rewrite", "header_rewrite", {
        "request": {"remove": ["x-debug"], "rename": {"x-user": "x-forwarded-user"},
                    "set": {"x-env": "prod", "accept": ["text/html", "application/json"]}, "add": {"x-trace": ["a", "b"]}},
        "response": {"remove": ["x-powered-by"], "set": {"cache-control": "no-store"}, "add": {"x-served-by": "wasmesh"}},
    }, (
        Exchange(200, headers=(("x-debug", "1"), ("x-user", "ann"), ("x-user", "bob"), ("x-env", "dev"), ("x-keep", "k")),
                 response_headers=(("x-powered-by", "php"), ("cache-control", "max-age=60"), ("x-other", "o")),
                 response_body="hello"),
        Exchange(200, method="POST", body="payload"),
    )),
    Scenario("access_list", "access_list", {
        "allow_methods": ["GET", "HEAD", "POST"], "deny_paths": [{"prefix": "/admin"}, {"suffix": ".php"}],
        "allow_paths": [{"prefix": "/api/"}, {"exact": "/healthz"}], "deny_body": "nope\n",
    }, (
        Exchange(200, path="/api/orders?x=1", response_body="orders"),
        Exchange(403, path="/admin/users"),
        Exchange(403, path="/api/x.php"),
        Exchange(405, method="DELETE", path="/api/orders/1"),
        Exchange(403, path="/elsewhere"),
        Exchange(200, method="HEAD", path="/healthz"),
    )),
    Scenario("basic_auth", "basic_auth", {
        "realm": "shop",
        "users": [{"username": "ann", "password": "open sesame"}, {"username": "bob", "password_sha256": SHA256_HORSE}],
        "exempt_paths": ["/healthz"], "forward_username_header": "x-authenticated-user", "strip_authorization": True,
    }, (
        Exchange(200, path="/orders", headers=(BASIC_ANN,)),
        Exchange(200, path="/orders", headers=(BASIC_BOB,)),
        Exchange(401, path="/orders"),
        Exchange(401, path="/orders", headers=(BASIC_BAD,)),
        Exchange(401, path="/orders", headers=(("authorization", "Bearer x"),)),
        Exchange(200, path="/healthz"),
    )),
    Scenario("api_key_auth", "api_key_auth", {
        "keys": [{"client": "mobile", "key": "k-9f3a"}, {"client": "partner", "key": "k-77d0"}],
        "query_param": "api_key", "forward_client_header": "x-api-client", "hide_credentials": True,
    }, (
        Exchange(200, path="/v1/items", headers=(("x-api-key", "k-9f3a"), ("x-other", "1"))),
        Exchange(200, path="/v1/items?x=1&api_key=k-77d0&y=2"),
        Exchange(401, path="/v1/items"),
        Exchange(403, path="/v1/items", headers=(("x-api-key", "stolen"),)),
    )),
    Scenario("rate_limit", "rate_limit", {"max_tokens": 2, "fill_interval_ms": ONE_HOUR_MS}, (
        Exchange(200), Exchange(200), Exchange(429), Exchange(429, method="POST", body="x"),
    )),
    Scenario("rate_limit_per_user", "rate_limit", {"max_tokens": 1, "fill_interval_ms": ONE_HOUR_MS,
                                                   "key_header": "x-user", "domain": "users"}, (
        Exchange(200, headers=(("x-user", "ann"),)),
        Exchange(429, headers=(("x-user", "ann"),)),
        Exchange(200, headers=(("x-user", "bob"),)),
        Exchange(200),
        Exchange(429),
    )),
    Scenario("cors", "cors", {
        "allow_origins": ["https://app.example.com", "https://*.example.org"], "allow_methods": ["GET", "POST", "PUT"],
        "allow_headers": ["content-type", "authorization"], "expose_headers": ["x-request-id"], "max_age": 600,
        "allow_credentials": True,
    }, (
        Exchange(204, method="OPTIONS", path="/orders", headers=(
            ("origin", "https://app.example.com"), ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"))),
        Exchange(200, path="/orders", headers=(("origin", "https://a.example.org"),),
                 response_headers=(("vary", "accept"),), response_body="[]"),
        Exchange(200, method="OPTIONS", path="/orders", headers=(
            ("origin", "https://evil.test"), ("access-control-request-method", "PUT"))),
        Exchange(200, path="/orders"),
    )),
    Scenario("body_rewrite", "body_rewrite", {
        "request": [{"from": "http://internal", "to": "https://public.example"}],
        "response": [{"from": "secret", "to": "******"}, {"from": "token", "to": "[redacted]"}],
        "content_types": ["text/", "application/json"],
    }, (
        Exchange(200, method="POST", path="/echo", headers=(("content-type", "text/plain"),),
                 body="see http://internal/x and http://internal/y",
                 response_headers=(("content-type", "application/json"),),
                 response_body='{"secret": "s", "token": "t"}'),
        Exchange(200, method="POST", path="/img", headers=(("content-type", "image/png"),), body="http://internal",
                 response_headers=(("content-type", "image/png"),), response_body="secret"),
    )),
    Scenario("ab_routing", "ab_routing", {
        "rules": [{"header": "x-user-group", "exact": "beta", "variant": "b"},
                  {"header": "x-canary", "present": True, "variant": "canary"}],
        "split": {"header": "x-user-id", "weights": {"a": 50, "b": 50}}, "default": "a",
    }, (
        Exchange(200, headers=(("x-user-group", "beta"),)),
        Exchange(200, headers=(("x-canary", "1"), ("x-route-variant", "b"))),
        Exchange(200, headers=(("x-user-id", "user-1"),)),
        Exchange(200, headers=(("x-user-id", "user-7"),)),
        Exchange(200),
    )),
    Scenario("route_metrics", "route_metrics", {
        "prefix": "shop", "routes": [{"name": "orders", "prefix": "/orders", "methods": ["GET", "POST"]},
                                     {"name": "health", "exact": "/healthz"}],
    }, (
        Exchange(200, path="/orders/7"),
        Exchange(503, method="POST", path="/orders", body="{}", response_status=503),
        Exchange(204, path="/healthz", response_status=204),
        Exchange(404, method="DELETE", path="/orders/7", response_status=404),
    )),
]


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every ready plugin, compiled from `plugins/` by the SDK's own build."""
    built = build_plugin_tree(ROOT / "plugins", tmp_path_factory.mktemp("ready-plugins"))
    return {plugin.module.stem: plugin.module for plugin in built}


def test_every_ready_plugin_has_a_scenario(modules: dict[str, Path]) -> None:
    assert sorted(modules) == sorted({s.plugin for s in SCENARIOS})


def custom_metrics(session: EnvoyPluginSession) -> dict[str, int]:
    assert session.envoy is not None
    return {k.removeprefix("wasmcustom."): v for k, v in session.envoy.stats().items() if k.startswith("wasmcustom.")}


def normalise(result: dict[str, Any]) -> dict[str, Any]:
    response = result["response"]
    if response is not None:
        headers = []
        for name, value in response["headers"]:
            if name == "retry-after":
                assert value in ("3599", "3600"), value
                value = "<seconds to the next fill>"
            if [name, value] != ["connection", "close"]:
                headers.append([name, value])
        response["headers"] = headers
    return result


def ours(wasm: bytes, config: str, exchange: Exchange) -> dict[str, Any]:
    result = run_request(RunRequest(
        module=wasm,
        configuration=config.encode(),
        method=exchange.method,
        path=exchange.path,
        headers=exchange.headers,
        body=exchange.body.encode(),
        response_status=exchange.response_status,
        response_headers=exchange.response_headers,
        response_body=exchange.response_body.encode(),
    ))
    return normalise(comparable(result.to_json()))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_plugin_matches_envoy(scenario: Scenario, modules: dict[str, Path], envoy_binary: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    wasm = modules[scenario.plugin]
    config = json.dumps(scenario.config)
    theirs: list[dict[str, Any]] = []
    with EnvoyPluginSession(wasm, configuration=config, binary=envoy_binary) as session:
        assert session.startup_trap is None
        before = custom_metrics(session)
        for exchange in scenario.exchanges:
            result = session.request(
                method=exchange.method, path=exchange.path, headers=exchange.headers, body=exchange.body,
                response_status=exchange.response_status, response_headers=exchange.response_headers,
                response_body=exchange.response_body,
            )
            totals = result["metrics"]
            result["metrics"] = {name: value - before.get(name, 0) for name, value in totals.items()}
            before = totals
            theirs.append(normalise(comparable(result)))
    monkeypatch.setenv("WASMESH_SHARED_STATE", str(tmp_path / "shared.state"))
    module = wasm.read_bytes()
    mine = [ours(module, config, exchange) for exchange in scenario.exchanges]
    for index, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert a == b, f"request {index} ({scenario.exchanges[index]}) differs"
    assert [r["response"]["status"] for r in mine] == [e.status for e in scenario.exchanges]
    assert not any(r["trap"] for r in mine)
