"""The identity agent wired into the sidecar: its settings from the bootstrap and flags, its SVID as
the secrets `default`/`ROOTCA` answered in-process where listeners and clusters name `sds-grpc`, and a
real CSR round trip (gRPC+TLS to the CA) ending in those secrets."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from controlplane._bootstrap import BootstrapOptions, bootstrap
from controlplane._mtls import downstream_tls
from tests.controlplane.ca import test_service
from tests.wasmhost.security._pki import issue, make_ca, spiffe
from wasmhost.security import sds_secrets
from wasmhost.sidecar._config_load import parse_bootstrap_dict, parse_message_dict
from wasmhost.sidecar._dynamic import AGENT_SECRETS, awaits_secrets, inline_listener
from wasmhost.sidecar._errors import ConfigError
from wasmhost.sidecar._identity import IdentityOptions, IdentitySettings, SidecarIdentity, identity_settings
from wasmhost.sidecar._tls import build_tls
from wasmhost.sidecar._xds_resources import SECRET, XdsResource
from wasmhost.sidecar._xds_settings import ads_settings

ca_server = test_service.ca_server  # the CSR service on 127.0.0.1 (a fixture)
ROOTS = "-----BEGIN CERTIFICATE-----\nroots of the control plane\n-----END CERTIFICATE-----\n"


def agent_bootstrap(**changes: Any) -> Any:
    options = BootstrapOptions(name="web", namespace="shop", service_account="web", token="v1.token.mac",
                               xds_ca=ROOTS, xds_port=15012, identity_agent=True)
    for key, value in changes.items():
        setattr(options, key, value)
    return parse_bootstrap_dict(bootstrap(options))


def settings_of(boot: Any, options: IdentityOptions | None = None) -> IdentitySettings | None:
    return identity_settings(boot, ads_settings(boot), options or IdentityOptions())


def test_settings_come_from_the_ads_connection_as_istio_agent_takes_them() -> None:
    settings = settings_of(agent_bootstrap())
    assert settings is not None
    assert settings.spiffe_id == "spiffe://cluster.local/ns/shop/sa/web"
    assert settings.ca_address == "127.0.0.1:15012"
    assert settings.ca_roots == ROOTS.encode()
    assert settings.server_name == "istiod.istio-system.svc"
    assert settings.token() == "v1.token.mac"
    assert settings.validity == dt.timedelta(0)  # the CA chooses the lifetime
    other = settings_of(agent_bootstrap(trust_domain="example.org", service_account="api"))
    assert other is not None and other.spiffe_id == "spiffe://example.org/ns/shop/sa/api"


def test_flags_override_and_the_token_file_is_read_for_every_request(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("v1.first.mac\n")
    roots = tmp_path / "roots.pem"
    roots.write_text("other roots")
    options = IdentityOptions(ca_address="127.0.0.1:25012", ca_root_cert=str(roots), token_file=str(token),
                              secret_ttl=60)
    settings = settings_of(agent_bootstrap(), options)
    assert settings is not None
    assert (settings.ca_address, settings.ca_roots, settings.validity) == (
        "127.0.0.1:25012", b"other roots", dt.timedelta(seconds=60))
    assert settings.token() == "v1.first.mac"
    token.write_text("v1.second.mac")
    assert settings.token() == "v1.second.mac"


def test_what_is_missing_or_wrong_is_named() -> None:
    assert settings_of(agent_bootstrap(identity_agent=False)) is None
    with pytest.raises(ConfigError, match="IDENTITY_AGENT.*wasmesh bootstrap --identity-agent"):
        settings_of(agent_bootstrap(identity_agent=False), IdentityOptions(ca_address="127.0.0.1:1"))
    plaintext = parse_bootstrap_dict(bootstrap(BootstrapOptions(name="web", namespace="shop",
                                                                extra_metadata={"IDENTITY_AGENT": "true"})))
    with pytest.raises(ConfigError, match=r"dynamic_resources\.ads_config.*TLS"):
        settings_of(plaintext)
    with pytest.raises(ConfigError, match="initial_metadata.*Bearer"):
        settings_of(plaintext, IdentityOptions(ca_root_cert=__file__))
    with pytest.raises(ConfigError, match="needs dynamic_resources"):
        identity_settings(agent_bootstrap(), None)
    with pytest.raises(ConfigError, match="node.metadata.*SPIFFE"):
        settings_of(agent_bootstrap(trust_domain="Not A Domain"))
    with pytest.raises(ConfigError, match="--identity-token-file.*cannot read"):
        settings_of(agent_bootstrap(), IdentityOptions(token_file="/nonexistent/token"))


def mtls_listener(agent: bool) -> Any:
    listener = listener_pb2.Listener()
    parse_message_dict({"name": "inbound", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                        "filter_chains": [{"filters": [], "transport_socket": downstream_tls(True, agent)}]},
                       listener, "")
    return listener


def test_secrets_named_through_sds_grpc_come_from_the_agent_only(tmp_path: Path) -> None:
    svid = issue(make_ca(tmp_path / "ca"), spiffe("shop", "web"))
    held = {name: XdsResource(AGENT_SECRETS, name, "v1", secret, 0.0) for name, secret in sds_secrets(svid).items()}

    assert "no identity agent runs here" in inline_listener(mtls_listener(True), {}).missing[0]
    assert inline_listener(mtls_listener(True), {AGENT_SECRETS: {}}).missing == ["Secret default", "Secret ROOTCA"]
    # an ADS reference is never answered from the agent, nor the other way round
    assert inline_listener(mtls_listener(False), {AGENT_SECRETS: held}).missing == ["Secret default", "Secret ROOTCA"]
    from_ads = {name: XdsResource(SECRET, name, "v1", resource.message, 0.0) for name, resource in held.items()}
    assert inline_listener(mtls_listener(True), {SECRET: from_ads, AGENT_SECRETS: {}}).missing

    inlined = inline_listener(mtls_listener(True), {AGENT_SECRETS: held})
    assert inlined.missing == []
    socket = inlined.message.filter_chains[0].transport_socket
    assert not awaits_secrets(socket) and awaits_secrets(mtls_listener(True).filter_chains[0].transport_socket)
    assert {(o.type_url, o.name, o.inner) for o in inlined.origins} == {
        (AGENT_SECRETS, "default", "tls_certificate"), (AGENT_SECRETS, "ROOTCA", "validation_context")}
    tls = build_tls(socket, "filter_chains[0].transport_socket", server=True)  # key loaded from memory
    assert tls.alpn == ("h2", "http/1.1")


def test_the_agent_publishes_the_secrets_of_each_certificate_it_gets_by_csr(ca_server: Any) -> None:
    ca, tokens, server = ca_server
    token = tokens.issue("shop", "web")
    settings = IdentitySettings("spiffe://cluster.local/ns/shop/sa/web", "shop", "web", "cluster.local",
                                server.address, ca.trust_bundle_pem().encode(), "istiod.istio-system.svc",
                                lambda: token, dt.timedelta(minutes=10))
    published: list[tuple[str, dict[str, XdsResource]]] = []

    async def scenario() -> None:
        identity = SidecarIdentity(settings, lambda table, found: published.append((table, found)))
        identity.start()
        try:
            for _ in range(200):
                if len(published) > 1:
                    break
                await asyncio.sleep(0.05)
            await identity.agent.renew_now()
        finally:
            await identity.stop()

    asyncio.run(scenario())
    assert published[0] == (AGENT_SECRETS, {})  # listeners warm until the first certificate
    first, second = published[1][1], published[2][1]
    assert set(first) == {"default", "ROOTCA"} and all(r.type_url == AGENT_SECRETS for r in first.values())
    assert first["default"].version != second["default"].version
    keys = []
    for found in (first, second):
        material = found["default"].message.tls_certificate
        key = serialization.load_pem_private_key(material.private_key.inline_bytes, None)
        leaf = x509.load_pem_x509_certificates(material.certificate_chain.inline_bytes)[0]
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        keys.append(key.public_key().public_numbers())  # type: ignore[union-attr]
    assert keys[0] != keys[1]  # a new key for every certificate
    assert server.service.issued == 2



def distributed(bundle: bytes) -> dict[str, dict[str, XdsResource]]:
    """What the control plane's ADS holds for an agent proxy: ROOTCA only."""
    message = secret_pb2.Secret(name="ROOTCA", validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=bundle)))
    return {SECRET: {"ROOTCA": XdsResource(SECRET, "ROOTCA", "1", message, 0.0)}}


