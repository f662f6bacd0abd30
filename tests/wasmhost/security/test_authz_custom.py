"""CUSTOM action: ext_authz over real HTTP and gRPC (envoy.service.auth.v3) servers on 127.0.0.1.

Documented rules checked: CUSTOM is evaluated first and only when a CUSTOM policy matches;
a provider deny denies; a provider allow cannot bypass DENY/ALLOW (all actions must allow)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from concurrent import futures

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import status_pb2

from wasmhost.security.authz import (
    AuthorizationEngine,
    AuthzRequest,
    GrpcExtAuthz,
    HttpExtAuthz,
    authorize,
    parse_policy,
)

CUSTOM_ADMIN = "{action: CUSTOM, provider: {name: ext}, rules: [{to: [{operation: {paths: ['/admin/*']}}]}]}"


def engine(*specs):
    return AuthorizationEngine(parse_policy(yaml.safe_load(s), name=f"p{i}", namespace="shop") for i, s in enumerate(specs))


class CheckHandler(http.server.BaseHTTPRequestHandler):
    """Allows when the request carries ``x-user: alice``; records what it was asked."""

    seen: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        CheckHandler.seen.append((self.path, dict(self.headers)))
        if self.headers.get("x-user") == "alice":
            self.send_response(200)
            self.send_header("x-auth-user", "alice")
            self.send_header("x-not-forwarded", "1")
            self.end_headers()
        else:
            body = b"go away"
            self.send_response(401)
            self.send_header("www-authenticate", "Bearer")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def http_authz():
    CheckHandler.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CheckHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpExtAuthz("ext", "127.0.0.1", server.server_address[1], path_prefix="/check",
                           include_request_headers_in_check=["x-user"],
                           headers_to_upstream_on_allow=["x-auth-*"], headers_to_downstream_on_deny=["www-authenticate"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run(engine_, request, providers):
    return asyncio.run(authorize(engine_, request, providers))


def test_http_provider_allows_and_passes_selected_headers_upstream(http_authz):
    result = run(engine(CUSTOM_ADMIN), AuthzRequest(path="/admin/x", method="GET", host="shop",
                                                    headers={"x-user": "alice", "cookie": "secret"}), {"ext": http_authz})
    assert result.decision.allowed
    assert result.ext_authz.headers_to_upstream == (("x-auth-user", "alice"),)
    path, headers = CheckHandler.seen[0]
    assert path == "/check/admin/x"
    assert headers.get("x-user") == "alice" and "cookie" not in {k.lower() for k in headers}


def test_http_provider_deny_gives_its_status_body_and_headers(http_authz):
    result = run(engine(CUSTOM_ADMIN), AuthzRequest(path="/admin/x", method="GET", headers={"x-user": "mallory"}),
                 {"ext": http_authz})
    assert not result.decision.allowed and result.status == 401
    assert result.ext_authz.body == b"go away"
    assert result.ext_authz.headers_to_downstream == (("www-authenticate", "Bearer"),)


def test_custom_not_matching_does_not_call_the_provider(http_authz):
    result = run(engine(CUSTOM_ADMIN), AuthzRequest(path="/public", method="GET"), {"ext": http_authz})
    assert result.decision.allowed and result.ext_authz is None and CheckHandler.seen == []


def test_provider_allow_cannot_bypass_deny(http_authz):
    policies = engine(CUSTOM_ADMIN, "{action: DENY, rules: [{to: [{operation: {paths: ['/admin/secret']}}]}]}")
    result = run(policies, AuthzRequest(path="/admin/secret", method="GET", headers={"x-user": "alice"}),
                 {"ext": http_authz})
    assert not result.decision.allowed and "DENY policy" in result.decision.reason
    assert len(CheckHandler.seen) == 1  # CUSTOM still ran first


def test_provider_allow_cannot_bypass_allow_nothing(http_authz):
    result = run(engine(CUSTOM_ADMIN, "{}"), AuthzRequest(path="/admin/x", method="GET", headers={"x-user": "alice"}),
                 {"ext": http_authz})
    assert not result.decision.allowed


def test_unreachable_provider_denies_unless_fail_open():
    closed = HttpExtAuthz("ext", "127.0.0.1", 1, timeout=0.5)
    denied = run(engine(CUSTOM_ADMIN), AuthzRequest(path="/admin/x", method="GET"), {"ext": closed})
    assert not denied.decision.allowed and "unavailable" in denied.decision.reason and denied.status == 403
    opened = HttpExtAuthz("ext", "127.0.0.1", 1, timeout=0.5, fail_open=True)
    assert run(engine(CUSTOM_ADMIN), AuthzRequest(path="/admin/x", method="GET"), {"ext": opened}).decision.allowed


def test_missing_provider_denies():
    result = run(engine(CUSTOM_ADMIN), AuthzRequest(path="/admin/x"), {})
    assert not result.decision.allowed and "no extension provider" in result.decision.reason


def test_engine_check_refuses_to_guess_a_custom_answer():
    with pytest.raises(ValueError, match="needs the answer"):
        engine(CUSTOM_ADMIN).check(AuthzRequest(path="/admin/x"))


class Authorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """A real Authorization service: allows principals in the shop namespace."""

    def __init__(self):
        self.requests = []

    def Check(self, request, context):  # noqa: N802 - generated gRPC name
        self.requests.append(request)
        if "/ns/shop/" in request.attributes.source.principal:
            reply = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))
            header = reply.ok_response.headers.add()
            header.header.key, header.header.value = "x-checked", "yes"
            return reply
        reply = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=7, message="not shop"))
        reply.denied_response.status.code = 403
        reply.denied_response.body = "forbidden by policy"
        return reply


@pytest.fixture
def grpc_authz():
    servicer = Authorizer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


def test_grpc_provider_allow_and_deny(grpc_authz):
    servicer, target = grpc_authz

    async def both():
        provider = GrpcExtAuthz("ext", target, timeout=5)
        try:
            policies = engine(CUSTOM_ADMIN)
            ok = await authorize(policies, AuthzRequest(source_principal="cluster.local/ns/shop/sa/cart", source_ip="10.0.0.1",
                                                        path="/admin/x", method="POST", host="api",
                                                        headers={"a": "b"}), {"ext": provider})
            no = await authorize(policies, AuthzRequest(source_principal="cluster.local/ns/web/sa/ui",
                                                        path="/admin/x", method="POST"), {"ext": provider})
            return ok, no
        finally:
            await provider.close()

    ok, no = asyncio.run(both())
    assert ok.decision.allowed and ok.ext_authz.headers_to_upstream == (("x-checked", "yes"),)
    assert not no.decision.allowed and no.status == 403 and no.ext_authz.body == b"forbidden by policy"
    attrs = servicer.requests[0].attributes
    assert attrs.source.principal == "spiffe://cluster.local/ns/shop/sa/cart"
    assert attrs.request.http.path == "/admin/x" and attrs.request.http.headers["a"] == "b"
