"""SPIFFE IDs as Istio uses them: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.

Every identity check in the mesh (CSR approval, peer verification, ``source.principal`` in
AuthorizationPolicy) compares these, so parsing is strict and errors name what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,253}$")


class SpiffeIdError(ValueError):
    """A string or certificate does not carry a valid Istio-style SPIFFE ID."""


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A workload identity; ``principal`` is the form AuthorizationPolicy ``principals`` use."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _LABEL.match(self.trust_domain):
            raise SpiffeIdError(f"trust domain {self.trust_domain!r} is not a lower-case DNS-like name")
        for field, value in (("namespace", self.namespace), ("service account", self.service_account)):
            if not _SEGMENT.match(value):
                raise SpiffeIdError(f"{field} {value!r} is empty or has characters outside [A-Za-z0-9._-]")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``spiffe://td/ns/NS/sa/SA``; raise SpiffeIdError naming the bad part."""
        if not uri.startswith("spiffe://"):
            raise SpiffeIdError(f"{uri!r} does not start with spiffe://")
        rest = uri[len("spiffe://"):]
        parts = rest.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise SpiffeIdError(f"{uri!r} is not of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>")
        return cls(parts[0], parts[2], parts[4])

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """The ID without ``spiffe://``, as Istio writes ``source.principal``."""
        return self.uri[len("spiffe://"):]

    def __str__(self) -> str:
        return self.uri


def uri_sans(cert: x509.Certificate) -> list[str]:
    """All URI subject alternative names of a certificate (empty if it has none)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The single SPIFFE ID in a certificate's URI SANs (SPIFFE X.509-SVID allows exactly one)."""
    spiffe = [u for u in uri_sans(cert) if u.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise SpiffeIdError(f"certificate has {len(spiffe)} spiffe:// URI SANs; an SVID has exactly one")
    return SpiffeId.parse(spiffe[0])
