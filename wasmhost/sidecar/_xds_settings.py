"""Where and how the sidecar reaches its control plane: ``dynamic_resources`` read into ``AdsSettings``.

Only what istio-agent's bootstrap uses is accepted: one ADS stream (``ads_config`` of type
GRPC, transport V3) to a static cluster named by ``envoy_grpc`` (or a ``google_grpc`` target),
optionally over TLS with the cluster's ``UpstreamTlsContext`` and with ``initial_metadata`` such
as a bootstrap token; LDS and CDS from ADS. Anything else is refused with its field path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError
from ._route_build import read_data_source

_GRPC, _DELTA_GRPC = 2, 3  # ApiConfigSource.ApiType
_V3 = 2  # ApiVersion
DELTA_SUPPORTED = True


@dataclass(frozen=True)
class AdsTls:
    """TLS towards the control plane: roots to verify it, the name it must present, our certificate."""

    trusted_ca: bytes
    server_name: str
    certificate_chain: bytes = b""
    private_key: bytes = b""


@dataclass(frozen=True)
class AdsSettings:
    target: str  # host:port for grpc
    cluster: str  # the bootstrap cluster it came from ("" for google_grpc)
    delta: bool
    subscribe_listeners: bool
    subscribe_clusters: bool
    node_on_first_message_only: bool
    metadata: tuple[tuple[str, str], ...] = ()
    tls: AdsTls | None = None


def _check_source(source: Any, path: str) -> None:
    if source.WhichOneof("config_source_specifier") != "ads":
        raise ConfigError(path, "only the ADS config source (ads: {}) is supported")


def ads_settings(bootstrap: Any) -> AdsSettings | None:
    """The ADS connection of ``bootstrap``, or None when it has no dynamic_resources."""
    if not bootstrap.HasField("dynamic_resources"):
        return None
    dynamic = bootstrap.dynamic_resources
    path = "dynamic_resources"
    if not dynamic.HasField("ads_config"):
        raise ConfigError(f"{path}.ads_config", "an ADS config (ads_config) is required for dynamic resources")
    ads = dynamic.ads_config
    ads_path = f"{path}.ads_config"
    if ads.api_type == _DELTA_GRPC and not DELTA_SUPPORTED:
        raise ConfigError(f"{ads_path}.api_type", "incremental xDS (DELTA_GRPC) is not supported yet; use GRPC")
    if ads.api_type not in (_GRPC, _DELTA_GRPC):
        raise ConfigError(f"{ads_path}.api_type", "only GRPC (state of the world) and DELTA_GRPC are supported")
    if ads.transport_api_version not in (0, _V3):
        raise ConfigError(f"{ads_path}.transport_api_version", "only V3 is supported")
    if len(ads.grpc_services) != 1:
        raise ConfigError(f"{ads_path}.grpc_services", "exactly one gRPC service is supported")
    service = ads.grpc_services[0]
    service_path = f"{ads_path}.grpc_services[0]"
    for index, header in enumerate(service.initial_metadata):
        if not header.key or header.key.lower() != header.key:
            raise ConfigError(f"{service_path}.initial_metadata[{index}].key", "must be a non-empty lower-case name")
    metadata = tuple((h.key, h.value or h.raw_value.decode("latin-1")) for h in service.initial_metadata)
    which = service.WhichOneof("target_specifier")
    tls = None
    if which == "envoy_grpc":
        cluster_name = service.envoy_grpc.cluster_name
        target, tls = _cluster_target(bootstrap, cluster_name, f"{service_path}.envoy_grpc.cluster_name")
    elif which == "google_grpc":
        cluster_name = ""
        target = service.google_grpc.target_uri
        if not target:
            raise ConfigError(f"{service_path}.google_grpc.target_uri", "must not be empty")
    else:
        raise ConfigError(service_path, "envoy_grpc or google_grpc is required")
    if dynamic.HasField("lds_config"):
        _check_source(dynamic.lds_config, f"{path}.lds_config")
    if dynamic.HasField("cds_config"):
        _check_source(dynamic.cds_config, f"{path}.cds_config")
    return AdsSettings(
        target=target, cluster=cluster_name, delta=ads.api_type == _DELTA_GRPC,
        subscribe_listeners=dynamic.HasField("lds_config"), subscribe_clusters=dynamic.HasField("cds_config"),
        node_on_first_message_only=ads.set_node_on_first_message_only, metadata=metadata, tls=tls,
    )


def _cluster_target(bootstrap: Any, name: str, path: str) -> tuple[str, AdsTls | None]:
    """host:port of the static cluster the ADS stream goes to, and its TLS settings."""
    for index, cluster in enumerate(bootstrap.static_resources.clusters):
        if cluster.name != name:
            continue
        where = f"static_resources.clusters[{index}]"
        endpoints = [e for locality in cluster.load_assignment.endpoints for e in locality.lb_endpoints]
        if not endpoints:
            raise ConfigError(f"{where}.load_assignment", f"the xDS cluster {name!r} needs an endpoint")
        address = endpoints[0].endpoint.address.socket_address
        host = address.address
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        tls = _tls(cluster, where) if cluster.HasField("transport_socket") else None
        return f"{host}:{address.port_value}", tls
    raise ConfigError(path, f"no static cluster named {name!r}")


def _tls(cluster: Any, path: str) -> AdsTls:
    from ._config_support import unpack_any

    where = f"{path}.transport_socket.typed_config"
    context = unpack_any(cluster.transport_socket.typed_config, where)
    if context.DESCRIPTOR.full_name != "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":
        raise ConfigError(where, "the xDS cluster's transport socket must be an UpstreamTlsContext")
    common = context.common_tls_context
    validation = common.validation_context
    if not validation.HasField("trusted_ca"):
        raise ConfigError(f"{where}.common_tls_context.validation_context.trusted_ca",
                          "the control plane's roots are required")
    trusted = read_data_source(validation.trusted_ca, f"{where}.common_tls_context.validation_context.trusted_ca")
    server_name = context.sni
    for matcher in validation.match_typed_subject_alt_names:
        if matcher.matcher.exact:
            server_name = server_name or matcher.matcher.exact
    chain = key = b""
    if common.tls_certificates:
        certificate = common.tls_certificates[0]
        cert_path = f"{where}.common_tls_context.tls_certificates[0]"
        chain = read_data_source(certificate.certificate_chain, f"{cert_path}.certificate_chain")
        key = read_data_source(certificate.private_key, f"{cert_path}.private_key")
    return AdsTls(trusted, server_name, chain, key)


__all__ = ["AdsSettings", "AdsTls", "ads_settings"]
