"""Plugin-defined metrics (``proxy_define_metric`` and friends).

Ids encode the metric type in their low two bits, as Envoy does, so a wrong-type
operation is refused without a lookup. Names are kept as the plugin gave them; the
sidecar exports them with Envoy's ``wasmcustom.`` prefix.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ._abi import MetricType


@dataclass(slots=True)
class Metric:
    id: int
    name: str
    type: MetricType
    value: int = 0
    samples: list[int] = field(default_factory=list)
    sample_count: int = 0
    sample_sum: int = 0

    MAX_SAMPLES = 1024

    def record_sample(self, value: int) -> None:
        self.sample_count += 1
        self.sample_sum += value
        if len(self.samples) >= self.MAX_SAMPLES:
            self.samples.pop(0)
        self.samples.append(value)


class MetricStore:
    """All plugin metrics of one process, by id and by name."""

    def __init__(self) -> None:
        self._by_id: dict[int, Metric] = {}
        self._by_name: dict[tuple[str, MetricType], Metric] = {}
        # one sequence per type, as Envoy numbers them (counter 4, 8; gauge 5, 9; histogram 6, 10)
        self._seq = {kind: itertools.count(1) for kind in MetricType}

    def define(self, metric_type: MetricType, name: str) -> Metric:
        key = (name, metric_type)
        metric = self._by_name.get(key)
        if metric is None:
            metric = Metric((next(self._seq[metric_type]) << 2) | int(metric_type), name, metric_type)
            self._by_name[key] = metric
            self._by_id[metric.id] = metric
        return metric

    def get(self, metric_id: int) -> Metric | None:
        return self._by_id.get(metric_id)

    def all(self) -> list[Metric]:
        return list(self._by_id.values())

    def snapshot(self) -> dict[str, int | dict[str, int]]:
        """name → value (counters/gauges) or {count, sum} (histograms)."""
        out: dict[str, int | dict[str, int]] = {}
        for metric in self._by_id.values():
            if metric.type is MetricType.HISTOGRAM:
                out[metric.name] = {"count": metric.sample_count, "sum": metric.sample_sum}
            else:
                out[metric.name] = metric.value
        return out
