"""Proxies that run their own identity agent (wasmesh sidecars): the bootstrap that says so, SDS
references to the agent's `sds-grpc` instead of ADS, and no key minted for them by the control plane;
Envoy proxies keep being sent minted secrets over ADS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2

from controlplane._bootstrap import BootstrapOptions, bootstrap
from controlplane._generate import generate
from controlplane._protos import CLUSTER, LISTENER, SECRET
from controlplane._proxies import AppPort, Proxy
from controlplane._security_views import config_dump_secrets, secret_view
from controlplane._server import ControlPlane, SecuritySettings, Settings
from tests.controlplane._fixtures import config, mesh_of, sidecar
from tests.controlplane.test_security_translation import SERVICE as SERVICE_ENTRY
from tests.controlplane.test_security_translation import TLS, peer
from tests.wasmhost.security._pki import issue, make_ca, spiffe
from wasmhost.security import sds_secrets

AGENT = {"IDENTITY_AGENT": "true"}
SERVICE = SERVICE_ENTRY + "---\n" + peer("STRICT")


def server(metadata: dict[str, Any]) -> Proxy:
    return sidecar("server", "shop", {"app": "server", **TLS}, app_ports=(AppPort(9000, "http-9000"),),
                   inbound_ports={9000: 19000}, service_account="server", metadata=metadata)


def client(metadata: dict[str, Any]) -> Proxy:
    return sidecar("client", "shop", {"app": "client", **TLS}, app_ports=(), outbound_ports={8080: 18080},
                   service_account="client", metadata=metadata)


def secret_sources(common: dict[str, Any]) -> list[dict[str, Any]]:
    references = list(common["tls_certificate_sds_secret_configs"])
    if "combined_validation_context" in common:
        references.append(common["combined_validation_context"]["validation_context_sds_secret_config"])
    else:
        references.append(common["validation_context_sds_secret_config"])
    assert [r["name"] for r in references] == ["default", "ROOTCA"]
    return [r["sds_config"] for r in references]


def inbound_common(proxy: Proxy) -> dict[str, Any]:
    listener = config(generate(mesh_of(SERVICE, proxies=[proxy]), proxy), LISTENER, "virtualInbound_9000")
    chain = listener["filter_chains"][0]
    return dict(chain["transport_socket"]["typed_config"]["common_tls_context"])


def outbound_common(proxy: Proxy) -> dict[str, Any]:
    snapshot = generate(mesh_of(SERVICE, proxies=[server({}), proxy]), proxy)
    cluster = config(snapshot, CLUSTER, "outbound|8080||server.shop.svc.cluster.local")
    return dict(cluster["transport_socket_matches"][0]["transport_socket"]["typed_config"]["common_tls_context"])


AGENT_SOURCE = {"api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                      "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
                                      "set_node_on_first_message_only": True},
                "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def test_an_agent_proxy_names_its_secrets_through_sds_grpc_both_ways() -> None:
    for common in (inbound_common(server(AGENT)), outbound_common(client(AGENT))):
        assert secret_sources(common) == [AGENT_SOURCE, AGENT_SOURCE]


def test_an_envoy_proxy_still_fetches_its_secrets_over_ads() -> None:
    ads = {"ads": {}, "resource_api_version": "V3"}
    for common in (inbound_common(server({})), outbound_common(client({})),
                   inbound_common(server({"IDENTITY_AGENT": "no"}))):
        assert secret_sources(common) == [ads, ads]


def test_bootstrap_for_an_identity_agent() -> None:
    options = BootstrapOptions(name="web", namespace="shop", service_account="web", identity_agent=True,
                               trust_domain="example.org")
    with pytest.raises(ValueError, match="bootstrap token"):
        bootstrap(options)
    options.token, options.xds_ca = "v1.a.b", "-----BEGIN CERTIFICATE-----\n"
    metadata = bootstrap(options)["node"]["metadata"]
    assert metadata["IDENTITY_AGENT"] == "true" and metadata["TRUST_DOMAIN"] == "example.org"
    assert metadata["LABELS"]["security.istio.io/tlsMode"] == "istio"
    options.identity_agent = False
    assert "IDENTITY_AGENT" not in bootstrap(options)["node"]["metadata"]


def _node(account: str, agent: bool) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"NAMESPACE": "shop", "SERVICE_ACCOUNT": account, "NAME": account,
                     "LABELS": {"app": account, **TLS}, **(AGENT if agent else {})})
    return base_pb2.Node(id=f"sidecar~127.0.0.1~{account}.shop~shop.svc.cluster.local", metadata=metadata)


async def _connect(address: str, roots: bytes, token: str, node: base_pb2.Node) -> Any:
    """Open an ADS stream with a bootstrap token, ask for listeners, return the first answer."""
    credentials = grpc.ssl_channel_credentials(roots)
    channel = grpc.aio.secure_channel(address, credentials,
                                      options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")])
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
        metadata=(("authorization", f"Bearer {token}"),))
    await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=LISTENER))
    answer = await asyncio.wait_for(call.read(), 10)
    return channel, answer


def test_the_control_plane_mints_keys_for_envoys_only(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any]]:
        plane = ControlPlane(settings=Settings(xds_port=0, monitoring_port=0,
                                               security=SecuritySettings(tmp_path / "ca", secure_port=0)))
        await plane.start()
        channels = []
        try:
            security = plane.security
            assert security is not None
            roots = security.ca.trust_bundle_pem().encode()
            address = f"127.0.0.1:{plane.secure_port}"
            for account, agent in (("agent", True), ("envoy", False)):
                channel, answer = await _connect(address, roots, security.tokens.issue("shop", account),
                                                 _node(account, agent))
                channels.append(channel)
                assert answer.type_url == LISTENER
            views = {}
            for account in ("agent", "envoy"):
                connection = plane.find_connection(f"{account}.shop")
                assert connection is not None and connection.identity is not None  # both authenticated
                views[account] = secret_view(plane, connection)
                views[account]["ads_secrets"] = dict(plane._snapshot_for(connection, plane.generator()).resources(SECRET))
            views["agent"]["bundle"] = security.ca.trust_bundle_pem().encode()
            return security.certificates.minted, views["agent"], views["envoy"]
        finally:
            for channel in channels:
                await channel.close()
            await plane.stop()

    minted, agent_view, envoy_view = asyncio.run(scenario())
    assert minted == 1  # the Envoy's key only
    assert agent_view["secrets"] == [] and "identity agent" in agent_view["reason"]
    assert envoy_view["identity"] == "spiffe://cluster.local/ns/shop/sa/envoy"
    # over ADS the agent is sent the public trust bundle only; the Envoy its minted key as well
    assert set(agent_view["ads_secrets"]) == {"ROOTCA"}
    rootca = agent_view["ads_secrets"]["ROOTCA"]
    assert rootca.validation_context.trusted_ca.inline_bytes == agent_view["bundle"]
    assert set(envoy_view["ads_secrets"]) == {"default", "ROOTCA"}


def test_secrets_read_from_a_proxy_config_dump(tmp_path: Path) -> None:
    svid = issue(make_ca(tmp_path / "ca"), spiffe("shop", "web"))
    entries = [{"name": name, "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                                         **json_format.MessageToDict(secret, preserving_proto_field_name=True)}}
               for name, secret in sds_secrets(svid).items()]
    dump = {"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                         "dynamic_active_secrets": entries}]}
    view = config_dump_secrets(dump, "127.0.0.1:15000")
    assert view["identity"] == "spiffe://cluster.local/ns/shop/sa/web"
    default, rootca = view["secrets"]
    assert default["serial"] == format(svid.leaf.serial_number, "x")
    assert default["not_after"] == svid.not_after.isoformat()
    assert [root["serial"] for root in rootca["trust_bundle"]] == [format(r.serial_number, "x") for r in svid.trust_bundle]
    assert "PRIVATE KEY" not in json.dumps(view)
    empty = config_dump_secrets({"configs": []}, "127.0.0.1:15000")
    assert empty["secrets"] == [] and "no SDS secrets" in empty["reason"]
