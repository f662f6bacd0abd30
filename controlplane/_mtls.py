"""Mutual TLS in Envoy terms: PeerAuthentication on inbound listeners, ISTIO_MUTUAL and
auto-mTLS on outbound clusters, both with the workload certificate fetched over SDS.

A proxy takes part in mesh mTLS when its workload carries Istio's label
`security.istio.io/tlsMode: istio` (what Istio's injector puts on pods with a sidecar;
`wasmesh bootstrap --token-file` sets it, since only a proxy with a bootstrap token is given
secrets). Its certificate and trust bundle are the SDS secrets `default` and `ROOTCA`: fetched
over its own ADS stream (an Envoy, whose key the control plane mints), or, for a wasmesh sidecar
running its identity agent (node metadata `IDENTITY_AGENT: "true"`), from that agent through the
`sds-grpc` cluster, as Istio's sidecars fetch them from istio-agent, so the key never leaves it.

Inbound, per application port, the mode `effective_mode` resolves gives the filter chains:
- STRICT: one chain matching `transport_protocol: tls` that requires a client certificate
  signed by the mesh; a plaintext connection matches no chain and is closed;
- PERMISSIVE: that chain, matched on the mesh ALPN (`istio-peer-exchange`, `istio`, ...)
  as Istio does, and a plaintext chain for everything else;
- DISABLE: the plaintext chain only.
TLS chains forward the peer's URI SAN to the application in `x-forwarded-client-cert`.

Outbound, a DestinationRule `tls.mode: ISTIO_MUTUAL` always sends mTLS; with no TLS setting,
auto-mTLS sends it only to endpoints marked `tlsMode: istio` (through Envoy's
`transport_socket_matches`), i.e. workloads with a sidecar whose PeerAuthentication does not
DISABLE mTLS. The server's certificate must carry the SPIFFE ID of one of the service's
service accounts.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from controlplane._mesh import Mesh
from controlplane._protos import HCM_TYPE, typed
from controlplane._proxies import Proxy
from controlplane._services import Endpoint, Service
from wasmhost.security import (
    PeerAuthentication,
    PeerAuthenticationError,
    effective_mode,
    parse_peer_authentication,
)

TLS_MODE_LABEL = "security.istio.io/tlsMode"
SOCKET_MATCH_KEY = "envoy.transport_socket_match"
TLS_SOCKET = "envoy.transport_sockets.tls"
TLS_TYPES = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}
AGENT_SDS_CLUSTER = "sds-grpc"
#: istio-agent's SDS: gRPC to the `sds-grpc` cluster, waiting as long as the first certificate takes
AGENT_SOURCE = {"api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                      "grpc_services": [{"envoy_grpc": {"cluster_name": AGENT_SDS_CLUSTER}}],
                                      "set_node_on_first_message_only": True},
                "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
IDENTITY_AGENT_METADATA = "IDENTITY_AGENT"
DEFAULT_SECRET, ROOT_SECRET = "default", "ROOTCA"
#: ALPN a mesh client offers (Istio's sidecars); the inbound TLS chain of a PERMISSIVE port matches on it.
MESH_CLIENT_ALPN = ["istio-peer-exchange", "istio"]
MESH_ALPN_MATCH = ["istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
TLS_INSPECTOR = {"name": "envoy.filters.listener.tls_inspector", "typed_config": typed(
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", {})}


def sds_config(name: str, agent: bool = False) -> dict[str, Any]:
    """An `SdsSecretConfig` for secret `name`: from the proxy's identity agent, or over its ADS stream."""
    return {"name": name, "sds_config": AGENT_SOURCE if agent else ADS_SOURCE}


def has_identity(proxy: Proxy) -> bool:
    return proxy.labels.get(TLS_MODE_LABEL) == "istio"


def runs_identity_agent(proxy: Proxy) -> bool:
    """Whether the proxy keeps its own key (a wasmesh sidecar's agent) instead of being sent one."""
    return str(proxy.metadata.get(IDENTITY_AGENT_METADATA, "")).lower() == "true"


def peer_authentications(mesh: Mesh) -> list[PeerAuthentication]:
    """Every PeerAuthentication, oldest first (the order istiod breaks ties in); parsed once per mesh
    view, since every inbound port and every endpoint of a push asks."""
    cached: list[PeerAuthentication] | None = mesh.__dict__.get("_peer_authentications")
    if cached is not None:
        return cached
    out = []
    for resource in mesh.of_kind("PeerAuthentication"):
        try:
            out.append(parse_peer_authentication(resource.to_manifest()))
        except PeerAuthenticationError:
            continue  # validation reports it; an invalid policy selects nothing
    mesh.__dict__["_peer_authentications"] = out
    return out


def inbound_mode(mesh: Mesh, namespace: str, labels: Mapping[str, str], port: int) -> str:
    """STRICT, PERMISSIVE or DISABLE for traffic to `port` of a workload."""
    return effective_mode(peer_authentications(mesh), namespace, labels, port,
                          root_namespace=mesh.root_namespace).value


def _common_tls_context(alpn: list[str], agent: bool) -> dict[str, Any]:
    context: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificate_sds_secret_configs": [sds_config(DEFAULT_SECRET, agent)],
        "validation_context_sds_secret_config": sds_config(ROOT_SECRET, agent),
    }
    if alpn:
        context["alpn_protocols"] = alpn
    return context


def downstream_tls(http: bool, agent: bool = False) -> dict[str, Any]:
    """The transport socket of an inbound mTLS chain: the workload SVID, client certificate required."""
    return {"name": TLS_SOCKET, "typed_config": typed(TLS_TYPES + "DownstreamTlsContext", {
        "common_tls_context": _common_tls_context(["h2", "http/1.1"] if http else [], agent),
        "require_client_certificate": True})}


