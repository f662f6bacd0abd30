"""Filter chain selection: the ClientHello the TLS inspector reads, Envoy's match precedence, the
configurations refused, and a running sidecar serving Istio's STRICT and PERMISSIVE inbound shapes."""

from __future__ import annotations

import copy
import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._certs import Pki, downstream_tls, make_pki
from tests.wasmhost.sidecar._core import get_request, make_runtime, new_stream
from tests.wasmhost.sidecar._process import SidecarProcess
from wasmhost.sidecar import ConfigError, load_plan
from wasmhost.sidecar._filter_chains import ChainMatch, FilterChain, Hello, client_hello, select_chain

MESH_ALPN = ["istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
TLS_INSPECTOR = {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
CLIENT_ID = "spiffe://test/ns/default/sa/client"


def hello_bytes(server_name: str | None, alpn: list[str] | None) -> bytes:
    """The first flight of a real TLS client (the ssl module through a memory BIO)."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_client_hello_yields_sni_and_alpn() -> None:
    data = hello_bytes("outbound_.8080_._.server.shop.svc.cluster.local", ["istio-peer-exchange", "istio"])
    assert client_hello(data) == Hello(True, "outbound_.8080_._.server.shop.svc.cluster.local",
                                       ("istio-peer-exchange", "istio"))
    assert client_hello(data[:3]) is None  # the record header is incomplete
    assert client_hello(data[:40]) is None  # the ClientHello is incomplete
    assert client_hello(b"GET / HTTP/1.1\r\n") == Hello(False)
    assert client_hello(b"PRI * HTTP/2.0\r\n") == Hello(False)


def chain(name: str, **match: Any) -> FilterChain:
    return FilterChain(name, ChainMatch(**match), None)  # type: ignore[arg-type]


PERMISSIVE = [chain("mtls", transport_protocol="tls", application_protocols=tuple(MESH_ALPN)), chain("plaintext")]
STRICT = [chain("mtls", transport_protocol="tls")]


@pytest.mark.parametrize(("chains", "hello", "expected"), [
    (PERMISSIVE, Hello(True, "", ("istio-peer-exchange", "istio")), "mtls"),
    (PERMISSIVE, Hello(False), "plaintext"),
    # Envoy's match is a tree: once `tls` is chosen there is no way back to the chain that leaves it empty
    (PERMISSIVE, Hello(True, "", ("h2",)), None),
    (STRICT, Hello(True, "", ()), "mtls"),
    (STRICT, Hello(False), None),  # plaintext matches no chain
    ([chain("any-port"), chain("port", destination_port=8080)], Hello(False), "port"),
    ([chain("other-port", destination_port=9090)], Hello(False), None),
    ([chain("wild", server_names=("*.test",)), chain("exact", server_names=("a.test",)), chain("none")],
     Hello(True, "a.test"), "exact"),
    ([chain("wild", server_names=("*.test",)), chain("none")], Hello(True, "b.test"), "wild"),
    ([chain("wild", server_names=("*.test",)), chain("none")], Hello(True, "b.example"), "none"),
])
def test_selection_follows_envoys_precedence(chains: list[FilterChain], hello: Hello, expected: str | None) -> None:
    picked = select_chain(chains, 8080, hello)
    assert (picked.name if picked else None) == expected


def listener_with(chains: list[dict[str, Any]], listener_filters: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    config = bootstrap()
    listener = config["static_resources"]["listeners"][0]
    template = listener["filter_chains"][0]
    listener["filter_chains"] = [{**copy.deepcopy(template), **c} for c in chains]
    if listener_filters is not None:
        listener["listener_filters"] = listener_filters
    return config


@pytest.mark.parametrize(("config", "field"), [
    (listener_with([{"filter_chain_match": {"source_prefix_ranges": [{"address_prefix": "10.0.0.0",
                                                                      "prefix_len": 8}]}}]),
     "filter_chain_match.source_prefix_ranges"),
    (listener_with([{}, {}]), "filter_chains[1].filter_chain_match"),  # same matching rules twice
    (listener_with([{}], [{"name": "envoy.filters.listener.http_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}]),
     "listener_filters[0]"),
])
def test_unsupported_chain_configs_are_refused_by_path(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plan(yaml.safe_dump(config), "test", 1)
    assert field in str(caught.value)


@pytest.mark.parametrize(("mode", "mtls", "incoming", "expected"), [
    ("APPEND_FORWARD", True, b"Hash=aa", b"Hash=aa,Hash=ff;URI=spiffe://test/ns/default/sa/client"),
    ("SANITIZE_SET", True, b"Hash=aa", b"Hash=ff;URI=spiffe://test/ns/default/sa/client"),
    ("FORWARD_ONLY", True, b"Hash=aa", b"Hash=aa"),
    ("SANITIZE", True, b"Hash=aa", None),
    ("APPEND_FORWARD", False, b"Hash=aa", None),  # no client certificate: removed
    ("ALWAYS_FORWARD_ONLY", False, b"Hash=aa", b"Hash=aa"),
])
def test_forwarded_client_cert(mode: str, mtls: bool, incoming: bytes, expected: bytes | None) -> None:
    config = bootstrap(hcm_extra={"forward_client_cert_details": mode, "set_current_client_cert_details": {"uri": True}})
    _, ctx, _ = make_runtime(config)
    stream = new_stream(ctx)
    if mtls:
        stream.info.downstream_tls = {"peer_certificate_presented": True, "sha256_peer_certificate_digest": "ff",
                                      "uri_san_peer_certificate": [CLIENT_ID]}
    request = get_request(extra=[(b"x-forwarded-client-cert", incoming)])
    stream.on_request_headers(request, True)
    assert request.get(b"x-forwarded-client-cert") == expected


# ---- a running sidecar ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(200, (), "from upstream").start()
    try:
        yield server
    finally:
        server.stop()


def inbound(pki: Pki, upstream: ScriptedUpstream, mode: str) -> dict[str, Any]:
    """Istio's inbound listener shape: a mesh mTLS chain whose RBAC admits only the client identity."""
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC, "rules": {"policies": {"client": {
        "permissions": [{"any": True}],
        "principals": [{"authenticated": {"principal_name": {"exact": CLIENT_ID}}}]}}}}}
    config = bootstrap(clusters=[cluster("backend", upstream.port)], http_filters=[rbac, ROUTER_FILTER])
    listener = config["static_resources"]["listeners"][0]
    plaintext = listener["filter_chains"][0]
    mtls = {**copy.deepcopy(plaintext), "name": "mtls", "filter_chain_match": {"transport_protocol": "tls"},
            "transport_socket": downstream_tls(pki, require_client=True, alpn=["h2", "http/1.1"])}
    plaintext["filters"][0]["typed_config"]["http_filters"] = [ROUTER_FILTER]
    if mode == "PERMISSIVE":
        mtls["filter_chain_match"]["application_protocols"] = MESH_ALPN
        listener["filter_chains"] = [mtls, plaintext]
    else:
        listener["filter_chains"] = [mtls]
    listener["listener_filters"] = [TLS_INSPECTOR]
    return config


