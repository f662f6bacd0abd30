"""What the authorization engine sees of one request or connection (sans-io input)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class RequestAuth:
    """The verified JWT behind ``request.auth.*`` (from RequestAuthentication)."""

    principal: str  # "<iss>/<sub>"
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def audiences(self) -> list[str]:
        aud = self.claims.get("aud")
        if isinstance(aud, str):
            return [aud]
        return [str(a) for a in aud] if isinstance(aud, list) else []

    @property
    def presenter(self) -> str:
        return str(self.claims.get("azp", ""))


@dataclass(frozen=True)
class AuthzRequest:
    """A request (``protocol="http"``) or a TCP connection (``"tcp"``) at the inbound sidecar.

    ``source_principal`` is the peer's SPIFFE ID without ``spiffe://`` (empty when the peer
    did not authenticate with mTLS); ``remote_ip`` is the original client (X-Forwarded-For /
    PROXY protocol) and defaults to ``source_ip``. Header names are matched case-insensitively.
    """

    source_principal: str = ""
    source_ip: str = ""
    remote_ip: str = ""
    destination_ip: str = ""
    destination_port: int = 0
    sni: str = ""
    protocol: Literal["http", "tcp"] = "http"
    host: str = ""
    method: str = ""
    path: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: RequestAuth | None = None

    @property
    def source_namespace(self) -> str:
        """The namespace in the peer identity (``<td>/ns/<ns>/sa/<sa>``), or empty."""
        parts = self.source_principal.split("/")
        if len(parts) >= 5 and parts[-4] == "ns" and parts[-2] == "sa":
            return parts[-3]
        return ""

    @property
    def client_ip(self) -> str:
        return self.remote_ip or self.source_ip

    @property
    def url_path(self) -> str:
        """The path without query and fragment, which is what ``paths`` match."""
        return self.path.split("?", 1)[0].split("#", 1)[0]

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None