def _with_client_cert_details(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `filters` whose HTTP connection manager forwards the peer's URI SAN (XFCC)."""
    out = copy.deepcopy(filters)
    for item in out:
        config = item.get("typed_config") or {}
        if config.get("@type") == HCM_TYPE:
            config["forward_client_cert_details"] = "APPEND_FORWARD"
            config["set_current_client_cert_details"] = {"uri": True}
    return out


def inbound_chains(mesh: Mesh, proxy: Proxy, port: int, name: str, filters: list[dict[str, Any]],
                   http: bool) -> dict[str, Any]:
    """`filter_chains` (and the TLS inspector when needed) of the inbound listener of `port`."""
    plaintext = {"name": name, "filters": filters}
    if not has_identity(proxy):
        return {"filter_chains": [plaintext]}
    mode = inbound_mode(mesh, proxy.namespace, proxy.labels, port)
    if mode == "DISABLE":
        return {"filter_chains": [plaintext]}
    tls_chain: dict[str, Any] = {"name": f"{name}_mtls", "filter_chain_match": {"transport_protocol": "tls"},
                                 "filters": _with_client_cert_details(filters), "transport_socket": downstream_tls(http, runs_identity_agent(proxy))}
    if mode == "STRICT":
        return {"filter_chains": [tls_chain], "listener_filters": [TLS_INSPECTOR]}
    tls_chain["filter_chain_match"]["application_protocols"] = MESH_ALPN_MATCH
    return {"filter_chains": [tls_chain, plaintext], "listener_filters": [TLS_INSPECTOR]}


# ---- outbound ------------------------------------------------------------------------------------

def service_identities(mesh: Mesh, service: Service, endpoints: list[Endpoint]) -> list[str]:
    """SPIFFE IDs the servers of `service` may present (its endpoints' service accounts)."""
    domain = mesh.config.trust_domain
    accounts = sorted({e.service_account or "default" for e in endpoints})
    return [f"spiffe://{domain}/ns/{service.namespace}/sa/{account}" for account in accounts]


def upstream_mtls(identities: list[str], sni: str, trust_domain: str, agent: bool = False) -> dict[str, Any]:
    """An ISTIO_MUTUAL transport socket: present our SVID, require one of `identities` (or any
    ID of the trust domain when the service's accounts are unknown)."""
    matchers = [{"san_type": "URI", "matcher": {"exact": uri}} for uri in identities] or [
        {"san_type": "URI", "matcher": {"prefix": f"spiffe://{trust_domain}/"}}]
    context = _common_tls_context(list(MESH_CLIENT_ALPN), agent)
    del context["validation_context_sds_secret_config"]
    context["combined_validation_context"] = {
        "default_validation_context": {"match_typed_subject_alt_names": matchers},
        "validation_context_sds_secret_config": sds_config(ROOT_SECRET, agent)}
    return {"name": TLS_SOCKET, "typed_config": typed(TLS_TYPES + "UpstreamTlsContext",
                                                      {"common_tls_context": context, "sni": sni})}


def endpoint_tls_mode(mesh: Mesh, service: Service, port: int, endpoint: Endpoint) -> Endpoint:
    """The endpoint with `tlsMode: istio` only if it has a sidecar that accepts mTLS on `port`."""
    if endpoint.labels.get(TLS_MODE_LABEL) != "istio":
        return endpoint
    if inbound_mode(mesh, service.namespace, endpoint.labels, port) != "DISABLE":
        return endpoint
    return dataclasses.replace(endpoint, labels={k: v for k, v in endpoint.labels.items() if k != TLS_MODE_LABEL})


def endpoint_metadata(endpoint: Endpoint) -> dict[str, Any]:
    """LbEndpoint metadata that `transport_socket_matches` selects mTLS endpoints by."""
    if endpoint.labels.get(TLS_MODE_LABEL) != "istio":
        return {}
    return {"metadata": {"filter_metadata": {SOCKET_MATCH_KEY: {"tlsMode": "istio"}}}}


def apply_mesh_tls(cluster: dict[str, Any], mesh: Mesh, proxy: Proxy, service: Service, port: int,
                   workload_port: int, tls_mode: str | None, endpoints: list[Endpoint]) -> None:
    """ISTIO_MUTUAL (from the DestinationRule) or auto-mTLS (no TLS setting) on the outbound cluster
    of service port `port` (`workload_port` is where its instances listen)."""
    sni = f"outbound_.{port}_._.{service.hostname}"
    agent = runs_identity_agent(proxy)
    endpoints = [endpoint_tls_mode(mesh, service, workload_port, e) for e in endpoints]
    meshed = [e for e in endpoints if e.labels.get(TLS_MODE_LABEL) == "istio"]
    if tls_mode == "ISTIO_MUTUAL":
        cluster["transport_socket"] = upstream_mtls(service_identities(mesh, service, meshed or endpoints), sni,
                                                    mesh.config.trust_domain, agent)
        return
    if tls_mode is not None or not has_identity(proxy) or not meshed:
        return
    cluster["transport_socket_matches"] = [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
         "transport_socket": upstream_mtls(service_identities(mesh, service, meshed), sni, mesh.config.trust_domain,
                                           agent)},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": typed("type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", {})}},
    ]


__all__ = ["MESH_ALPN_MATCH", "TLS_MODE_LABEL", "apply_mesh_tls", "downstream_tls", "endpoint_metadata",
           "endpoint_tls_mode", "has_identity", "inbound_chains", "inbound_mode", "peer_authentications", "runs_identity_agent",
           "sds_config", "service_identities", "upstream_mtls"]
