"""mTLS on real sockets (127.0.0.1): PeerAuthentication modes, refused peers, rotation under load.

The server is ``SecureListener``; clients use ``TlsContexts``/``client_context_for`` as the
sidecar's clusters will. Certificates come from the real CA, through the real gRPC CSR
service where the test is about renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import time

import pytest

from controlplane.ca import BootstrapTokens, CsrServer
from tests.wasmhost.security._pki import issue, issue_at, make_ca, spiffe
from wasmhost.security import (
    GrpcCertificateClient,
    IdentityAgent,
    PeerAuthenticationMode,
    PeerVerificationError,
    RenewalPolicy,
    SecureListener,
    TlsContexts,
    client_context_for,
    open_mtls_connection,
    peer_certificate,
    peer_identity,
)

pytestmark = pytest.mark.e2e
SERVER = spiffe("shop", "server")
CLIENT = spiffe("shop", "client")


class LineEcho(asyncio.Protocol):
    """Answers each line with ``ok <peer principal or plaintext>``."""

    def __init__(self, peer):
        self.peer = peer
        self.buffer = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\n", 1)
            who = self.peer.identity.principal if self.peer.identity else ("tls" if self.peer.tls else "plaintext")
            self.transport.write(b"ok " + who.encode() + b"\n")


@contextlib.asynccontextmanager
async def listening(contexts, mode, **kwargs):
    listener = await SecureListener(contexts, LineEcho, mode=mode, **kwargs).start()
    try:
        yield listener
    finally:
        await listener.close()


async def ask(port, context=None, expected=None, timeout=5.0):
    """One request on a new connection: the answer line, or None if the server refused us."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="" if context else None), timeout
        )
    except (ssl.SSLError, ConnectionError):
        return None
    try:
        if context is not None:
            peer_identity(writer.get_extra_info("ssl_object"), expected)
        writer.write(b"ping\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.decode().strip() or None
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def no_cert_context(bundle_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=bundle_pem.decode())
    return context


@pytest.fixture
def pki(tmp_path):
    ca = make_ca(tmp_path / "ca")
    return ca, issue(ca, SERVER), issue(ca, CLIENT)


def test_strict_accepts_mesh_clients_and_refuses_plaintext_and_certless_tls(pki):
    ca, server, client = pki

    async def run():
        async with listening(TlsContexts(server), PeerAuthenticationMode.STRICT) as listener:
            mesh = await ask(listener.port, client_context_for(client), expected={SERVER})
            plain = await ask(listener.port)
            certless = await ask(listener.port, no_cert_context(server.bundle_pem()))
            return mesh, plain, certless, listener.refused

    mesh, plain, certless, refused = asyncio.run(run())
    assert mesh == f"ok {CLIENT.principal}"
    assert plain is None and certless is None
    assert len(refused) == 2


def test_permissive_accepts_plaintext_and_mtls_and_tells_them_apart(pki):
    ca, server, client = pki

    async def run():
        async with listening(TlsContexts(server), PeerAuthenticationMode.PERMISSIVE, sniff_timeout=0.5) as listener:
            return (
                await ask(listener.port),
                await ask(listener.port, client_context_for(client), expected={SERVER}),
            )

    plain, mesh = asyncio.run(run())
    assert plain == "ok plaintext"
    assert mesh == f"ok {CLIENT.principal}"


def test_disable_serves_plaintext(pki):
    ca, server, _ = pki

    async def run():
        async with listening(TlsContexts(server), PeerAuthenticationMode.DISABLE) as listener:
            return await ask(listener.port)

    assert asyncio.run(run()) == "ok plaintext"


def test_client_certificates_from_another_ca_or_expired_or_unexpected_are_refused(pki, tmp_path):
    ca, server, client = pki
    foreign = issue(make_ca(tmp_path / "other"), CLIENT)
    expired = issue_at(tmp_path, CLIENT, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), 60, ca)
    intruder = issue(ca, spiffe("shop", "intruder"))

    async def run():
        async with listening(TlsContexts(server), PeerAuthenticationMode.STRICT, allowed_peers={CLIENT}) as listener:
            return (
                await ask(listener.port, client_context_for(foreign.with_trust_bundle(server.trust_bundle))),
                await ask(listener.port, client_context_for(expired)),
                await ask(listener.port, client_context_for(intruder)),
                await ask(listener.port, client_context_for(client)),
                list(listener.refused),
            )

    foreign_answer, expired_answer, intruder_answer, good, refused = asyncio.run(run())
    assert (foreign_answer, expired_answer, intruder_answer) == (None, None, None)
    assert good == f"ok {CLIENT.principal}"
    assert any("expired" in r for r in refused)
    assert any("intruder" in r for r in refused)


