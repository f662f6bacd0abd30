"""Fetching an ``http(s)://`` module through an Envoy cluster, as Envoy's remote data source does.

An ECDS ``code.remote.http_uri`` names a ``cluster``: Envoy connects to that cluster's endpoint
with that cluster's transport socket (for the control plane's module endpoint under a mesh
CA: TLS trusting the mesh root, with SNI and a required SAN), and sends the URL's path with
the URL's host as the Host header. ``ClusterTransport`` carries what the sidecar built for
the cluster; ``get`` performs one such request (sans retries; `_fetch.fetch_http` retries).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class TransportError(OSError):
    """The connection through the cluster failed (retryable)."""


class PeerRefused(Exception):
    """The server's certificate is not one the cluster's TLS settings accept (retrying cannot help)."""


class HttpStatusError(Exception):
    """The server answered with an error status."""

    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code


@dataclass(frozen=True)
class ClusterTransport:
    """Where and how to connect for one cluster: its endpoint and its TLS settings, if any."""

    cluster: str
    host: str
    port: int
    context: ssl.SSLContext | None = None  # the cluster's TLS transport socket
    sni: str = ""
    peer_allowed: Callable[[Any], bool] | None = None  # SAN matching, checked after the handshake


def get(url: str, transport: ClusterTransport, timeout: float, limit: int) -> bytes:
    """GET `url`'s path from the cluster's endpoint; at most `limit` + 1 bytes of body are read."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    try:
        raw = socket.create_connection((transport.host, transport.port), timeout=timeout)
    except OSError as err:
        raise TransportError(f"cluster {transport.cluster}: cannot connect to {transport.host}:{transport.port}: "
                             f"{err}") from None
    sock: socket.socket = raw
    try:
        if transport.context is not None:
            try:
                tls = transport.context.wrap_socket(raw, server_hostname=transport.sni or None)
            except ssl.SSLCertVerificationError as err:
                raise PeerRefused(f"cluster {transport.cluster}: TLS handshake failed: {err.verify_message}") from None
            except (ssl.SSLError, OSError) as err:
                raise TransportError(f"cluster {transport.cluster}: TLS handshake failed: {err}") from None
            sock = tls
            if transport.peer_allowed is not None and not transport.peer_allowed(tls):
                raise PeerRefused(f"cluster {transport.cluster}: TLS handshake failed: the server certificate's SAN "
                                  "does not match the cluster's match_typed_subject_alt_names")
        connection = http.client.HTTPConnection(parts.hostname or transport.host, timeout=timeout)
        connection.sock = sock  # already connected (and TLS-wrapped): http.client only speaks HTTP on it
        connection.request("GET", target, headers={"host": parts.netloc})
        response = connection.getresponse()
        if response.status >= 300:  # Envoy's remote data source follows no redirects either
            raise HttpStatusError(response.status)
        return response.read(limit + 1)
    except (http.client.HTTPException, OSError) as err:
        if isinstance(err, TransportError):
            raise
        raise TransportError(f"cluster {transport.cluster}: {err}") from None
    finally:
        sock.close()


__all__ = ["ClusterTransport", "HttpStatusError", "PeerRefused", "TransportError", "get"]
