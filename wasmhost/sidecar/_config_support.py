"""Which Envoy v3 fields the sidecar implements; everything else is refused by path.

The table maps a message's full name to the field names this sidecar gives
Envoy's meaning to. ``check_supported`` walks a parsed message and raises
``ConfigError`` for the first set field outside the table, so an unsupported
feature is never silently ignored. Value-level rules (enum values, ranges) are
checked by the plan builders that turn messages into runtime objects.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.message import Message

from ._errors import ConfigError, join_path

ALL = frozenset({"*"})

_HEADER_MUTATIONS = frozenset(
    {"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"}
)

SUPPORTED: dict[str, frozenset[str]] = {
    # bootstrap
    "envoy.config.bootstrap.v3.Bootstrap": frozenset({"node", "static_resources", "admin", "dynamic_resources"}),
    # xDS: everything dynamic arrives over one ADS stream (RDS, EDS and ECDS from it too)
    "envoy.config.bootstrap.v3.Bootstrap.DynamicResources": frozenset({"lds_config", "cds_config", "ads_config"}),
    "envoy.config.core.v3.ApiConfigSource": frozenset(
        {"api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"}
    ),
    "envoy.config.core.v3.GrpcService": frozenset({"envoy_grpc", "google_grpc", "initial_metadata"}),
    "envoy.config.core.v3.GrpcService.EnvoyGrpc": frozenset({"cluster_name"}),
    "envoy.config.core.v3.GrpcService.GoogleGrpc": frozenset({"target_uri", "stat_prefix"}),
    "envoy.config.core.v3.ConfigSource": frozenset({"ads", "initial_fetch_timeout", "resource_api_version"}),
    "envoy.config.core.v3.AggregatedConfigSource": ALL,
    "envoy.extensions.filters.network.http_connection_manager.v3.Rds": frozenset({"config_source", "route_config_name"}),
    "envoy.config.core.v3.ExtensionConfigSource": frozenset(
        {"config_source", "default_config", "apply_default_config_without_warming", "type_urls"}
    ),
    "envoy.config.cluster.v3.Cluster.EdsClusterConfig": frozenset({"eds_config", "service_name"}),
    "envoy.config.bootstrap.v3.Bootstrap.StaticResources": frozenset({"listeners", "clusters"}),
    "envoy.config.bootstrap.v3.Admin": frozenset({"address", "access_log_path"}),
    "envoy.config.core.v3.Node": ALL,
    "envoy.config.core.v3.Locality": ALL,
    "envoy.config.core.v3.Metadata": ALL,
    "envoy.config.core.v3.Address": frozenset({"socket_address"}),
    "envoy.config.core.v3.SocketAddress": frozenset({"address", "port_value", "protocol"}),
    # listeners
    "envoy.config.listener.v3.Listener": frozenset(
        {
            "name",
            "address",
            "filter_chains",
            "stat_prefix",
            "per_connection_buffer_limit_bytes",
            "metadata",
            "traffic_direction",
            "enable_reuse_port",
            "bind_to_port",
            "listener_filters",
            "listener_filters_timeout",
            "continue_on_listener_filters_timeout",
        }
    ),
    "envoy.config.listener.v3.FilterChain": frozenset(
        {"filters", "name", "metadata", "transport_socket", "filter_chain_match"}
    ),
    "envoy.config.listener.v3.FilterChainMatch": ALL,  # fields checked by _filter_chains.parse_chain_match
    "envoy.config.listener.v3.ListenerFilter": frozenset({"name", "typed_config"}),
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector": frozenset(),
    "envoy.config.core.v3.TransportSocket": frozenset({"name", "typed_config"}),
    "envoy.config.cluster.v3.Cluster.TransportSocketMatch": frozenset({"name", "match", "transport_socket"}),
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer": frozenset(),
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": frozenset(
        {"common_tls_context", "require_client_certificate"}
    ),
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": frozenset({"common_tls_context", "sni"}),
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": frozenset(
        {"tls_params", "tls_certificates", "validation_context", "alpn_protocols"}
    ),
    "envoy.extensions.transport_sockets.tls.v3.TlsCertificate": frozenset({"certificate_chain", "private_key"}),
    # SDS: secrets served over ADS are inlined where they are referenced (``_dynamic``)
    "envoy.extensions.transport_sockets.tls.v3.Secret": frozenset({"name", "tls_certificate", "validation_context"}),
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": frozenset(
        {"trusted_ca", "match_typed_subject_alt_names"}
    ),
    "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": frozenset({"san_type", "matcher"}),
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters": frozenset(
        {"tls_minimum_protocol_version", "tls_maximum_protocol_version"}
    ),
    "envoy.config.listener.v3.Filter": frozenset({"name", "typed_config"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": frozenset(
        {
            "codec_type",
            "stat_prefix",
            "route_config",
            "rds",
            "http_filters",
            "access_log",
            "stream_idle_timeout",
            "request_timeout",
            "request_headers_timeout",
            "drain_timeout",
            "delayed_close_timeout",
            "common_http_protocol_options",
            "http_protocol_options",
            "server_name",
            "server_header_transformation",
            "use_remote_address",
            "xff_num_trusted_hops",
            "skip_xff_append",
            "via",
            "generate_request_id",
            "preserve_external_request_id",
            "always_set_request_id_in_response",
            "normalize_path",
            "merge_slashes",
            "max_request_headers_kb",
            "http2_protocol_options",
            "strip_any_host_port",
            "strip_matching_host_port",
            "upgrade_configs",
        }
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig": frozenset(
        {"upgrade_type", "enabled"}
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": frozenset(
        {"name", "typed_config", "is_optional", "config_discovery"}
    ),
    "envoy.config.core.v3.HttpProtocolOptions": frozenset(
        {"idle_timeout", "max_headers_count", "max_requests_per_connection", "headers_with_underscores_action"}
    ),
    "envoy.config.core.v3.Http1ProtocolOptions": frozenset(
        {"accept_http_10", "default_host_for_http_10", "enable_trailers"}
    ),
    "envoy.config.core.v3.Http2ProtocolOptions": frozenset(
        {"max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size", "allow_connect"}
    ),
    # access logs
    "envoy.config.accesslog.v3.AccessLog": frozenset({"name", "typed_config"}),
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": frozenset({"log_format"}),
    "envoy.extensions.access_loggers.stream.v3.StderrAccessLog": frozenset({"log_format"}),
    "envoy.extensions.access_loggers.file.v3.FileAccessLog": frozenset({"path", "log_format", "format", "json_format"}),
    "envoy.config.core.v3.SubstitutionFormatString": frozenset({"text_format_source", "json_format", "text_format"}),
    "envoy.config.core.v3.DataSource": frozenset({"filename", "inline_bytes", "inline_string", "environment_variable"}),
    # routes
    "envoy.config.route.v3.RouteConfiguration": frozenset(
        {
            "name",
            "virtual_hosts",
            "most_specific_header_mutations_wins",
            "validate_clusters",
            "ignore_port_in_host_matching",
            "max_direct_response_body_size_bytes",
            "typed_per_filter_config",
        }
    )
    | _HEADER_MUTATIONS,
    "envoy.config.route.v3.VirtualHost": frozenset(
        {
            "name",
            "domains",
            "routes",
            "retry_policy",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
            "per_request_buffer_limit_bytes",
            "metadata",
            "typed_per_filter_config",
        }
    )
    | _HEADER_MUTATIONS,
    "envoy.config.route.v3.Route": frozenset(
        {"name", "match", "route", "redirect", "direct_response", "metadata", "per_request_buffer_limit_bytes",
         "typed_per_filter_config"}
    )
    | _HEADER_MUTATIONS,
    "envoy.config.route.v3.FilterConfig": frozenset({"config", "is_optional", "disabled"}),
    "envoy.config.route.v3.RouteMatch": frozenset(
        {
            "prefix",
            "path",
            "safe_regex",
            "path_separated_prefix",
            "case_sensitive",
            "headers",
            "query_parameters",
            "runtime_fraction",
            "grpc",
        }
    ),
    "envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions": ALL,
    "envoy.type.matcher.v3.RegexMatcher": frozenset({"regex", "google_re2"}),
    "envoy.type.matcher.v3.RegexMatcher.GoogleRE2": frozenset(),
    "envoy.type.matcher.v3.RegexMatchAndSubstitute": frozenset({"pattern", "substitution"}),
    "envoy.type.matcher.v3.StringMatcher": frozenset({"exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"}),
    "envoy.config.route.v3.HeaderMatcher": ALL,
    "envoy.type.v3.Int64Range": ALL,
    "envoy.config.route.v3.QueryParameterMatcher": frozenset({"name", "string_match", "present_match"}),
    "envoy.config.core.v3.RuntimeFractionalPercent": frozenset({"default_value", "runtime_key"}),
    "envoy.type.v3.FractionalPercent": ALL,
    "envoy.config.route.v3.RouteAction": frozenset(
        {
            "cluster",
            "cluster_header",
            "weighted_clusters",
            "cluster_not_found_response_code",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "auto_host_rewrite",
            "timeout",
            "retry_policy",
            "request_mirror_policies",
            "hash_policy",
            "max_stream_duration",
        }
    ),
    # only "no limit" (what istiod writes for inbound routes); a real limit is refused by the route builder
    "envoy.config.route.v3.RouteAction.MaxStreamDuration": frozenset({"max_stream_duration"}),
    "envoy.config.route.v3.WeightedCluster": frozenset({"clusters", "total_weight"}),
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": frozenset({"name", "weight", "host_rewrite_literal"})
    | _HEADER_MUTATIONS,
    "envoy.config.route.v3.RetryPolicy": frozenset(
        {"retry_on", "num_retries", "per_try_timeout", "retriable_status_codes", "retry_back_off",
         "retry_host_predicate", "host_selection_retry_max_attempts"}
    ),
    "envoy.config.route.v3.RetryPolicy.RetryHostPredicate": frozenset({"name", "typed_config"}),
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate": ALL,
    "envoy.config.route.v3.RetryPolicy.RetryBackOff": frozenset({"base_interval", "max_interval"}),
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": frozenset(
        {"cluster", "runtime_fraction", "disable_shadow_host_suffix_append"}
    ),
    "envoy.config.route.v3.RouteAction.HashPolicy": frozenset(
        {"header", "cookie", "connection_properties", "query_parameter", "terminal"}
    ),
    "envoy.config.route.v3.RouteAction.HashPolicy.Header": frozenset({"header_name"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie": frozenset({"name"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties": frozenset({"source_ip"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter": frozenset({"name"}),
    "envoy.config.route.v3.RedirectAction": ALL,
    "envoy.config.route.v3.DirectResponseAction": frozenset({"status", "body"}),
    "envoy.config.core.v3.HeaderValueOption": frozenset({"header", "append", "append_action", "keep_empty_value"}),
    "envoy.config.core.v3.HeaderValue": frozenset({"key", "value", "raw_value"}),
    # clusters
    "envoy.config.cluster.v3.Cluster": frozenset(
        {
            "name",
            "alt_stat_name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "circuit_breakers",
            "outlier_detection",
            "typed_extension_protocol_options",
            "dns_refresh_rate",
            "dns_lookup_family",
            "max_requests_per_connection",
            "common_http_protocol_options",
            "ring_hash_lb_config",
            "least_request_lb_config",
            "common_lb_config",
            "per_connection_buffer_limit_bytes",
            "http2_protocol_options",
            "transport_socket",
            "transport_socket_matches",
            "metadata",
            "eds_cluster_config",
        }
    ),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig": frozenset({"healthy_panic_threshold"}),
    "envoy.config.cluster.v3.Cluster.RingHashLbConfig": frozenset({"minimum_ring_size", "maximum_ring_size"}),
    "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": frozenset({"choice_count"}),
    "envoy.config.endpoint.v3.ClusterLoadAssignment": frozenset({"cluster_name", "endpoints"}),
    # a locality's load_balancing_weight only matters with locality-weighted balancing, which is off (as in Envoy)
    "envoy.config.endpoint.v3.LocalityLbEndpoints": frozenset(
        {"lb_endpoints", "locality", "priority", "load_balancing_weight"}
    ),
    "envoy.config.endpoint.v3.LbEndpoint": frozenset({"endpoint", "load_balancing_weight", "health_status", "metadata"}),
    "envoy.config.endpoint.v3.Endpoint": frozenset({"address", "hostname"}),
    "envoy.config.cluster.v3.CircuitBreakers": frozenset({"thresholds"}),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": frozenset(
        {"priority", "max_connections", "max_pending_requests", "max_requests", "max_retries", "track_remaining"}
    ),
    "envoy.config.cluster.v3.OutlierDetection": frozenset(
        {
            "consecutive_5xx",
            "interval",
            "base_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "max_ejection_time",
        }
    ),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": frozenset(
        {"explicit_http_config", "common_http_protocol_options"}
    ),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": frozenset(
        {"http_protocol_options", "http2_protocol_options"}
    ),
    # built-in HTTP filters
    "envoy.extensions.filters.http.router.v3.Router": frozenset({"suppress_envoy_headers"}),
    "envoy.extensions.filters.http.fault.v3.HTTPFault": frozenset(
        {
            "delay",
            "abort",
            "upstream_cluster",
            "headers",
            "downstream_nodes",
            "max_active_faults",
            "delay_percent_runtime",
            "abort_percent_runtime",
            "delay_duration_runtime",
            "abort_http_status_runtime",
            "max_active_faults_runtime",
            "abort_grpc_status_runtime",
            "disable_downstream_cluster_stats",
        }
    ),
    "envoy.extensions.filters.common.fault.v3.FaultDelay": frozenset({"fixed_delay", "header_delay", "percentage"}),
    "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay": ALL,
    "envoy.extensions.filters.http.fault.v3.FaultAbort": frozenset(
        {"http_status", "grpc_status", "header_abort", "percentage"}
    ),
    "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort": ALL,
}

# Fields whose Any payload is validated elsewhere (by the HTTP filter factory registered for its type).
_VALIDATED_BY_OWNER = frozenset({
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.typed_config",
    "envoy.config.listener.v3.Filter.typed_config",
    "envoy.config.core.v3.ExtensionConfigSource.default_config",
})

_ALWAYS_ALLOWED_PREFIXES = ("google.protobuf.",)

_EXPLANATIONS: dict[str, str] = {
    "envoy.config.bootstrap.v3.Bootstrap.DynamicResources.lds_resources_locator": (
        "xDS-TP resource locators are not supported; use lds_config: {ads: {}}"
    ),
    "envoy.config.bootstrap.v3.Bootstrap.DynamicResources.cds_resources_locator": (
        "xDS-TP resource locators are not supported; use cds_config: {ads: {}}"
    ),
    "envoy.config.core.v3.ConfigSource.path_config_source": "only the ADS config source (ads: {}) is supported",
    "envoy.config.core.v3.ConfigSource.path": "only the ADS config source (ads: {}) is supported",
    "envoy.config.core.v3.ConfigSource.api_config_source": "only the ADS config source (ads: {}) is supported",
    "envoy.config.core.v3.ConfigSource.self": "only the ADS config source (ads: {}) is supported",
    "envoy.config.listener.v3.Filter.config_discovery": (
        "network filters cannot be discovered (ECDS is supported for HTTP filters)"
    ),
}


def check_supported(message: Message, path: str = "") -> None:
    """Raise ``ConfigError`` at the first field of ``message`` this sidecar does not implement."""
    desc = message.DESCRIPTOR
    name = desc.full_name
    if name.startswith(_ALWAYS_ALLOWED_PREFIXES) and name != "google.protobuf.Any":
        return
    if name == "google.protobuf.Any":
        _check_any(message, path)
        return
    allowed = SUPPORTED.get(name)
    if allowed is None:
        raise ConfigError(path, f"{name} is not supported by the wasmesh sidecar")
    if allowed is ALL:
        return
    for field, value in message.ListFields():
        field_path = join_path(path, field.name)
        if field.name not in allowed:
            explanation = _EXPLANATIONS.get(f"{name}.{field.name}", "field not supported by the wasmesh sidecar")
            raise ConfigError(field_path, explanation)
        if field.message_type is None or f"{name}.{field.name}" in _VALIDATED_BY_OWNER:
            continue
        if field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    check_supported(item, f"{field_path}[{key!r}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                check_supported(item, f"{field_path}[{index}]")
        else:
            check_supported(value, field_path)


def _check_any(message: Any, path: str) -> None:
    inner = unpack_any(message, path)
    check_supported(inner, path)


def unpack_any(message: Any, path: str) -> Any:
    """Unpack a ``google.protobuf.Any`` into its registered message type."""
    type_name = message.type_url.rsplit("/", 1)[-1]
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        raise ConfigError(path, f"unknown type {message.type_url}") from None
    from google.protobuf import message_factory

    inner = message_factory.GetMessageClass(desc)()
    if not message.Unpack(inner):
        raise ConfigError(path, f"cannot decode {message.type_url}")
    return inner
