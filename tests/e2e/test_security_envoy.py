"""A mixed mesh: real Envoy with our SDS secrets (``default``/``ROOTCA`` as static secrets)
speaks mTLS with our TLS contexts, in both directions, with SPIFFE SAN checks on both sides."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import threading
import time
import urllib.request

import pytest

from controlplane.ca import BootstrapTokens, CsrServer
from tests.e2e._envoy import ROUTER_FILTER, EnvoyProcess
from tests.wasmhost.security._pki import issue, make_ca, spiffe
from wasmhost.security import (
    GrpcCertificateClient,
    IdentityAgent,
    PeerAuthenticationMode,
    PeerVerificationError,
    SdsServer,
    SecureListener,
    TlsContexts,
    client_context_for,
    peer_certificate,
    peer_identity,
    sds_secrets,
    secret_as_dict,
)

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
ENVOY_ID = spiffe("shop", "envoy")
PY_SERVER = spiffe("shop", "py-server")
PY_CLIENT = spiffe("shop", "py-client")
TLS_SOCKET = "envoy.transport_sockets.tls"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


class HttpIdentity(asyncio.Protocol):
    """A minimal HTTP/1.1 server answering every GET with the mTLS peer's SPIFFE ID."""

    def __init__(self, peer):
        self.peer, self.buffer = peer, b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            body = (self.peer.identity.uri if self.peer.identity else "none").encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


class LoopThread:
    """An asyncio loop in a thread, so Envoy can call our server while the test blocks."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def run(self, coroutine, timeout=15):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _hcm(name, route, response_headers=()):
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {"virtual_hosts": [{
            "name": "all", "domains": ["*"], "routes": [route],
            "response_headers_to_add": [{"header": {"key": k, "value": v}} for k, v in response_headers],
        }]},
        "http_filters": [ROUTER_FILTER],
    }}


def bootstrap(svid, upstream_port, expected_upstream):
    """Listener ``to_python`` (plaintext in) → cluster with Istio-style mTLS to our server;
    listener ``mtls_in`` terminates mTLS and reports the client's URI SAN in ``x-peer``."""
    validation = {"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": expected_upstream.uri}}]}
    upstream_tls = {"name": TLS_SOCKET, "typed_config": {
        "@type": TLS_TYPE + "UpstreamTlsContext",
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default"}],
            "combined_validation_context": {
                "default_validation_context": validation,
                "validation_context_sds_secret_config": {"name": "ROOTCA"},
            },
        },
    }}
    downstream_tls = {"name": TLS_SOCKET, "typed_config": {
        "@type": TLS_TYPE + "DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default"}],
            "validation_context_sds_secret_config": {"name": "ROOTCA"},
        },
    }}
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "admin": {"address": address},
        "static_resources": {
            "secrets": [secret_as_dict(s) for s in sds_secrets(svid).values()],
            "listeners": [
                {"name": "to_python", "address": address, "filter_chains": [{"filters": [
                    _hcm("to_python", {"match": {"prefix": "/"}, "route": {"cluster": "python_mtls", "timeout": "5s"}})]}]},
                {"name": "mtls_in", "address": address, "filter_chains": [{
                    "filters": [_hcm("mtls_in", {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "hello"}}},
                                     [("x-peer", "%DOWNSTREAM_PEER_URI_SAN%")])],
                    "transport_socket": downstream_tls}]},
            ],
            "clusters": [{
                "name": "python_mtls", "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "python_mtls", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
                "transport_socket": upstream_tls,
            }],
        },
    }


@contextlib.contextmanager
def mixed_mesh(tmp_path, envoy_binary, expected_upstream=PY_SERVER):
    ca = make_ca(tmp_path / "ca")
    with LoopThread() as loop:
        listener = loop.run(SecureListener(TlsContexts(issue(ca, PY_SERVER)), HttpIdentity,
                                           mode=PeerAuthenticationMode.STRICT).start())
        try:
            envoy = EnvoyProcess(bootstrap(issue(ca, ENVOY_ID), listener.port, expected_upstream),
                                 workdir=tmp_path / "envoy", binary=envoy_binary, component_log_level="connection:info")
            with envoy:
                yield ca, envoy, listener
        finally:
            loop.run(listener.close())


def _get(port, timeout=10):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_envoy_client_reaches_our_mtls_server_with_its_spiffe_identity(tmp_path, envoy_binary):
    with mixed_mesh(tmp_path, envoy_binary) as (_, envoy, listener):
        status, body = _get(envoy.listener_ports()["to_python"])
    assert (status, body) == (200, ENVOY_ID.uri)


def test_envoy_client_refuses_our_server_when_the_san_is_not_the_expected_one(tmp_path, envoy_binary):
    with mixed_mesh(tmp_path, envoy_binary, expected_upstream=spiffe("shop", "someone-else")) as (_, envoy, _l):
        status, _ = _get(envoy.listener_ports()["to_python"])
    assert status == 503


