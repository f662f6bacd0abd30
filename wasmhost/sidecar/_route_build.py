"""Compile an ``envoy.config.route.v3.RouteConfiguration`` into a ``RouteTable``.

Every value-level rule Envoy enforces at load for the supported fields is checked
here, with the field path in the error (duplicate domains, unknown clusters when
``validate_clusters`` is on, bad regexes, conflicting rewrites...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ._config_support import unpack_any
from ._errors import ConfigError
from ._filter_registry import lookup_route_config
from ._header_ops import EMPTY_OPS, HeaderOps, compile_header_ops
from ._headers import HeaderMap
from ._routes import (
    GRPC_RETRY_ON,
    RETRY_ON_NAMES,
    DirectResponse,
    ExtraMatch,
    ForwardAction,
    HashPolicy,
    MirrorPolicy,
    PathMatch,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteTable,
    VirtualHost,
    WeightedClusterEntry,
)

DEFAULT_ROUTE_TIMEOUT = 15.0
DEFAULT_BUFFER_LIMIT = 1024 * 1024
_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_CLUSTER_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}
_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


def seconds(duration: Any) -> float:
    """A protobuf Duration in seconds."""
    return float(duration.seconds) + duration.nanos / 1e9


def fraction(percent: Any) -> tuple[int, int]:
    """``FractionalPercent`` as (numerator, denominator)."""
    return int(percent.numerator), _DENOMINATORS.get(int(percent.denominator), 100)


def compile_regex(pattern: str, path: str) -> re.Pattern[bytes]:
    """Compile an RE2-style pattern with Python's ``re`` (the common subset behaves the same)."""
    try:
        return re.compile(pattern.encode())
    except re.error as err:
        raise ConfigError(path, f"invalid regex {pattern!r}: {err}") from None


def _substitution(text: str) -> bytes:
    # RE2 uses \0 for the whole match; Python needs \g<0>.
    return re.sub(r"\\0(?!\d)", r"\\g<0>", text).encode()


def compile_string_matcher(matcher: Any, path: str) -> Callable[[bytes], bool]:
    """``envoy.type.matcher.v3.StringMatcher`` as a predicate on bytes."""
    kind = matcher.WhichOneof("match_pattern")
    ignore_case = matcher.ignore_case
    if kind is None:
        raise ConfigError(path, "string matcher needs one of exact, prefix, suffix, safe_regex, contains")
    if kind == "safe_regex":
        if ignore_case:
            raise ConfigError(f"{path}.ignore_case", "ignore_case has no effect on safe_regex")
        regex = compile_regex(matcher.safe_regex.regex, f"{path}.safe_regex.regex")
        return lambda value: regex.fullmatch(value) is not None
    if kind == "custom":
        raise ConfigError(f"{path}.custom", "custom string matchers are not supported")
    expected = getattr(matcher, kind).encode()
    if kind in ("prefix", "suffix", "contains") and not expected:
        raise ConfigError(f"{path}.{kind}", "must not be empty")
    if ignore_case:
        expected = expected.lower()
        if kind == "exact":
            return lambda value: value.lower() == expected
        if kind == "prefix":
            return lambda value: value.lower().startswith(expected)
        if kind == "suffix":
            return lambda value: value.lower().endswith(expected)
        return lambda value: expected in value.lower()
    if kind == "exact":
        return lambda value: value == expected
    if kind == "prefix":
        return lambda value: value.startswith(expected)
    if kind == "suffix":
        return lambda value: value.endswith(expected)
    return lambda value: expected in value


