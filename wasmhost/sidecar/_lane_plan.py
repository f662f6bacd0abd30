"""Which listeners and routes the fast lane (``_lane.pyx``) may serve, decided once per plan.

The lane is a second, narrow HTTP/1.1 request path for the commonest case: a
body-less request on a listener whose only HTTP filter is the router, matched by a
plain prefix or exact path to one cluster with nothing to rewrite, retry or mirror.
Everything it cannot serve exactly as the full path would goes to the full path
(``DownstreamConnection``), so this module is conservative on purpose: a field is
either known to change nothing on the wire, or it rules the lane out.
"""

from __future__ import annotations

from typing import Any

from ._context import ListenerContext
from ._header_ops import EMPTY_OPS
from ._routes import ForwardAction, Route, RouteTable, VirtualHost

ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"

#: server_header_transformation as the lane encodes it
SERVER_OVERWRITE, SERVER_APPEND_IF_ABSENT, SERVER_PASS_THROUGH = 0, 1, 2
_SERVER_MODES = {"OVERWRITE": SERVER_OVERWRITE, "APPEND_IF_ABSENT": SERVER_APPEND_IF_ABSENT,
                 "PASS_THROUGH": SERVER_PASS_THROUGH}


class LaneTarget:
    """Where a lane-served route sends its requests."""

    __slots__ = ("cluster", "timeout", "expected_timeout_ms", "tally")

    def __init__(self, cluster: Any, timeout: float, expected_timeout_ms: bytes | None) -> None:
        self.cluster = cluster  # the plan runtime's ``Cluster``
        self.timeout = timeout  # the route timeout, seconds (always > 0 here)
        self.expected_timeout_ms = expected_timeout_ms  # x-envoy-expected-rq-timeout-ms; None when suppressed
        self.tally: Any = None  # the lane's stat counts for this listener and cluster, made on first use


class LanePlan:
    """The per-listener-context facts the lane reads on every request."""

    __slots__ = ("ctx", "route_table", "server_mode", "server_name", "generate_request_id", "suppress_envoy_headers",
                 "underscores_ok", "max_headers", "max_head_bytes", "_targets", "_routes", "by_authority")

    def __init__(self, ctx: ListenerContext, route_table: RouteTable, suppress_envoy_headers: bool) -> None:
        hcm = ctx.hcm
        self.ctx = ctx
        self.route_table = route_table
        self.server_mode = _SERVER_MODES[hcm.server_header]
        self.server_name: bytes = hcm.server_name
        self.generate_request_id: bool = hcm.generate_request_id
        self.suppress_envoy_headers = suppress_envoy_headers
        self.underscores_ok = hcm.headers_with_underscores == "ALLOW"
        self.max_headers: int = hcm.max_headers_count
        self.max_head_bytes: int = hcm.max_request_headers_kb * 1024
        self._targets: dict[Route, LaneTarget | None] = {}
        self._routes: dict[VirtualHost, tuple[tuple[int, bytes, Route], ...]] = {}
        # authority -> its virtual host's routes as (kind, value, LaneTarget or None); the lane reads it
        # directly and asks ``entries`` only on a miss
        self.by_authority: dict[bytes, tuple[tuple[int, bytes, LaneTarget | None], ...] | None] = {}

    def entries(self, authority: bytes) -> tuple[tuple[int, bytes, LaneTarget | None], ...] | None:
        """The routes a request for ``authority`` is matched against, in order; None: no virtual host."""
        vhost = self.route_table.virtual_host(authority)
        found = None
        if vhost is not None:
            found = tuple((kind, value, self.target(route) if kind >= 0 else None)
                          for kind, value, route in self.routes(vhost))
        if len(self.by_authority) < 4096:
            self.by_authority[authority] = found
        return found

    def routes(self, vhost: VirtualHost) -> tuple[tuple[int, bytes, Route], ...]:
        """A virtual host's routes as the lane tests them: (``lane_match`` kind, value, route)."""
        try:
            return self._routes[vhost]
        except KeyError:
            found = self._routes[vhost] = tuple((lane_match(r), r.match_value, r) for r in vhost.routes)
            return found

    def target(self, route: Route) -> LaneTarget | None:
        """The lane's view of ``route``, or None when only the full path serves it exactly."""
        try:
            return self._targets[route]
        except KeyError:
            found = self._targets[route] = route_target(route, self.ctx, self.suppress_envoy_headers)
            return found


def lane_plan(ctx: ListenerContext) -> LanePlan | None:
    """The lane plan for a listener context, or None when its connection manager rules the lane out."""
    listener = ctx.listener
    hcm = ctx.hcm
    if listener.tls is not None or listener.chains:
        return None
    if hcm.codec not in ("AUTO", "HTTP1") or hcm.access_logs or len(hcm.filters) != 1:
        return None
    router = hcm.filters[0]
    config = getattr(router.create, "keywords", {}).get("config")
    if router.type_name != ROUTER_TYPE or config is None:
        return None
    if ctx.filter_hooks != ((), ()):
        return None
    if (hcm.use_remote_address or hcm.via or hcm.always_set_request_id_in_response or hcm.normalize_path
            or hcm.merge_slashes or hcm.strip_port or hcm.http1_trailers or hcm.max_requests_per_connection):
        return None
    if hcm.server_header not in _SERVER_MODES:
        return None
    return LanePlan(ctx, hcm.route_table, bool(config.suppress_envoy_headers))


def route_target(route: Route, ctx: ListenerContext, suppress_envoy_headers: bool) -> LaneTarget | None:
    """A route the lane serves: one cluster, a positive timeout, and nothing that changes bytes or retries."""
    action = route.action
    if type(action) is not ForwardAction or action.cluster is None or action.cluster_header is not None:
        return None
    if action.weighted or action.prefix_rewrite is not None or action.regex_rewrite is not None:
        return None
    if action.host_rewrite is not None or action.auto_host_rewrite or action.mirrors or action.hash_policies:
        return None
    if route.retry is not None or route.per_filter:
        return None
    if any(ops is not EMPTY_OPS and ops for ops in (*route.request_ops, *route.response_ops)):
        return None
    vhost = route.virtual_host
    if vhost.include_attempt_count or vhost.include_attempt_count_in_response:
        return None
    timeout = action.timeout
    idle = ctx.hcm.stream_idle_timeout
    if timeout is None or timeout <= 0 or (idle is not None and timeout > idle):
        return None
    cluster = ctx.clusters.get(action.cluster)
    if cluster is None:
        return None
    plan = cluster.plan
    if plan.http2 or plan.tls is not None or plan.tls_matches or plan.http1_trailers:
        return None
    if plan.lb_policy not in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"):
        return None
    expected = None if suppress_envoy_headers else route.expected_timeout_ms
    return LaneTarget(cluster, timeout, expected)


def lane_match(route: Route) -> int:
    """How the lane tests a route's match: 0 plain prefix, 1 exact path, -1 only the full path can tell."""
    if route.plain_prefix is not None:
        return 0
    if route.match_kind == "path" and route.case_sensitive and not route.extra_matches:
        return 1
    return -1
