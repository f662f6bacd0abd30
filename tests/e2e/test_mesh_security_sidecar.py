"""The mesh security config the control plane emits, enforced by a wasmesh sidecar alike real Envoy.

Each test runs the same workload twice behind one control plane: once behind Envoy, once behind
a wasmesh sidecar started from the same `wasmesh bootstrap` (plus `--identity-agent` where mTLS is
involved: the wasmesh sidecar generates its own key, the Envoy is sent one), and sends both the
same requests. The mTLS tests are the mixed mesh: Envoy and agent-holding wasmesh sidecars, both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from controlplane._meshconfig import MeshConfig, parse_mesh_config
from tests.controlplane._running import free_port, wait_for
from tests.e2e._envoy import EnvoyProcess
from tests.e2e._mesh_security import NAMESPACE, SERVICE_PORT, SecureMesh, cli, plaintext_refused, request
from tests.e2e._upstream import ScriptedUpstream
from tests.e2e.test_mesh_security_authz import ISSUER, Issuer, bearer
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
CONVERGE = 20.0


class BothMesh(SecureMesh):
    """`SecureMesh` whose server workload runs behind Envoy and behind a wasmesh sidecar."""

    def __init__(self, root: Path, envoy_binary: str, mesh_config: MeshConfig | None = None) -> None:
        super().__init__(root, envoy_binary, mesh_config=mesh_config)
        self.sidecars: list[SidecarProcess] = []

    def servers(self, *, token: bool = False, kinds: tuple[str, ...] = ("envoy", "wasmesh")) -> dict[str, int]:
        """Start the server proxies; their inbound ports by kind ('envoy', 'wasmesh')."""
        ports = {}
        for kind in kinds:
            port = free_port()
            name = f"server-{kind}"
            security = ["--token-file", str(self.token("server")), "--xds-ca", str(self.ca_dir / "trust-bundle.pem"),
                        "--xds", self.plane.secure_address] if token else ["--xds", self.plane.xds_address]
            if token and kind == "wasmesh":
                security.append("--identity-agent")  # our sidecar keeps its key; Envoy is sent one
            text = cli("bootstrap", "--name", name, "--namespace", NAMESPACE, "--service-account", "server",
                       "--labels", "app=server", "--admin-port", "0", "--port", str(self.app_port),
                       "--inbound", f"{self.app_port}={port}", *security)
            if kind == "envoy":
                proxy = EnvoyProcess(text, workdir=self.root / name, binary=self.binary)
                self.envoys.append(proxy)
                proxy.start()
            else:
                sidecar = SidecarProcess(text, workdir=self.root / name)
                self.sidecars.append(sidecar)
                sidecar.start()
            ports[kind] = port
        return ports

    def wasmesh_client(self, name: str = "client") -> int:
        """A wasmesh sidecar for workload `name` with mesh identity; its outbound port to the service."""
        port = free_port()
        text = cli("bootstrap", "--name", name, "--namespace", NAMESPACE, "--service-account", name,
                   "--labels", f"app={name}", "--admin-port", "0", "--outbound", f"{SERVICE_PORT}={port}",
                   "--token-file", str(self.token(name)), "--xds-ca", str(self.ca_dir / "trust-bundle.pem"),
                   "--xds", self.plane.secure_address, "--identity-agent")
        sidecar = SidecarProcess(text, workdir=self.root / f"{name}-wasmesh")
        self.sidecars.append(sidecar)
        sidecar.start()
        return port

    def close(self) -> None:
        for sidecar in self.sidecars:
            sidecar.stop()
        super().close()


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[BothMesh]:
    running = BothMesh(tmp_path, envoy_binary)
    try:
        yield running
    finally:
        running.close()


def status(port: int, path: str = "/", **kwargs: object) -> int:
    try:
        return request(port, path, **kwargs)[0]  # type: ignore[arg-type]
    except OSError:
        return 0


def statuses(ports: dict[str, int], path: str, **kwargs: object) -> dict[str, int]:
    return {kind: status(port, path, **kwargs) for kind, port in ports.items()}


def test_authorization_policy_allow_and_deny_alike_envoy(mesh: BothMesh) -> None:
    mesh.write("authz.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: allow-public, namespace: {NAMESPACE}}}
        spec:
          selector: {{matchLabels: {{app: server}}}}
          action: ALLOW
          rules:
          - to: [{{operation: {{methods: [GET], paths: ["/public/*"]}}}}]
          - from: [{{source: {{principals: ["cluster.local/ns/{NAMESPACE}/sa/client"]}}}}]
            to: [{{operation: {{paths: ["/peer-only"]}}}}]
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
    ports = mesh.servers()
    wait_for(lambda: set(statuses(ports, "/private").values()) == {403}, CONVERGE, what="policies applied")
    cases = {
        ("GET", "/public/page"): 200,
        ("POST", "/public/page"): 403,  # method not allowed
        ("GET", "/private"): 403,  # path not allowed
        ("GET", "/public/secret"): 403,  # DENY wins over ALLOW
        ("GET", "/peer-only"): 403,  # plaintext: no peer principal
    }
    for (method, path), expected in cases.items():
        assert statuses(ports, path, method=method) == {"envoy": expected, "wasmesh": expected}, (method, path)
    body = request(ports["wasmesh"], "/private")[1]
    assert body == b"RBAC: access denied"
    # removing the DENY policy opens the path on both, without a restart
    mesh.write("authz.yaml", (mesh.folder / "authz.yaml").read_text().split("---")[0])
    wait_for(lambda: set(statuses(ports, "/public/secret").values()) == {200}, CONVERGE, what="DENY removed")


def test_request_authentication_alike_envoy(mesh: BothMesh) -> None:
    issuer = Issuer()
    try:
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
            """)
        ports = mesh.servers()
        valid = bearer(issuer.token())
        wait_for(lambda: set(statuses(ports, "/", headers=valid).values()) == {200}, CONVERGE, what="valid token")
        seen = {k.lower(): v for k, v in mesh.app.requests[-1].headers}
        assert "authorization" not in seen and "x-jwt-payload" in seen
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cases = {
            "expired": (bearer(issuer.token(expires_in=-120)), 401),
            "wrong issuer": (bearer(issuer.token(issuer="https://other.test")), 401),
            "bad signature": (bearer(issuer.token(key=other_key)), 401),
            "malformed": (bearer("not.a.jwt"), 401),
            "missing, no policy requires one": ({}, 200),
        }
        for case, (headers, expected) in cases.items():
            assert statuses(ports, "/", headers=headers) == {"envoy": expected, "wasmesh": expected}, case
        mesh.write("authz.yaml", f"""\
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {{name: require-jwt, namespace: {NAMESPACE}}}
            spec:
              selector: {{matchLabels: {{app: server}}}}
              rules:
              - from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]
                when: [{{key: "request.auth.claims[group]", values: [staff]}}]
            """)
        wait_for(lambda: set(statuses(ports, "/").values()) == {403}, CONVERGE, what="policy requires a token")
        assert statuses(ports, "/", headers=bearer(issuer.token())) == {"envoy": 200, "wasmesh": 200}
        assert statuses(ports, "/", headers=bearer(issuer.token(sub="bob"))) == {"envoy": 403, "wasmesh": 403}
        assert statuses(ports, "/", headers=bearer(issuer.token(expires_in=-120))) == {"envoy": 401, "wasmesh": 401}
    finally:
        issuer.server.stop()