def compile_header_matcher(matcher: Any, path: str) -> Callable[[HeaderMap], bool]:
    """``envoy.config.route.v3.HeaderMatcher`` with Envoy's missing-header and invert rules."""
    if not matcher.name:
        raise ConfigError(f"{path}.name", "header name must not be empty")
    name = matcher.name.lower().encode()
    invert = matcher.invert_match
    missing_as_empty = matcher.treat_missing_header_as_empty
    kind = matcher.WhichOneof("header_match_specifier")
    present_expected = True
    check: Callable[[bytes], bool]
    if kind is None or kind == "present_match":
        present_expected = matcher.present_match if kind is not None else True
        is_present = True

        def check(value: bytes) -> bool:
            return present_expected

    else:
        is_present = False
        if kind == "exact_match":
            expected = matcher.exact_match.encode()
            check = (lambda value: True) if not expected else (lambda value: value == expected)
        elif kind == "safe_regex_match":
            regex = compile_regex(matcher.safe_regex_match.regex, f"{path}.safe_regex_match.regex")
            check = lambda value: regex.fullmatch(value) is not None  # noqa: E731
        elif kind == "range_match":
            start, end = matcher.range_match.start, matcher.range_match.end
            if start >= end:
                raise ConfigError(f"{path}.range_match", "start must be less than end")

            def check(value: bytes) -> bool:
                try:
                    number = int(value)
                except ValueError:
                    return False
                return start <= number < end

        elif kind in ("prefix_match", "suffix_match", "contains_match"):
            expected = getattr(matcher, kind).encode()
            if not expected:
                raise ConfigError(f"{path}.{kind}", "must not be empty")
            if kind == "prefix_match":
                check = lambda value: value.startswith(expected)  # noqa: E731
            elif kind == "suffix_match":
                check = lambda value: value.endswith(expected)  # noqa: E731
            else:
                check = lambda value: expected in value  # noqa: E731
        else:
            check = compile_string_matcher(matcher.string_match, f"{path}.string_match")

    def match(headers: HeaderMap) -> bool:
        value = headers.joined(name)
        if value is None:
            if not missing_as_empty:
                if invert:
                    return is_present and present_expected
                return is_present and not present_expected
            value = b""
        return check(value) != invert

    return match


def _query_matcher(matcher: Any, path: str) -> ExtraMatch:
    if not matcher.name:
        raise ConfigError(f"{path}.name", "query parameter name must not be empty")
    name = matcher.name.encode()
    kind = matcher.WhichOneof("query_parameter_match_specifier")
    check = compile_string_matcher(matcher.string_match, f"{path}.string_match") if kind == "string_match" else None

    def match(headers: HeaderMap, query: bytes, random_value: int) -> bool:
        value = first_query_value(query, name)
        if value is None:
            return False
        return check is None or check(value)

    return match


def first_query_value(query: bytes, name: bytes) -> bytes | None:
    """The percent-decoded first value of ``name`` in a raw query string."""
    from urllib.parse import unquote_to_bytes

    if not query:
        return None
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if unquote_to_bytes(key) == name:
            return unquote_to_bytes(value)
    return None


def _path_match(match: Any, path: str) -> tuple[PathMatch, str, bytes, bool]:
    kind = match.WhichOneof("path_specifier")
    case_sensitive = match.case_sensitive.value if match.HasField("case_sensitive") else True
    if kind is None:
        raise ConfigError(path, "route match needs one of prefix, path, safe_regex, path_separated_prefix")
    if kind == "safe_regex":
        regex = compile_regex(match.safe_regex.regex, f"{path}.safe_regex.regex")
        return (lambda p, po: regex.fullmatch(po) is not None), kind, b"", True
    if kind not in ("prefix", "path", "path_separated_prefix"):
        raise ConfigError(f"{path}.{kind}", "this path matcher is not supported")
    value = getattr(match, kind).encode()
    if kind == "path_separated_prefix":
        if not value.startswith(b"/") or value.endswith(b"/") or b"?" in value or b"#" in value:
            raise ConfigError(f"{path}.path_separated_prefix",
                              "must start with '/', must not end with '/' and must not contain '?' or '#'")
    if kind == "path" and not value:
        raise ConfigError(f"{path}.path", "must not be empty")
    n = len(value)
    lowered = value.lower()
    fn: PathMatch
    if kind == "prefix":
        if case_sensitive:
            fn = lambda p, po: p.startswith(value)  # noqa: E731
        else:
            fn = lambda p, po: p[:n].lower() == lowered  # noqa: E731
    elif kind == "path":
        if case_sensitive:
            fn = lambda p, po: po == value  # noqa: E731
        else:
            fn = lambda p, po: po.lower() == lowered  # noqa: E731
    else:
        slash = value + b"/"
        if case_sensitive:
            fn = lambda p, po: po == value or po.startswith(slash)  # noqa: E731
        else:
            lowered_slash = lowered + b"/"
            fn = lambda p, po: po.lower() == lowered or po.lower().startswith(lowered_slash)  # noqa: E731
    return fn, kind, value, case_sensitive


