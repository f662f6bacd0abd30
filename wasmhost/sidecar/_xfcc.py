"""``x-forwarded-client-cert`` (XFCC): what the connection manager tells the application about the peer.

Istio's inbound mTLS chains set ``forward_client_cert_details: APPEND_FORWARD`` with
``set_current_client_cert_details: {uri: true}``, so the application sees the caller's SPIFFE
identity. Envoy's rules: on a connection without a client certificate the header is removed
(except ALWAYS_FORWARD_ONLY); FORWARD_ONLY forwards it unchanged, SANITIZE removes it,
APPEND_FORWARD appends this hop's element and SANITIZE_SET replaces the header with it. An element
is ``Hash=<sha256 of the peer certificate>`` plus the requested ``Subject``, ``URI``, ``DNS`` and
``Cert`` fields. (Envoy also writes ``By=`` from the local certificate; this sidecar's TLS
connection info has no local certificate, so ``By`` is left out.)
"""

from __future__ import annotations

from typing import Any

from ._errors import ConfigError
from ._filter_api import FilterCallbacks, HeadersStatus, HttpFilter
from ._headers import HeaderMap
from ._plan import FilterEntry

XFCC = b"x-forwarded-client-cert"
SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET, ALWAYS_FORWARD_ONLY = range(5)
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _element(tls: dict[str, Any], details: Any) -> bytes:
    parts = [f"Hash={tls.get('sha256_peer_certificate_digest', '')}"]
    if details is not None:
        if details.cert and tls.get("peer_certificate"):
            parts.append(f"Cert=\"{tls['peer_certificate']}\"")
        if details.subject.value:
            parts.append(f"Subject=\"{tls.get('subject_peer_certificate', '')}\"")
        if details.uri:
            parts.extend(f"URI={uri}" for uri in tls.get("uri_san_peer_certificate") or [])
        if details.dns:
            parts.extend(f"DNS={dns}" for dns in tls.get("dns_san_peer_certificate") or [])
    return ";".join(parts).encode()


class XfccFilter(HttpFilter):
    encodes = False

    def __init__(self, mode: int, details: Any, callbacks: FilterCallbacks) -> None:
        self.mode, self.details, self.callbacks = mode, details, callbacks

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        tls = self.callbacks.stream_info.downstream_tls
        if not tls or not tls.get("peer_certificate_presented"):
            if self.mode != ALWAYS_FORWARD_ONLY:
                headers.remove(XFCC)
            return HeadersStatus.Continue
        if self.mode in (FORWARD_ONLY, ALWAYS_FORWARD_ONLY):
            return HeadersStatus.Continue
        if self.mode == SANITIZE:
            headers.remove(XFCC)
            return HeadersStatus.Continue
        element = _element(tls, self.details)
        previous = headers.joined(XFCC) if self.mode == APPEND_FORWARD else None
        headers.set(XFCC, previous + b"," + element if previous else element)
        return HeadersStatus.Continue


def build_xfcc_entry(hcm: Any, path: str) -> FilterEntry:
    """The XFCC step for one HCM (first in its chain)."""
    mode = int(hcm.forward_client_cert_details)
    if mode not in range(5):
        raise ConfigError(f"{path}.forward_client_cert_details", f"unknown mode {mode}")
    details = hcm.set_current_client_cert_details if hcm.HasField("set_current_client_cert_details") else None
    if details is not None and details.chain:
        raise ConfigError(f"{path}.set_current_client_cert_details.chain", "not supported by the wasmesh sidecar")

    def create(callbacks: FilterCallbacks) -> HttpFilter:
        return XfccFilter(mode, details, callbacks)

    return FilterEntry("envoy.xfcc", "x-forwarded-client-cert", create, False, wants_complete=False, wants_log=False)


def _declare_supported() -> None:
    """Tell the config checker that the XFCC fields of the HCM are implemented here."""
    from ._config_support import ALL, SUPPORTED

    SUPPORTED[_HCM] = SUPPORTED[_HCM] | {"forward_client_cert_details", "set_current_client_cert_details"}
    SUPPORTED[_HCM + ".SetCurrentClientCertDetails"] = ALL


_declare_supported()