def test_strict_and_permissive_inbound_on_a_wasmesh_sidecar(mesh: BothMesh) -> None:
    """An Envoy client reaches the wasmesh server over mesh mTLS (secrets from the control plane's SDS);
    the server's RBAC sees the client's SPIFFE identity; plaintext is refused under STRICT only."""
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
          rules:
          - from: [{{source: {{principals: ["cluster.local/ns/{NAMESPACE}/sa/client"]}}}}]
        """)
    port = mesh.servers(token=True, kinds=("wasmesh",))["wasmesh"]
    mesh.client()
    other_port = free_port()
    mesh.envoy("other", "--outbound", f"{SERVICE_PORT}={other_port}")
    wait_for(lambda: status(mesh.outbound_port) == 200, CONVERGE, what="client over mTLS")
    assert request(mesh.outbound_port)[1] == b"hello from server"
    seen = {k.lower(): v for k, v in mesh.app.requests[-1].headers}
    assert f"URI=spiffe://cluster.local/ns/{NAMESPACE}/sa/client" in seen["x-forwarded-client-cert"]
    wait_for(lambda: status(other_port) == 403, CONVERGE, what="another identity refused by RBAC")
    assert plaintext_refused(port)
    mesh.write("peer.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {{name: default, namespace: {NAMESPACE}}}
        spec: {{mtls: {{mode: PERMISSIVE}}}}
        """)
    wait_for(lambda: status(port, host="server") == 403, CONVERGE, what="plaintext accepted (no principal)")
    assert status(mesh.outbound_port) == 200  # mTLS still served