def _headers_only(matcher: Callable[[HeaderMap], bool]) -> ExtraMatch:
    def match(headers: HeaderMap, query: bytes, random_value: int) -> bool:
        return matcher(headers)

    return match


def _extra_matches(match: Any, path: str) -> tuple[ExtraMatch, ...]:
    extras: list[ExtraMatch] = []
    for index, header in enumerate(match.headers):
        extras.append(_headers_only(compile_header_matcher(header, f"{path}.headers[{index}]")))
    for index, query in enumerate(match.query_parameters):
        extras.append(_query_matcher(query, f"{path}.query_parameters[{index}]"))
    if match.HasField("runtime_fraction"):
        numerator, denominator = fraction(match.runtime_fraction.default_value)
        extras.append(lambda h, q, r: (r % denominator) < numerator)
    if match.HasField("grpc"):
        extras.append(lambda h, q, r: (h.get(b"content-type") or b"").startswith(b"application/grpc"))
    return tuple(extras)


_PREVIOUS_HOSTS = ("envoy.retry_host_predicates.previous_hosts",
                   "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")


def _retry_policy(policy: Any, path: str) -> RetryPolicy:
    bits = 0
    grpc_statuses: set[int] = set()
    for name in (part.strip() for part in policy.retry_on.split(",")):
        if not name:
            continue
        if name in GRPC_RETRY_ON:
            grpc_statuses.add(GRPC_RETRY_ON[name])
            continue
        bit = RETRY_ON_NAMES.get(name)
        if bit is None:
            raise ConfigError(f"{path}.retry_on", f"unsupported retry condition {name!r}")
        bits |= bit
    avoid_previous = False
    for index, predicate in enumerate(policy.retry_host_predicate):
        kind = predicate.typed_config.type_url.rsplit("/", 1)[-1] if predicate.HasField("typed_config") \
            else predicate.name
        if kind not in _PREVIOUS_HOSTS:
            raise ConfigError(f"{path}.retry_host_predicate[{index}]",
                              f"unsupported retry host predicate {kind or predicate.name!r} (only previous_hosts)")
        avoid_previous = True
    base = 0.025
    max_interval: float | None = None
    if policy.HasField("retry_back_off"):
        base = seconds(policy.retry_back_off.base_interval)
        if base <= 0:
            raise ConfigError(f"{path}.retry_back_off.base_interval", "must be greater than zero")
        if policy.retry_back_off.HasField("max_interval"):
            max_interval = seconds(policy.retry_back_off.max_interval)
            if max_interval < base:
                raise ConfigError(f"{path}.retry_back_off.max_interval", "must be at least base_interval")
    return RetryPolicy(
        retry_on=bits,
        num_retries=policy.num_retries.value if policy.HasField("num_retries") else 1,
        per_try_timeout=seconds(policy.per_try_timeout) if policy.HasField("per_try_timeout") else None,
        retriable_status_codes=frozenset(int(c) for c in policy.retriable_status_codes),
        base_interval=base,
        max_interval=max_interval if max_interval is not None else base * 10,
        grpc_statuses=frozenset(grpc_statuses),
        avoid_previous_hosts=avoid_previous,
        host_selection_attempts=max(1, int(policy.host_selection_retry_max_attempts or 1)),
    )


