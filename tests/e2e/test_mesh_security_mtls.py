"""Mesh mTLS between real Envoy sidecars, configured only by the control plane: certificates
minted by its CA and served over SDS, PeerAuthentication on the server's inbound listener,
auto-mTLS on the client's cluster, SPIFFE identities checked on both sides."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane._running import wait_for
from tests.e2e._mesh_security import NAMESPACE, SecureMesh, cli, plaintext_refused, request

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
CONVERGE = 15.0


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[SecureMesh]:
    running = SecureMesh(tmp_path, envoy_binary)
    try:
        yield running
    finally:
        running.close()


def peer_authentication(mesh: SecureMesh, mode: str) -> None:
    mesh.write("peer.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {{name: default, namespace: {NAMESPACE}}}
        spec: {{mtls: {{mode: {mode}}}}}
        """)


def served(port: int) -> bool:
    status, body = request(port)
    return status == 200 and body == b"hello from server"


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_strict_namespace_refuses_plaintext_and_serves_sidecar_mtls(mesh: SecureMesh, protocol: str) -> None:
    peer_authentication(mesh, "STRICT")
    delta = ["--delta"] if protocol == "delta" else []
    mesh.envoy("server", "--port", str(mesh.app_port), "--inbound", f"{mesh.app_port}={mesh.inbound_port}", *delta)
    mesh.envoy("client", "--outbound", f"8080={mesh.outbound_port}", *delta)
    wait_for(lambda: served(mesh.outbound_port), CONVERGE, what="client sidecar reaches the server over mTLS")
    assert plaintext_refused(mesh.inbound_port)
    forwarded = [dict((k.lower(), v) for k, v in r.headers).get("x-forwarded-client-cert", "")
                 for r in mesh.app.requests]
    # the server sidecar saw the client's certificate: its SPIFFE ID reaches the app
    assert any(f"URI=spiffe://cluster.local/ns/{NAMESPACE}/sa/client" in value for value in forwarded), forwarded


def test_cli_shows_the_secrets_sent_and_the_policies_that_apply(mesh: SecureMesh) -> None:
    peer_authentication(mesh, "STRICT")
    mesh.write("authz.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: allow-client, namespace: {NAMESPACE}}}
        spec:
          selector: {{matchLabels: {{app: server}}}}
          rules: [{{from: [{{source: {{principals: ["cluster.local/ns/{NAMESPACE}/sa/client"]}}}}]}}]
        """)
    server = mesh.server()
    mesh.client()
    wait_for(lambda: served(mesh.outbound_port), CONVERGE, what="mTLS path up")
    api = ["--control-plane", mesh.plane.api_address]
    table = cli("proxy-config", "secret", f"server.{NAMESPACE}", *api)
    assert f"identity spiffe://cluster.local/ns/{NAMESPACE}/sa/server" in table
    assert "PRIVATE KEY" not in table
    data = json.loads(cli("proxy-config", "secret", f"server.{NAMESPACE}", "-o", "json", *api))
    assert "PRIVATE KEY" not in json.dumps(data)
    assert data["sent"] == ["ROOTCA", "default"]
    serial = next(s for s in data["secrets"] if s["name"] == "default")["serial"]
    # the certificate the control plane says it sent is the one the server's Envoy holds
    envoy_certs = json.loads(server.admin_get("/certs"))["certificates"]
    assert serial in {c["serial_number"].lower().lstrip("0") for e in envoy_certs for c in e.get("cert_chain") or []}
    # the same certificate, read from Envoy's own /config_dump (what `--admin` does for any proxy)
    held = json.loads(cli("proxy-config", "secret", "server", "--admin", server.admin_url.removeprefix("http://"),
                          "-o", "json"))
    assert held["identity"] == f"spiffe://cluster.local/ns/{NAMESPACE}/sa/server"
    assert next(s for s in held["secrets"] if s["name"] == "default")["serial"] == serial
    assert "PRIVATE KEY" not in json.dumps(held)
    check = cli("authz", "check", f"server.{NAMESPACE}", *api)
    assert f"allow-client.{NAMESPACE}" in check and "ALLOW" in check
    assert "STRICT" in check
    unauthenticated = json.loads(cli("proxy-config", "secret", "nobody", "-o", "json", *api, check=False) or "{}")
    assert unauthenticated == {}


def test_permissive_serves_plaintext_and_mtls(mesh: SecureMesh) -> None:
    peer_authentication(mesh, "PERMISSIVE")
    mesh.server()
    mesh.client()
    wait_for(lambda: served(mesh.outbound_port), CONVERGE, what="sidecar client")
    assert served(mesh.inbound_port)  # plaintext, straight to the server's sidecar
    headers = [dict((k.lower(), v) for k, v in r.headers) for r in mesh.app.requests]
    assert any("x-forwarded-client-cert" in h for h in headers)  # the sidecar request came over mTLS
    assert any("x-forwarded-client-cert" not in h for h in headers)  # the plaintext one did not


def test_switching_to_strict_takes_effect_without_restart(mesh: SecureMesh) -> None:
    peer_authentication(mesh, "PERMISSIVE")
    mesh.server()
    wait_for(lambda: served(mesh.inbound_port), CONVERGE, what="plaintext while PERMISSIVE")
    peer_authentication(mesh, "STRICT")
    wait_for(lambda: plaintext_refused(mesh.inbound_port), CONVERGE, what="plaintext refused once STRICT")