def test_distributed_roots_are_trusted_at_once_and_a_change_brings_a_new_certificate(ca_server: Any,
                                                                                      tmp_path: Path) -> None:
    ca, tokens, server = ca_server
    token = tokens.issue("shop", "web")
    staged = make_ca(tmp_path / "other").root
    ca_pem = ca.trust_bundle_pem().encode()
    staged_pem = staged.public_bytes(serialization.Encoding.PEM)
    settings = IdentitySettings("spiffe://cluster.local/ns/shop/sa/web", "shop", "web", "cluster.local",
                                server.address, ca_pem, "istiod.istio-system.svc", lambda: token, dt.timedelta(0))
    bundles: list[list[x509.Certificate]] = []

    def publish(_table: str, found: dict[str, XdsResource]) -> None:
        if "ROOTCA" in found:
            trusted = found["ROOTCA"].message.validation_context.trusted_ca.inline_bytes
            bundles.append(x509.load_pem_x509_certificates(trusted))

    async def settle(count: int) -> None:
        for _ in range(200):
            if server.service.issued >= count and len(bundles) >= count:
                return
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        identity = SidecarIdentity(settings, publish)
        identity.start()
        try:
            await settle(1)
            identity.on_xds(distributed(ca_pem))  # the first ROOTCA: what the CA answered already
            identity.on_xds(distributed(ca_pem))
            assert server.service.issued == 1 and len(bundles) == 1
            identity.on_xds(distributed(ca_pem + staged_pem))  # a root staged
            assert staged in bundles[-1] and ca.root in bundles[-1]  # trusted before any new request
            await settle(2)
        finally:
            await identity.stop()

    asyncio.run(scenario())
    assert server.service.issued == 2  # the change asked for a new certificate too
    assert staged in bundles[-1]


def test_sidecar_validate_checks_the_agent_settings_too(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    config = tmp_path / "sidecar.yaml"
    config.write_text(json.dumps(bootstrap(BootstrapOptions(
        name="web", namespace="shop", token="v1.token.mac", xds_ca=ca.trust_bundle_pem(), identity_agent=True))))
    launch = [sys.executable, "-c", "import sys; from controlplane.cli import main; sys.exit(main())",
              "sidecar", "-c", str(config), "--validate"]
    root = Path(__file__).resolve().parents[3]
    good = subprocess.run(launch, capture_output=True, text=True, timeout=60, cwd=root)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([*launch, "--identity-token-file", str(tmp_path / "none")], capture_output=True, text=True,
                         timeout=60, cwd=root)
    assert bad.returncode == 1 and "--identity-token-file: cannot read" in bad.stderr
