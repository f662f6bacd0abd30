"""The control plane's security runtime: minted workload certificates and their renewal, the
identity of an xDS stream from its bootstrap token, SDS secrets over ADS on the secure port,
the bootstrap's token and TLS settings, and the views behind the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from controlplane._bootstrap import BootstrapOptions, bootstrap
from controlplane._meshconfig import MeshConfigError, parse_mesh_config
from controlplane._protos import SECRET
from controlplane._sds import WorkloadCertificates
from controlplane._security import MeshSecurity, SecuritySettings, StreamRefused
from controlplane._security_views import authz_view
from controlplane._server import ControlPlane, Settings
from controlplane.ca import CertificateAuthority
from tests.controlplane._fixtures import mesh_of, sidecar
from wasmhost.security import SpiffeId, spiffe_id_of

IDENTITY = SpiffeId("cluster.local", "shop", "web")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_minted_certificate_is_the_identity_and_renews_at_half_life(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, "cluster.local")
    clock = Clock()
    certificates = WorkloadCertificates(ca, lifetime=dt.timedelta(seconds=100), clock=clock)
    issued = certificates.issue(7, IDENTITY)
    secrets = issued.secrets()
    chain = x509.load_pem_x509_certificates(secrets["default"].tls_certificate.certificate_chain.inline_bytes)
    assert spiffe_id_of(chain[0]) == IDENTITY
    assert b"PRIVATE KEY" in secrets["default"].tls_certificate.private_key.inline_bytes
    bundle = secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes.decode()
    assert bundle == ca.trust_bundle_pem()
    assert certificates.due(clock.now + 40) == []
    real_lifetime = chain[0].not_valid_after_utc.timestamp() - clock.now
    assert certificates.due(clock.now + real_lifetime / 2 + 1) == [7]
    again = certificates.issue(7, IDENTITY)
    assert again.generation == 2 and again.svid.leaf.serial_number != issued.svid.leaf.serial_number
    assert again.type_snapshot().version != issued.type_snapshot().version
    assert "PRIVATE KEY" not in json.dumps(again.status())


def test_a_staged_root_makes_every_certificate_due(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, "cluster.local")
    certificates = WorkloadCertificates(ca, lifetime=dt.timedelta(hours=1))
    certificates.issue(1, IDENTITY)
    assert certificates.due() == []
    ca.stage_root()
    assert certificates.due() == [1]
    renewed = certificates.issue(1, IDENTITY)
    assert len(renewed.svid.trust_bundle) == 2


def security(tmp_path: Path) -> MeshSecurity:
    return MeshSecurity(SecuritySettings(tmp_path / "ca", secure_port=0))


def test_stream_identity_comes_from_the_token_and_must_match_the_node(tmp_path: Path) -> None:
    runtime = security(tmp_path)
    token = runtime.tokens.issue("shop", "web")
    bearer = (("authorization", f"Bearer {token}"),)
    assert runtime.identify((), True, "shop", "web") is None  # no token: no identity, no secrets
    assert runtime.identify(bearer, True, "shop", "web") == IDENTITY
    with pytest.raises(StreamRefused) as plaintext:
        runtime.identify(bearer, False, "shop", "web")
    assert plaintext.value.code == grpc.StatusCode.UNAUTHENTICATED and "TLS" in plaintext.value.details
    with pytest.raises(StreamRefused) as other:
        runtime.identify(bearer, True, "shop", "admin")
    assert other.value.code == grpc.StatusCode.PERMISSION_DENIED and "SERVICE_ACCOUNT" in other.value.details
    with pytest.raises(StreamRefused) as forged:
        runtime.identify((("authorization", f"Bearer {token[:-2]}xx"),), True, "shop", "web")
    assert forged.value.code == grpc.StatusCode.UNAUTHENTICATED


def _node(namespace: str, account: str) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"NAMESPACE": namespace, "SERVICE_ACCOUNT": account, "NAME": "web"})
    return base_pb2.Node(id=f"sidecar~127.0.0.1~web.{namespace}~{namespace}.svc.cluster.local", metadata=metadata)


async def _ask_secrets(address: str, credentials: grpc.ChannelCredentials | None, token: str) -> Any:
    options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    channel = (grpc.aio.secure_channel(address, credentials, options=options) if credentials
               else grpc.aio.insecure_channel(address))
    try:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            metadata=(("authorization", f"Bearer {token}"),))
        await call.write(discovery_pb2.DiscoveryRequest(node=_node("shop", "web"), type_url=SECRET,
                                                        resource_names=["default", "ROOTCA"]))
        try:
            return await asyncio.wait_for(call.read(), 10)
        except grpc.aio.AioRpcError as err:
            return err.code()
    finally:
        await channel.close()


def test_sds_secrets_over_ads_on_the_secure_port_only(tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, Any, int]:
        plane = ControlPlane(settings=Settings(xds_port=0, monitoring_port=0,
                                               security=SecuritySettings(tmp_path / "ca", secure_port=0)))
        await plane.start()
        try:
            assert plane.security is not None
            token = plane.security.tokens.issue("shop", "web")
            roots = grpc.ssl_channel_credentials(plane.security.ca.trust_bundle_pem().encode())
            secure = await _ask_secrets(f"127.0.0.1:{plane.secure_port}", roots, token)
            plaintext = await _ask_secrets(f"127.0.0.1:{plane.xds_port}", None, token)
            return secure, plaintext, plane.security.certificates.minted
        finally:
            await plane.stop()

    secure, plaintext, minted = asyncio.run(scenario())
    assert plaintext == grpc.StatusCode.UNAUTHENTICATED
    assert minted == 1
    names = set()
    for resource in secure.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        names.add(secret.name)
    assert names == {"default", "ROOTCA"}


def test_bootstrap_sends_the_token_only_over_tls_and_labels_the_workload() -> None:
    options = BootstrapOptions(name="web", namespace="shop", service_account="web", token="v1.a.b")
    with pytest.raises(ValueError, match="TLS"):
        bootstrap(options)
    options.xds_ca = "-----BEGIN CERTIFICATE-----\n"
    document = bootstrap(options)
    service = document["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert service["initial_metadata"] == [{"key": "authorization", "value": "Bearer v1.a.b"}]
    assert document["node"]["metadata"]["LABELS"]["security.istio.io/tlsMode"] == "istio"
    tls = document["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert tls["sni"] == "istiod.istio-system.svc"
    assert "transport_socket" not in bootstrap(BootstrapOptions(name="web"))["static_resources"]["clusters"][0]


def test_mesh_config_fields_and_errors() -> None:
    config = parse_mesh_config({"trustDomain": "example.org", "extensionProviders": [{"name": "opa"}]})
    assert config.trust_domain == "example.org" and "opa" in config.extension_providers
    with pytest.raises(MeshConfigError, match=r"extensionProviders\[1\].name"):
        parse_mesh_config({"extensionProviders": [{"name": "a"}, {}]})
    with pytest.raises(MeshConfigError, match="trustDomain"):
        parse_mesh_config({"trustDomain": 5})


def test_authz_view_lists_what_applies_to_the_workload() -> None:
    manifests = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mine, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: theirs, namespace: shop}
spec: {selector: {matchLabels: {app: db}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
"""
    proxy = sidecar("web", "shop", {"app": "web", "security.istio.io/tlsMode": "istio"}, inbound_ports={80: 1080})
    view = authz_view(mesh_of(manifests), proxy)
    assert [(p["name"], p.get("action")) for p in view["authorization_policies"]] == [
        ("mine", "DENY"), ("mesh-wide", "ALLOW")]
    assert view["mtls"] == {"80": "STRICT"}
