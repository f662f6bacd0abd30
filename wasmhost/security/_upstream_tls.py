"""DestinationRule ``trafficPolicy.tls`` for a cluster, and Istio's auto-mTLS choice.

``ISTIO_MUTUAL`` uses the workload's own SVID (``TlsContexts.client_context``) and checks the
server's SPIFFE ID; ``SIMPLE``/``MUTUAL`` originate TLS to a non-mesh server with files from
the rule (``caCertificates``, ``clientCertificate``/``privateKey``), checking ``sni`` or
``subjectAltNames`` as host names; ``DISABLE`` is plaintext. Without a TLS setting, auto-mTLS
sends ISTIO_MUTUAL when the destination has a sidecar that does not DISABLE mTLS.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._inbound import PeerAuthenticationMode
from ._tls import MESH_ALPN, TlsContexts

_TLS_FIELDS = {
    "mode", "clientCertificate", "privateKey", "caCertificates", "credentialName", "subjectAltNames", "sni",
    "insecureSkipVerify", "caCrl",
}


class DestinationTlsError(ValueError):
    """A DestinationRule TLS setting is invalid; the message starts with the field path."""


@dataclass(frozen=True)
class UpstreamTls:
    mode: str  # DISABLE | SIMPLE | MUTUAL | ISTIO_MUTUAL
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool = False


def parse_upstream_tls(spec: Mapping[str, Any] | None, where: str = "trafficPolicy.tls") -> UpstreamTls | None:
    """None when no TLS setting is given (auto-mTLS decides)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise DestinationTlsError(f"{where}: must be an object")
    unknown = sorted(set(spec) - _TLS_FIELDS)
    if unknown:
        raise DestinationTlsError(f"{where}.{unknown[0]}: unknown field")
    mode = spec.get("mode", "DISABLE")
    if mode not in ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"):
        raise DestinationTlsError(f"{where}.mode: {mode!r} is not DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL")
    if spec.get("credentialName"):
        raise DestinationTlsError(f"{where}.credentialName: Kubernetes secrets are not supported; use file paths")
    if mode == "MUTUAL" and not (spec.get("clientCertificate") and spec.get("privateKey")):
        raise DestinationTlsError(f"{where}: MUTUAL needs clientCertificate and privateKey")
    return UpstreamTls(
        mode=mode, client_certificate=str(spec.get("clientCertificate", "")), private_key=str(spec.get("privateKey", "")),
        ca_certificates=str(spec.get("caCertificates", "")), subject_alt_names=tuple(spec.get("subjectAltNames") or ()),
        sni=str(spec.get("sni", "")), insecure_skip_verify=bool(spec.get("insecureSkipVerify", False)),
    )


def auto_mtls(tls: UpstreamTls | None, *, destination_has_sidecar: bool,
              destination_mode: PeerAuthenticationMode = PeerAuthenticationMode.PERMISSIVE) -> str:
    """The TLS mode a client sidecar uses: the rule's, else ISTIO_MUTUAL to a sidecar that accepts it."""
    if tls is not None:
        return tls.mode
    if destination_has_sidecar and destination_mode is not PeerAuthenticationMode.DISABLE:
        return "ISTIO_MUTUAL"
    return "DISABLE"


def upstream_context(tls: UpstreamTls | None, contexts: TlsContexts, *, destination_has_sidecar: bool,
                     destination_mode: PeerAuthenticationMode = PeerAuthenticationMode.PERMISSIVE,
                     ) -> tuple[ssl.SSLContext | None, str]:
    """(context or None for plaintext, server_hostname to send/check) for a new connection."""
    mode = auto_mtls(tls, destination_has_sidecar=destination_has_sidecar, destination_mode=destination_mode)
    if mode == "DISABLE":
        return None, ""
    if mode == "ISTIO_MUTUAL":
        return contexts.client_context(), (tls.sni if tls else "")
    assert tls is not None
    context = ssl.create_default_context(cafile=tls.ca_certificates or None)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.mode == "MUTUAL":
        context.load_cert_chain(tls.client_certificate, tls.private_key)
    context.set_alpn_protocols([p for p in MESH_ALPN if p != "istio"])
    hostname = tls.sni or (tls.subject_alt_names[0] if tls.subject_alt_names else "")
    return context, hostname
