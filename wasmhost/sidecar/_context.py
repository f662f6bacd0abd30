"""Per-worker runtime objects the sans-io core reads: outbox, clock, clusters, stats.

``WorkerRuntime`` is one per worker process; ``PlanRuntime`` one per active plan
(clusters whose config did not change are carried over between plans);
``ListenerContext`` one per listener of a plan. Streams hold their
``ListenerContext`` for their whole life, which is what lets in-flight streams
finish on the plan they started with.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from ._cluster import Cluster
from ._plan import HcmPlan, ListenerPlan, Plan
from ._stats import Counter, Gauge, Histogram, StatsStore


class DateCache:
    """The HTTP ``date`` header value, formatted at most once per second."""

    __slots__ = ("_second", "_value", "_runtime")

    def __init__(self, runtime: WorkerRuntime) -> None:
        self._runtime = runtime
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        runtime = self._runtime
        now = int(runtime.now + runtime.wall_offset)
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


class WorkerRuntime:
    """What every stream of one worker shares."""

    def __init__(
        self,
        stats: StatsStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        services: Any = None,
        worker_index: int = 0,
    ) -> None:
        self.out: list[Any] = []
        self.worker_index = worker_index
        self.local_ip = "127.0.0.1"  # set by the edge: this host's address
        self.stats = stats if stats is not None else StatsStore()
        self.clock = clock
        self.wall = wall
        self.rng = rng if rng is not None else random.Random()
        self.now = clock()  # monotonic time of the event being processed; the edge calls tick()
        self.wall_offset = wall() - self.now
        self.date = DateCache(self)
        self.services = services
        self.next_connection_id = 1

    def tick(self) -> float:
        """Read the clock once for the event about to be processed."""
        now = self.now = self.clock()
        return now

    def new_connection_id(self) -> int:
        value = self.next_connection_id
        self.next_connection_id += 1
        return value


class HcmStats:
    """``http.<stat_prefix>.*`` counters."""

    __slots__ = (
        "rq_total", "rq_http1_total", "rq_http2_total", "rq_active", "rq_1xx", "rq_2xx", "rq_3xx", "rq_4xx",
        "rq_5xx", "rq_completed", "rq_time", "cx_total", "cx_active", "cx_http1_total", "cx_http2_total",
        "cx_protocol_error", "rq_rx_reset", "rq_tx_reset", "no_route", "no_cluster", "rq_redirect",
        "rq_direct_response", "router_rq_total", "rq_timeout", "rq_idle_timeout", "cx_idle_timeout",
        "aborts_injected", "delays_injected", "faults_overflow", "active_faults",
    )  # fmt: skip

    def __init__(self, store: StatsStore, prefix: str) -> None:
        p = f"http.{prefix}."
        c = store.counter
        self.rq_total: Counter = c(p + "downstream_rq_total")
        self.rq_http1_total = c(p + "downstream_rq_http1_total")
        self.rq_http2_total = c(p + "downstream_rq_http2_total")
        self.rq_active: Gauge = store.gauge(p + "downstream_rq_active")
        self.rq_1xx = c(p + "downstream_rq_1xx")
        self.rq_2xx = c(p + "downstream_rq_2xx")
        self.rq_3xx = c(p + "downstream_rq_3xx")
        self.rq_4xx = c(p + "downstream_rq_4xx")
        self.rq_5xx = c(p + "downstream_rq_5xx")
        self.rq_completed = c(p + "downstream_rq_completed")
        self.rq_time: Histogram = store.histogram(p + "downstream_rq_time")
        self.cx_total = c(p + "downstream_cx_total")
        self.cx_active: Gauge = store.gauge(p + "downstream_cx_active")
        self.cx_http1_total = c(p + "downstream_cx_http1_total")
        self.cx_http2_total = c(p + "downstream_cx_http2_total")
        self.cx_protocol_error = c(p + "downstream_cx_protocol_error")
        self.rq_rx_reset = c(p + "downstream_rq_rx_reset")
        self.rq_tx_reset = c(p + "downstream_rq_tx_reset")
        self.no_route = c(p + "no_route")
        self.no_cluster = c(p + "no_cluster")
        self.rq_redirect = c(p + "rq_redirect")
        self.rq_direct_response = c(p + "rq_direct_response")
        self.router_rq_total = c(p + "rq_total")
        self.rq_timeout = c(p + "downstream_rq_timeout")
        self.rq_idle_timeout = c(p + "downstream_rq_idle_timeout")
        self.cx_idle_timeout = c(p + "downstream_cx_idle_timeout")
        self.aborts_injected = c(p + "fault.aborts_injected")
        self.delays_injected = c(p + "fault.delays_injected")
        self.faults_overflow = c(p + "fault.faults_overflow")
        self.active_faults: Gauge = store.gauge(p + "fault.active_faults")

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
        elif klass == 1:
            self.rq_1xx.value += amount


class PlanRuntime:
    """One plan as served by one worker: its clusters and listener contexts."""

    def __init__(self, plan: Plan, worker: WorkerRuntime, previous: PlanRuntime | None = None) -> None:
        self.plan = plan
        self.worker = worker
        self.clusters: dict[str, Cluster] = {}
        self.active_streams = 0
        self.retired = False
        for name, cluster_plan in plan.clusters.items():
            old = previous.clusters.get(name) if previous is not None else None
            if old is not None and old.plan.fingerprint == cluster_plan.fingerprint:
                self.clusters[name] = old
            else:
                self.clusters[name] = Cluster(cluster_plan, worker.stats, worker.rng)
        self.listeners: dict[str, ListenerContext] = {
            listener.name: ListenerContext(self, listener) for listener in plan.listeners
        }

    def stream_started(self) -> None:
        self.active_streams += 1

    def stream_finished(self) -> None:
        self.active_streams -= 1
        if self.retired and self.active_streams == 0:
            self.plan.retire()

    def retire(self) -> None:
        """This plan is no longer current; clean up once its last stream ends."""
        self.retired = True
        if self.active_streams == 0:
            self.plan.retire()


class ListenerContext:
    """What a stream on one listener of one plan needs."""

    __slots__ = ("runtime", "worker", "listener", "hcm", "stats", "clusters", "out", "listener_cx_total",
                 "listener_cx_active", "filter_hooks", "worker_cx_total", "lane")

    def __init__(self, runtime: PlanRuntime, listener: ListenerPlan) -> None:
        self.runtime = runtime
        self.worker = runtime.worker
        self.listener = listener
        self.hcm: HcmPlan = listener.hcm
        self.stats = HcmStats(self.worker.stats, listener.hcm.stat_prefix)
        self.clusters = runtime.clusters
        self.out = self.worker.out
        self.lane: Any = None  # the fast lane's plan for this context (``_lane_plan``), once asked; False: none
        self.bind_listener_stats(listener.port)

    def connection_opened(self) -> None:
        """Count a client connection this listener accepted (the HTTP/1 edges and the fast lane)."""
        self.stats.cx_total.value += 1
        self.stats.cx_active.value += 1
        self.listener_cx_total.value += 1
        self.worker_cx_total.value += 1
        self.listener_cx_active.value += 1

    def connection_closed(self) -> None:
        self.stats.cx_active.value -= 1
        self.listener_cx_active.value -= 1

    def bind_listener_stats(self, port: int) -> None:
        """Create the ``listener.<prefix>.*`` stats; without a stat_prefix they are named after ``address_port``."""
        listener = self.listener
        prefix = listener.stat_prefix or f"{listener.address}_{port}"
        stats = self.worker.stats
        self.listener_cx_total = stats.counter(f"listener.{prefix}.downstream_cx_total")
        self.listener_cx_active = stats.gauge(f"listener.{prefix}.downstream_cx_active")
        self.worker_cx_total = stats.counter(f"listener.{prefix}.worker_{self.worker.worker_index}.downstream_cx_total")
        # positions of the filters whose on_stream_complete / on_log do something (the others are skipped)
        filters = self.hcm.filters
        self.filter_hooks = (tuple(i for i, entry in enumerate(filters) if entry.wants_complete),
                             tuple(i for i, entry in enumerate(filters) if entry.wants_log))
