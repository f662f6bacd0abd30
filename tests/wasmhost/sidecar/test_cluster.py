"""Cluster state: load balancing policies, outlier detection with ejection, panic mode."""

from __future__ import annotations

import random
from collections import Counter

from wasmhost.sidecar import StatsStore
from wasmhost.sidecar._cluster import Cluster
from wasmhost.sidecar._plan import ClusterPlan, EndpointPlan, OutlierPlan


def make(policy: str = "ROUND_ROBIN", weights: tuple[int, ...] = (1, 1, 1), outlier: OutlierPlan | None = None,
         panic: float = 50.0) -> Cluster:
    endpoints = tuple(EndpointPlan("127.0.0.1", 8000 + i, weight) for i, weight in enumerate(weights))
    plan = ClusterPlan(name="c", stat_name="c", discovery="STATIC", endpoints=endpoints, lb_policy=policy,
                       outlier=outlier, panic_threshold=panic)
    return Cluster(plan, StatsStore(), random.Random(3))


def picks(cluster: Cluster, count: int, key: int | None = None) -> Counter[int]:
    result: Counter[int] = Counter()
    for _ in range(count):
        host = cluster.choose_host(key)
        assert host is not None
        result[host.port] += 1
    return result


def test_round_robin_cycles_through_hosts() -> None:
    cluster = make()
    ports = [cluster.choose_host().port for _ in range(6)]  # type: ignore[union-attr]
    assert sorted(ports[:3]) == [8000, 8001, 8002] and ports[:3] == ports[3:]


def test_weighted_round_robin_is_proportional() -> None:
    assert picks(make(weights=(1, 3)), 400) == {8000: 100, 8001: 300}


def test_random_covers_all_hosts() -> None:
    counts = picks(make("RANDOM"), 3000)
    assert set(counts) == {8000, 8001, 8002} and min(counts.values()) > 800


def test_least_request_prefers_idle_hosts() -> None:
    cluster = make("LEAST_REQUEST", weights=(1, 1))
    cluster.hosts[0].active_requests = 50
    counts = picks(cluster, 200)
    assert counts[8001] > counts[8000]


def test_ring_hash_is_sticky_per_key_and_spreads_keys() -> None:
    cluster = make("RING_HASH")
    for key in (1, 2**40, 2**63 + 5):
        assert len(picks(cluster, 10, key)) == 1
    spread = Counter(cluster.choose_host(random.Random(k).getrandbits(64)).port for k in range(600))  # type: ignore[union-attr]
    assert set(spread) == {8000, 8001, 8002} and min(spread.values()) > 100


def test_consecutive_5xx_ejects_and_interval_brings_back() -> None:
    outlier = OutlierPlan(consecutive_5xx=3, base_ejection_time=10.0, max_ejection_percent=100)
    cluster = make(weights=(1, 1), outlier=outlier)
    bad = cluster.hosts[0]
    for _ in range(2):
        cluster.record_response(bad, 503, now=100.0)
    cluster.record_response(bad, 200, now=100.0)  # a success resets the count
    for _ in range(3):
        cluster.record_response(bad, 500, now=101.0)
    assert bad.ejected
    assert picks(cluster, 10) == {8001: 10}
    assert cluster.stats.ejections_active.value == 1
    cluster.tick(now=105.0)
    assert bad.ejected
    cluster.tick(now=111.5)
    assert not bad.ejected and set(picks(cluster, 10)) == {8000, 8001}


def test_gateway_failures_are_not_enforced_by_default() -> None:
    outlier = OutlierPlan(consecutive_5xx=100, consecutive_gateway_failure=2, max_ejection_percent=100)
    cluster = make(weights=(1, 1), outlier=outlier)
    for _ in range(2):
        cluster.record_response(cluster.hosts[0], 502, now=1.0)
    assert not cluster.hosts[0].ejected
    assert cluster.stats.ejections_detected_gateway.value == 1
    enforced = make(weights=(1, 1), outlier=OutlierPlan(consecutive_gateway_failure=2,
                                                         enforcing_consecutive_gateway_failure=100,
                                                         max_ejection_percent=100))
    for _ in range(2):
        enforced.record_response(enforced.hosts[0], 504, now=1.0)
    assert enforced.hosts[0].ejected


def test_max_ejection_percent_limits_ejections() -> None:
    cluster = make(weights=(1, 1), outlier=OutlierPlan(consecutive_5xx=1))  # default 10%: 1 of 2 is 50%
    cluster.record_response(cluster.hosts[0], 500, now=1.0)
    assert not cluster.hosts[0].ejected
    assert cluster.stats.ejections_overflow.value == 1


def test_ejection_time_grows_with_repeated_ejections() -> None:
    cluster = make(weights=(1, 1), outlier=OutlierPlan(consecutive_5xx=1, base_ejection_time=10.0,
                                                        max_ejection_percent=100))
    host = cluster.hosts[0]
    cluster.record_response(host, 500, now=0.0)
    cluster.tick(now=10.0)
    assert not host.ejected
    cluster.record_response(host, 500, now=11.0)
    cluster.tick(now=25.0)
    assert host.ejected  # second ejection lasts 2 x base
    cluster.tick(now=31.0)
    assert not host.ejected


def test_panic_mode_routes_to_all_hosts_when_too_few_are_healthy() -> None:
    cluster = make(weights=(1, 1, 1), outlier=OutlierPlan(consecutive_5xx=1, max_ejection_percent=100))
    cluster.record_response(cluster.hosts[0], 500, now=0.0)
    cluster.record_response(cluster.hosts[1], 500, now=0.0)
    counts = picks(cluster, 30)
    assert set(counts) == {8000, 8001, 8002}  # 1 of 3 healthy is below the 50% panic threshold
    assert cluster.stats.panic.value == 30


def test_dns_results_replace_hosts_and_keep_state() -> None:
    plan = ClusterPlan(name="d", stat_name="d", discovery="STRICT_DNS",
                       endpoints=(EndpointPlan("svc.local", 80),), lb_policy="ROUND_ROBIN")
    cluster = Cluster(plan, StatsStore(), random.Random(1))
    assert cluster.choose_host() is None
    endpoint = plan.endpoints[0]
    cluster.set_resolved([(endpoint, ["10.0.0.1", "10.0.0.2"])])
    first = cluster.hosts[0]
    first.rq_total = 7
    cluster.set_resolved([(endpoint, ["10.0.0.1", "10.0.0.3"])])
    assert [h.address for h in cluster.hosts] == ["10.0.0.1", "10.0.0.3"]
    assert cluster.hosts[0] is first and first.hostname == "svc.local"
    logical = Cluster(ClusterPlan(name="l", stat_name="l", discovery="LOGICAL_DNS", endpoints=(endpoint,),
                                  lb_policy="ROUND_ROBIN"), StatsStore())
    logical.set_resolved([(endpoint, ["10.0.0.1", "10.0.0.2"])])
    assert [h.address for h in logical.hosts] == ["10.0.0.1"]
