"""AuthorizationPolicy and RequestAuthentication enforced by real Envoy sidecars from the
control plane's translation: identities from mTLS, JWTs minted here with PyJWT and verified
against a JWKS the server's sidecar fetches from a local server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from controlplane._meshconfig import parse_mesh_config
from tests.controlplane._running import free_port, wait_for
from tests.e2e._mesh_security import NAMESPACE, SERVICE_PORT, SecureMesh, request
from tests.e2e._upstream import ScriptedUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
CONVERGE = 15.0
ISSUER = "https://issuer.wasmesh.test"


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[SecureMesh]:
    running = SecureMesh(tmp_path, envoy_binary)
    try:
        yield running
    finally:
        running.close()


def status(port: int, path: str = "/", **kwargs: Any) -> int:
    return request(port, path, **kwargs)[0]


def test_allow_and_deny_by_principal_path_and_method(mesh: SecureMesh) -> None:
    mesh.write("peer.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {{name: default, namespace: {NAMESPACE}}}
        spec: {{mtls: {{mode: STRICT}}}}
        """)
    mesh.write("authz.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: allow-client, namespace: {NAMESPACE}}}
        spec:
          selector: {{matchLabels: {{app: server}}}}
          action: ALLOW
          rules:
          - from: [{{source: {{principals: ["cluster.local/ns/{NAMESPACE}/sa/client"]}}}}]
            to: [{{operation: {{methods: [GET], paths: ["/public/*"]}}}}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: deny-secret, namespace: {NAMESPACE}}}
        spec:
          selector: {{matchLabels: {{app: server}}}}
          action: DENY
          rules:
          - to: [{{operation: {{paths: ["/public/secret"]}}}}]
        """)
    mesh.server()
    mesh.client()
    other_port = free_port()
    mesh.envoy("other", "--outbound", f"{SERVICE_PORT}={other_port}")
    wait_for(lambda: status(mesh.outbound_port, "/public/page") == 200, CONVERGE, what="client allowed")
    assert status(mesh.outbound_port, "/public/page", method="POST") == 403  # method not allowed
    assert status(mesh.outbound_port, "/private") == 403  # path not allowed
    assert status(mesh.outbound_port, "/public/secret") == 403  # DENY wins over ALLOW
    wait_for(lambda: status(other_port, "/public/page") in (403, 200), CONVERGE, what="other client connected")
    assert status(other_port, "/public/page") == 403  # another identity
    # removing the DENY policy opens the path for the allowed client, without a restart
    mesh.write("authz.yaml", (mesh.folder / "authz.yaml").read_text().split("---")[0])
    wait_for(lambda: status(mesh.outbound_port, "/public/secret") == 200, CONVERGE, what="DENY removed")


class Issuer:
    """Signs JWTs with an RSA key and publishes its JWKS from a local server."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        self.server = ScriptedUpstream(200, (("content-type", "application/json"),),
                                       json.dumps({"keys": [public]})).start()

    @property
    def jwks_uri(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/jwks.json"

    def token(self, *, sub: str = "alice", issuer: str = ISSUER, expires_in: int = 600,
              key: rsa.RSAPrivateKey | None = None) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "sub": sub, "aud": "shop", "iat": now, "exp": now + expires_in, "group": "staff"}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    made = Issuer()
    try:
        yield made
    finally:
        made.server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_request_authentication_with_policy_requiring_a_token(mesh: SecureMesh, issuer: Issuer) -> None:
    mesh.write("jwt.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {{name: jwt, namespace: {NAMESPACE}}}
        spec:
          selector: {{matchLabels: {{app: server}}}}
          jwtRules:
          - issuer: {ISSUER}
            audiences: [shop]
            jwksUri: {issuer.jwks_uri}
            outputPayloadToHeader: x-jwt-payload
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: require-jwt, namespace: {NAMESPACE}}}
        spec:
          selector: {{matchLabels: {{app: server}}}}
          rules:
          - from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]
            when: [{{key: "request.auth.claims[group]", values: [staff]}}]
        """)
    mesh.server()
    port = mesh.inbound_port  # PERMISSIVE by default: plaintext straight to the server's sidecar
    wait_for(lambda: status(port, headers=bearer(issuer.token())) == 200, CONVERGE, what="valid token accepted")
    upstream = mesh.app.requests[-1]
    seen = {k.lower(): v for k, v in upstream.headers}
    assert "authorization" not in seen  # not forwarded without forwardOriginalToken
    assert "x-jwt-payload" in seen  # outputPayloadToHeader
    assert status(port) == 403  # no token: the policy requires one
    assert status(port, headers=bearer(issuer.token(sub="bob"))) == 403  # another principal
    assert status(port, headers=bearer(issuer.token(expires_in=-120))) == 401  # expired
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert status(port, headers=bearer(issuer.token(key=other_key))) == 401  # bad signature
    assert status(port, headers=bearer("not.a.jwt")) == 401  # malformed
    # a token from an issuer no rule names fails verification (Envoy: "Jwt issuer is not configured")
    assert status(port, headers=bearer(issuer.token(issuer="https://elsewhere.test"))) == 401


def test_custom_action_delegates_to_the_mesh_config_ext_authz_provider(tmp_path: Path, envoy_binary: str) -> None:
    authorizer = ScriptedUpstream(403, (("x-reason", "denied by test"),), "no").start()
    mesh: SecureMesh | None = None
    try:
        mesh_config = parse_mesh_config({"extensionProviders": [{"name": "checker", "envoyExtAuthzHttp": {
            "service": f"checker.{NAMESPACE}.svc.cluster.local", "port": 9191, "pathPrefix": "/check",
            "headersToDownstreamOnDeny": ["x-reason"]}}]})
        mesh = SecureMesh(tmp_path, envoy_binary, mesh_config=mesh_config)
        mesh.write("checker.yaml", f"""\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {{name: checker, namespace: {NAMESPACE}}}
            spec:
              hosts: [checker.{NAMESPACE}.svc.cluster.local]
              location: MESH_EXTERNAL
              resolution: STATIC
              ports: [{{number: 9191, name: http, protocol: HTTP}}]
              endpoints: [{{address: 127.0.0.1, ports: {{http: {authorizer.port}}}}}]
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {{name: ext, namespace: {NAMESPACE}}}
            spec:
              selector: {{matchLabels: {{app: server}}}}
              action: CUSTOM
              provider: {{name: checker}}
              rules: [{{to: [{{operation: {{paths: ["/admin/*"]}}}}]}}]
            """)
        mesh.server()
        port = mesh.inbound_port
        wait_for(lambda: status(port, "/admin/users") == 403, CONVERGE, what="the provider's denial")
        assert authorizer.requests[-1].path == "/check/admin/users"  # pathPrefix + the request's path
        checked = len(authorizer.requests)
        assert status(port, "/public") == 200  # not matched by the CUSTOM rule: never sent to the provider
        assert len(authorizer.requests) == checked
        authorizer.set_response(200, (), "")
        assert status(port, "/admin/users") == 200
    finally:
        if mesh is not None:
            mesh.close()
        authorizer.stop()