class _Builder:
    def __init__(self, clusters: frozenset[str], validate_clusters: bool) -> None:
        self.clusters = clusters
        self.validate_clusters = validate_clusters

    def cluster(self, name: str, path: str) -> str:
        if not name:
            raise ConfigError(path, "cluster name must not be empty")
        if self.validate_clusters and name not in self.clusters:
            raise ConfigError(path, f"route refers to unknown cluster {name!r}")
        return name

    def rewrite(self, action: Any, path: str, match_kind: str) -> tuple[bytes | None, Any]:
        prefix_rewrite = action.prefix_rewrite.encode() if action.prefix_rewrite else None
        regex_rewrite = None
        if action.HasField("regex_rewrite"):
            if prefix_rewrite is not None:
                raise ConfigError(f"{path}.regex_rewrite", "cannot be combined with prefix_rewrite")
            pattern = compile_regex(action.regex_rewrite.pattern.regex, f"{path}.regex_rewrite.pattern.regex")
            regex_rewrite = (pattern, _substitution(action.regex_rewrite.substitution))
        if prefix_rewrite is not None and match_kind == "safe_regex":
            raise ConfigError(f"{path}.prefix_rewrite", "cannot be used with a safe_regex route match")
        return prefix_rewrite, regex_rewrite

    def forward(self, action: Any, path: str, match_kind: str) -> ForwardAction:
        limit = action.max_stream_duration.max_stream_duration
        if action.HasField("max_stream_duration") and (limit.seconds or limit.nanos):
            raise ConfigError(f"{path}.max_stream_duration.max_stream_duration",
                              "stream duration limits are not supported (only 0s, no limit)")
        specifier = action.WhichOneof("cluster_specifier")
        cluster = None
        cluster_header = None
        weighted: tuple[WeightedClusterEntry, ...] = ()
        total = 0
        if specifier == "cluster":
            cluster = self.cluster(action.cluster, f"{path}.cluster")
        elif specifier == "cluster_header":
            if not action.cluster_header:
                raise ConfigError(f"{path}.cluster_header", "must not be empty")
            cluster_header = action.cluster_header.lower().encode()
        elif specifier == "weighted_clusters":
            weighted, total = self.weighted(action.weighted_clusters, f"{path}.weighted_clusters")
        else:
            raise ConfigError(path, "route action needs one of cluster, cluster_header, weighted_clusters")
        prefix_rewrite, regex_rewrite = self.rewrite(action, path, match_kind)
        if action.auto_host_rewrite.value and action.host_rewrite_literal:
            raise ConfigError(f"{path}.auto_host_rewrite", "cannot be combined with host_rewrite_literal")
        timeout: float | None = DEFAULT_ROUTE_TIMEOUT
        if action.HasField("timeout"):
            timeout = seconds(action.timeout) or None
        mirrors = []
        for index, mirror in enumerate(action.request_mirror_policies):
            where = f"{path}.request_mirror_policies[{index}]"
            numerator, denominator = 100, 100
            if mirror.HasField("runtime_fraction"):
                numerator, denominator = fraction(mirror.runtime_fraction.default_value)
            mirrors.append(MirrorPolicy(self.cluster(mirror.cluster, f"{where}.cluster"), numerator, denominator,
                                        mirror.disable_shadow_host_suffix_append))
        hashes = []
        for index, policy in enumerate(action.hash_policy):
            where = f"{path}.hash_policy[{index}]"
            kind = policy.WhichOneof("policy_specifier")
            if kind == "header":
                hashes.append(HashPolicy("header", policy.header.header_name.lower().encode(), policy.terminal))
            elif kind == "cookie":
                hashes.append(HashPolicy("cookie", policy.cookie.name.encode(), policy.terminal))
            elif kind == "connection_properties":
                if policy.connection_properties.source_ip:
                    hashes.append(HashPolicy("source_ip", b"", policy.terminal))
            elif kind == "query_parameter":
                hashes.append(HashPolicy("query_parameter", policy.query_parameter.name.encode(), policy.terminal))
            else:
                raise ConfigError(where, "hash policy needs one of header, cookie, connection_properties, query_parameter")
        return ForwardAction(
            cluster=cluster,
            cluster_header=cluster_header,
            weighted=weighted,
            total_weight=total,
            cluster_not_found_code=_CLUSTER_NOT_FOUND_CODES.get(int(action.cluster_not_found_response_code), 503),
            prefix_rewrite=prefix_rewrite,
            regex_rewrite=regex_rewrite,
            host_rewrite=action.host_rewrite_literal.encode() if action.host_rewrite_literal else None,
            auto_host_rewrite=action.auto_host_rewrite.value,
            timeout=timeout,
            retry=_retry_policy(action.retry_policy, f"{path}.retry_policy") if action.HasField("retry_policy") else None,
            mirrors=tuple(mirrors),
            hash_policies=tuple(hashes),
        )

    def weighted(self, config: Any, path: str) -> tuple[tuple[WeightedClusterEntry, ...], int]:
        entries = []
        total = 0
        if not config.clusters:
            raise ConfigError(f"{path}.clusters", "at least one cluster is required")
        for index, entry in enumerate(config.clusters):
            where = f"{path}.clusters[{index}]"
            weight = entry.weight.value if entry.HasField("weight") else 0
            entries.append(
                WeightedClusterEntry(
                    name=self.cluster(entry.name, f"{where}.name"),
                    weight=weight,
                    request_ops=compile_header_ops(entry.request_headers_to_add, entry.request_headers_to_remove,
                                                   where, "request_headers"),
                    response_ops=compile_header_ops(entry.response_headers_to_add, entry.response_headers_to_remove,
                                                    where, "response_headers"),
                    host_rewrite=entry.host_rewrite_literal.encode() if entry.host_rewrite_literal else None,
                )
            )
            total += weight
        if total <= 0:
            raise ConfigError(f"{path}.clusters", "the sum of weights must be greater than zero")
        if config.HasField("total_weight") and config.total_weight.value != total:
            raise ConfigError(f"{path}.total_weight", f"is {config.total_weight.value} but the weights sum to {total}")
        return tuple(entries), total

    def redirect(self, redirect: Any, path: str, match_kind: str) -> RedirectAction:
        scheme = None
        kind = redirect.WhichOneof("scheme_rewrite_specifier")
        if kind == "https_redirect" and redirect.https_redirect:
            scheme = b"https"
        elif kind == "scheme_redirect":
            scheme = redirect.scheme_redirect.lower().encode()
        path_kind = redirect.WhichOneof("path_rewrite_specifier")
        new_path = redirect.path_redirect.encode() if path_kind == "path_redirect" else None
        prefix_rewrite = redirect.prefix_rewrite.encode() if path_kind == "prefix_rewrite" else None
        regex_rewrite = None
        if path_kind == "regex_rewrite":
            pattern = compile_regex(redirect.regex_rewrite.pattern.regex, f"{path}.regex_rewrite.pattern.regex")
            regex_rewrite = (pattern, _substitution(redirect.regex_rewrite.substitution))
        if prefix_rewrite is not None and match_kind == "safe_regex":
            raise ConfigError(f"{path}.prefix_rewrite", "cannot be used with a safe_regex route match")
        return RedirectAction(
            scheme=scheme,
            host=redirect.host_redirect.encode() if redirect.host_redirect else None,
            port=redirect.port_redirect or None,
            path=new_path,
            prefix_rewrite=prefix_rewrite,
            regex_rewrite=regex_rewrite,
            status=_REDIRECT_CODES[int(redirect.response_code)],
            strip_query=redirect.strip_query,
        )

    def direct(self, direct: Any, path: str, max_body: int) -> DirectResponse:
        if not 200 <= direct.status < 600:
            raise ConfigError(f"{path}.status", "must be in [200, 600)")
        body = None
        if direct.HasField("body"):
            body = read_data_source(direct.body, f"{path}.body")
            if len(body) > max_body:
                raise ConfigError(f"{path}.body", f"is {len(body)} bytes, above max_direct_response_body_size_bytes "
                                                  f"({max_body})")
        return DirectResponse(direct.status, body)


