"""Who a STRICT sidecar lets in, and whom a client sidecar agrees to talk to, with real Envoy:
a certificate from another CA, an expired one and none at all are refused inbound; a server
whose SPIFFE ID is not the service's is refused by the client sidecar."""

from __future__ import annotations

import datetime as dt
import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.ca import CertificateAuthority
from tests.controlplane._running import free_port, wait_for
from tests.e2e._mesh_security import NAMESPACE, SecureMesh, request
from tests.wasmhost.security._pki import issue, issue_at, spiffe
from wasmhost.security import WorkloadSvid

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
CONVERGE = 15.0


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[SecureMesh]:
    running = SecureMesh(tmp_path, envoy_binary)
    try:
        yield running
    finally:
        running.close()


def strict(mesh: SecureMesh) -> None:
    mesh.write("peer.yaml", f"""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {{name: default, namespace: {NAMESPACE}}}
        spec: {{mtls: {{mode: STRICT}}}}
        """)


def mtls_get(port: int, svid: WorkloadSvid | None, folder: Path, roots: str) -> int | None:
    """GET over TLS with `svid` as the client certificate; the status, or None if refused."""
    context = ssl.create_default_context(cadata=roots)
    context.check_hostname = False  # SPIFFE IDs are not host names
    if svid is not None:
        chain, key = folder / "chain.pem", folder / "key.pem"
        chain.write_bytes(svid.chain_pem())
        key.write_bytes(svid.key_pem())
        context.load_cert_chain(chain, key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/", headers={"host": "server"})
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def test_strict_refuses_foreign_expired_and_missing_certificates(mesh: SecureMesh, tmp_path: Path) -> None:
    strict(mesh)
    mesh.server()
    mesh_ca = CertificateAuthority(mesh.ca_dir, "cluster.local")
    roots = mesh_ca.trust_bundle_pem()
    caller = spiffe(NAMESPACE, "py-client")
    good = issue(mesh_ca, caller)
    wait_for(lambda: mtls_get(mesh.inbound_port, good, tmp_path, roots) == 200, CONVERGE,
             what="a mesh certificate is accepted")
    foreign = issue(CertificateAuthority(tmp_path / "other-ca", "cluster.local"), caller)
    assert mtls_get(mesh.inbound_port, foreign, tmp_path, roots) is None
    expired = issue_at(tmp_path, caller, dt.datetime.now(dt.UTC) - dt.timedelta(hours=2), 600, mesh_ca)
    assert mtls_get(mesh.inbound_port, expired, tmp_path, roots) is None
    assert mtls_get(mesh.inbound_port, None, tmp_path, roots) is None
    assert mtls_get(mesh.inbound_port, good, tmp_path, roots) == 200  # still serving the right one


def pinned_service(mesh: SecureMesh, name: str, port: int, account: str) -> None:
    """A service whose one endpoint is the server sidecar, declared to run as `account`."""
    mesh.write(f"{name}.yaml", f"""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: {name}, namespace: {NAMESPACE}}}
        spec:
          hosts: [{name}.{NAMESPACE}.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{{number: {port}, name: http, protocol: HTTP}}]
          endpoints:
          - address: 127.0.0.1
            ports: {{http: {mesh.inbound_port}}}
            serviceAccount: {account}
            labels: {{security.istio.io/tlsMode: istio}}
        """)


def test_client_sidecar_refuses_a_server_with_the_wrong_spiffe_id(mesh: SecureMesh) -> None:
    strict(mesh)
    pinned_service(mesh, "right", 8081, "server")
    pinned_service(mesh, "wrong", 8082, "billing")
    mesh.server()
    right_port, wrong_port = free_port(), free_port()
    mesh.envoy("client", "--outbound", f"8081={right_port}", "--outbound", f"8082={wrong_port}")
    host = f".{NAMESPACE}.svc.cluster.local"
    wait_for(lambda: request(right_port, host="right" + host)[0] == 200, CONVERGE, what="the right identity")
    wait_for(lambda: request(wrong_port, host="wrong" + host)[0] != 404, CONVERGE, what="wrong route present")
    reached = len(mesh.app.requests)
    status, body = request(wrong_port, host="wrong" + host)
    assert status == 503, body  # the server's certificate says sa/server, the service runs as sa/billing
    assert len(mesh.app.requests) == reached  # nothing reached the application
