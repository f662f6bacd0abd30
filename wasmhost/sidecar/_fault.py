"""``envoy.filters.http.fault``: inject delays and aborts, fixed or controlled by request headers.

Semantics follow Envoy: a fault applies only when the configured ``headers``,
``upstream_cluster`` and ``downstream_nodes`` conditions hold; the delay (if
any) runs first, the abort decision is taken after it; header-controlled
percentages are capped by the configured percentage; ``max_active_faults``
bounds concurrent faults.
"""

from __future__ import annotations

from typing import Any

from ._commands import Timer
from ._config_support import check_supported
from ._errors import ConfigError, join_path
from ._filter_api import HeadersStatus, HttpFilter, ResponseFlag
from ._filter_registry import FilterBuildContext, register_http_filter, register_route_config
from ._headers import HeaderMap
from ._route_build import compile_header_matcher, fraction, seconds
from ._routes import ForwardAction

FAULT_TYPE = "envoy.extensions.filters.http.fault.v3.HTTPFault"

DELAY_HEADER = b"x-envoy-fault-delay-request"
DELAY_PERCENT_HEADER = b"x-envoy-fault-delay-request-percentage"
ABORT_HEADER = b"x-envoy-fault-abort-request"
ABORT_GRPC_HEADER = b"x-envoy-fault-abort-grpc-request"
ABORT_PERCENT_HEADER = b"x-envoy-fault-abort-request-percentage"


class FaultConfig:
    __slots__ = ("delay_fixed", "delay_from_header", "delay_percent", "abort_status", "abort_grpc",
                 "abort_from_header", "abort_percent", "matchers", "upstream_cluster", "downstream_nodes",
                 "max_active", "downstream_cluster_stats", "has_delay", "has_abort")

    def __init__(self, config: Any, path: str) -> None:
        self.has_delay = config.HasField("delay")
        self.has_abort = config.HasField("abort")
        self.delay_fixed: float | None = None
        self.delay_from_header = False
        self.delay_percent = (0, 100)
        if self.has_delay:
            delay = config.delay
            kind = delay.WhichOneof("fault_delay_secifier")
            if kind == "fixed_delay":
                self.delay_fixed = seconds(delay.fixed_delay)
            elif kind == "header_delay":
                self.delay_from_header = True
            else:
                raise ConfigError(join_path(path, "delay"), "needs fixed_delay or header_delay")
            self.delay_percent = fraction(delay.percentage)
        self.abort_status: int | None = None
        self.abort_grpc: int | None = None
        self.abort_from_header = False
        self.abort_percent = (0, 100)
        if self.has_abort:
            abort = config.abort
            kind = abort.WhichOneof("error_type")
            if kind == "http_status":
                if not 200 <= abort.http_status < 600:
                    raise ConfigError(join_path(path, "abort.http_status"), "must be in [200, 600)")
                self.abort_status = abort.http_status
            elif kind == "grpc_status":
                self.abort_grpc = abort.grpc_status
            elif kind == "header_abort":
                self.abort_from_header = True
            else:
                raise ConfigError(join_path(path, "abort"), "needs http_status, grpc_status or header_abort")
            self.abort_percent = fraction(abort.percentage)
        self.matchers = tuple(
            compile_header_matcher(h, join_path(path, f"headers[{i}]")) for i, h in enumerate(config.headers)
        )
        self.upstream_cluster = config.upstream_cluster
        self.downstream_nodes = frozenset(n.encode() for n in config.downstream_nodes)
        self.max_active = config.max_active_faults.value if config.HasField("max_active_faults") else None
        self.downstream_cluster_stats = not config.disable_downstream_cluster_stats


def _percent_from_header(headers: HeaderMap, name: bytes, configured: tuple[int, int]) -> tuple[int, int]:
    value = headers.get(name)
    if value is None or not value.isdigit():
        return configured
    return min(int(value), configured[0]), configured[1]


