"""PeerAuthentication resolution (Istio docs: most specific scope wins, UNSET inherits,
port-level overrides need a selector, default PERMISSIVE) and DestinationRule TLS/auto-mTLS."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from tests.wasmhost.security._pki import make_ca, spiffe
from wasmhost.security import (
    DestinationTlsError,
    PeerAuthenticationError,
    PeerAuthenticationMode,
    TlsContexts,
    auto_mtls,
    effective_mode,
    parse_peer_authentication,
    parse_upstream_tls,
    upstream_context,
)

STRICT, PERMISSIVE, DISABLE = (PeerAuthenticationMode.STRICT, PeerAuthenticationMode.PERMISSIVE,
                               PeerAuthenticationMode.DISABLE)


def pa(namespace, mode=None, selector=None, ports=None, name="p"):
    spec = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    return parse_peer_authentication({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


APP = {"app": "cart"}
CASES = [
    ("nothing-set-is-permissive", [], 8080, PERMISSIVE),
    ("mesh-wide-strict", [pa("istio-system", "STRICT")], 8080, STRICT),
    ("namespace-overrides-mesh", [pa("istio-system", "STRICT"), pa("shop", "PERMISSIVE")], 8080, PERMISSIVE),
    ("workload-overrides-namespace", [pa("shop", "STRICT"), pa("shop", "DISABLE", APP)], 8080, DISABLE),
    ("unset-workload-inherits-namespace", [pa("shop", "STRICT"), pa("shop", None, APP)], 8080, STRICT),
    ("selector-not-matching-is-ignored", [pa("shop", "STRICT"), pa("shop", "DISABLE", {"app": "web"})], 8080, STRICT),
    ("other-namespace-is-ignored", [pa("web", "STRICT")], 8080, PERMISSIVE),
    ("port-level-overrides", [pa("shop", "STRICT", APP, {8080: "DISABLE"})], 8080, DISABLE),
    ("port-level-other-port", [pa("shop", "STRICT", APP, {9090: "DISABLE"})], 8080, STRICT),
    ("port-level-unset-inherits", [pa("istio-system", "STRICT"), pa("shop", None, APP, {8080: "UNSET"})], 8080, STRICT),
    ("oldest-of-equals-wins", [pa("shop", "STRICT", name="old"), pa("shop", "DISABLE", name="new")], 8080, STRICT),
]


@pytest.mark.parametrize(("policies", "port", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_effective_mode(policies, port, expected):
    assert effective_mode(policies, "shop", APP, port) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mtls": {"mode": "ON"}}, "spec.mtls.mode: 'ON'"),
        ({"portLevelMtls": {"8080": {"mode": "STRICT"}}}, "only allowed with a workload selector"),
        ({"selector": {"matchLabels": APP}, "portLevelMtls": {"http": {"mode": "STRICT"}}}, "not a port number"),
        ({"mtl": {}}, "spec.mtl: unknown field"),
    ],
)
def test_invalid_peer_authentication(spec, message):
    with pytest.raises(PeerAuthenticationError, match=message):
        parse_peer_authentication({"metadata": {"name": "x", "namespace": "shop"}, "spec": spec})


@pytest.mark.parametrize(
    ("tls", "sidecar", "mode", "expected"),
    [
        (None, True, PERMISSIVE, "ISTIO_MUTUAL"),  # auto-mTLS to a sidecar
        (None, True, STRICT, "ISTIO_MUTUAL"),
        (None, True, DISABLE, "DISABLE"),  # the destination refuses mTLS
        (None, False, PERMISSIVE, "DISABLE"),  # no sidecar: plaintext
        ({"mode": "DISABLE"}, True, STRICT, "DISABLE"),  # an explicit rule wins
        ({"mode": "SIMPLE"}, False, PERMISSIVE, "SIMPLE"),
    ],
)
def test_auto_mtls(tls, sidecar, mode, expected):
    assert auto_mtls(parse_upstream_tls(tls), destination_has_sidecar=sidecar, destination_mode=mode) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mode": "TLS"}, "trafficPolicy.tls.mode"),
        ({"mode": "MUTUAL"}, "needs clientCertificate and privateKey"),
        ({"mode": "SIMPLE", "credentialName": "x"}, "credentialName"),
        ({"mode": "SIMPLE", "bogus": 1}, "bogus: unknown field"),
    ],
)
def test_invalid_destination_tls(spec, message):
    with pytest.raises(DestinationTlsError, match=message):
        parse_upstream_tls(spec)


def _tls_server(key_pem, chain_pem, tmp_path, *, connections, client_ca=None):
    (tmp_path / "server.pem").write_bytes(key_pem + chain_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        for _ in range(connections):
            try:
                conn, _ = listener.accept()
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hi")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _connect(port, context, hostname):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=hostname) as tls:
        return tls.recv(2)


def test_simple_and_mutual_tls_origination_check_the_server_name(tmp_path):
    ca = make_ca(tmp_path / "ca")
    key, chain = ca.issue_server_certificate(spiffe("ext", "api"), ["api.example.com"])
    root = tmp_path / "ca" / "root-cert.pem"
    client_key, client_chain = ca.issue_server_certificate(spiffe("shop", "cart"), ["cart"])
    (tmp_path / "client.key").write_bytes(client_key)
    (tmp_path / "client.pem").write_bytes(client_chain)
    contexts = TlsContexts()

    listener, thread = _tls_server(key, chain, tmp_path, connections=2)
    with listener:
        good, name = upstream_context(parse_upstream_tls({"mode": "SIMPLE", "caCertificates": str(root),
                                                          "sni": "api.example.com"}), contexts,
                                      destination_has_sidecar=False)
        assert _connect(listener.getsockname()[1], good, name) == b"hi"
        wrong, name = upstream_context(parse_upstream_tls({"mode": "SIMPLE", "caCertificates": str(root),
                                                           "sni": "other.example.com"}), contexts,
                                       destination_has_sidecar=False)
        with pytest.raises(ssl.SSLCertVerificationError):
            _connect(listener.getsockname()[1], wrong, name)
    thread.join(5)

    listener, thread = _tls_server(key, chain, tmp_path, connections=1, client_ca=root)
    with listener:
        mutual, name = upstream_context(parse_upstream_tls({
            "mode": "MUTUAL", "caCertificates": str(root), "sni": "api.example.com",
            "clientCertificate": str(tmp_path / "client.pem"), "privateKey": str(tmp_path / "client.key")}),
            contexts, destination_has_sidecar=False)
        assert _connect(listener.getsockname()[1], mutual, name) == b"hi"
    thread.join(5)


def test_disable_and_istio_mutual_contexts(tmp_path):
    from tests.wasmhost.security._pki import issue

    contexts = TlsContexts(issue(make_ca(tmp_path), spiffe()))
    assert upstream_context(None, contexts, destination_has_sidecar=False) == (None, "")
    context, _ = upstream_context(None, contexts, destination_has_sidecar=True)
    assert context is contexts.client_context()