def _https_get(port, context, expected):
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        identity = peer_identity(tls, expected)
        tls.sendall(b"GET / HTTP/1.1\r\nhost: envoy\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return identity, data.decode()


def test_our_client_reaches_envoy_with_mtls_both_sides_verified(tmp_path, envoy_binary):
    with mixed_mesh(tmp_path, envoy_binary) as (ca, envoy, _):
        port = envoy.listener_ports()["mtls_in"]
        identity, reply = _https_get(port, client_context_for(issue(ca, PY_CLIENT)), {ENVOY_ID})
        with pytest.raises(PeerVerificationError, match="not the expected"):
            _https_get(port, client_context_for(issue(ca, PY_CLIENT)), {spiffe("shop", "not-envoy")})
    assert identity == ENVOY_ID
    assert reply.startswith("HTTP/1.1 200") and f"x-peer: {PY_CLIENT.uri}" in reply and reply.endswith("hello")


def test_envoy_refuses_a_client_certificate_from_another_ca(tmp_path, envoy_binary):
    with mixed_mesh(tmp_path, envoy_binary) as (ca, envoy, _):
        stranger = issue(make_ca(tmp_path / "stranger"), PY_CLIENT)
        context = client_context_for(stranger.with_trust_bundle([*stranger.trust_bundle, ca.root]))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https_get(envoy.listener_ports()["mtls_in"], context, {ENVOY_ID})


def sds_bootstrap(sds_port):
    """Envoy takes ``default``/``ROOTCA`` from our SDS server, as an Istio sidecar does from its agent."""
    sds_config = {"resource_api_version": "V3", "api_config_source": {
        "api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "sds"}}]}}
    downstream_tls = {"name": TLS_SOCKET, "typed_config": {
        "@type": TLS_TYPE + "DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds_config}],
            "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": sds_config},
        },
    }}
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "node": {"id": "sidecar~127.0.0.1~envoy.shop~shop.svc.cluster.local", "cluster": "envoy.shop"},
        "admin": {"address": address},
        "static_resources": {
            "listeners": [{"name": "mtls_in", "address": address, "filter_chains": [{
                "filters": [_hcm("mtls_in", {"match": {"prefix": "/"}, "direct_response": {"status": 200}},
                                 [("x-peer", "%DOWNSTREAM_PEER_URI_SAN%")])],
                "transport_socket": downstream_tls}]}],
            "clusters": [{
                "name": "sds", "type": "STATIC", "connect_timeout": "2s",
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "sds", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": sds_port}}}}]}]},
            }],
        },
    }


def _server_serial(port, context):
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        peer_identity(tls, {ENVOY_ID})
        return peer_certificate(tls).serial_number


def _serial_when_ready(envoy, context, accept, timeout=15.0):
    """The serial of Envoy's serving certificate on a new connection, once ``accept(serial)``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = _server_serial(envoy.listener_ports()["mtls_in"], context)
            if accept(last):
                return last
        except (OSError, ssl.SSLError, KeyError, PeerVerificationError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"Envoy did not serve the expected certificate within {timeout} s (last serial {last})")


def test_envoy_fetches_our_sds_secrets_and_rotates_with_the_agent(tmp_path, envoy_binary):
    ca = make_ca(tmp_path / "ca")
    tokens = BootstrapTokens()
    csr = CsrServer(ca, tokens, port=0).start()
    client_context = client_context_for(issue(ca, PY_CLIENT))
    try:
        with LoopThread() as loop:
            async def start():
                client = GrpcCertificateClient(csr.address, ca_roots_pem=ca.trust_bundle_pem().encode(),
                                               token=lambda: tokens.issue("shop", "envoy"))
                agent = IdentityAgent(ENVOY_ID, client, validity=dt.timedelta(hours=1))
                await agent.start(timeout=10)
                return client, agent, await SdsServer.for_agent(agent).start("127.0.0.1:0")

            client, agent, sds = loop.run(start())
            try:
                with EnvoyProcess(sds_bootstrap(sds.port), workdir=tmp_path / "envoy", binary=envoy_binary) as envoy:
                    first = agent.svid.leaf.serial_number
                    assert _serial_when_ready(envoy, client_context, lambda s: s == first) == first
                    renewed = loop.run(agent.renew_now()).leaf.serial_number
                    assert renewed != first
                    assert _serial_when_ready(envoy, client_context, lambda s: s == renewed) == renewed
                    assert not any(stream.nacks for stream in sds.streams)
            finally:
                loop.run(sds.stop())
                loop.run(agent.stop())
                loop.run(client.close())
    finally:
        csr.stop()