class FaultFilter(HttpFilter):
    encodes = False

    __slots__ = ("cb", "config", "timer", "active", "stats_prefix", "name")

    def __init__(self, callbacks: Any, config: FaultConfig, name: str = "") -> None:
        self.cb = callbacks
        self.config = config
        self.name = name
        self.timer: Timer | None = None
        self.active = False

    def _enabled(self, percent: tuple[int, int]) -> bool:
        numerator, denominator = percent
        if numerator <= 0:
            return False
        return (self.cb.stream.random_value % denominator) < numerator

    def _applies(self, headers: HeaderMap) -> bool:
        config = self.config
        for matcher in config.matchers:
            if not matcher(headers):
                return False
        if config.upstream_cluster:
            route = self.cb.route()
            action = route.action if route is not None else None
            if not isinstance(action, ForwardAction) or action.cluster != config.upstream_cluster:
                return False
        if config.downstream_nodes:
            node = headers.get(b"x-envoy-downstream-service-node")
            if node is None or node not in config.downstream_nodes:
                return False
        return True

    def _delay(self, headers: HeaderMap) -> float | None:
        config = self.config
        if not config.has_delay:
            return None
        if config.delay_from_header:
            value = headers.get(DELAY_HEADER)
            if value is None or not value.isdigit():
                return None
            duration = int(value) / 1000.0
            percent = _percent_from_header(headers, DELAY_PERCENT_HEADER, config.delay_percent)
        else:
            duration = config.delay_fixed or 0.0
            percent = config.delay_percent
        if duration <= 0 or not self._enabled(percent):
            return None
        return duration

    def _abort(self, headers: HeaderMap) -> tuple[int, int | None] | None:
        config = self.config
        if not config.has_abort:
            return None
        grpc = None
        if config.abort_from_header:
            status = None
            value = headers.get(ABORT_HEADER)
            if value is not None and value.isdigit() and 200 <= int(value) < 600:
                status = int(value)
            grpc_value = headers.get(ABORT_GRPC_HEADER)
            if grpc_value is not None and grpc_value.isdigit():
                grpc = int(grpc_value)
            if status is None and grpc is None:
                return None
            percent = _percent_from_header(headers, ABORT_PERCENT_HEADER, config.abort_percent)
        else:
            status = config.abort_status
            grpc = config.abort_grpc
            percent = config.abort_percent
        if not self._enabled(percent):
            return None
        return (status if status is not None else 200), grpc

    def _stats(self) -> Any:
        return self.cb.stream.ctx.stats

    def _count(self, name: str, headers: HeaderMap) -> None:
        stats = self._stats()
        getattr(stats, name).value += 1
        cluster = headers.get(b"x-envoy-downstream-service-cluster")
        if cluster and self.config.downstream_cluster_stats:
            store = self.cb.stream.ctx.worker.stats
            prefix = self.cb.stream.ctx.hcm.stat_prefix
            store.counter(f"http.{prefix}.fault.{cluster.decode('latin-1')}.{name}").inc()

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        route = self.cb.route()
        if route is not None and route.per_filter:
            override = route.per_filter.get(self.name)
            if override is not None:  # the route's own settings replace the filter's (as Envoy)
                self.config = override
        if not self._applies(headers):
            return HeadersStatus.Continue
        config = self.config
        stats = self._stats()
        if config.max_active is not None and stats.active_faults.value >= config.max_active:
            stats.faults_overflow.value += 1
            return HeadersStatus.Continue
        delay = self._delay(headers)
        if delay is not None:
            self.active = True
            stats.active_faults.value += 1
            self._count("delays_injected", headers)
            self.cb.stream_info.add_flag(ResponseFlag.DELAY_INJECTED)
            self.timer = Timer(delay, self._after_delay)
            self.cb.stream.ctx.out.append(self.timer)
            return HeadersStatus.StopIteration
        if self._maybe_abort(headers):
            return HeadersStatus.StopIteration
        return HeadersStatus.Continue

    def _maybe_abort(self, headers: HeaderMap) -> bool:
        abort = self._abort(headers)
        if abort is None:
            return False
        status, grpc = abort
        if not self.active:
            self.active = True
            self._stats().active_faults.value += 1
        self._count("aborts_injected", headers)
        self.cb.stream_info.add_flag(ResponseFlag.FAULT_INJECTED)
        self.cb.send_local_reply(status, b"fault filter abort", details="fault_filter_abort", grpc_status=grpc)
        return True

    def _after_delay(self) -> None:
        self.timer = None
        headers = self.cb.request_headers
        if headers is not None and self._maybe_abort(headers):
            return
        self.cb.continue_decoding()

    def on_destroy(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active:
            self.active = False
            self._stats().active_faults.value -= 1


def build_fault(config: Any, context: FilterBuildContext) -> Any:
    """Config factory for ``envoy.extensions.filters.http.fault.v3.HTTPFault``."""
    check_supported(config)
    fault_config = FaultConfig(config, "")

    name = context.filter_name

    def create(callbacks: Any) -> FaultFilter:
        return FaultFilter(callbacks, fault_config, name)

    create.filter_class = FaultFilter  # type: ignore[attr-defined]
    return create


def parse_route_fault(config: Any, path: str) -> FaultConfig:
    """A route's (or virtual host's) ``HTTPFault``: replaces the filter's own settings there."""
    return FaultConfig(config, path)


register_http_filter(FAULT_TYPE, build_fault)
register_route_config(FAULT_TYPE, parse_route_fault)
