"""What the console shows, computed from scraped sidecar metrics (sans-io).

Each scrape of a sidecar's ``/stats/prometheus`` becomes a ``Sample`` (parsed families with
a timestamp). From the last two samples of every target the model derives the service graph
(Istio's ``istio_requests_total`` and duration buckets: request rate, error rate, p99 per
edge) and the per-plugin view (``wasmesh_wasm_plugin_*``). Rates need two scrapes; until
then totals are shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass
class Sample:
    """One scrape: metric name -> [(labels, value)], keeping bucket ``le`` labels."""

    at: float
    series: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, at: float) -> Sample:
        out = cls(at)
        for family in text_string_to_metric_families(text):
            if not (family.name.startswith("istio_") or family.name.startswith("wasmesh_")):
                continue
            for item in family.samples:
                out.series.setdefault(item.name, []).append((tuple(sorted(item.labels.items())), float(item.value)))
        return out

    def get(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), value) for labels, value in self.series.get(name, [])]


def _edge_key(labels: Mapping[str, str]) -> tuple[str, str]:
    source = f"{labels.get('source_workload', 'unknown')}.{labels.get('source_workload_namespace', 'unknown')}"
    target = f"{labels.get('destination_workload', 'unknown')}.{labels.get('destination_workload_namespace', 'unknown')}"
    return source, target


def _sum_by_edge(sample: Sample, metric: str, reporter: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for labels, value in sample.get(metric):
        if labels.get("reporter") != reporter:
            continue
        key = _edge_key(labels)
        out[key] = out.get(key, 0.0) + value
    return out


def _errors_by_edge(sample: Sample, reporter: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for labels, value in sample.get("istio_requests_total"):
        if labels.get("reporter") == reporter and labels.get("response_code", "0")[:1] in ("5", "0"):
            key = _edge_key(labels)
            out[key] = out.get(key, 0.0) + value
    return out


def _buckets_by_edge(sample: Sample, reporter: str) -> dict[tuple[str, str], dict[float, float]]:
    out: dict[tuple[str, str], dict[float, float]] = {}
    for labels, value in sample.get("istio_request_duration_milliseconds_bucket"):
        if labels.get("reporter") != reporter:
            continue
        le = float(labels.get("le", "inf").replace("+Inf", "inf"))
        buckets = out.setdefault(_edge_key(labels), {})
        buckets[le] = buckets.get(le, 0.0) + value
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (linear within a bucket)."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound


def service_graph(history: Mapping[str, list[Sample]]) -> dict[str, Any]:
    """Nodes and edges from every target's samples; ``destination`` reports win over ``source``."""
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for reporter in ("source", "destination"):
        for samples in history.values():
            if not samples:
                continue
            last = samples[-1]
            before = samples[-2] if len(samples) > 1 else None
            totals = _sum_by_edge(last, "istio_requests_total", reporter)
            errors = _errors_by_edge(last, reporter)
            buckets = _buckets_by_edge(last, reporter)
            old_totals = _sum_by_edge(before, "istio_requests_total", reporter) if before else {}
            old_errors = _errors_by_edge(before, reporter) if before else {}
            old_buckets = _buckets_by_edge(before, reporter) if before else {}
            for key, total in totals.items():
                dt = (last.at - before.at) if before is not None else 0.0
                delta = total - old_totals.get(key, 0.0) if before is not None else total
                error_delta = errors.get(key, 0.0) - old_errors.get(key, 0.0) if before is not None \
                    else errors.get(key, 0.0)
                window = {le: count - old_buckets.get(key, {}).get(le, 0.0) for le, count in buckets.get(key, {}).items()}
                if not any(window.values()):
                    window = buckets.get(key, {})
                edges[key] = {
                    "source": key[0], "target": key[1], "reporter": reporter, "requests": total,
                    "rps": round(delta / dt, 3) if dt > 0 else 0.0,
                    "error_rate": round(error_delta / delta, 4) if delta > 0 else 0.0,
                    "errors": errors.get(key, 0.0),
                    "p99_ms": _round(quantile(0.99, window)),
                }
    nodes: dict[str, dict[str, Any]] = {}
    for source, target in edges:
        for name in (source, target):
            workload, _, namespace = name.rpartition(".")
            nodes.setdefault(name, {"id": name, "workload": workload, "namespace": namespace,
                                    "unknown": workload == "unknown"})
    return {"nodes": sorted(nodes.values(), key=lambda n: n["id"]),
            "edges": sorted(edges.values(), key=lambda e: (e["source"], e["target"]))}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


_PLUGIN_COUNTERS = ("traps", "deadline_hits", "memory_cap_hits", "reloads", "reload_failures")


def plugin_view(history: Mapping[str, list[Sample]], workloads: Mapping[str, str]) -> list[dict[str, Any]]:
    """Per plugin: where it runs (target -> workload), digest, health, failure counters, memory."""
    plugins: dict[str, dict[str, Any]] = {}
    for target, samples in history.items():
        if not samples:
            continue
        last = samples[-1]
        workload = workloads.get(target, target)
        for labels, _ in last.get("wasmesh_wasm_plugin_info"):
            name = labels.get("plugin", "")
            plugin = plugins.setdefault(name, {"name": name, "digests": [], "vm_ids": [], "instances": [],
                                               **{c: 0 for c in _PLUGIN_COUNTERS}})
            if labels.get("sha256") and labels["sha256"] not in plugin["digests"]:
                plugin["digests"].append(labels["sha256"])
            if labels.get("vm_id", "") not in plugin["vm_ids"]:
                plugin["vm_ids"].append(labels.get("vm_id", ""))
            instance = {"target": target, "workload": workload, "sha256": labels.get("sha256", ""),
                        "healthy": _value(last, "wasmesh_wasm_plugin_healthy", name) == 1.0,
                        "memory_pages": _value(last, "wasmesh_wasm_plugin_memory_pages", name)}
            for counter in _PLUGIN_COUNTERS:
                count = _value(last, f"wasmesh_wasm_plugin_{counter}_total", name) or 0.0
                instance[counter] = count
                plugin[counter] += count
            plugin["instances"].append(instance)
    return sorted(plugins.values(), key=lambda p: p["name"])


def _value(sample: Sample, metric: str, plugin: str) -> float | None:
    for labels, value in sample.get(metric):
        if labels.get("plugin") == plugin:
            return value
    return None


def merge_plugin_resources(view: list[dict[str, Any]], resources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Add what the control plane knows (WasmPlugin url, declared sha256, module status/signer) by name."""
    by_name = {p["name"]: p for p in view}
    for resource in resources:
        name = resource["name"]
        plugin = by_name.setdefault(name, {"name": name, "digests": [], "vm_ids": [], "instances": [],
                                           **{c: 0 for c in _PLUGIN_COUNTERS}})
        plugin["resource"] = dict(resource)
    return sorted(by_name.values(), key=lambda p: p["name"])
