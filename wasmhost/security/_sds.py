"""The SVID as Envoy SDS secrets: ``default`` (certificate + key) and ``ROOTCA`` (trust bundle).

These are the names Istio's sidecars ask for, so a real Envoy can consume them (over SDS, or
as static ``secrets`` in its bootstrap) and speak mTLS with wasmesh sidecars.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import json_format

from ._svid import WorkloadSvid

DEFAULT_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def certificate_secret(svid: WorkloadSvid, name: str = DEFAULT_SECRET) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=svid.chain_pem()),
            private_key=base_pb2.DataSource(inline_bytes=svid.key_pem()),
        ),
    )


def trust_bundle_secret(svid: WorkloadSvid, name: str = ROOT_SECRET) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=svid.bundle_pem())
        ),
    )


def sds_secrets(svid: WorkloadSvid) -> dict[str, secret_pb2.Secret]:
    """Both secrets by name, ready to be served over SDS or dumped in a config."""
    return {DEFAULT_SECRET: certificate_secret(svid), ROOT_SECRET: trust_bundle_secret(svid)}


def secret_as_dict(secret: secret_pb2.Secret) -> dict[str, object]:
    """JSON form of a secret, for an Envoy bootstrap's ``static_resources.secrets``."""
    return json_format.MessageToDict(secret, preserving_proto_field_name=True)
