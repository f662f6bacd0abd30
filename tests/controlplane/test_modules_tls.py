"""The module endpoint over HTTPS once the mesh has a CA: a certificate from the mesh CA with the
secure port's names, `https://` URLs and a module cluster that validates it, and a new
certificate (and trust bundle for proxies) when the CA's roots rotate; and the wasmesh sidecar's
module agent fetching through that cluster with the TLS settings the sidecar builds from it."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane._generate import generate
from controlplane._module_config import MeshConfigError, ModulesConfig
from controlplane._module_placement import MODULE_CLUSTER, ModulePlacements, Served, module_slots
from controlplane._module_tls import SERVER_NAME, ModuleTls, https_port
from controlplane._protos import CLUSTER, EXTENSION_CONFIG, to_dict
from controlplane._security import SecuritySettings
from controlplane.ca._files import generate_root
from tests.controlplane._fixtures import mesh_of, sidecar
from tests.controlplane._running import RunningControlPlane, wait_for
from tests.controlplane.test_modules import SERVICE
from wasmhost.agent import ClusterTransport
from wasmhost.agent._transport import HttpStatusError, PeerRefused
from wasmhost.agent._transport import get as transport_get

MODULE = b"\0asm\x01\0\0\0" + os.urandom(50_000)
SHA = hashlib.sha256(MODULE).hexdigest()
PATH = f"/modules/sha256/{SHA}"


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[RunningControlPlane]:
    running = RunningControlPlane(None)
    running.settings.module_cache_dir = tmp_path / "cache"
    running.settings.security = SecuritySettings(tmp_path / "ca", secure_port=0)
    with running:
        assert running.plane is not None and running.plane.security is not None
        running.call(running.plane.modules.serve_tls(running.plane.security))
        running.plane.modules.cache.put(MODULE)
        running.plane.modules.published.add(SHA)
        yield running


def get(port: int, bundle: str, path: str = PATH) -> tuple[int, bytes, x509.Certificate]:
    """GET over TLS, validating the server against `bundle` and the DNS name proxies require."""
    context = ssl.create_default_context(cadata=bundle)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nhost: {SERVER_NAME}\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, x509.load_der_x509_certificate(der)


def bundle_of(running: RunningControlPlane) -> str:
    assert running.plane is not None and running.plane.security is not None
    return running.plane.security.ca.trust_bundle_pem()


def test_modules_are_served_over_tls_with_the_secure_ports_identity(plane: RunningControlPlane) -> None:
    assert plane.plane is not None
    resolver = plane.plane.modules
    assert resolver.tls is not None and resolver.tls.trust_bundle_pem == bundle_of(plane)
    status, body, cert = get(resolver.port, bundle_of(plane))
    assert status == 200 and body == MODULE
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVER_NAME in sans.get_values_for_type(x509.DNSName)
    assert "spiffe://cluster.local/ns/istio-system/sa/istiod" in sans.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert get(resolver.port, bundle_of(plane), f"/modules/sha256/{'0' * 64}")[0] == 404
    other_ca = ssl.create_default_context()  # the system roots do not vouch for the mesh certificate
    with socket.create_connection(("127.0.0.1", resolver.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        other_ca.wrap_socket(raw, server_hostname=SERVER_NAME)


def test_proxies_are_told_https_and_a_cluster_that_validates_the_mesh_root(plane: RunningControlPlane) -> None:
    assert plane.plane is not None
    resolver = plane.plane.modules
    mesh = mesh_of(SERVICE, """
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: headers}
spec: {url: oci://r.example/plugins/headers:v1}
""")
    [slot] = module_slots(mesh, {})
    placements = ModulePlacements(resolver.host, resolver.port, {slot.key: Served(SHA)}, tls=resolver.tls)
    snapshot = generate(mesh, sidecar(), modules=placements)
    extension = to_dict(snapshot.resources(EXTENSION_CONFIG)["default.headers"])
    remote = extension["typed_config"]["config"]["vm_config"]["code"]["remote"]
    assert remote["http_uri"]["uri"] == f"https://127.0.0.1:{resolver.port}{PATH}"
    cluster = to_dict(snapshot.resources(CLUSTER)[MODULE_CLUSTER])
    transport_socket = cluster["transport_socket"]
    assert transport_socket["name"] == "envoy.transport_sockets.tls"
    tls = transport_socket["typed_config"]
    assert tls["sni"] == SERVER_NAME
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["inline_string"] == bundle_of(plane)
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": SERVER_NAME}}]
    plain = ModulePlacements("127.0.0.1", 15014, {slot.key: Served(SHA)})
    assert "transport_socket" not in to_dict(generate(mesh, sidecar(), modules=plain).resources(CLUSTER)[MODULE_CLUSTER])


def test_root_rotation_reissues_the_certificate_and_sends_the_new_bundle(plane: RunningControlPlane) -> None:
    assert plane.plane is not None and plane.plane.security is not None
    resolver, ca = plane.plane.modules, plane.plane.security.ca
    old_root = ca.root
    pushes = plane.plane.push_count
    plane.run(ca.stage_root)
    wait_for(lambda: resolver.tls is not None and resolver.tls.trust_bundle_pem == bundle_of(plane),
             what="the staged root reaches the module cluster", timeout=30)
    assert resolver.tls is not None and resolver.tls.trust_bundle_pem.count("BEGIN CERTIFICATE") == 2
    wait_for(lambda: plane.plane is not None and plane.plane.push_count > pushes, what="a push with the new bundle", timeout=30)
    plane.run(ca.activate_next_root)
    new_root = ca.root
    assert new_root != old_root

    def issued_by_new_root() -> bool:
        return get(resolver.port, bundle_of(plane))[2].issuer == new_root.subject

    wait_for(issued_by_new_root, what="the endpoint presents a certificate from the new root", timeout=30)
    plane.run(ca.retire_previous_root)
    only_new = new_root.public_bytes(serialization.Encoding.PEM).decode()
    wait_for(lambda: resolver.tls is not None and resolver.tls.trust_bundle_pem == only_new,
             what="the retired root leaves the bundle", timeout=30)
    assert get(resolver.port, only_new)[0] == 200


def test_the_https_port_setting() -> None:
    assert https_port(None, 15012) == 15013 and https_port(None, 0) == 0 and https_port(9443, 15012) == 9443
    assert ModulesConfig.parse("modules: {httpsPort: 9443}").https_port == 9443
    with pytest.raises(MeshConfigError, match=r"modules\.httpsPort"):
        ModulesConfig.parse("modules: {httpsPort: https}")
    assert ModuleTls("PEM").transport_socket()["typed_config"]["sni"] == SERVER_NAME



def sidecar_transport(placements: ModulePlacements) -> ClusterTransport:
    """What the wasmesh sidecar builds from the module cluster proxies are sent."""
    from envoy.config.cluster.v3 import cluster_pb2
    from google.protobuf import json_format

    from wasmhost.sidecar._module_remote import cluster_transport
    from wasmhost.sidecar._plan_build import build_cluster

    message = json_format.ParseDict(placements.cluster(), cluster_pb2.Cluster())
    plan = build_cluster(message, "cluster")
    transport = cluster_transport(MODULE_CLUSTER, {MODULE_CLUSTER: plan}.get)
    assert transport is not None
    return transport


def test_the_sidecar_fetches_through_the_module_clusters_tls_settings(plane: RunningControlPlane) -> None:
    assert plane.plane is not None
    resolver = plane.plane.modules
    assert resolver.tls is not None
    placements = ModulePlacements(resolver.host, resolver.port, {}, tls=resolver.tls)
    url = placements.url(SHA)
    assert transport_get(url, sidecar_transport(placements), 10.0, len(MODULE)) == MODULE
    wrong_name = ModulePlacements(resolver.host, resolver.port, {}, tls=ModuleTls(bundle_of(plane), "other.example"))
    with pytest.raises(PeerRefused, match="SAN does not match"):
        transport_get(url, sidecar_transport(wrong_name), 10.0, len(MODULE))
    other_root = generate_root("elsewhere.example").root.public_bytes(serialization.Encoding.PEM).decode()
    wrong_root = ModulePlacements(resolver.host, resolver.port, {}, tls=ModuleTls(other_root))
    with pytest.raises(PeerRefused, match="certificate verify failed|unable to get local issuer"):
        transport_get(url, sidecar_transport(wrong_root), 10.0, len(MODULE))
    with pytest.raises(HttpStatusError, match="HTTP 404"):
        transport_get(placements.url("0" * 64), sidecar_transport(placements), 10.0, len(MODULE))