def read_data_source(source: Any, path: str) -> bytes:
    """The bytes of an ``envoy.config.core.v3.DataSource`` (file, inline or environment variable)."""
    import os

    kind = source.WhichOneof("specifier")
    if kind == "inline_string":
        return bytes(source.inline_string.encode())
    if kind == "inline_bytes":
        return bytes(source.inline_bytes)
    if kind == "filename":
        try:
            with open(source.filename, "rb") as handle:
                return handle.read()
        except OSError as err:
            raise ConfigError(f"{path}.filename", f"cannot read {source.filename}: {err.strerror}") from None
    if kind == "environment_variable":
        value = os.environ.get(source.environment_variable)
        if value is None:
            raise ConfigError(f"{path}.environment_variable", f"{source.environment_variable} is not set")
        return value.encode()
    raise ConfigError(path, "data source needs one of filename, inline_bytes, inline_string, environment_variable")


def per_filter_configs(config: Any, path: str) -> dict[str, Any]:
    """``typed_per_filter_config`` of a route, virtual host or route configuration, parsed."""
    out: dict[str, Any] = {}
    for name, typed in sorted(config.typed_per_filter_config.items()):
        where = f"{path}.typed_per_filter_config[{name!r}]"
        if typed.type_url.endswith("/envoy.config.route.v3.FilterConfig"):
            wrapper = unpack_any(typed, where)
            if wrapper.disabled:
                raise ConfigError(f"{where}.disabled", "disabling a filter per route is not supported")
            typed, where = wrapper.config, f"{where}.config"
        parser = lookup_route_config(typed.type_url)
        if parser is None:
            raise ConfigError(where, f"no per-route configuration of type {typed.type_url.rsplit('/', 1)[-1]} "
                                     "is supported")
        out[name] = parser(unpack_any(typed, where), where)
    return out


