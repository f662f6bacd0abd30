"""Turn a parsed ``Bootstrap`` into a ``Plan``, refusing what the sidecar cannot serve.

Field support is checked first (``_config_support``); then each part is built
with its value rules: unique names, IP listener addresses, one HTTP connection
manager per listener, a terminal router at the end of each filter chain, known
cluster references, and per-filter validation by the registered factories.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from ._access_log import access_log_filter
from ._config_support import check_supported, unpack_any
from ._errors import ConfigError
from ._filter_chains import (
    DEFAULT_INSPECT_TIMEOUT,
    ChainMatch,
    FilterChain,
    chain_fingerprint,
    check_listener_filters,
    parse_chain_match,
)
from ._filter_registry import FilterBuildContext, WorkerServices, lookup_http_filter, type_name_of
from ._format import DEFAULT_ACCESS_LOG_FORMAT, Formatter, JsonFormatter
from ._plan import (
    AccessLogPlan,
    AdminPlan,
    ClusterPlan,
    EndpointPlan,
    FilterEntry,
    HcmPlan,
    ListenerPlan,
    OutlierPlan,
    Plan,
    Thresholds,
)
from ._route_build import DEFAULT_BUFFER_LIMIT, build_route_table, read_data_source, seconds
from ._tls import build_socket_matches, build_tls
from ._xfcc import build_xfcc_entry

HCM_TYPE = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_DISCOVERY = {0: "STATIC", 1: "STRICT_DNS", 2: "LOGICAL_DNS"}
_LB = {0: "ROUND_ROBIN", 1: "LEAST_REQUEST", 2: "RING_HASH", 3: "RANDOM"}
_DNS_FAMILY = {0: "AUTO", 1: "V4_ONLY", 2: "V6_ONLY", 3: "V4_PREFERRED", 4: "ALL"}
_CODEC = {0: "AUTO", 1: "HTTP1", 2: "HTTP2"}
_SERVER_HEADER = {0: "OVERWRITE", 1: "APPEND_IF_ABSENT", 2: "PASS_THROUGH"}
_UNDERSCORES = {0: "ALLOW", 1: "REJECT_REQUEST", 2: "DROP_HEADER"}


def _ip(address: str, path: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(path, f"malformed IP address: {address!r}") from None
    return address


def _socket_address(address: Any, path: str, require_ip: bool) -> tuple[str, int]:
    if not address.HasField("socket_address"):
        raise ConfigError(path, "a socket_address is required")
    sock = address.socket_address
    where = f"{path}.socket_address"
    if sock.protocol != 0:
        raise ConfigError(f"{where}.protocol", "only TCP is supported")
    if not sock.address:
        raise ConfigError(f"{where}.address", "must not be empty")
    host = _ip(sock.address, f"{where}.address") if require_ip else sock.address
    if sock.WhichOneof("port_specifier") != "port_value":
        raise ConfigError(where, "port_value is required")
    return host, int(sock.port_value)


def _optional_seconds(message: Any, field: str, default: float | None) -> float | None:
    """A Duration field in seconds; 0 means disabled (None), unset means ``default``."""
    if not message.HasField(field):
        return default
    value = seconds(getattr(message, field))
    return value or None


def _build_cluster(config: Any, path: str) -> ClusterPlan:
    if not config.name:
        raise ConfigError(f"{path}.name", "cluster name must not be empty")
    discovery = _DISCOVERY.get(int(config.type)) if config.WhichOneof("cluster_discovery_type") != "cluster_type" \
        else None
    if discovery is None:
        raise ConfigError(f"{path}.type", "only STATIC, STRICT_DNS and LOGICAL_DNS clusters are supported")
    lb = _LB.get(int(config.lb_policy))
    if lb is None:
        raise ConfigError(f"{path}.lb_policy", "only ROUND_ROBIN, LEAST_REQUEST, RANDOM and RING_HASH are supported")
    endpoints: list[EndpointPlan] = []
    assignment = config.load_assignment
    for l_index, locality in enumerate(assignment.endpoints):
        l_path = f"{path}.load_assignment.endpoints[{l_index}]"
        if locality.priority != 0:
            raise ConfigError(f"{l_path}.priority", "only priority 0 is supported")
        for e_index, lb_endpoint in enumerate(locality.lb_endpoints):
            e_path = f"{l_path}.lb_endpoints[{e_index}]"
            if lb_endpoint.WhichOneof("host_identifier") != "endpoint":
                raise ConfigError(e_path, "an endpoint is required")
            host, port = _socket_address(lb_endpoint.endpoint.address, f"{e_path}.endpoint.address",
                                         require_ip=discovery == "STATIC")
            if port == 0:
                raise ConfigError(f"{e_path}.endpoint.address.socket_address.port_value", "must not be 0")
            weight = lb_endpoint.load_balancing_weight.value if lb_endpoint.HasField("load_balancing_weight") else 1
            if weight < 1:
                raise ConfigError(f"{e_path}.load_balancing_weight", "must be at least 1")
            endpoints.append(EndpointPlan(host, port, weight, lb_endpoint.endpoint.hostname,
                                          int(lb_endpoint.health_status) in (0, 1, 5),
                                          lb_endpoint.metadata if lb_endpoint.HasField("metadata") else None))
    if discovery == "LOGICAL_DNS" and len(endpoints) != 1:
        raise ConfigError(f"{path}.load_assignment", "LOGICAL_DNS clusters must have exactly one endpoint")
    thresholds = Thresholds()
    for t_index, threshold in enumerate(config.circuit_breakers.thresholds):
        if threshold.priority != 0:
            raise ConfigError(f"{path}.circuit_breakers.thresholds[{t_index}].priority", "only DEFAULT is supported")

        def limit(field: str, default: int, message: Any = threshold) -> int:
            return getattr(message, field).value if message.HasField(field) else default

        thresholds = Thresholds(limit("max_connections", 1024), limit("max_pending_requests", 1024),
                                limit("max_requests", 1024), limit("max_retries", 3))
    outlier = None
    if config.HasField("outlier_detection"):
        od = config.outlier_detection

        def value(field: str, default: int, message: Any = od) -> int:
            return getattr(message, field).value if message.HasField(field) else default

        outlier = OutlierPlan(
            consecutive_5xx=value("consecutive_5xx", 5),
            consecutive_gateway_failure=value("consecutive_gateway_failure", 5),
            enforcing_consecutive_5xx=value("enforcing_consecutive_5xx", 100),
            enforcing_consecutive_gateway_failure=value("enforcing_consecutive_gateway_failure", 0),
            interval=seconds(od.interval) if od.HasField("interval") else 10.0,
            base_ejection_time=seconds(od.base_ejection_time) if od.HasField("base_ejection_time") else 30.0,
            max_ejection_time=seconds(od.max_ejection_time) if od.HasField("max_ejection_time") else 300.0,
            max_ejection_percent=value("max_ejection_percent", 10),
        )
        if outlier.interval <= 0:
            raise ConfigError(f"{path}.outlier_detection.interval", "must be greater than zero")
    max_per_conn = config.max_requests_per_connection.value if config.HasField("max_requests_per_connection") else 0
    http2: tuple[int, int, int] | None = None
    if config.HasField("http2_protocol_options"):
        http2 = _upstream_http2_options(config.http2_protocol_options, f"{path}.http2_protocol_options")
    idle_timeout: float | None = 3600.0
    http1_trailers = False
    common = None
    if config.HasField("common_http_protocol_options"):
        common = config.common_http_protocol_options
    for key, options in config.typed_extension_protocol_options.items():
        where = f"{path}.typed_extension_protocol_options[{key!r}]"
        message = unpack_any(options, where)
        if message.DESCRIPTOR.full_name != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
            raise ConfigError(where, f"unsupported protocol options type {message.DESCRIPTOR.full_name}")
        if message.HasField("common_http_protocol_options"):
            common = message.common_http_protocol_options
        if message.HasField("explicit_http_config"):
            explicit = message.explicit_http_config
            kind = explicit.WhichOneof("protocol_config")
            if kind == "http2_protocol_options":
                http2 = _upstream_http2_options(explicit.http2_protocol_options,
                                                f"{where}.explicit_http_config.http2_protocol_options")
            elif kind == "http_protocol_options":
                http1_trailers = explicit.http_protocol_options.enable_trailers
            else:
                raise ConfigError(f"{where}.explicit_http_config", "only HTTP/1 and HTTP/2 upstreams are supported")
    if common is not None:
        for field in ("max_headers_count", "headers_with_underscores_action"):
            if common.HasField(field) if field == "max_headers_count" else getattr(common, field):
                raise ConfigError(f"{path}.common_http_protocol_options.{field}",
                                  "not supported for upstream connections")
        idle_timeout = _optional_seconds(common, "idle_timeout", 3600.0)
        if common.HasField("max_requests_per_connection"):
            max_per_conn = common.max_requests_per_connection.value
    ring_min, ring_max = 1024, 8 * 1024 * 1024
    if config.HasField("ring_hash_lb_config"):
        ring = config.ring_hash_lb_config
        ring_min = ring.minimum_ring_size.value if ring.HasField("minimum_ring_size") else ring_min
        ring_max = ring.maximum_ring_size.value if ring.HasField("maximum_ring_size") else ring_max
        if ring_min > ring_max:
            raise ConfigError(f"{path}.ring_hash_lb_config", "minimum_ring_size exceeds maximum_ring_size")
    choice_count = 2
    if config.HasField("least_request_lb_config") and config.least_request_lb_config.HasField("choice_count"):
        choice_count = config.least_request_lb_config.choice_count.value
        if choice_count < 2:
            raise ConfigError(f"{path}.least_request_lb_config.choice_count", "must be at least 2")
    panic = 50.0
    if config.common_lb_config.HasField("healthy_panic_threshold"):
        panic = config.common_lb_config.healthy_panic_threshold.value
    return ClusterPlan(
        name=config.name,
        stat_name=config.alt_stat_name or config.name,
        discovery=discovery,
        endpoints=tuple(endpoints),
        lb_policy=lb,
        connect_timeout=seconds(config.connect_timeout) if config.HasField("connect_timeout") else 5.0,
        thresholds=thresholds,
        outlier=outlier,
        max_requests_per_connection=max_per_conn,
        idle_timeout=idle_timeout,
        dns_refresh_rate=seconds(config.dns_refresh_rate) if config.HasField("dns_refresh_rate") else 5.0,
        dns_family=_DNS_FAMILY.get(int(config.dns_lookup_family), "AUTO"),
        ring_min_size=ring_min,
        ring_max_size=ring_max,
        choice_count=choice_count,
        panic_threshold=panic,
        buffer_limit=config.per_connection_buffer_limit_bytes.value
        if config.HasField("per_connection_buffer_limit_bytes") else DEFAULT_BUFFER_LIMIT,
        http2=http2 is not None,
        http1_trailers=http1_trailers,
        tls=build_tls(config.transport_socket, f"{path}.transport_socket", server=False, http2=http2 is not None)
        if config.HasField("transport_socket") else None,
        tls_matches=build_socket_matches(config.transport_socket_matches, f"{path}.transport_socket_matches",
                                         http2 is not None),
        h2_max_concurrent_streams=http2[0] if http2 else _H2_DEFAULTS[0],
        h2_initial_stream_window=http2[1] if http2 else _H2_DEFAULTS[1],
        h2_initial_connection_window=http2[2] if http2 else _H2_DEFAULTS[2],
        metadata=config.metadata if config.HasField("metadata") else None,
        fingerprint=config.SerializeToString(deterministic=True),
    )


def _access_logs(logs: Any, path: str) -> tuple[AccessLogPlan, ...]:
    plans = []
    for index, log in enumerate(logs):
        where = f"{path}[{index}]"
        if not log.HasField("typed_config"):
            raise ConfigError(f"{where}.typed_config", "an access logger typed_config is required")
        message = unpack_any(log.typed_config, f"{where}.typed_config")
        kind = message.DESCRIPTOR.full_name
        cfg_path = f"{where}.typed_config"
        text = DEFAULT_ACCESS_LOG_FORMAT
        json_template: dict[str, Any] | None = None
        if kind.endswith("StdoutAccessLog"):
            target = "stdout"
        elif kind.endswith("StderrAccessLog"):
            target = "stderr"
        elif kind.endswith("FileAccessLog"):
            if not message.path:
                raise ConfigError(f"{cfg_path}.path", "must not be empty")
            target = message.path
            if message.format:
                text = message.format
            if message.HasField("json_format"):
                json_template = json_format.MessageToDict(message.json_format)
        else:
            raise ConfigError(cfg_path, f"unsupported access logger {kind}")
        if message.HasField("log_format"):
            fmt = message.log_format
            fmt_path = f"{cfg_path}.log_format"
            which = fmt.WhichOneof("format")
            if which == "text_format_source":
                text = read_data_source(fmt.text_format_source, f"{fmt_path}.text_format_source").decode()
            elif which == "text_format":
                text = fmt.text_format
            elif which == "json_format":
                json_template = json_format.MessageToDict(fmt.json_format)
        formatter: Any
        if json_template is not None:
            formatter = JsonFormatter(json_template, f"{cfg_path}.log_format.json_format")
        else:
            formatter = Formatter(text, f"{cfg_path}.log_format")
        plans.append(AccessLogPlan(target, formatter, access_log_filter(log, where)))
    return tuple(plans)


def _hook_flags(create: Any) -> tuple[bool, bool]:
    """Whether filters from ``create`` override ``on_stream_complete`` / ``on_log`` (skipped when not)."""
    from ._filter_api import HttpFilter

    cls = getattr(create, "filter_class", None)
    if not isinstance(cls, type) or not issubclass(cls, HttpFilter):
        return True, True
    return (cls.on_stream_complete is not HttpFilter.on_stream_complete, cls.on_log is not HttpFilter.on_log)


def _build_filters(
    hcm: Any, path: str, context_base: dict[str, Any], discovery: bool = False
) -> tuple[FilterEntry, ...]:
    """The filter chain; with ``discovery`` (ADS configured), a filter still discovering its
    config is one whose config was fetched and refused: it fails requests, as in Envoy."""
    entries: list[FilterEntry] = []
    configured = list(enumerate(hcm.http_filters))
    if not configured:
        raise ConfigError(f"{path}.http_filters", "at least the envoy.filters.http.router filter is required")
    for index, http_filter in configured:
        where = f"{path}.http_filters[{index}]"
        if not http_filter.name:
            raise ConfigError(f"{where}.name", "filter name must not be empty")
        if http_filter.HasField("config_discovery") and discovery:
            from ._missing_config import missing_config_factory

            entries.append(FilterEntry(http_filter.name, "missing filter config", missing_config_factory, False,
                                       *_hook_flags(missing_config_factory)))
            continue
        if http_filter.HasField("config_discovery"):
            raise ConfigError(f"{where}.config_discovery", "extension config discovery needs the ADS config source "
                                                           "(config_source: {ads: {}}) and "
                                                           "dynamic_resources.ads_config in the bootstrap")
        if not http_filter.HasField("typed_config"):
            raise ConfigError(f"{where}.typed_config", "typed_config is required")
        type_url = http_filter.typed_config.type_url
        found = lookup_http_filter(type_url)
        if found is None:
            if http_filter.is_optional:
                continue
            raise ConfigError(where, f"unsupported filter type {type_name_of(type_url)} (filter {http_filter.name!r})")
        config_factory, terminal = found
        cfg_path = f"{where}.typed_config"
        message = unpack_any(http_filter.typed_config, cfg_path)
        context = FilterBuildContext(path=cfg_path, filter_name=http_filter.name, **context_base)
        try:
            create = config_factory(message, context)
        except ConfigError as err:
            raise err.under(cfg_path) from None
        entries.append(FilterEntry(http_filter.name, type_name_of(type_url), create, terminal,
                                   *_hook_flags(create)))
    for position, entry in enumerate(entries):
        last = position == len(entries) - 1
        if entry.terminal and not last:
            raise ConfigError(f"{path}.http_filters",
                              f"terminal filter {entry.name!r} of type {entry.type_name} must be the last filter")
        if last and not entry.terminal:
            raise ConfigError(f"{path}.http_filters",
                              f"non-terminal filter {entry.name!r} of type {entry.type_name} is the last filter")
    return tuple(entries)


#: Envoy's http2_protocol_options defaults (max_concurrent_streams, initial stream and connection windows)
_H2_DEFAULTS = (1024, 16 * 1024 * 1024, 24 * 1024 * 1024)


def _http2_options(options: Any) -> tuple[int, int, int]:
    """(max_concurrent_streams, initial_stream_window_size, initial_connection_window_size), Envoy's defaults."""
    if options is None:
        return _H2_DEFAULTS

    def value(field: str, default: int) -> int:
        return getattr(options, field).value if options.HasField(field) else default

    return (value("max_concurrent_streams", _H2_DEFAULTS[0]), value("initial_stream_window_size", _H2_DEFAULTS[1]),
            value("initial_connection_window_size", _H2_DEFAULTS[2]))


