"""AuthorizationPolicy + RequestAuthentication end to end on 127.0.0.1: a PERMISSIVE listener
whose HTTP handler runs ``check_inbound`` with the peer identity from the real mTLS handshake.
The cases repeat the table tests' documented rules over real connections."""

from __future__ import annotations

import asyncio
import json
import time

import jwt as pyjwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.wasmhost.security._pki import issue, make_ca, spiffe
from wasmhost.security import (
    InboundSecurity,
    PeerAuthenticationMode,
    SecureListener,
    TlsContexts,
    check_inbound,
    client_context_for,
)
from wasmhost.security.authz import AuthorizationEngine, AuthzRequest, parse_policy
from wasmhost.security.jwt import JwtAuthenticator, parse_request_authentication

pytestmark = pytest.mark.e2e
ISSUER = "https://idp.example"
SERVER, CART, INTRUDER = spiffe("shop", "server"), spiffe("shop", "cart"), spiffe("web", "intruder")
POLICIES = f"""
- action: DENY
  rules: [{{from: [{{source: {{notPrincipals: ['*']}}}}], to: [{{operation: {{paths: ['/secure/*']}}}}]}}]
- rules:
  - from: [{{source: {{principals: ['{CART.principal}']}}}}]
  - to: [{{operation: {{paths: ['/public*'], methods: [GET]}}}}]
  - from: [{{source: {{requestPrincipals: ['{ISSUER}/*']}}}}]
    to: [{{operation: {{paths: ['/api/*']}}}}]
    when: [{{key: 'request.auth.claims[groups]', values: [admins]}}]
"""


class HttpGate(asyncio.Protocol):
    """Parses each HTTP/1.1 request head and answers with ``check_inbound``'s verdict."""

    def __init__(self, peer, security, port):
        self.peer, self.security, self.port, self.buffer = peer, security, port, b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.task = asyncio.get_running_loop().create_task(self.answer(head.decode()))

    async def answer(self, head):
        line, *lines = head.split("\r\n")
        method, path, _ = line.split(" ")
        headers = [tuple(part.strip() for part in h.split(":", 1)) for h in lines]
        request = AuthzRequest(
            source_principal=self.peer.identity.principal if self.peer.identity else "",
            source_ip=self.peer.address[0], destination_ip="127.0.0.1", destination_port=self.port,
            host=dict(headers).get("host", ""), method=method, path=path, headers=dict(headers),
        )
        verdict = await check_inbound(self.security, request, headers)
        body = verdict.body if not verdict.allowed else json.dumps(
            {"principal": request.source_principal, "headers": verdict.upstream_headers}).encode()
        self.transport.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (verdict.status, len(body), body))


async def request(port, path, *, context=None, token=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="" if context else None)
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nhost: shop\r\n{auth}\r\n".encode())
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


@pytest.fixture(scope="module")
def idp_key():
    return ec.generate_private_key(ec.SECP256R1())


def token(key, **claims):
    now = int(time.time())
    return pyjwt.encode({"iss": ISSUER, "sub": "alice", "exp": now + 300, **claims}, key, algorithm="ES256",
                        headers={"kid": "idp"})


CASES = [
    # (id, client, path, token claims or "bad" or None, expected status)
    ("mesh-peer-allowed-by-principal", "cart", "/secure/data", None, 200),
    ("other-mesh-peer-matches-no-allow", "intruder", "/secure/data", None, 403),
    ("plaintext-denied-by-notPrincipals-star", "plain", "/secure/data", None, 403),
    ("plaintext-allowed-on-public-get", "plain", "/public/page", None, 200),
    ("jwt-with-required-claim", "plain", "/api/orders", {"groups": ["admins"]}, 200),
    ("jwt-without-required-claim", "plain", "/api/orders", {"groups": ["dev"]}, 403),
    ("missing-jwt-with-policy-requiring-one", "plain", "/api/orders", None, 403),
    ("invalid-jwt-is-401-before-authz", "plain", "/public/page", "bad", 401),
]


def test_policies_end_to_end(tmp_path, idp_key):
    ca = make_ca(tmp_path / "ca")
    jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(idp_key.public_key()))
    jwk.update({"kid": "idp", "alg": "ES256"})
    rules = parse_request_authentication({"jwtRules": [{"issuer": ISSUER, "jwks": json.dumps({"keys": [jwk]})}]})
    engine = AuthorizationEngine(parse_policy(p, name=f"p{i}", namespace="shop")
                                 for i, p in enumerate(yaml.safe_load(POLICIES)))
    security = InboundSecurity(engine, JwtAuthenticator(rules))
    contexts = {"cart": client_context_for(issue(ca, CART)), "intruder": client_context_for(issue(ca, INTRUDER)),
                "plain": None}
    stranger_key = ec.generate_private_key(ec.SECP256R1())

    async def run():
        port_box = {}
        listener = SecureListener(TlsContexts(issue(ca, SERVER)),
                                  lambda peer: HttpGate(peer, security, port_box["port"]),
                                  mode=PeerAuthenticationMode.PERMISSIVE, sniff_timeout=0.5)
        await listener.start()
        port_box["port"] = listener.port
        try:
            results = {}
            for case_id, client, path, claims, _ in CASES:
                tok = token(stranger_key) if claims == "bad" else (token(idp_key, **claims) if claims else None)
                results[case_id] = await request(listener.port, path, context=contexts[client], token=tok)
            return results
        finally:
            await listener.close()

    results = asyncio.run(run())
    assert results == {case_id: expected for case_id, *_, expected in CASES}