def build_route_table(config: Any, path: str, clusters: frozenset[str]) -> RouteTable:
    """Compile an inline route configuration (``validate_clusters`` defaults to true, as in Envoy)."""
    validate = config.validate_clusters.value if config.HasField("validate_clusters") else True
    builder = _Builder(clusters, validate)
    max_body = config.max_direct_response_body_size_bytes.value if config.HasField(
        "max_direct_response_body_size_bytes") else 4096
    global_request = compile_header_ops(config.request_headers_to_add, config.request_headers_to_remove, path,
                                        "request_headers")
    global_response = compile_header_ops(config.response_headers_to_add, config.response_headers_to_remove, path,
                                         "response_headers")
    most_specific = config.most_specific_header_mutations_wins
    global_per_filter = per_filter_configs(config, path)
    exact: dict[bytes, VirtualHost] = {}
    suffixes: list[tuple[bytes, VirtualHost]] = []
    prefixes: list[tuple[bytes, VirtualHost]] = []
    default: VirtualHost | None = None
    seen: dict[str, str] = {}
    names: set[str] = set()
    for vh_index, vh_config in enumerate(config.virtual_hosts):
        vh_path = f"{path}.virtual_hosts[{vh_index}]"
        if not vh_config.name:
            raise ConfigError(f"{vh_path}.name", "virtual host name must not be empty")
        if vh_config.name in names:
            raise ConfigError(f"{vh_path}.name", f"duplicate virtual host name {vh_config.name!r}")
        names.add(vh_config.name)
        if not vh_config.domains:
            raise ConfigError(f"{vh_path}.domains", "at least one domain is required")
        vhost = VirtualHost(
            name=vh_config.name,
            retry=_retry_policy(vh_config.retry_policy, f"{vh_path}.retry_policy")
            if vh_config.HasField("retry_policy") else None,
            include_attempt_count=vh_config.include_request_attempt_count,
            include_attempt_count_in_response=vh_config.include_attempt_count_in_response,
            buffer_limit=vh_config.per_request_buffer_limit_bytes.value
            if vh_config.HasField("per_request_buffer_limit_bytes") else DEFAULT_BUFFER_LIMIT,
            metadata=vh_config.metadata if vh_config.HasField("metadata") else None,
        )
        vhost.request_ops = compile_header_ops(vh_config.request_headers_to_add, vh_config.request_headers_to_remove,
                                               vh_path, "request_headers")
        vhost.response_ops = compile_header_ops(vh_config.response_headers_to_add,
                                                vh_config.response_headers_to_remove, vh_path, "response_headers")
        for d_index, domain in enumerate(vh_config.domains):
            d_path = f"{vh_path}.domains[{d_index}]"
            lowered = domain.lower()
            if lowered in seen:
                raise ConfigError(d_path, f"domain {domain!r} is already used by virtual host {seen[lowered]!r}")
            seen[lowered] = vh_config.name
            if lowered == "*":
                default = vhost
            elif lowered.startswith("*"):
                suffixes.append((lowered[1:].encode(), vhost))
            elif lowered.endswith("*"):
                prefixes.append((lowered[:-1].encode(), vhost))
            elif "*" in lowered:
                raise ConfigError(d_path, "a wildcard may only be the first or last character")
            else:
                exact[lowered.encode()] = vhost
        vhost_per_filter = {**global_per_filter, **per_filter_configs(vh_config, vh_path)}
        routes = []
        for r_index, r_config in enumerate(vh_config.routes):
            routes.append(_build_route(builder, r_config, f"{vh_path}.routes[{r_index}]", vhost, global_request,
                                       global_response, most_specific, max_body, vhost_per_filter))
        vhost.routes = tuple(routes)
    return RouteTable(config.name, exact, suffixes, prefixes, default,
                      config.ignore_port_in_host_matching, most_specific, max_body)


