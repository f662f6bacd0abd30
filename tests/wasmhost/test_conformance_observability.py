"""Conformance: ``log_level`` (C) and ``metrics`` (C) — logs, log level, plugin metrics.

``proxy_get_log_level`` reports the proxy's level (trace here, as in the Envoy harness);
``proxy_log`` accepts levels 0..5 and refuses 6 with BAD_ARGUMENT. Metrics: counters add,
gauges move both ways, histograms record (``proxy_get_metric`` on one is BAD_ARGUMENT, as in
Envoy), an unknown id is NOT_FOUND and a bad type BAD_ARGUMENT.
"""

from __future__ import annotations

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import LogLevel


def test_log_levels_and_the_hosts_level() -> None:
    with ConformanceHost(plugin_path("log_level")) as host:
        result = host.request()
        assert result["logs"] == [
            {"level": level, "message": f"log_level: message at level {number}"}
            for number, level in enumerate(["trace", "debug", "info", "warn", "error", "critical"])
        ]
        headers = dict(result["response"]["headers"])
        assert (headers["x-log-level"], headers["x-log-level-status"]) == ("0", "0")
        assert headers["x-log-invalid-level-status"] == "2"


def test_lines_below_the_proxys_level_are_dropped_and_the_level_is_reported() -> None:
    with ConformanceHost(plugin_path("log_level")) as host:
        host.environment.log_level = LogLevel.WARN
        result = host.request()
        assert [e["level"] for e in result["logs"]] == ["warn", "error", "critical"]
        assert dict(result["response"]["headers"])["x-log-level"] == "3"


def test_metrics_define_increment_record_and_read_back() -> None:
    with ConformanceHost(plugin_path("metrics")) as host:
        [defined] = host.startup_logs
        assert defined["message"].startswith("metrics: defined counter=")
        assert defined["message"].endswith("bad_type_status=2")
        first = dict(host.request(headers=[("x-a", "1")])["response"]["headers"])
        assert first["x-counter"] == "1"
        assert first["x-inflight"] == "1"  # on_log has not run yet for this stream
        assert first["x-last-header-count"] == "6"
        assert first["x-histogram-get-status"] == "2"
        assert first["x-bad-metric-type-status"] == "2"
        assert first["x-unknown-metric-status"] == "1"
        second = host.request()
        assert dict(second["response"]["headers"])["x-counter"] == "2"
        assert second["metrics"] == {
            "wasmesh_test_requests_total": 2,
            "wasmesh_test_inflight": 0,  # on_log decremented it after each stream
            "wasmesh_test_last_header_count": 5,
        }
        snapshot = host.runtime.metrics.snapshot()
        assert snapshot["wasmesh_test_header_count"] == {"count": 2, "sum": 11}
