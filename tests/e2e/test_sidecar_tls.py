"""TLS transport sockets: TLS and mTLS listeners, TLS upstreams with CA and SAN checks, ALPN h2 — vs Envoy.

Certificates come from a throw-away PKI built per test module. Each case runs the same
bootstrap in real Envoy and in the sidecar and compares what a client observes.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from tests.wasmhost.sidecar._certs import Pki, downstream_tls, make_pki, upstream_tls
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(200, [("x-upstream", "plain")], "plain-upstream").start()
    try:
        yield server
    finally:
        server.stop()


class TlsUpstream:
    """An HTTPS upstream answering every request with a fixed body (optionally requiring a client cert)."""

    def __init__(self, pki: Pki, require_client: bool = False) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server.cert, pki.server.key)
        if require_client:
            self.context.load_verify_locations(pki.ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context), self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-upstream: tls\r\n\r\ntls-upstrm")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    def stop(self) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def with_listener_tls(config: dict[str, Any], transport_socket: dict[str, Any]) -> dict[str, Any]:
    config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = transport_socket
    return config


def https_get(port: int, ca: Path | None, cert: Any = None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/", headers={"Host": "example.com"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def outcome(port: int, ca: Path | None, cert: Any = None) -> Any:
    try:
        return https_get(port, ca, cert)
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError) as err:
        return type(err).__name__.replace("SSLEOFError", "SSLError").replace("ConnectionResetError", "SSLError")


def both(tmp_path: Path, envoy_binary: str, config: dict[str, Any], probe: Any) -> tuple[Any, Any]:
    with EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary,
                      component_log_level="misc:info") as envoy:
        envoy_result = probe(next(iter(envoy.listener_ports().values())))
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        ours = probe(sidecar.listener_ports()["listener_0"])
    return envoy_result, ours


def test_tls_listener(tmp_path: Path, envoy_binary: str, pki: Pki, upstream: ScriptedUpstream) -> None:
    config = with_listener_tls(bootstrap(clusters=[cluster("backend", upstream.port)]), downstream_tls(pki))
    envoy, ours = both(tmp_path, envoy_binary, config, lambda port: (
        outcome(port, pki.ca), outcome(port, pki.other_ca)))
    assert ours == envoy
    assert ours[0] == (200, b"plain-upstream")
    assert ours[1] == "SSLCertVerificationError"


def test_mutual_tls_listener(tmp_path: Path, envoy_binary: str, pki: Pki, upstream: ScriptedUpstream) -> None:
    config = with_listener_tls(bootstrap(clusters=[cluster("backend", upstream.port)]),
                               downstream_tls(pki, require_client=True))
    envoy, ours = both(tmp_path, envoy_binary, config, lambda port: (
        outcome(port, pki.ca, pki.client), outcome(port, pki.ca)))
    assert ours[0] == envoy[0] == (200, b"plain-upstream")
    assert isinstance(ours[1], str) and isinstance(envoy[1], str)  # no client certificate: no exchange


def test_client_san_matching(tmp_path: Path, envoy_binary: str, pki: Pki, upstream: ScriptedUpstream) -> None:
    allowed = with_listener_tls(bootstrap(clusters=[cluster("backend", upstream.port)]),
                                downstream_tls(pki, require_client=True,
                                               client_sans=["spiffe://test/ns/default/sa/client"]))
    envoy, ours = both(tmp_path / "allowed", envoy_binary, allowed, lambda port: outcome(port, pki.ca, pki.client))
    assert ours == envoy == (200, b"plain-upstream")
    denied = with_listener_tls(bootstrap(clusters=[cluster("backend", upstream.port)]),
                               downstream_tls(pki, require_client=True, client_sans=["spiffe://test/other"]))
    envoy, ours = both(tmp_path / "denied", envoy_binary, denied, lambda port: outcome(port, pki.ca, pki.client))
    assert isinstance(ours, str) and isinstance(envoy, str)


@pytest.mark.parametrize("case", ["trusted", "wrong-ca", "san-match", "san-mismatch", "mtls"])
def test_tls_upstream(tmp_path: Path, envoy_binary: str, pki: Pki, case: str) -> None:
    server = TlsUpstream(pki, require_client=case == "mtls")
    try:
        settings: dict[str, Any] = {
            "trusted": {"sni": "backend.test"},
            "wrong-ca": {"ca": pki.other_ca},
            "san-match": {"sans": ["spiffe://test/ns/default/sa/server"]},
            "san-mismatch": {"sans": ["spiffe://test/ns/default/sa/someone-else"]},
            "mtls": {"client_cert": True},
        }[case]
        config = bootstrap(clusters=[cluster("backend", server.port,
                                             transport_socket=upstream_tls(pki, **settings))])

        def probe(port: int) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/", headers={"Host": "example.com"})
            response = connection.getresponse()
            return response.status, response.read()[:40]

        envoy, ours = both(tmp_path, envoy_binary, config, probe)
    finally:
        server.stop()
    assert ours[0] == envoy[0]
    if ours[0] == 200:
        assert ours == envoy == (200, b"tls-upstrm")
    else:
        assert ours[0] == 503 and ours[1].startswith(b"upstream connect error")
    assert (ours[0] == 200) == (case in ("trusted", "san-match", "mtls"))


def _identity(data: bytes) -> bytes:
    return data


def test_grpc_over_tls_negotiates_h2(tmp_path: Path, envoy_binary: str, pki: Pki) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(lambda request, context: b"tls:" + request, _identity, _identity)})
    server.add_generic_rpc_handlers((handler,))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
        config = with_listener_tls(
            bootstrap(clusters=[cluster("backend", grpc_port, typed_extension_protocol_options=h2)]),
            downstream_tls(pki, alpn=["h2", "http/1.1"]))

        def probe(port: int) -> bytes:
            credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                                     options=(("grpc.ssl_target_name_override", "localhost"),)) as channel:
                return channel.unary_unary("/test.Echo/Say", _identity, _identity)(b"hi", timeout=10)

        envoy, ours = both(tmp_path, envoy_binary, config, probe)
    finally:
        server.stop(grace=None)
    assert ours == envoy == b"tls:hi"
