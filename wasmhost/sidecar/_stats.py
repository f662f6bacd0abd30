"""Envoy-style statistics: cheap counters on the hot path, Prometheus text on scrape.

Counters, gauges and histograms are plain objects whose hot-path update is an
attribute increment. Names follow Envoy (``cluster.<name>.upstream_rq_total``);
the Prometheus view applies Envoy's default tag extraction so metric names and
labels look like Envoy's ``/stats/prometheus`` (``envoy_cluster_upstream_rq_total
{envoy_cluster_name="..."}``). Snapshots let a supervisor merge the stores of
several worker processes.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import CollectorRegistry

_bisect_left = bisect.bisect_left

# Envoy's default histogram bucket bounds, in the unit of the histogram (usually milliseconds).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip


class Counter:
    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Gauge:
    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount

    def set(self, value: int) -> None:
        self.value = value


class Histogram:
    __slots__ = ("name", "bounds", "counts", "total", "count")

    def __init__(self, name: str, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.name = name
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[_bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


# (regex on the full stat name, tag name); the first group is the tag value and is removed from the name.
_TAG_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^cluster\.((.+?)\.)(?:upstream_|outlier_detection\.|circuit_breakers\.|lb_|membership_|retry_|"
                r"internal\.|external\.|canary\.|max_host|bind_|version|assignment|update_|original_dst|http1\.|http2\.)"),
     "envoy_cluster_name"),
    (re.compile(r"^http\.((.*?)\.)"), "envoy_http_conn_manager_prefix"),
    (re.compile(r"^listener\.(([\d._]*|[_\[\]a-fA-F\d]*)\.)"), "envoy_listener_address"),
    (re.compile(r"_rq(_(\d)xx)$"), "envoy_response_code_class"),
    (re.compile(r"_rq(_(\d{3}))$"), "envoy_response_code"),
    (re.compile(r"^http\.fault\.((.*?)\.)|^fault\.((.*?)\.)"), "envoy_fault_downstream_cluster"),
)  # fmt: skip


# Envoy's custom stat namespaces: "<namespace>.<rest>" is exported as <rest>, without the
# envoy_ prefix or tag extraction; the owner's decoder may read labels out of <rest>.
NamespaceDecoder = Callable[[str], tuple[str, dict[str, str]]]
_NAMESPACES: dict[str, NamespaceDecoder] = {}


def _plain_name(rest: str) -> tuple[str, dict[str, str]]:
    return re.sub(r"[^a-zA-Z0-9_:]", "_", rest), {}


def register_stat_namespace(namespace: str, decoder: NamespaceDecoder = _plain_name) -> Callable[[], None]:
    """Export stats named ``<namespace>.x`` as ``x`` (Envoy's ``registerStatNamespace``); returns an undo."""
    previous = _NAMESPACES.get(namespace)
    _NAMESPACES[namespace] = decoder

    def unregister() -> None:
        if previous is None:
            _NAMESPACES.pop(namespace, None)
        else:
            _NAMESPACES[namespace] = previous

    return unregister


def prometheus_name_and_labels(name: str) -> tuple[str, dict[str, str]]:
    """Envoy's default tag extraction: ``cluster.a.upstream_rq_2xx`` -> ``envoy_cluster_upstream_rq_xx`` + labels."""
    if _NAMESPACES:
        namespace, dot, rest = name.partition(".")
        decoder = _NAMESPACES.get(namespace) if dot else None
        if decoder is not None:
            return decoder(rest)
    labels: dict[str, str] = {}
    rest = name
    for pattern, tag in _TAG_RULES:
        match = pattern.search(rest)
        if match is None:
            continue
        groups = [g for g in match.groups() if g is not None]
        if len(groups) < 2:
            continue
        whole, value = groups[0], groups[1]
        labels[tag] = value
        start = rest.find(whole, match.start())
        rest = rest[:start] + rest[start + len(whole) :]
        if tag == "envoy_response_code_class":
            rest += "_xx"
    metric = "envoy_" + re.sub(r"[^a-zA-Z0-9_]", "_", rest)
    return metric, labels


@dataclass(frozen=True, slots=True)
class StatSample:
    """One stat in a snapshot: kind is counter/gauge/histogram; value is int or (counts, total, count)."""

    kind: str
    value: Any
    bounds: tuple[float, ...] = ()


# Called with the store before every snapshot: stats kept elsewhere (plugin health) are copied in then.
SnapshotHook = Callable[["StatsStore"], None]
_SNAPSHOT_HOOKS: list[SnapshotHook] = []


def add_snapshot_hook(hook: SnapshotHook) -> Callable[[], None]:
    """Run ``hook(store)`` before each ``StatsStore.snapshot()``; returns an undo."""
    _SNAPSHOT_HOOKS.append(hook)
    return lambda: _SNAPSHOT_HOOKS.remove(hook) if hook in _SNAPSHOT_HOOKS else None


class StatsStore:
    """All stats of one worker process; creating a stat twice returns the same object."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}

    def counter(self, name: str) -> Counter:
        stat = self._counters.get(name)
        if stat is None:
            stat = self._counters[name] = Counter(name)
        return stat

    def gauge(self, name: str) -> Gauge:
        stat = self._gauges.get(name)
        if stat is None:
            stat = self._gauges[name] = Gauge(name)
        return stat

    def histogram(self, name: str, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> Histogram:
        stat = self._histograms.get(name)
        if stat is None:
            stat = self._histograms[name] = Histogram(name, bounds)
        return stat

    def snapshot(self) -> dict[str, StatSample]:
        """A picklable copy of every stat (for merging across worker processes)."""
        for hook in _SNAPSHOT_HOOKS:
            try:
                hook(self)
            except Exception:  # noqa: BLE001 - a broken contributor must not take the stats down
                logging.getLogger("wasmesh.sidecar.stats").exception("stats snapshot hook failed")
        out: dict[str, StatSample] = {}
        for name, counter in self._counters.items():
            out[name] = StatSample("counter", counter.value)
        for name, gauge in self._gauges.items():
            out[name] = StatSample("gauge", gauge.value)
        for name, hist in self._histograms.items():
            out[name] = StatSample("histogram", (list(hist.counts), hist.total, hist.count), hist.bounds)
        return out


def merge_snapshots(snapshots: Iterable[dict[str, StatSample]]) -> dict[str, StatSample]:
    """Sum counters, gauges and histogram buckets across workers."""
    merged: dict[str, StatSample] = {}
    for snap in snapshots:
        for name, sample in snap.items():
            have = merged.get(name)
            if have is None:
                merged[name] = sample
            elif sample.kind == "histogram":
                counts = [a + b for a, b in zip(have.value[0], sample.value[0], strict=True)]
                merged[name] = StatSample("histogram", (counts, have.value[1] + sample.value[1],
                                                        have.value[2] + sample.value[2]), sample.bounds)
            else:
                merged[name] = StatSample(sample.kind, have.value + sample.value)
    return merged


def render_text(snapshot: dict[str, StatSample]) -> str:
    """Envoy's ``/stats`` text format: ``name: value`` sorted by name."""
    lines: list[str] = []
    for name in sorted(snapshot):
        sample = snapshot[name]
        if sample.kind == "histogram":
            counts, total, count = sample.value
            if count == 0:
                lines.append(f"{name}: No recorded values")
            else:
                lines.append(f"{name}: count={count} sum={total:g}")
        else:
            lines.append(f"{name}: {sample.value}")
    return "\n".join(lines) + "\n"


class _SnapshotCollector:
    def __init__(self, snapshot: dict[str, StatSample]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        families: dict[tuple[str, str], Metric] = {}
        named = [(name, *prometheus_name_and_labels(name)) for name in sorted(self._snapshot)]
        # one family's samples may carry different label sets: export the union ("" = absent in Prometheus)
        label_sets: dict[tuple[str, str], set[str]] = {}
        for name, metric, labels in named:
            label_sets.setdefault((metric, self._snapshot[name].kind), set()).update(labels)
        for name, metric, labels in named:
            sample = self._snapshot[name]
            key = (metric, sample.kind)
            family = families.get(key)
            label_names = sorted(label_sets[key])
            if family is None:
                if sample.kind == "counter" and metric.endswith("_total"):
                    family = CounterMetricFamily(metric, "", labels=label_names)
                elif sample.kind == "counter":
                    # Envoy names counters without a _total suffix; keep the exact name.
                    family = UnknownMetricFamily(metric, "", labels=label_names)
                elif sample.kind == "gauge":
                    family = GaugeMetricFamily(metric, "", labels=label_names)
                else:
                    family = HistogramMetricFamily(metric, "", labels=label_names)
                families[key] = family
            values = [labels.get(n, "") for n in label_names]
            if sample.kind == "histogram":
                counts, total, _count = sample.value
                buckets: list[tuple[str, float]] = []
                running = 0
                for bound, bucket_count in zip(sample.bounds, counts, strict=False):
                    running += bucket_count
                    buckets.append((_bound_label(bound), running))
                running += counts[-1]
                buckets.append(("+Inf", running))
                family.add_metric(values, buckets, total)  # type: ignore[attr-defined]
            else:
                family.add_metric(values, sample.value)  # type: ignore[attr-defined]
        yield from families.values()


def _bound_label(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def render_prometheus(snapshot: dict[str, StatSample]) -> bytes:
    """Prometheus exposition text for a snapshot, rendered by ``prometheus_client``."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
