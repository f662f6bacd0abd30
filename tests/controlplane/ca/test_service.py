"""The CSR service over real gRPC+TLS on 127.0.0.1, called by the real agent client."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from cryptography import x509

from controlplane.ca import BootstrapTokens, CsrServer
from tests.wasmhost.security._pki import make_ca, spiffe
from wasmhost.security import (
    GrpcCertificateClient,
    IdentityAgent,
    SigningError,
    WorkloadSvid,
    build_csr,
    generate_key,
    verify_peer_chain,
)


@pytest.fixture
def ca_server(tmp_path):
    ca = make_ca(tmp_path / "ca")
    tokens = BootstrapTokens()
    server = CsrServer(ca, tokens, port=0).start()
    try:
        yield ca, tokens, server
    finally:
        server.stop()


def _client(ca, server, token):
    return GrpcCertificateClient(server.address, ca_roots_pem=ca.trust_bundle_pem().encode(), token=lambda: token)


def test_agent_gets_a_certificate_for_its_token_identity(ca_server):
    ca, tokens, server = ca_server

    async def run():
        client = _client(ca, server, tokens.issue("shop", "cart"))
        agent = IdentityAgent(spiffe("shop", "cart"), client, validity=dt.timedelta(hours=1))
        try:
            svid = await agent.start(timeout=10)
        finally:
            await agent.stop()
            await client.close()
        return svid

    svid = asyncio.run(run())
    assert verify_peer_chain(svid.chain, [ca.root]) == spiffe("shop", "cart")
    assert svid.trust_bundle == (ca.root,)
    assert server.service.issued == 1


def _sign(ca, server, token, identity):
    async def run():
        client = _client(ca, server, token)
        try:
            return await client.sign(build_csr(generate_key(), identity), 3600)
        finally:
            await client.close()

    return asyncio.run(run())


def test_missing_or_bad_token_is_unauthenticated_and_final(ca_server):
    ca, tokens, server = ca_server
    for token in ("", "v1.x.y"):
        with pytest.raises(SigningError, match="UNAUTHENTICATED") as info:
            _sign(ca, server, token, spiffe())
        assert not info.value.retryable


def test_csr_for_another_identity_than_the_token_is_denied(ca_server):
    ca, tokens, server = ca_server
    with pytest.raises(SigningError, match="PERMISSION_DENIED.*authenticated as"):
        _sign(ca, server, tokens.issue("shop", "cart"), spiffe("kube-system", "admin"))
    assert server.service.issued == 0


def test_trust_bundle_travels_in_trailing_metadata_during_rotation(ca_server):
    ca, tokens, server = ca_server
    new_root = ca.stage_root()
    signed = _sign(ca, server, tokens.issue("a", "b"), spiffe("a", "b"))
    assert x509.load_pem_x509_certificates(signed.trust_bundle_pem) == [ca.root, new_root]
    chain = [x509.load_pem_x509_certificate(pem.encode()) for pem in signed.cert_chain]
    assert chain[-1] == ca.root  # Istio's order: leaf first, root last


def test_client_refuses_a_ca_server_it_does_not_trust(ca_server, tmp_path):
    ca, tokens, server = ca_server
    stranger = make_ca(tmp_path / "stranger")
    with pytest.raises(SigningError, match="UNAVAILABLE") as info:
        _sign(stranger, server, tokens.issue("a", "b"), spiffe("a", "b"))
    assert info.value.retryable


def test_chain_from_the_service_builds_a_workload_svid(ca_server):
    ca, tokens, server = ca_server
    key = generate_key()

    async def run():
        client = _client(ca, server, tokens.issue("a", "b"))
        try:
            return await client.sign(build_csr(key, spiffe("a", "b")), 60)
        finally:
            await client.close()

    signed = asyncio.run(run())
    svid = WorkloadSvid.from_response(key, signed.cert_chain)
    assert svid.spiffe_id == spiffe("a", "b")
    with pytest.raises(ValueError, match="does not certify this agent's key"):
        WorkloadSvid.from_response(generate_key(), signed.cert_chain)