def _upstream_http2_options(options: Any, path: str) -> tuple[int, int, int]:
    """A cluster's HTTP/2 options; extended CONNECT is only served to clients, never sent upstream."""
    if options.allow_connect:
        raise ConfigError(f"{path}.allow_connect", "extended CONNECT towards upstreams is not supported")
    return _http2_options(options)


def _upgrade_types(configs: Any, path: str) -> frozenset[bytes]:
    """HTTP/1.1 upgrades the connection manager lets through (Envoy turns them into byte tunnels)."""
    types: set[bytes] = set()
    for index, config in enumerate(configs):
        kind = config.upgrade_type.strip().lower()
        if not kind:
            raise ConfigError(f"{path}[{index}].upgrade_type", "must name the upgrade (e.g. websocket)")
        if kind == "connect":
            raise ConfigError(f"{path}[{index}].upgrade_type", "CONNECT tunnels are not supported by this sidecar")
        if not config.HasField("enabled") or config.enabled.value:
            types.add(kind.encode())
    return frozenset(types)


def _build_hcm(hcm: Any, path: str, clusters: frozenset[str], context_base: dict[str, Any],
               discovery: bool = False) -> HcmPlan:
    if not hcm.stat_prefix:
        raise ConfigError(f"{path}.stat_prefix", "must not be empty")
    codec = _CODEC.get(int(hcm.codec_type))
    if codec is None:
        raise ConfigError(f"{path}.codec_type", "only AUTO, HTTP1 and HTTP2 are supported")
    if hcm.WhichOneof("route_specifier") == "rds":
        raise ConfigError(f"{path}.rds", "RDS needs the ADS config source (config_source: {ads: {}}) and "
                                         "dynamic_resources.ads_config in the bootstrap")
    if hcm.WhichOneof("route_specifier") != "route_config":
        raise ConfigError(path, "an inline route_config (or rds) is required")
    table = build_route_table(hcm.route_config, f"{path}.route_config", clusters)
    filters = _build_filters(hcm, path, {**context_base, "stat_prefix": hcm.stat_prefix}, discovery)
    if hcm.HasField("tracing"):  # Envoy's HCM tracing runs as the first filter of the chain
        from ._tracing import build_tracing_entry

        tracing_context = FilterBuildContext(path=f"{path}.tracing", filter_name="envoy.tracing",
                                             **{**context_base, "stat_prefix": hcm.stat_prefix})
        filters = (build_tracing_entry(hcm.tracing, f"{path}.tracing", tracing_context), *filters)
    if hcm.forward_client_cert_details or hcm.HasField("set_current_client_cert_details"):
        filters = (build_xfcc_entry(hcm, path), *filters)
    common = hcm.common_http_protocol_options
    http1 = hcm.http_protocol_options
    h2_options = _http2_options(hcm.http2_protocol_options if hcm.HasField("http2_protocol_options") else None)
    strip = ""
    if hcm.WhichOneof("strip_port_mode") == "strip_any_host_port" and hcm.strip_any_host_port:
        strip = "any"
    elif hcm.strip_matching_host_port:
        strip = "matching"
    return HcmPlan(
        stat_prefix=hcm.stat_prefix,
        codec=codec,
        route_table=table,
        filters=filters,
        access_logs=_access_logs(hcm.access_log, f"{path}.access_log"),
        stream_idle_timeout=_optional_seconds(hcm, "stream_idle_timeout", 300.0),
        request_timeout=_optional_seconds(hcm, "request_timeout", None),
        request_headers_timeout=_optional_seconds(hcm, "request_headers_timeout", None),
        idle_timeout=_optional_seconds(common, "idle_timeout", 3600.0),
        drain_timeout=_optional_seconds(hcm, "drain_timeout", 5.0) or 0.0,
        delayed_close_timeout=_optional_seconds(hcm, "delayed_close_timeout", 1.0) or 0.0,
        max_requests_per_connection=common.max_requests_per_connection.value
        if common.HasField("max_requests_per_connection") else 0,
        max_headers_count=common.max_headers_count.value if common.HasField("max_headers_count") else 100,
        max_request_headers_kb=hcm.max_request_headers_kb.value if hcm.HasField("max_request_headers_kb") else 60,
        headers_with_underscores=_UNDERSCORES[int(common.headers_with_underscores_action)],
        accept_http_10=http1.accept_http_10,
        default_host_for_http_10=http1.default_host_for_http_10.encode(),
        http1_trailers=http1.enable_trailers,
        upgrade_types=_upgrade_types(hcm.upgrade_configs, f"{path}.upgrade_configs"),
        server_name=(hcm.server_name or "envoy").encode(),
        server_header=_SERVER_HEADER[int(hcm.server_header_transformation)],
        use_remote_address=hcm.use_remote_address.value,
        xff_num_trusted_hops=hcm.xff_num_trusted_hops,
        skip_xff_append=hcm.skip_xff_append,
        via=hcm.via.encode(),
        generate_request_id=hcm.generate_request_id.value if hcm.HasField("generate_request_id") else True,
        preserve_external_request_id=hcm.preserve_external_request_id,
        always_set_request_id_in_response=hcm.always_set_request_id_in_response,
        normalize_path=hcm.normalize_path.value,
        merge_slashes=hcm.merge_slashes,
        strip_port=strip,
        h2_max_concurrent_streams=h2_options[0],
        h2_initial_stream_window=h2_options[1],
        h2_initial_connection_window=h2_options[2],
        h2_allow_connect=hcm.http2_protocol_options.allow_connect,
    )


