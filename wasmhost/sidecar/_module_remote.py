"""Wasm ``code.remote``: the module is fetched through the cluster its ``http_uri`` names.

Envoy fetches a remote module with its cluster manager: it connects to the named cluster's
endpoint with that cluster's transport socket. The wasmesh sidecar does the same through its
module agent: the cluster's first healthy endpoint, and its TLS settings (trusted CA, SNI,
SAN matching) when it has a TLS transport socket — so the control plane's module endpoint,
served over HTTPS with a mesh-CA certificate, is validated exactly as Envoy validates it. A
cluster the sidecar does not know leaves the fetch to the URL itself, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..agent import ClusterTransport
from ._tls import tls_for_host

#: the built plan (`_plan.ClusterPlan`) of a cluster by name, None when there is none
ClusterLookup = Callable[[str], Any]


def cluster_transport(name: str, lookup: ClusterLookup | None) -> ClusterTransport | None:
    """How the module agent should connect for cluster `name`; None to connect to the URL's host."""
    plan = lookup(name) if lookup is not None and name else None
    if plan is None or not plan.endpoints:
        return None
    endpoint = next((e for e in plan.endpoints if e.healthy), plan.endpoints[0])
    tls = tls_for_host(plan, endpoint.metadata)
    if tls is None:
        return ClusterTransport(name, endpoint.address, endpoint.port)
    return ClusterTransport(name, endpoint.address, endpoint.port, tls.context, tls.sni,
                            tls.peer_allowed if tls.san_matchers else None)


__all__ = ["ClusterLookup", "cluster_transport"]