def test_client_refuses_a_server_with_the_wrong_identity_or_another_ca(pki, tmp_path):
    ca, server, client = pki
    foreign_server = issue(make_ca(tmp_path / "other"), SERVER)

    async def run():
        async with listening(TlsContexts(server), PeerAuthenticationMode.STRICT) as listener:
            with pytest.raises(PeerVerificationError, match="not the expected"):
                await open_mtls_connection(LineEcho, "127.0.0.1", listener.port, TlsContexts(client),
                                           expected={spiffe("shop", "payments")})
        async with listening(TlsContexts(foreign_server), PeerAuthenticationMode.PERMISSIVE) as listener:
            return await ask(listener.port, client_context_for(client), expected={SERVER})

    assert asyncio.run(run()) is None


def test_rotated_certificate_is_used_by_new_connections_while_old_ones_continue(pki):
    ca, server, client = pki
    contexts = TlsContexts(server)

    async def run():
        async with listening(contexts, PeerAuthenticationMode.STRICT) as listener:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", listener.port, ssl=client_context_for(client), server_hostname=""
            )
            first_serial = peer_certificate(writer.get_extra_info("ssl_object")).serial_number
            contexts.update(issue(ca, SERVER))
            _, writer2 = await asyncio.open_connection(
                "127.0.0.1", listener.port, ssl=client_context_for(client), server_hostname=""
            )
            second_serial = peer_certificate(writer2.get_extra_info("ssl_object")).serial_number
            writer2.close()
            writer.write(b"still there?\n")
            answer = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            return first_serial, second_serial, answer

    first, second, answer = asyncio.run(run())
    assert first == server.leaf.serial_number
    assert second == contexts.svid.leaf.serial_number != first
    assert answer.startswith(b"ok ")


@pytest.mark.timeout(120)
def test_rotation_under_load_with_short_lifetimes_fails_no_request(tmp_path):
    """Both sides renew 12 s certificates through the real CSR service while requests flow;
    a keep-alive connection opened first outlives its certificates; a root rotation is
    staged and activated midway. Bounded: 26 s of load."""
    ca = make_ca(tmp_path / "ca", default_ttl=dt.timedelta(seconds=12), max_ttl=dt.timedelta(seconds=12),
                 clock_skew=dt.timedelta(seconds=1))
    tokens = BootstrapTokens()
    csr = CsrServer(ca, tokens, port=0).start()
    policy = RenewalPolicy(fraction=0.5, jitter=0.1, initial_backoff=0.2, max_backoff=2.0)

    def agent_for(identity):
        client = GrpcCertificateClient(csr.address, ca_roots_pem=ca.trust_bundle_pem().encode(),
                                       token=lambda: tokens.issue(identity.namespace, identity.service_account))
        return IdentityAgent(identity, client, validity=dt.timedelta(seconds=12), policy=policy,
                             on_roots_changed=client.update_roots), client

    async def run():
        server_agent, server_client = agent_for(SERVER)
        client_agent, client_client = agent_for(CLIENT)
        await server_agent.start(timeout=10)
        await client_agent.start(timeout=10)
        counts = {"ok": 0, "failed": 0, "keepalive": 0}
        serials = set()
        async with listening(server_agent.tls, PeerAuthenticationMode.STRICT, allowed_peers={CLIENT}) as listener:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", listener.port, ssl=client_agent.tls.client_context(), server_hostname="")
            deadline = time.monotonic() + 26
            staged = activated = False
            while time.monotonic() < deadline:
                elapsed = 26 - (deadline - time.monotonic())
                if elapsed > 6 and not staged:
                    ca.stage_root()
                    staged = True
                if elapsed > 14 and not activated:
                    ca.activate_next_root()
                    activated = True
                answers = await asyncio.gather(*[
                    ask(listener.port, client_agent.tls.client_context(), expected={SERVER}) for _ in range(4)
                ])
                for answer in answers:
                    counts["ok" if answer == f"ok {CLIENT.principal}" else "failed"] += 1
                writer.write(b"ping\n")
                if (await asyncio.wait_for(reader.readline(), 5)).startswith(b"ok "):
                    counts["keepalive"] += 1
                serials.add(server_agent.svid.leaf.serial_number)
                await asyncio.sleep(0.05)
            writer.close()
        renewals = (server_agent.renewals, client_agent.renewals)
        for agent, client in ((server_agent, server_client), (client_agent, client_client)):
            await agent.stop()
            await client.close()
        return counts, renewals, len(serials), listener.refused

    try:
        counts, renewals, distinct_serials, refused = asyncio.run(run())
    finally:
        csr.stop()
    assert counts["failed"] == 0, refused
    assert counts["ok"] > 100
    assert counts["keepalive"] > 25
    # 26 s of 12 s certificates renewed at 4.8-7.2 s (half the lifetime, +-10 % jitter): at least 3
    # renewals whatever the jitter draws, more when the root change prompts one
    assert min(renewals) >= 3
    assert distinct_serials >= 3
