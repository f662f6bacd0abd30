"""The module endpoint over HTTPS once the mesh has identity (a CA and the secure port):
what proxies are told (sans-io); the listener is `_module_server.ModuleTlsEndpoint`.

The endpoint presents a serving certificate issued by the mesh CA to the control plane's own
identity and names — the same SPIFFE ID and DNS SANs the secure xDS port (15012) presents —
reissued once half its lifetime has passed and whenever the CA's trust bundle changes (a root
staged, activated or retired), so it is always signed by the root that signs everything else.
Proxies are told to fetch modules from `https://…` through a cluster whose TLS transport
socket trusts the mesh trust bundle and requires that DNS SAN (with it as SNI); the bundle
is sent inline, so a proxy needs no workload identity to fetch a module.

It listens on a port of its own: the secure port is grpcio's, which speaks only HTTP/2 gRPC,
and putting plain HTTPS behind it would need a protocol-sniffing front for every xDS stream
(Istio keeps its other TLS services, the webhook on 15017, on separate ports too). The port is
`modules.httpsPort` from the mesh config; by default the secure port + 1 (15013), or an
ephemeral port when the secure port is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane._security import SERVER_NAMES

UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
SERVER_NAME = SERVER_NAMES[0]  # the DNS SAN proxies require, and the SNI they send


@dataclass(frozen=True)
class ModuleTls:
    """What a proxy needs to fetch modules over TLS: whom to trust and which name to expect."""

    trust_bundle_pem: str
    server_name: str = SERVER_NAME

    def transport_socket(self) -> dict[str, Any]:
        """The module cluster's TLS transport socket (Envoy JSON)."""
        validation = {"trusted_ca": {"inline_string": self.trust_bundle_pem},
                      "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": self.server_name}}]}
        return {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": UPSTREAM_TLS_TYPE, "sni": self.server_name,
            "common_tls_context": {"validation_context": validation}}}


def https_port(requested: int | None, secure_port: int) -> int:
    """`modules.httpsPort`, else next to the secure port (ephemeral when the secure port is)."""
    if requested is not None:
        return requested
    return secure_port + 1 if secure_port else 0


__all__ = ["SERVER_NAME", "UPSTREAM_TLS_TYPE", "ModuleTls", "https_port"]
