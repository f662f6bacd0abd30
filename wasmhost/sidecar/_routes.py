"""The compiled route table: virtual host selection and route matching on the request path.

Built once per configuration by ``_route_build``; per request the router asks
``RouteTable.route(headers, random_value)`` for a ``Route`` whose ``action`` is a
``ForwardAction``, ``RedirectAction`` or ``DirectResponse``. Matching follows
Envoy: ``prefix`` looks at the whole ``:path`` (query included); ``path``,
``safe_regex`` and ``path_separated_prefix`` look at the path without the query.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._header_ops import EMPTY_OPS, HeaderOps
from ._headers import HeaderMap

# retry_on bits
RETRY_5XX = 1
RETRY_GATEWAY_ERROR = 2
RETRY_CONNECT_FAILURE = 4
RETRY_RETRIABLE_4XX = 8
RETRY_RESET = 16
RETRY_RETRIABLE_STATUS_CODES = 32
RETRY_REFUSED_STREAM = 64

# gRPC retry conditions: the grpc-status of a trailers-only response (as Envoy reads them)
GRPC_RETRY_ON: dict[str, int] = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}

RETRY_ON_NAMES: dict[str, int] = {
    "5xx": RETRY_5XX,
    "gateway-error": RETRY_GATEWAY_ERROR,
    "connect-failure": RETRY_CONNECT_FAILURE,
    "retriable-4xx": RETRY_RETRIABLE_4XX,
    "reset": RETRY_RESET,
    "retriable-status-codes": RETRY_RETRIABLE_STATUS_CODES,
    "refused-stream": RETRY_REFUSED_STREAM,
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_on: int
    num_retries: int
    per_try_timeout: float | None
    retriable_status_codes: frozenset[int]
    base_interval: float
    max_interval: float
    grpc_statuses: frozenset[int] = frozenset()
    avoid_previous_hosts: bool = False  # the previous_hosts retry host predicate
    host_selection_attempts: int = 1  # how often host selection is retried to avoid those hosts

    def retriable_response(self, status: int, headers: HeaderMap) -> bool:
        """Whether a response (its status, and for gRPC its grpc-status header) should be retried."""
        if self.retriable_status(status):
            return True
        if not self.grpc_statuses:
            return False
        value = headers.get(b"grpc-status")
        return value is not None and value.isdigit() and int(value) in self.grpc_statuses

    def retriable_status(self, status: int) -> bool:
        on = self.retry_on
        if on & RETRY_5XX and status >= 500:
            return True
        if on & RETRY_GATEWAY_ERROR and status in (502, 503, 504):
            return True
        if on & RETRY_RETRIABLE_4XX and status == 409:
            return True
        return bool(on & RETRY_RETRIABLE_STATUS_CODES and status in self.retriable_status_codes)

    def retriable_reset(self, connect_failure: bool) -> bool:
        on = self.retry_on
        if on & (RETRY_5XX | RETRY_GATEWAY_ERROR | RETRY_RESET):
            return True
        return bool(connect_failure and on & RETRY_CONNECT_FAILURE)


@dataclass(frozen=True, slots=True)
class WeightedClusterEntry:
    name: str
    weight: int
    request_ops: HeaderOps
    response_ops: HeaderOps
    host_rewrite: bytes | None


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    cluster: str
    numerator: int
    denominator: int
    disable_shadow_host_suffix_append: bool


@dataclass(frozen=True, slots=True)
class HashPolicy:
    kind: str  # "header" | "cookie" | "source_ip" | "query_parameter"
    name: bytes
    terminal: bool


@dataclass(frozen=True, slots=True)
class ForwardAction:
    cluster: str | None
    cluster_header: bytes | None
    weighted: tuple[WeightedClusterEntry, ...]
    total_weight: int
    cluster_not_found_code: int
    prefix_rewrite: bytes | None
    regex_rewrite: tuple[re.Pattern[bytes], bytes] | None
    host_rewrite: bytes | None
    auto_host_rewrite: bool
    timeout: float | None
    retry: RetryPolicy | None
    mirrors: tuple[MirrorPolicy, ...]
    hash_policies: tuple[HashPolicy, ...]

    def pick_weighted(self, random_value: int) -> WeightedClusterEntry:
        point = random_value % self.total_weight
        for entry in self.weighted:
            if point < entry.weight:
                return entry
            point -= entry.weight
        return self.weighted[-1]


@dataclass(frozen=True, slots=True)
class RedirectAction:
    scheme: bytes | None
    host: bytes | None
    port: int | None
    path: bytes | None
    prefix_rewrite: bytes | None
    regex_rewrite: tuple[re.Pattern[bytes], bytes] | None
    status: int
    strip_query: bool


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes | None


Action = ForwardAction | RedirectAction | DirectResponse
PathMatch = Callable[[bytes, bytes], bool]
ExtraMatch = Callable[[HeaderMap, bytes, int], bool]


_NO_PER_FILTER: Mapping[str, Any] = {}


class Route:
    """One compiled route; ``request_ops``/``response_ops`` hold every level in application order."""

    __slots__ = (
        "name",
        "virtual_host",
        "action",
        "path_match",
        "extra_matches",
        "match_kind",
        "match_value",
        "case_sensitive",
        "request_ops",
        "response_ops",
        "metadata",
        "buffer_limit",
        "retry",
        "expected_timeout_ms",
        "plain_prefix",
        "per_filter",
    )

    def __init__(
        self,
        name: str,
        virtual_host: VirtualHost,
        action: Action,
        path_match: PathMatch,
        extra_matches: tuple[ExtraMatch, ...],
        match_kind: str,
        match_value: bytes,
        case_sensitive: bool,
        request_ops: tuple[HeaderOps, ...],
        response_ops: tuple[HeaderOps, ...],
        metadata: Any,
        buffer_limit: int,
        per_filter: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.per_filter: Mapping[str, Any] = per_filter or _NO_PER_FILTER  # filter name -> per-route config
        self.virtual_host = virtual_host
        self.action = action
        self.path_match = path_match
        self.extra_matches = extra_matches
        self.match_kind = match_kind
        self.match_value = match_value
        self.case_sensitive = case_sensitive
        self.request_ops = request_ops
        self.response_ops = response_ops
        self.metadata = metadata
        self.buffer_limit = buffer_limit
        # a case-sensitive prefix and nothing else to match: the table tests it inline
        self.plain_prefix = match_value if match_kind == "prefix" and case_sensitive and not extra_matches else None
        retry = action.retry if isinstance(action, ForwardAction) else None
        self.retry = retry if retry is not None else virtual_host.retry
        # x-envoy-expected-rq-timeout-ms: the per-try timeout, else the route timeout (fixed per route)
        per_try = self.retry.per_try_timeout if self.retry is not None else None
        expected = per_try if per_try is not None else action.timeout if isinstance(action, ForwardAction) else None
        self.expected_timeout_ms: bytes | None = b"%d" % int(expected * 1000) if expected is not None else None

    def matches(self, headers: HeaderMap, path: bytes, path_only: bytes, query: bytes, random_value: int) -> bool:
        if not self.path_match(path, path_only):
            return False
        for extra in self.extra_matches:
            if not extra(headers, query, random_value):
                return False
        return True

    def rewrite_path(self, path: bytes, prefix_rewrite: bytes | None,
                     regex_rewrite: tuple[re.Pattern[bytes], bytes] | None) -> bytes | None:
        """The new ``:path`` after prefix/regex rewrite, or None when unchanged."""
        if prefix_rewrite is not None:
            path_only, sep, query = path.partition(b"?")
            if self.match_kind == "path":
                return prefix_rewrite + sep + query
            if self.match_kind in ("prefix", "path_separated_prefix"):
                return prefix_rewrite + path[len(self.match_value) :]
            return None
        if regex_rewrite is not None:
            pattern, substitution = regex_rewrite
            path_only, sep, query = path.partition(b"?")
            return pattern.sub(substitution, path_only) + sep + query
        return None

    def __repr__(self) -> str:
        return f"Route({self.name!r}, {self.match_kind}={self.match_value!r})"


class VirtualHost:
    __slots__ = (
        "name",
        "routes",
        "request_ops",
        "response_ops",
        "retry",
        "include_attempt_count",
        "include_attempt_count_in_response",
        "buffer_limit",
        "metadata",
    )

    def __init__(
        self,
        name: str,
        retry: RetryPolicy | None,
        include_attempt_count: bool,
        include_attempt_count_in_response: bool,
        buffer_limit: int,
        metadata: Any = None,
    ) -> None:
        self.name = name
        self.routes: tuple[Route, ...] = ()
        self.request_ops: HeaderOps = EMPTY_OPS
        self.response_ops: HeaderOps = EMPTY_OPS
        self.retry = retry
        self.include_attempt_count = include_attempt_count
        self.include_attempt_count_in_response = include_attempt_count_in_response
        self.buffer_limit = buffer_limit
        self.metadata = metadata


class RouteTable:
    """Virtual hosts by domain (exact, ``*.suffix``, ``prefix.*``, ``*``) and their routes."""

    __slots__ = ("name", "exact", "suffixes", "prefixes", "default", "ignore_port", "_cache",
                 "most_specific_wins", "max_direct_body")

    def __init__(
        self,
        name: str,
        exact: dict[bytes, VirtualHost],
        suffixes: list[tuple[bytes, VirtualHost]],
        prefixes: list[tuple[bytes, VirtualHost]],
        default: VirtualHost | None,
        ignore_port: bool,
        most_specific_wins: bool,
        max_direct_body: int,
    ) -> None:
        self.name = name
        self.exact = exact
        self.suffixes = sorted(suffixes, key=lambda item: -len(item[0]))
        self.prefixes = sorted(prefixes, key=lambda item: -len(item[0]))
        self.default = default
        self.ignore_port = ignore_port
        self.most_specific_wins = most_specific_wins
        self.max_direct_body = max_direct_body
        self._cache: dict[bytes, VirtualHost | None] = {}

    def virtual_host(self, authority: bytes) -> VirtualHost | None:
        cached = self._cache.get(authority, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        host = authority.lower()
        if self.ignore_port:
            host = strip_port(host)
        found = self._select(host)
        if len(self._cache) < 4096:
            self._cache[authority] = found
        return found

    def _select(self, host: bytes) -> VirtualHost | None:
        found = self.exact.get(host)
        if found is not None:
            return found
        for suffix, vhost in self.suffixes:
            if len(host) > len(suffix) and host.endswith(suffix):
                return vhost
        for prefix, vhost in self.prefixes:
            if len(host) > len(prefix) and host.startswith(prefix):
                return vhost
        return self.default

    def route(self, headers: HeaderMap, random_value: int) -> Route | None:
        """The first matching route of the selected virtual host, or None."""
        vhost = self.virtual_host(headers.get(b":authority") or b"")
        if vhost is None:
            return None
        path = headers.get(b":path") or b""
        split: tuple[bytes, bytes, bytes] | None = None
        for route in vhost.routes:
            prefix = route.plain_prefix
            if prefix is not None:
                if path.startswith(prefix):
                    return route
                continue
            if split is None:
                split = path.partition(b"?")
            if route.matches(headers, path, split[0], split[2], random_value):
                return route
        return None


def strip_port(host: bytes) -> bytes:
    """``example.com:80`` -> ``example.com``; IPv6 ``[::1]:80`` -> ``[::1]``."""
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end >= 0 else host
    head, sep, tail = host.rpartition(b":")
    if sep and tail.isdigit():
        return head
    return host
