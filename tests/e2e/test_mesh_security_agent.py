"""wasmesh sidecars that hold their own identity: the identity agent inside `wasmesh sidecar`.

Sidecars started from `wasmesh bootstrap --identity-agent` generate their key themselves, send
only a CSR to the control plane's CA (15012, bootstrap token) and serve the certificate to their
listeners and clusters as the SDS secrets `default`/`ROOTCA` named through `sds-grpc`. The
control plane mints nothing for them. (The mixed mesh of agent sidecars and real Envoy, whose
keys the control plane still mints, is `test_mesh_security_sidecar.py`.)
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from tests.controlplane._running import free_port, wait_for
from tests.e2e._mesh_security import (
    NAMESPACE,
    SERVICE_PORT,
    STRICT_SHORT_CONNECTIONS,
    SecureMesh,
    cli,
    keep_asking,
    plaintext_refused,
    request,
)
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
CONVERGE = 20.0
LIFETIME = 20.0  # seconds: the agents renew every ~10 s
LOAD_SECONDS = 26.0


class AgentMesh(SecureMesh):
    """`SecureMesh` with wasmesh sidecars that run the identity agent."""

    def __init__(self, root: Path, envoy_binary: str, *, lifetime: float = 3600.0) -> None:
        super().__init__(root, envoy_binary, lifetime=lifetime)
        self.sidecars: list[SidecarProcess] = []
        self.write("peer.yaml", STRICT_SHORT_CONNECTIONS)

    def sidecar(self, name: str, *args: str, concurrency: int = 1) -> SidecarProcess:
        text = cli("bootstrap", "--name", name, "--namespace", NAMESPACE, "--service-account", name,
                   "--labels", f"app={name}", "--admin-port", "0", "--identity-agent",
                   "--token-file", str(self.token(name)), "--xds-ca", str(self.ca_dir / "trust-bundle.pem"),
                   "--xds", self.plane.secure_address, *args)
        sidecar = SidecarProcess(text, workdir=self.root / f"{name}-wasmesh", concurrency=concurrency)
        self.sidecars.append(sidecar)
        return sidecar.start()

    def wasmesh_server(self, concurrency: int = 1) -> SidecarProcess:
        return self.sidecar("server", "--port", str(self.app_port), "--inbound",
                            f"{self.app_port}={self.inbound_port}", concurrency=concurrency)

    def wasmesh_client(self, port: int | None = None) -> SidecarProcess:
        return self.sidecar("client", "--outbound", f"{SERVICE_PORT}={port or self.outbound_port}")

    def security(self) -> Any:
        assert self.plane.plane is not None and self.plane.plane.security is not None
        return self.plane.plane.security

    def close(self) -> None:
        for sidecar in self.sidecars:
            sidecar.stop()
        super().close()


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[AgentMesh]:
    running = AgentMesh(tmp_path, envoy_binary)
    try:
        yield running
    finally:
        running.close()


def served(port: int) -> bool:
    try:
        status, body = request(port)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200 and body == b"hello from server"


def presented_certificate(port: int) -> x509.Certificate:
    """The certificate a TLS listener presents (TLS 1.3: seen before it asks for ours)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def agent_secrets(sidecar: SidecarProcess) -> dict[str, dict[str, Any]]:
    """The SDS secrets in a sidecar's /config_dump, by name."""
    dump = json.loads(sidecar.admin_get("/config_dump"))
    found: dict[str, dict[str, Any]] = {}
    for config in dump["configs"]:
        if config["@type"].endswith("SecretsConfigDump"):
            for entry in config.get("dynamic_active_secrets", []):
                found[entry["name"]] = entry["secret"]
    return found


def dumped_leaf(sidecar: SidecarProcess) -> x509.Certificate | None:
    secret = agent_secrets(sidecar).get("default")
    if secret is None:
        return None
    chain = base64.b64decode(secret["tls_certificate"]["certificate_chain"]["inline_bytes"])
    return x509.load_pem_x509_certificates(chain)[0]