def build_plan(
    bootstrap: Any,
    version: int = 1,
    source: str = "",
    services: WorkerServices | None = None,
) -> Plan:
    """Validate ``bootstrap`` and build its plan; raise ``ConfigError`` naming the first bad field.

    A refused bootstrap releases what its filters had already acquired (VMs, plugin bindings).
    """
    cleanups: list[Callable[[], None]] = []
    try:
        return _build_plan(bootstrap, version, source, services, cleanups)
    except BaseException:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - releasing must not hide the refusal
                pass
        raise


def build_cluster(config: Any, path: str) -> ClusterPlan:
    """Validate and build one cluster (``path`` prefixes error paths)."""
    return _build_cluster(config, path)


def _build_plan(bootstrap: Any, version: int, source: str, services: WorkerServices | None,
                cleanups: list[Callable[[], None]]) -> Plan:
    check_supported(bootstrap)
    if bootstrap.HasField("dynamic_resources"):
        from ._xds_settings import ads_settings

        ads_settings(bootstrap)
    admin = None
    if bootstrap.HasField("admin"):
        if bootstrap.admin.HasField("address"):
            host, port = _socket_address(bootstrap.admin.address, "admin.address", require_ip=True)
            admin = AdminPlan(host, port, bootstrap.admin.access_log_path)
    clusters: dict[str, ClusterPlan] = {}
    for index, cluster in enumerate(bootstrap.static_resources.clusters):
        path = f"static_resources.clusters[{index}]"
        plan = _build_cluster(cluster, path)
        if plan.name in clusters:
            raise ConfigError(f"{path}.name", f"duplicate cluster name {plan.name!r}")
        clusters[plan.name] = plan
    names = frozenset(clusters)
    listeners: list[ListenerPlan] = []
    seen_names: set[str] = set()
    seen_addresses: set[tuple[str, int]] = set()
    for index, listener in enumerate(bootstrap.static_resources.listeners):
        path = f"static_resources.listeners[{index}]"
        name = listener.name or f"listener_{index}"
        if name in seen_names:
            raise ConfigError(f"{path}.name", f"duplicate listener name {name!r}")
        seen_names.add(name)
        host, port = _socket_address(listener.address, f"{path}.address", require_ip=True)
        bind = listener.bind_to_port.value if listener.HasField("bind_to_port") else True
        if bind and port != 0 and (host, port) in seen_addresses:
            raise ConfigError(f"{path}.address", f"another listener already uses {host}:{port}")
        if bind:
            seen_addresses.add((host, port))
        if not listener.filter_chains:
            raise ConfigError(f"{path}.filter_chains", "at least one filter chain is required")
        context_base = {
            "node": bootstrap.node,
            "cluster_names": names,
            "listener_name": name,
            "listener_direction": int(listener.traffic_direction),
            "listener_metadata": listener.metadata if listener.HasField("metadata") else None,
            "services": services,
            "on_retire": cleanups.append,
            "cluster_plan": clusters.get,
        }
        built = [_build_chain(chain, f"{path}.filter_chains[{c_index}]", names, context_base,
                              bootstrap.HasField("dynamic_resources"))
                 for c_index, chain in enumerate(listener.filter_chains)]
        hcm_plan, tls = built[0]
        chain = listener.filter_chains[0]
        stat_prefix = listener.stat_prefix  # empty: named after the bound address (known once bound)
        listeners.append(
            _with_chains(ListenerPlan(
                name=name,
                address=host,
                port=port,
                stat_prefix=stat_prefix,
                hcm=hcm_plan,
                buffer_limit=listener.per_connection_buffer_limit_bytes.value
                if listener.HasField("per_connection_buffer_limit_bytes") else DEFAULT_BUFFER_LIMIT,
                direction=int(listener.traffic_direction),
                metadata=listener.metadata if listener.HasField("metadata") else None,
                reuse_port=listener.enable_reuse_port.value if listener.HasField("enable_reuse_port") else True,
                tls=tls,
                tls_fingerprint=chain.transport_socket.SerializeToString(deterministic=True)
                if chain.HasField("transport_socket") else b"",
                bind=bind,
            ), listener, built, path)
        )
    return Plan(
        version=version,
        source=source,
        bootstrap=bootstrap,
        node=bootstrap.node,
        admin=admin,
        listeners=tuple(listeners),
        clusters=clusters,
        cleanups=cleanups,
    )


