"""Per-worker cluster state: hosts, load balancing, circuit-breaker counts, outlier detection.

Sans-io: time comes in as arguments, randomness from an injected ``random.Random``.
The edge resolves DNS and calls ``set_resolved``; it also calls ``tick(now)`` on
the outlier-detection interval to bring ejected hosts back.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_left
from collections.abc import Sequence

from ._plan import ClusterPlan, EndpointPlan
from ._stats import Counter, Gauge, StatsStore


class Host:
    """One upstream endpoint and its health/ejection state."""

    __slots__ = (
        "address",
        "port",
        "key",
        "weight",
        "hostname",
        "configured_healthy",
        "ejected",
        "ejected_at",
        "num_ejections",
        "consecutive_5xx",
        "consecutive_gateway",
        "active_requests",
        "rq_total",
        "rq_error",
        "cx_active",
        "metadata",
        "edge_pool",
    )

    def __init__(self, endpoint: EndpointPlan, address: str | None = None) -> None:
        self.address = address if address is not None else endpoint.address
        self.port = endpoint.port
        self.key = (self.address, self.port)
        self.weight = endpoint.weight
        self.hostname = endpoint.hostname or (endpoint.address if address is not None else "")
        self.configured_healthy = endpoint.healthy
        self.ejected = False
        self.ejected_at = 0.0
        self.num_ejections = 0
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.active_requests = 0
        self.rq_total = 0
        self.rq_error = 0
        self.cx_active = 0
        self.metadata = endpoint.metadata
        self.edge_pool: object = None  # the I/O edge's connection pool for this host

    @property
    def healthy(self) -> bool:
        return self.configured_healthy and not self.ejected

    def __repr__(self) -> str:
        return f"Host({self.address}:{self.port})"


class ClusterStats:
    """The ``cluster.<name>.*`` counters the data path updates."""

    __slots__ = (
        "rq_total", "rq_completed", "rq_2xx", "rq_3xx", "rq_4xx", "rq_5xx", "rq_timeout", "rq_per_try_timeout",
        "rq_retry", "rq_retry_success", "rq_retry_overflow", "rq_pending_overflow", "rq_pending_total",
        "rq_pending_active", "rq_active", "rq_rx_reset", "rq_tx_reset", "cx_total", "cx_active",
        "cx_connect_fail", "cx_connect_timeout", "cx_overflow", "cx_destroy", "no_healthy", "panic",
        "ejections_active", "ejections_enforced_total", "ejections_consecutive_5xx",
        "ejections_detected_consecutive_5xx", "ejections_gateway", "ejections_detected_gateway",
        "ejections_overflow", "membership_total", "membership_healthy", "rq_time", "_store", "_prefix", "_codes",
    )  # fmt: skip

    def __init__(self, store: StatsStore, stat_name: str) -> None:
        p = f"cluster.{stat_name}."
        self._store = store
        self._prefix = p
        c = store.counter
        g = store.gauge
        self.rq_total: Counter = c(p + "upstream_rq_total")
        self.rq_completed: Counter = c(p + "upstream_rq_completed")
        self.rq_2xx = c(p + "upstream_rq_2xx")
        self.rq_3xx = c(p + "upstream_rq_3xx")
        self.rq_4xx = c(p + "upstream_rq_4xx")
        self.rq_5xx = c(p + "upstream_rq_5xx")
        self.rq_timeout = c(p + "upstream_rq_timeout")
        self.rq_per_try_timeout = c(p + "upstream_rq_per_try_timeout")
        self.rq_retry = c(p + "upstream_rq_retry")
        self.rq_retry_success = c(p + "upstream_rq_retry_success")
        self.rq_retry_overflow = c(p + "upstream_rq_retry_overflow")
        self.rq_pending_overflow = c(p + "upstream_rq_pending_overflow")
        self.rq_pending_total = c(p + "upstream_rq_pending_total")
        self.rq_pending_active: Gauge = g(p + "upstream_rq_pending_active")
        self.rq_active: Gauge = g(p + "upstream_rq_active")
        self.rq_rx_reset = c(p + "upstream_rq_rx_reset")
        self.rq_tx_reset = c(p + "upstream_rq_tx_reset")
        self.cx_total = c(p + "upstream_cx_total")
        self.cx_active = g(p + "upstream_cx_active")
        self.cx_connect_fail = c(p + "upstream_cx_connect_fail")
        self.cx_connect_timeout = c(p + "upstream_cx_connect_timeout")
        self.cx_overflow = c(p + "upstream_cx_overflow")
        self.cx_destroy = c(p + "upstream_cx_destroy")
        self.no_healthy = c(p + "upstream_cx_none_healthy")
        self.panic = c(p + "lb_healthy_panic")
        self.ejections_active = g(p + "outlier_detection.ejections_active")
        self.ejections_enforced_total = c(p + "outlier_detection.ejections_enforced_total")
        self.ejections_consecutive_5xx = c(p + "outlier_detection.ejections_enforced_consecutive_5xx")
        self.ejections_detected_consecutive_5xx = c(p + "outlier_detection.ejections_detected_consecutive_5xx")
        self.ejections_gateway = c(p + "outlier_detection.ejections_enforced_consecutive_gateway_failure")
        self.ejections_detected_gateway = c(p + "outlier_detection.ejections_detected_consecutive_gateway_failure")
        self.ejections_overflow = c(p + "outlier_detection.ejections_overflow")
        self.membership_total = g(p + "membership_total")
        self.membership_healthy = g(p + "membership_healthy")
        self.rq_time = store.histogram(p + "upstream_rq_time")
        self._codes: dict[int, Counter] = {}

    def count_response(self, status: int, amount: int = 1) -> None:
        klass = status // 100
        if klass == 2:
            self.rq_2xx.value += amount
        elif klass == 5:
            self.rq_5xx.value += amount
        elif klass == 4:
            self.rq_4xx.value += amount
        elif klass == 3:
            self.rq_3xx.value += amount
        counter = self._codes.get(status)
        if counter is None:
            counter = self._codes[status] = self._store.counter(f"{self._prefix}upstream_rq_{status}")
        counter.value += amount


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class Cluster:
    """Runtime state of one cluster in one worker."""

    def __init__(self, plan: ClusterPlan, stats: StatsStore, rng: random.Random | None = None) -> None:
        self.plan = plan
        self.name = plan.name
        self.stats = ClusterStats(stats, plan.stat_name)
        self.rng = rng or random.Random()
        self.thresholds = plan.thresholds
        # circuit-breaker resource counts
        self.rq_active = 0
        self.rq_pending = 0
        self.cx_active = 0
        self.cx_connecting = 0
        self.retries_active = 0
        self.hosts: list[Host] = []
        self._lb_hosts: list[Host] = []
        self._rr_index = 0
        self._rr_weighted: list[float] = []
        self._ring: tuple[list[int], list[Host]] | None = None
        self._cumulative: list[int] = []
        self._weighted = False
        self.ejected_count = 0
        if plan.discovery == "STATIC":
            self.set_hosts([Host(endpoint) for endpoint in plan.endpoints])

    # --- membership -----------------------------------------------------------------------------

    def set_hosts(self, hosts: Sequence[Host]) -> None:
        """Replace the host set, keeping the state of hosts that stay (same address and port)."""
        old = {host.key: host for host in self.hosts}
        merged: list[Host] = []
        for host in hosts:
            kept = old.get(host.key)
            merged.append(kept if kept is not None else host)
        self.hosts = merged
        self.ejected_count = sum(1 for host in merged if host.ejected)
        self.stats.ejections_active.value = self.ejected_count
        self._rr_index = self.rng.randrange(len(merged)) if merged else 0
        self._refresh()

    def set_resolved(self, resolved: Sequence[tuple[EndpointPlan, list[str]]]) -> None:
        """DNS results: for each configured endpoint, its addresses (STRICT_DNS uses all, LOGICAL_DNS one)."""
        hosts: list[Host] = []
        for endpoint, addresses in resolved:
            chosen = addresses[:1] if self.plan.discovery == "LOGICAL_DNS" else addresses
            for address in chosen:
                hosts.append(Host(endpoint, address))
        self.set_hosts(hosts)

    def _refresh(self) -> None:
        healthy = [host for host in self.hosts if host.healthy]
        self.stats.membership_total.value = len(self.hosts)
        self.stats.membership_healthy.value = len(healthy)
        panic = bool(self.hosts) and len(healthy) * 100.0 < self.plan.panic_threshold * len(self.hosts)
        self._panic = panic
        self._lb_hosts = list(self.hosts) if panic else healthy
        self._weighted = len({host.weight for host in self._lb_hosts}) > 1
        self._rr_weighted = [0.0] * len(self._lb_hosts)
        total = 0
        self._cumulative = []
        for host in self._lb_hosts:
            total += host.weight
            self._cumulative.append(total)
        self._ring = None

    # --- load balancing -------------------------------------------------------------------------

    def choose_host(self, hash_key: int | None = None) -> Host | None:
        """Pick a host per the cluster's ``lb_policy``; None when there is none to pick."""
        hosts = self._lb_hosts
        if not hosts:
            self.stats.no_healthy.value += 1
            return None
        if self._panic:
            self.stats.panic.value += 1
        policy = self.plan.lb_policy
        if policy == "ROUND_ROBIN":
            if self._weighted:
                return self._smooth_weighted()
            index = self._rr_index % len(hosts)
            self._rr_index = index + 1
            return hosts[index]
        if policy == "LEAST_REQUEST":
            best = None
            for _ in range(self.plan.choice_count):
                candidate = hosts[self.rng.randrange(len(hosts))]
                if best is None or candidate.active_requests < best.active_requests:
                    best = candidate
            return best
        if policy == "RANDOM":
            if self._weighted:
                point = self.rng.randrange(self._cumulative[-1])
                return hosts[bisect_left(self._cumulative, point + 1)]
            return hosts[self.rng.randrange(len(hosts))]
        # RING_HASH
        if hash_key is None:
            hash_key = self.rng.getrandbits(64)
        ring = self._ring if self._ring is not None else self._build_ring()
        points, owners = ring
        index = bisect_left(points, hash_key)
        return owners[index % len(owners)]

    def _smooth_weighted(self) -> Host:
        hosts = self._lb_hosts
        current = self._rr_weighted
        total = 0
        best = 0
        for index, host in enumerate(hosts):
            current[index] += host.weight
            total += host.weight
            if current[index] > current[best]:
                best = index
        current[best] -= total
        return hosts[best]

    def _build_ring(self) -> tuple[list[int], list[Host]]:
        hosts = self._lb_hosts
        total_weight = sum(host.weight for host in hosts)
        size = min(max(self.plan.ring_min_size, len(hosts)), self.plan.ring_max_size)
        entries: list[tuple[int, Host]] = []
        for host in hosts:
            count = max(1, round(size * host.weight / total_weight))
            base = f"{host.address}:{host.port}_".encode()
            for i in range(count):
                entries.append((_hash64(base + str(i).encode()), host))
        entries.sort(key=lambda item: item[0])
        self._ring = ([point for point, _ in entries], [host for _, host in entries])
        return self._ring

    # --- outlier detection ----------------------------------------------------------------------

    def record_response(self, host: Host, status: int, now: float) -> None:
        """Feed an upstream result (status 503 for a connect failure, 504 for a timeout) to outlier detection."""
        host.rq_total += 1
        outlier = self.plan.outlier
        if status >= 500:
            host.rq_error += 1
        if outlier is None:
            return
        if status >= 500:
            if status in (502, 503, 504):
                host.consecutive_gateway += 1
                if host.consecutive_gateway == outlier.consecutive_gateway_failure:
                    self.stats.ejections_detected_gateway.value += 1
                    if self._enforce(outlier.enforcing_consecutive_gateway_failure):
                        if self._eject(host, now):
                            self.stats.ejections_gateway.value += 1
            else:
                host.consecutive_gateway = 0
            host.consecutive_5xx += 1
            if host.consecutive_5xx == outlier.consecutive_5xx:
                self.stats.ejections_detected_consecutive_5xx.value += 1
                if self._enforce(outlier.enforcing_consecutive_5xx):
                    if self._eject(host, now):
                        self.stats.ejections_consecutive_5xx.value += 1
        else:
            host.consecutive_5xx = 0
            host.consecutive_gateway = 0

    def _enforce(self, percent: int) -> bool:
        return percent >= 100 or self.rng.randrange(100) < percent

    def _eject(self, host: Host, now: float) -> bool:
        outlier = self.plan.outlier
        if host.ejected or outlier is None:
            return False
        if 100.0 * (self.ejected_count + 1) / max(1, len(self.hosts)) > outlier.max_ejection_percent:
            self.stats.ejections_overflow.value += 1
            return False
        host.ejected = True
        host.ejected_at = now
        host.num_ejections += 1
        host.consecutive_5xx = 0
        host.consecutive_gateway = 0
        self.ejected_count += 1
        self.stats.ejections_active.value = self.ejected_count
        self.stats.ejections_enforced_total.value += 1
        self._refresh()
        return True

    def tick(self, now: float) -> None:
        """Outlier-detection interval: bring back hosts whose ejection time has passed."""
        outlier = self.plan.outlier
        if outlier is None:
            return
        changed = False
        for host in self.hosts:
            if host.ejected:
                duration = min(outlier.base_ejection_time * host.num_ejections,
                               max(outlier.max_ejection_time, outlier.base_ejection_time))
                if now - host.ejected_at >= duration:
                    host.ejected = False
                    self.ejected_count -= 1
                    changed = True
            elif host.num_ejections > 0 and now - host.ejected_at >= outlier.base_ejection_time * (
                host.num_ejections + 1
            ):
                host.num_ejections -= 1
        if changed:
            self.stats.ejections_active.value = self.ejected_count
            self._refresh()

    # --- circuit breakers -----------------------------------------------------------------------

    def can_start_request(self) -> bool:
        return self.rq_active < self.thresholds.max_requests

    def can_retry(self) -> bool:
        return self.retries_active < self.thresholds.max_retries