def public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_the_sidecar_generates_its_key_and_gets_its_certificate_by_csr(mesh: AgentMesh, protocol: str) -> None:
    delta = ("--delta",) if protocol == "delta" else ()
    server = mesh.sidecar("server", "--port", str(mesh.app_port), "--inbound", f"{mesh.app_port}={mesh.inbound_port}",
                          *delta)
    mesh.sidecar("client", "--outbound", f"{SERVICE_PORT}={mesh.outbound_port}", *delta)
    wait_for(lambda: served(mesh.outbound_port), CONVERGE, what="wasmesh client reaches the wasmesh server over mTLS")
    assert plaintext_refused(mesh.inbound_port)
    forwarded = [dict((k.lower(), v) for k, v in r.headers).get("x-forwarded-client-cert", "")
                 for r in mesh.app.requests]
    assert any(f"URI=spiffe://cluster.local/ns/{NAMESPACE}/sa/client" in value for value in forwarded), forwarded

    security = mesh.security()
    minted, issued_by_csr = mesh.plane.run(lambda: (security.certificates.minted, security.csr_service.issued))
    assert minted == 0  # the control plane generated no key for either sidecar
    assert issued_by_csr >= 2  # both asked the CA with a CSR

    # the certificate the server presents is the one its agent holds (dumped without the key) ...
    presented = presented_certificate(mesh.inbound_port)
    dumped = dumped_leaf(server)
    assert dumped is not None and dumped == presented
    assert x509.UniformResourceIdentifier(f"spiffe://cluster.local/ns/{NAMESPACE}/sa/server") in \
        presented.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    secrets = agent_secrets(server)
    assert secrets["default"]["tls_certificate"]["private_key"] == {"inline_string": "[redacted]"}
    assert "trusted_ca" in secrets["ROOTCA"]["validation_context"]
    assert "PRIVATE KEY" not in server.admin_get("/config_dump")
    # ... and the control plane holds no key for that certificate: it never had one
    held = mesh.plane.run(lambda: [i.svid.leaf for i in security.certificates.snapshots().values()])
    assert all(public_der(cert) != public_der(presented) for cert in held)

    # the operator is told where the certificate is, not handed a control-plane copy
    answer = json.loads(cli("proxy-config", "secret", f"server.{NAMESPACE}", "-o", "json",
                            "--control-plane", mesh.plane.api_address))
    assert answer["secrets"] == [] and "identity agent" in answer["reason"]
    assert answer["sent"] == ["ROOTCA"]  # over its ADS stream: the public trust bundle only
    admin = server.admin_url.removeprefix("http://")
    table = cli("proxy-config", "secret", "server", "--admin", admin)
    assert format(presented.serial_number, "x") in table and "ROOTCA" in table and "PRIVATE KEY" not in table
    held_by_sidecar = json.loads(cli("proxy-config", "secret", "server", "--admin", admin, "-o", "json"))
    assert held_by_sidecar["identity"] == f"spiffe://cluster.local/ns/{NAMESPACE}/sa/server"
    [certificate] = [s for s in held_by_sidecar["secrets"] if s["name"] == "default"]
    assert certificate["not_after"] == presented.not_valid_after_utc.isoformat()


def test_rotation_between_agent_sidecars_under_load_fails_no_request(tmp_path: Path, envoy_binary: str) -> None:
    mesh = AgentMesh(tmp_path, envoy_binary, lifetime=LIFETIME)
    try:
        server = mesh.wasmesh_server(concurrency=2)  # one agent in the supervisor, its secrets in both workers
        mesh.wasmesh_client()
        wait_for(lambda: served(mesh.outbound_port), CONVERGE, what="mTLS path up")
        first = dumped_leaf(server)
        assert first is not None
        serials = {first.serial_number}

        def sample() -> None:
            leaf = dumped_leaf(server)
            if leaf is not None:
                serials.add(leaf.serial_number)

        keep_asking(mesh.outbound_port, LOAD_SECONDS, sample).check(at_least=200)
        assert len(serials) >= 2, serials  # the server renewed while serving
        assert presented_certificate(mesh.inbound_port).serial_number != first.serial_number
        security = mesh.security()
        minted, issued = mesh.plane.run(lambda: (security.certificates.minted, security.csr_service.issued))
        assert minted == 0 and issued >= 4  # both renewed at least once, by CSR only
    finally:
        mesh.close()


def trusted_roots(sidecar: SidecarProcess) -> list[x509.Certificate]:
    secret = agent_secrets(sidecar).get("ROOTCA")
    if secret is None:
        return []
    return x509.load_pem_x509_certificates(base64.b64decode(secret["validation_context"]["trusted_ca"]["inline_bytes"]))


def signed_by(cert: x509.Certificate | None, root: x509.Certificate) -> bool:
    try:
        assert cert is not None
        cert.verify_directly_issued_by(root)
    except (AssertionError, ValueError, TypeError, InvalidSignature):
        return False
    return True


def test_root_rotation_reaches_agent_sidecars_in_a_mixed_mesh_without_an_outage(mesh: AgentMesh) -> None:
    """Stage, activate, retire: the agents trust a staged root as soon as the control plane
    distributes it (ROOTCA over ADS, public), ask for a certificate from the new root on activation,
    and an Envoy client and a wasmesh client reach the agent's server at every step."""
    server = mesh.wasmesh_server()
    mesh.client()  # Envoy
    wasmesh_port = free_port()
    mesh.wasmesh_client(wasmesh_port)
    ports = (mesh.outbound_port, wasmesh_port)
    wait_for(lambda: all(served(p) for p in ports), CONVERGE, what="both clients reach the agent's server")
    security = mesh.security()
    old_root = mesh.plane.run(lambda: security.ca.root)
    assert trusted_roots(server) == [old_root]

    new_root = mesh.plane.run(security.ca.stage_root)
    wait_for(lambda: new_root in trusted_roots(server), CONVERGE, what="the staged root in the agent's ROOTCA")
    assert all(served(p) for p in ports)

    mesh.plane.run(security.ca.activate_next_root)
    wait_for(lambda: signed_by(dumped_leaf(server), new_root), CONVERGE, what="a certificate from the new root")
    assert all(served(p) for p in ports)
    assert set(trusted_roots(server)) == {old_root, new_root}  # the old root's certificates still pass

    mesh.plane.run(security.ca.retire_previous_root)
    wait_for(lambda: trusted_roots(server) == [new_root], CONVERGE, what="the retired root dropped")
    assert all(served(p) for p in ports)
    assert mesh.plane.run(lambda: security.certificates.minted) >= 1  # the Envoy's, not the agents'