def _build_chain(chain: Any, chain_path: str, names: frozenset[str], context_base: dict[str, Any],
                 dynamic: bool) -> tuple[HcmPlan, Any]:
    """One filter chain: its HTTP connection manager plan and its TLS plan (None for plaintext)."""
    if len(chain.filters) != 1:
        raise ConfigError(f"{chain_path}.filters", "exactly one network filter (the HTTP connection manager) "
                                                   "is supported")
    network_filter = chain.filters[0]
    filter_path = f"{chain_path}.filters[0]"
    if type_name_of(network_filter.typed_config.type_url) != HCM_TYPE:
        raise ConfigError(f"{filter_path}.typed_config",
                          f"unsupported network filter type {type_name_of(network_filter.typed_config.type_url)}")
    hcm = unpack_any(network_filter.typed_config, f"{filter_path}.typed_config")
    check_supported(hcm, f"{filter_path}.typed_config")
    hcm_plan = _build_hcm(hcm, f"{filter_path}.typed_config", names, context_base, dynamic)
    tls = None
    if chain.HasField("transport_socket"):
        tls = build_tls(chain.transport_socket, f"{chain_path}.transport_socket", server=True)
    return hcm_plan, tls


def _with_chains(plan: ListenerPlan, listener: Any, built: list[tuple[HcmPlan, Any]], path: str) -> ListenerPlan:
    """A listener whose chain is chosen per connection (several chains, a match or listener filters)."""
    single = len(listener.filter_chains) == 1 and not listener.filter_chains[0].HasField("filter_chain_match")
    check_listener_filters(listener.listener_filters, f"{path}.listener_filters")
    if single and not listener.listener_filters:
        return plan
    chains = []
    seen: dict[ChainMatch, int] = {}
    for index, (chain, (hcm_plan, tls)) in enumerate(zip(listener.filter_chains, built, strict=True)):
        at = f"{path}.filter_chains[{index}]"
        match = parse_chain_match(chain.filter_chain_match, f"{at}.filter_chain_match")
        if match in seen:
            raise ConfigError(f"{at}.filter_chain_match",
                              f"multiple filter chains with the same matching rules (also filter_chains[{seen[match]}])")
        seen[match] = index
        chains.append(FilterChain(chain.name, match, dataclasses.replace(plan, hcm=hcm_plan, tls=tls)))
    timeout = seconds(listener.listener_filters_timeout) if listener.HasField("listener_filters_timeout") \
        else DEFAULT_INSPECT_TIMEOUT
    return dataclasses.replace(plan, tls=None, chains=tuple(chains), inspect_timeout=timeout,
                               tls_fingerprint=chain_fingerprint(listener.filter_chains))


def bootstrap_json(bootstrap: Any) -> dict[str, Any]:
    """The bootstrap as a JSON-ready dict with proto field names."""
    result: dict[str, Any] = json.loads(json_format.MessageToJson(bootstrap, preserving_proto_field_name=True))
    return result