def _build_route(builder: _Builder, config: Any, path: str, vhost: VirtualHost, global_request: HeaderOps,
                 global_response: HeaderOps, most_specific: bool, max_body: int,
                 inherited_per_filter: Mapping[str, Any]) -> Route:
    path_fn, kind, value, case_sensitive = _path_match(config.match, f"{path}.match")
    extras = _extra_matches(config.match, f"{path}.match")
    action_kind = config.WhichOneof("action")
    action: ForwardAction | RedirectAction | DirectResponse
    if action_kind == "route":
        action = builder.forward(config.route, f"{path}.route", kind)
    elif action_kind == "redirect":
        action = builder.redirect(config.redirect, f"{path}.redirect", kind)
    elif action_kind == "direct_response":
        action = builder.direct(config.direct_response, f"{path}.direct_response", max_body)
    else:
        raise ConfigError(path, "route needs one of route, redirect, direct_response")
    route_request = compile_header_ops(config.request_headers_to_add, config.request_headers_to_remove, path,
                                       "request_headers")
    route_response = compile_header_ops(config.response_headers_to_add, config.response_headers_to_remove, path,
                                        "response_headers")
    levels_request = [route_request, vhost.request_ops, global_request]
    levels_response = [route_response, vhost.response_ops, global_response]
    if most_specific:
        levels_request.reverse()
        levels_response.reverse()
    return Route(
        name=config.name,
        virtual_host=vhost,
        action=action,
        path_match=path_fn,
        extra_matches=extras,
        match_kind=kind,
        match_value=value,
        case_sensitive=case_sensitive,
        request_ops=tuple(ops for ops in levels_request if ops is not EMPTY_OPS),
        response_ops=tuple(ops for ops in levels_response if ops is not EMPTY_OPS),
        metadata=config.metadata if config.HasField("metadata") else None,
        buffer_limit=config.per_request_buffer_limit_bytes.value
        if config.HasField("per_request_buffer_limit_bytes") else vhost.buffer_limit,
        per_filter={**inherited_per_filter, **per_filter_configs(config, path)},
    )
