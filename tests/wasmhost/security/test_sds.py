"""SDS: secret protos for an SVID and the state-of-the-world stream logic (sans-io)."""

from __future__ import annotations

from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from tests.wasmhost.security._pki import issue, make_ca, spiffe
from wasmhost.security import SECRET_TYPE_URL, SdsStream, secret_as_dict, snapshot_of


def request(names, nonce="", version="", error=""):
    return discovery_pb2.DiscoveryRequest(
        resource_names=names, type_url=SECRET_TYPE_URL, response_nonce=nonce, version_info=version,
        error_detail=status_pb2.Status(code=3, message=error) if error else None,
    )


def unpack(response):
    out = {}
    for resource in response.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        out[secret.name] = secret
    return out


def test_stream_sends_requested_secrets_waits_on_ack_and_pushes_new_versions(tmp_path):
    ca = make_ca(tmp_path)
    first, second = snapshot_of(issue(ca, spiffe())), snapshot_of(issue(ca, spiffe()))
    assert first.version != second.version
    stream = SdsStream()
    reply = stream.on_request(request(["default"]), first)
    secrets = unpack(reply)
    assert list(secrets) == ["default"] and reply.version_info == first.version
    assert stream.on_request(request(["default"], nonce=reply.nonce, version=reply.version_info), first) is None
    assert stream.on_snapshot(first) is None  # nothing new
    pushed = stream.on_snapshot(second)
    assert pushed.version_info == second.version and pushed.nonce != reply.nonce
    chain = unpack(pushed)["default"].tls_certificate.certificate_chain.inline_bytes
    assert x509.load_pem_x509_certificates(chain)[0] == x509.load_pem_x509_certificates(
        second.secrets["default"].tls_certificate.certificate_chain.inline_bytes)[0]
    more = stream.on_request(request(["ROOTCA", "default"], nonce=pushed.nonce), second)
    assert sorted(unpack(more)) == ["ROOTCA", "default"]


def test_nack_is_recorded_and_not_answered_again(tmp_path):
    snapshot = snapshot_of(issue(make_ca(tmp_path), spiffe()))
    stream = SdsStream()
    reply = stream.on_request(request(["default"]), snapshot)
    assert stream.on_request(request(["default"], nonce=reply.nonce, error="bad key"), snapshot) is None
    assert stream.nacks == ["bad key"]


def test_other_resource_types_are_refused(tmp_path):
    stream = SdsStream()
    wrong = discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
    assert stream.on_request(wrong, snapshot_of(issue(make_ca(tmp_path), spiffe()))) is None
    assert stream.nacks and "unsupported type" in stream.nacks[0]


def test_secret_json_form_keeps_names_and_inline_bytes(tmp_path):
    svid = issue(make_ca(tmp_path), spiffe())
    secret = secret_as_dict(snapshot_of(svid).secrets["ROOTCA"])
    assert secret["name"] == "ROOTCA" and "inline_bytes" in secret["validation_context"]["trusted_ca"]