def test_wasmesh_client_sends_mesh_mtls_to_an_envoy_server(mesh: BothMesh) -> None:
    """Auto-mTLS outbound (transport_socket_matches with the SDS secrets): a wasmesh client passes an
    Envoy server's STRICT mode, and its SPIFFE identity is what the server's RBAC admits."""
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
          rules:
          - from: [{{source: {{principals: ["cluster.local/ns/{NAMESPACE}/sa/client"]}}}}]
        """)
    mesh.server()
    client_port = mesh.wasmesh_client("client")
    other_port = mesh.wasmesh_client("other")
    wait_for(lambda: status(client_port) == 200, CONVERGE, what="wasmesh client over mTLS")
    assert request(client_port)[1] == b"hello from server"
    wait_for(lambda: status(other_port) == 403, CONVERGE, what="another wasmesh identity refused")
    assert plaintext_refused(mesh.inbound_port)


def test_wasmesh_to_wasmesh_mtls_under_permissive(mesh: BothMesh) -> None:
    """Both sides ours: the client's mesh ALPN selects the server's mTLS chain (the app sees the caller
    in XFCC, which the plaintext chain never sets), while plaintext still reaches the plaintext chain."""
    port = mesh.servers(token=True, kinds=("wasmesh",))["wasmesh"]
    client_port = mesh.wasmesh_client("client")
    wait_for(lambda: status(client_port) == 200, CONVERGE, what="wasmesh client to wasmesh server")
    seen = {k.lower(): v for k, v in mesh.app.requests[-1].headers}
    assert f"URI=spiffe://cluster.local/ns/{NAMESPACE}/sa/client" in seen["x-forwarded-client-cert"]
    assert status(port, host="server") == 200
    seen = {k.lower(): v for k, v in mesh.app.requests[-1].headers}
    assert "x-forwarded-client-cert" not in seen


def test_custom_policy_ext_authz_alike_envoy(tmp_path: Path, envoy_binary: str) -> None:
    """CUSTOM through the control plane: both proxies ask the same HTTP ext_authz server and answer alike."""
    authorizer = ScriptedUpstream(403, (("x-reason", "denied by test"), ("x-hidden", "h")), "no").start()
    mesh: BothMesh | None = None
    try:
        mesh_config = parse_mesh_config({"extensionProviders": [{"name": "checker", "envoyExtAuthzHttp": {
            "service": f"checker.{NAMESPACE}.svc.cluster.local", "port": 9191, "pathPrefix": "/check",
            "includeRequestHeadersInCheck": ["x-ext-authz"], "headersToUpstreamOnAllow": ["x-user"],
            "headersToDownstreamOnDeny": ["x-reason"]}}]})
        mesh = BothMesh(tmp_path, envoy_binary, mesh_config)
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
        ports = mesh.servers()
        wait_for(lambda: all(request(port, "/admin/users") == (403, b"no") for port in ports.values()), CONVERGE,
                 what="the provider's denial on both")
        checked = len(authorizer.requests)
        for kind in ("envoy", "wasmesh"):
            assert request(ports[kind], "/admin/users", headers={"x-ext-authz": "deny", "x-other": "o"}) == (403, b"no")
            check = authorizer.requests[-1]
            sent = {k.lower(): v for k, v in check.headers}
            assert check.path == "/check/admin/users" and check.method == "GET", kind
            assert sent.get("x-ext-authz") == "deny" and "x-other" not in sent, kind
        assert statuses(ports, "/public") == {"envoy": 200, "wasmesh": 200}  # not marked: never checked
        assert len(authorizer.requests) == checked + 2
        authorizer.set_response(200, (("x-user", "alice"), ("x-hidden", "h")), "")
        for kind in ("envoy", "wasmesh"):
            assert status(ports[kind], "/admin/users") == 200, kind
            seen = {k.lower(): v for k, v in mesh.app.requests[-1].headers}
            assert seen.get("x-user") == "alice" and "x-hidden" not in seen, kind
        authorizer.set_response(500, (), "broken")  # a server error is a failure: 403 (no failOpen)
        assert statuses(ports, "/admin/users") == {"envoy": 403, "wasmesh": 403}
        authorizer.set_response(401, (), "who?")
        assert statuses(ports, "/admin/users") == {"envoy": 401, "wasmesh": 401}
    finally:
        if mesh is not None:
            mesh.close()
        authorizer.stop()


class HeaderAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """A real gRPC Authorization service: allows requests with ``x-ext-authz: allow``."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def Check(self, request: external_auth_pb2.CheckRequest, context: Any) -> external_auth_pb2.CheckResponse:  # noqa: N802
        http = request.attributes.request.http
        self.paths.append(http.path)
        reply = external_auth_pb2.CheckResponse()
        if http.headers.get("x-ext-authz") == "allow":
            reply.ok_response.headers.add(header={"key": "x-user", "value": "alice"})
            return reply
        reply.status.code = 7  # PERMISSION_DENIED
        reply.denied_response.status.code = 401
        reply.denied_response.body = "not allowed"
        reply.denied_response.headers.add(header={"key": "x-reason", "value": "grpc says no"})
        return reply