def get(port: int, pki: Pki | None = None, cert: Any = None) -> Any:
    """(status, body) of a GET, plaintext or mesh mTLS; the exception's name when refused."""
    if pki is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.check_hostname = False
        context.set_alpn_protocols(["istio-peer-exchange", "istio", "http/1.1"])
        if cert is not None:
            context.load_cert_chain(cert.cert, cert.key)
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": "server"})
        reply = connection.getresponse()
        return reply.status, reply.read()
    except (OSError, http.client.HTTPException) as err:
        return type(err).__name__
    finally:
        connection.close()


def test_strict_refuses_plaintext_and_serves_mesh_mtls(tmp_path: Path, pki: Pki, upstream: ScriptedUpstream) -> None:
    with SidecarProcess(inbound(pki, upstream, "STRICT"), workdir=tmp_path / "sidecar") as sidecar:
        port = sidecar.listener_ports()["listener_0"]
        assert get(port, pki, pki.client) == (200, b"from upstream")
        assert isinstance(get(port), str)  # plaintext: no chain, the connection is closed
        assert isinstance(get(port, pki), str)  # no client certificate: the handshake fails
        assert get(port, pki, pki.server) == (403, b"RBAC: access denied")  # another identity


def test_permissive_serves_both(tmp_path: Path, pki: Pki, upstream: ScriptedUpstream) -> None:
    with SidecarProcess(inbound(pki, upstream, "PERMISSIVE"), workdir=tmp_path / "sidecar") as sidecar:
        port = sidecar.listener_ports()["listener_0"]
        assert get(port, pki, pki.client) == (200, b"from upstream")
        assert get(port) == (200, b"from upstream")  # the plaintext chain (no RBAC there)
        assert get(port, pki, pki.server) == (403, b"RBAC: access denied")


def test_peer_identity_reaches_plugin_properties_and_attributes() -> None:
    from wasmhost._properties import _connection
    from wasmhost.sidecar._attributes import StreamAttributes
    from wasmhost.sidecar._wasm_info import plugin_stream_info

    _, ctx, _ = make_runtime()
    stream = new_stream(ctx)
    stream.info.downstream_tls = {"peer_certificate_presented": True, "uri_san_peer_certificate": [CLIENT_ID],
                                  "sni": "outbound_.8080_._.server", "version": "TLSv1.3"}

    info = plugin_stream_info(stream.info)
    assert _connection(info, "uri_san_peer_certificate") == CLIENT_ID
    assert _connection(info, "mtls") is True
    assert _connection(info, "requested_server_name") == "outbound_.8080_._.server"
    assert info.extra["source.principal"] == CLIENT_ID
    attributes = StreamAttributes(stream.info, None, None, None, None)
    assert attributes.lookup(("source", "principal")) == CLIENT_ID
    assert attributes.lookup(("connection", "uri_san_peer_certificate")) == CLIENT_ID
    stream.info.downstream_tls = None
    assert StreamAttributes(stream.info, None, None, None, None).lookup(("source", "principal")) is None


def test_transport_socket_matches_pick_tls_per_endpoint(pki: Pki) -> None:
    from tests.wasmhost.sidecar._certs import upstream_tls
    from wasmhost.sidecar._tls import tls_for_host

    backend = cluster("backend", 9, 10)
    endpoints = backend["load_assignment"]["endpoints"][0]["lb_endpoints"]
    endpoints[0]["metadata"] = {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}
    backend["transport_socket_matches"] = [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": upstream_tls(pki, sni="s")},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
            "name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}]
    plan = load_plan(yaml.safe_dump(bootstrap(clusters=[backend])), "test", 1).clusters["backend"]
    meshed, plain = plan.endpoints
    chosen = tls_for_host(plan, meshed.metadata)
    assert chosen is not None and chosen.sni == "s"
    assert tls_for_host(plan, plain.metadata) is None  # raw_buffer
