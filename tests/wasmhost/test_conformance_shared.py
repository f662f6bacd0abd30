"""Conformance: ``shared`` (C) — shared data with CAS and shared queues.

Shared data and queues are scoped by vm_id: every VM with the same vm_id sees the same keys
and queues, as in Envoy. A stale CAS is refused with CAS_MISMATCH; enqueueing notifies the
registering root with ``proxy_on_queue_ready`` after the callback returns.
"""

from __future__ import annotations

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost


def report(result: dict) -> dict[str, str]:
    return {k: v for k, v in result["response"]["headers"] if k.startswith(("x-shared", "x-queue"))}


def test_counter_statuses_and_queue_round_trip() -> None:
    with ConformanceHost(plugin_path("shared")) as host:
        assert host.startup_logs == [{"level": "info", "message": "shared: registered queue=1 status=0"}]
        first = host.request(path="/one")
        assert report(first) == {
            "x-shared-count": "1",
            "x-shared-cas-retries": "0",
            "x-shared-stale-cas-status": "8",
            "x-queue-resolve-status": "0",
            "x-queue-enqueue-status": "0",
            "x-queue-missing-status": "1",
            "x-queue-bad-dequeue-status": "1",
        }
        assert first["logs"] == [
            {"level": "info", "message": "shared: queue_ready queue=1 item=/one"},
            {"level": "info", "message": "shared: queue_drained queue=1 status=7"},
        ]
        assert report(host.request(path="/two"))["x-shared-count"] == "2"


def test_vms_with_the_same_vm_id_share_data_and_queues() -> None:
    with ConformanceHost(plugin_path("shared"), vm_id="pool") as first:
        with ConformanceHost(plugin_path("shared"), vm_id="pool", runtime=first.runtime) as second:
            assert first.plugin.vm is not second.plugin.vm
            assert report(first.request())["x-shared-count"] == "1"
            result = second.request(path="/from-second")
            assert report(result)["x-shared-count"] == "2"
            # the queue was registered by both roots; the last registration owns notifications
            assert any("item=/from-second" in e["message"] for e in result["logs"])


def test_a_different_vm_id_has_its_own_store() -> None:
    with ConformanceHost(plugin_path("shared"), vm_id="a") as first:
        with ConformanceHost(plugin_path("shared"), vm_id="b", runtime=first.runtime) as second:
            first.request()
            first.request()
            assert report(second.request())["x-shared-count"] == "1"
