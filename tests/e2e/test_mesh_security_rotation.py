"""Certificate rotation under load: the control plane renews 20 s workload certificates at half
their lifetime and re-pushes them over SDS while traffic flows through two real Envoy sidecars
in STRICT mTLS; upstream connections are recycled so that new handshakes use new certificates.
No request may fail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane._running import wait_for
from tests.e2e._mesh_security import NAMESPACE, STRICT_SHORT_CONNECTIONS, SecureMesh, keep_asking, request

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
LIFETIME = 20.0  # seconds: renewed every ~10 s
LOAD_SECONDS = 24.0


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[SecureMesh]:
    running = SecureMesh(tmp_path, envoy_binary, lifetime=LIFETIME)
    try:
        yield running
    finally:
        running.close()


def served_serial(envoy_admin: str) -> set[str]:
    """Serial numbers of the workload certificates an Envoy holds (admin /certs)."""
    import urllib.request

    with urllib.request.urlopen(envoy_admin + "/certs", timeout=5) as reply:
        certs = json.loads(reply.read())["certificates"]
    return {c["serial_number"] for entry in certs for c in entry.get("cert_chain") or []}


def test_rotation_under_load_fails_no_request(mesh: SecureMesh) -> None:
    mesh.write("policy.yaml", STRICT_SHORT_CONNECTIONS)
    server = mesh.server()
    mesh.client()
    wait_for(lambda: request(mesh.outbound_port)[0] == 200, 15.0, what="mTLS path up")
    serials_before = served_serial(server.admin_url)
    load = keep_asking(mesh.outbound_port, LOAD_SECONDS)
    assert mesh.plane.plane is not None and mesh.plane.plane.security is not None
    generations = [i.generation for i in mesh.plane.run(
        lambda: list(mesh.plane.plane.security.certificates.snapshots().values()))]  # type: ignore[union-attr]
    load.check(at_least=200)
    assert len(generations) == 2 and min(generations) >= 3, generations  # both proxies renewed at least twice
    assert served_serial(server.admin_url).isdisjoint(serials_before)  # the server Envoy serves a new certificate


def ca_count(envoy_admin: str) -> int:
    """How many trust anchors the Envoy's ROOTCA holds (admin /certs, one entry per TLS context)."""
    import urllib.request

    with urllib.request.urlopen(envoy_admin + "/certs", timeout=5) as reply:
        certs = json.loads(reply.read())["certificates"]
    return max((len(entry.get("ca_cert") or []) for entry in certs), default=0)


def test_root_rotation_reaches_envoy_sidecars_without_an_outage(tmp_path: Path, envoy_binary: str) -> None:
    mesh = SecureMesh(tmp_path, envoy_binary)
    try:
        mesh.write("policy.yaml", f"""\
            apiVersion: security.istio.io/v1
            kind: PeerAuthentication
            metadata: {{name: default, namespace: {NAMESPACE}}}
            spec: {{mtls: {{mode: STRICT}}}}
            """)
        server = mesh.server()
        mesh.client()
        wait_for(lambda: request(mesh.outbound_port)[0] == 200, 15.0, what="mTLS path up")
        assert ca_count(server.admin_url) == 1
        runtime = mesh.plane.plane.security  # type: ignore[union-attr]
        assert runtime is not None
        mesh.plane.run(runtime.ca.stage_root)
        wait_for(lambda: ca_count(server.admin_url) == 2, 15.0, what="the staged root in Envoy's ROOTCA")
        assert request(mesh.outbound_port)[0] == 200
        old_serials = served_serial(server.admin_url)
        mesh.plane.run(runtime.ca.activate_next_root)
        wait_for(lambda: served_serial(server.admin_url).isdisjoint(old_serials), 15.0,
                 what="a certificate from the new root")
        assert request(mesh.outbound_port)[0] == 200  # the client trusts both roots
        issued = mesh.plane.run(lambda: list(runtime.certificates.snapshots().values()))
        for workload in issued:
            workload.svid.leaf.verify_directly_issued_by(runtime.ca.root)  # signed by the activated root
    finally:
        mesh.close()