def test_custom_policy_grpc_ext_authz_alike_envoy(tmp_path: Path, envoy_binary: str) -> None:
    """An `envoyExtAuthzGrpc` provider: both proxies call the same gRPC Authorization service."""
    servicer = HeaderAuthorizer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    mesh: BothMesh | None = None
    try:
        mesh_config = parse_mesh_config({"extensionProviders": [{"name": "checker", "envoyExtAuthzGrpc": {
            "service": f"checker.{NAMESPACE}.svc.cluster.local", "port": 9000, "timeout": "2s"}}]})
        mesh = BothMesh(tmp_path, envoy_binary, mesh_config)
        mesh.write("checker.yaml", f"""\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {{name: checker, namespace: {NAMESPACE}}}
            spec:
              hosts: [checker.{NAMESPACE}.svc.cluster.local]
              location: MESH_EXTERNAL
              resolution: STATIC
              ports: [{{number: 9000, name: grpc, protocol: GRPC}}]
              endpoints: [{{address: 127.0.0.1, ports: {{grpc: {grpc_port}}}}}]
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
        ports = mesh.servers()
        wait_for(lambda: all(request(port, "/admin/users") == (401, b"not allowed") for port in ports.values()),
                 CONVERGE, what="the gRPC provider's denial on both")
        assert servicer.paths[-1] == "/admin/users"
        allow = {"x-ext-authz": "allow"}
        for kind in ("envoy", "wasmesh"):
            assert status(ports[kind], "/admin/users", headers=allow) == 200, kind
            seen = {k.lower(): v for k, v in mesh.app.requests[-1].headers}
            assert seen.get("x-user") == "alice", kind
        checked = len(servicer.paths)
        assert statuses(ports, "/public") == {"envoy": 200, "wasmesh": 200}
        assert len(servicer.paths) == checked
        server.stop(0).wait()  # the service is gone: an error, 403 without failOpen
        assert statuses(ports, "/admin/users", headers=allow) == {"envoy": 403, "wasmesh": 403}
    finally:
        if mesh is not None:
            mesh.close()
        server.stop(0).wait()
