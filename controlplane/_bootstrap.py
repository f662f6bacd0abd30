"""The bootstrap a proxy starts from, as istio-agent writes it: node identity and metadata,
an ADS connection to the control plane, and LDS/CDS from ADS. Envoy and the wasmesh sidecar
both start from it; everything else arrives over xDS.

With a bootstrap token the proxy joins mesh mTLS: the token travels as the ADS stream's
`authorization: Bearer` metadata, only over TLS to the secure port (the control plane's
certificate is checked against `xds_ca`, the CA's trust bundle), and the workload gets the
label `security.istio.io/tlsMode: istio`, as Istio's injector labels pods with a sidecar.
A real Envoy is then sent a key and certificate the control plane minted for it over SDS. A
wasmesh sidecar can hold its own key instead (`identity_agent`): node metadata
`IDENTITY_AGENT: "true"` and `TRUST_DOMAIN` tell it to run its identity agent and tell the
control plane to point its secrets at the agent (`sds-grpc`, as istio-agent's) and mint nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane._hosts import DOMAIN_SUFFIX

XDS_CLUSTER = "xds-grpc"


@dataclass
class BootstrapOptions:
    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Sequence[int] = ()
    xds_host: str = "127.0.0.1"
    xds_port: int = 15010
    ip: str = "127.0.0.1"
    service_account: str = "default"
    outbound_ports: Mapping[int, int] = field(default_factory=dict)
    inbound_ports: Mapping[int, int] = field(default_factory=dict)
    admin_port: int = 15000
    proxy_type: str = "sidecar"
    delta: bool = False
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)
    token: str = ""  # bootstrap token: the proxy's credential on the ADS stream
    xds_ca: str = ""  # PEM roots to verify the control plane with (TLS to the secure port)
    xds_server_name: str = "istiod.istio-system.svc"
    identity_agent: bool = False  # a wasmesh sidecar that generates its key and asks the CA itself
    trust_domain: str = "cluster.local"


def parse_address(text: str, allow_any_port: bool = False) -> tuple[str, int]:
    """HOST:PORT; port 0 (let the kernel choose) only where `allow_any_port` says so."""
    host, sep, port = text.rpartition(":")
    lowest = 0 if allow_any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def node_id(options: BootstrapOptions) -> str:
    return f"{options.proxy_type}~{options.ip}~{options.name}.{options.namespace}~{options.namespace}.{DOMAIN_SUFFIX}"


TLS_MODE_LABEL = "security.istio.io/tlsMode"
IDENTITY_AGENT_METADATA = "IDENTITY_AGENT"
TRUST_DOMAIN_METADATA = "TRUST_DOMAIN"


def node_metadata(options: BootstrapOptions) -> dict[str, Any]:
    labels = dict(options.labels)
    if options.token:
        labels.setdefault(TLS_MODE_LABEL, "istio")
    metadata: dict[str, Any] = {
        "NAME": options.name,
        "NAMESPACE": options.namespace,
        "LABELS": labels,
        "SERVICE_ACCOUNT": options.service_account,
        "INSTANCE_IPS": options.ip,
        "CLUSTER_ID": "Kubernetes",
        "POD_PORTS": json.dumps([{"containerPort": p, "name": f"http-{p}", "protocol": "TCP"} for p in options.ports]),
    }
    if options.outbound_ports:
        metadata["OUTBOUND_PORTS"] = json.dumps({str(k): v for k, v in options.outbound_ports.items()})
    if options.inbound_ports:
        metadata["INBOUND_PORTS"] = json.dumps({str(k): v for k, v in options.inbound_ports.items()})
    if options.identity_agent:
        metadata[IDENTITY_AGENT_METADATA] = "true"
        metadata[TRUST_DOMAIN_METADATA] = options.trust_domain
    metadata.update(options.extra_metadata)
    return metadata


def _xds_service(options: BootstrapOptions) -> dict[str, Any]:
    service: dict[str, Any] = {"envoy_grpc": {"cluster_name": XDS_CLUSTER}}
    if options.token:
        service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {options.token}"}]
    return service


def _xds_tls(options: BootstrapOptions) -> dict[str, Any]:
    """TLS to the secure port: the control plane's certificate must chain to `xds_ca` and name the server."""
    if not options.xds_ca:
        return {}
    context = {"sni": options.xds_server_name, "common_tls_context": {
        "alpn_protocols": ["h2"],
        "validation_context": {"trusted_ca": {"inline_string": options.xds_ca},
                               "match_typed_subject_alt_names": [
                                   {"san_type": "DNS", "matcher": {"exact": options.xds_server_name}}]}}}
    return {"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", **context}}}


def bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """An Envoy v3 Bootstrap (JSON shape) pointing at the control plane."""
    if options.token and not options.xds_ca:
        raise ValueError("a bootstrap token is sent only over TLS: give the control plane's CA (xds_ca)")
    if options.identity_agent and not options.token:
        raise ValueError("the identity agent authenticates to the CA with the bootstrap token: give one")
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id(options), "cluster": f"{options.name}.{options.namespace}",
                 "metadata": node_metadata(options)},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": options.admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC" if options.delta else "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                           "grpc_services": [_xds_service(options)]},
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC" if _is_ip(options.xds_host) else "STRICT_DNS",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": options.xds_host, "port_value": options.xds_port}}}}]}]},
            **_xds_tls(options),
        }]},
    }


def grpc_bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """A bootstrap for gRPC's own xDS client (GRPC_XDS_BOOTSTRAP), as istio-agent writes it."""
    metadata = node_metadata(options)
    metadata["GENERATOR"] = "grpc"
    return {
        "xds_servers": [{"server_uri": f"{options.xds_host}:{options.xds_port}",
                         "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
        "node": {"id": node_id(options), "cluster": f"{options.name}.{options.namespace}", "metadata": metadata,
                 "locality": {}},
    }


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


__all__ = ["IDENTITY_AGENT_METADATA", "TRUST_DOMAIN_METADATA", "XDS_CLUSTER", "BootstrapOptions", "bootstrap", "grpc_bootstrap", "node_id", "parse_address"]
