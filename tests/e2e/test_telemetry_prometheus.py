"""Istio's standard metrics from two real sidecars, scraped by a real Prometheus (Debian ``prometheus``).

productpage's sidecar (outbound listener, reporter=source) calls reviews' sidecar (inbound
listener, reporter=destination), which forwards to the app. Both exchange peer metadata, so
each reporter fills source and destination labels. Prometheus scrapes the admin endpoint of
one and the Istio-style Prometheus listener of the other; PromQL for request rate by
source/destination and for p99 latency must return exactly the expected series.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._tools import require_tool
from tests.e2e._telemetry import (
    free_port,
    listener,
    node,
    outbound_cluster,
    running,
    sidecar_bootstrap,
)
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

SERVICE = "reviews.default.svc.cluster.local"


class Prometheus:
    """``prometheus`` on 127.0.0.1 with a scrape config written for the test; stopped by the fixture."""

    def __init__(self, binary: str, workdir: Path, targets: list[tuple[str, str]]) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": name, "metrics_path": "/stats/prometheus",
                                      "static_configs": [{"targets": [address]}]} for name, address in targets]}
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        self.command = [binary, f"--config.file={workdir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with open(self.workdir / "prometheus.log", "ab") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready:\n" + (self.workdir / "prometheus.log").read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as reply:
            answer = json.loads(reply.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def targets_up(self) -> int:
        return sum(int(float(item["value"][1])) for item in self.query("up"))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[SidecarProcess, SidecarProcess, ScriptedUpstream]]:
    with ScriptedUpstream(body=b"reviews") as app:
        reviews = sidecar_bootstrap(node("reviews-v1"), [listener("virtualInbound_9080", "INBOUND", "inbound|9080||")],
                                    [cluster("inbound|9080||", app.port)])
        with running(reviews, tmp_path / "reviews") as server:
            inbound = server.listener_ports()["virtualInbound_9080"]
            admin = free_port()
            productpage = sidecar_bootstrap(
                node("productpage-v1"), [listener("0.0.0.0_9080", "OUTBOUND", f"outbound|9080||{SERVICE}")],
                [outbound_cluster(SERVICE, 9080, inbound)], admin_port=admin, prometheus=True)
            with running(productpage, tmp_path / "productpage") as client:
                yield client, server, app


def _wait(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"condition not met within {timeout} s")


def test_prometheus_rate_and_p99_by_source_and_destination(
        mesh: tuple[SidecarProcess, SidecarProcess, ScriptedUpstream], tmp_path: Path) -> None:
    binary = require_tool("prometheus", hint="apt-get install prometheus")
    client, server, app = mesh
    client_port = client.listener_ports()["0.0.0.0_9080"]
    prometheus_listener = client.listener_ports()["prometheus"]
    server_admin = server.admin_url.removeprefix("http://")
    prometheus = Prometheus(binary, tmp_path, [("productpage", f"127.0.0.1:{prometheus_listener}"),
                                              ("reviews", server_admin)]).start()
    try:
        _wait(lambda: prometheus.targets_up() == 2)
        ok, failed = 0, 0
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            app.set_response(500 if (ok + failed) % 5 == 4 else 200, body=b"reviews")
            status, _, _ = http_request(client_port, headers=[("host", "reviews:9080")])
            ok, failed = ok + (status == 200), failed + (status == 500)
            time.sleep(0.02)
        assert ok > 0 and failed > 0

        rate_by_edge = ('sum by (reporter, source_workload, destination_workload, destination_service) '
                        '(rate(istio_requests_total[1m]))')
        series = _wait(lambda: (r := prometheus.query(rate_by_edge)) and len(r) == 2 and r)
        edges = {(s["metric"]["reporter"], s["metric"]["source_workload"], s["metric"]["destination_workload"],
                  s["metric"]["destination_service"]): float(s["value"][1]) for s in series}
        assert set(edges) == {("source", "productpage-v1", "reviews-v1", SERVICE),
                              ("destination", "productpage-v1", "reviews-v1", "reviews:9080")}
        assert all(value > 0 for value in edges.values())

        errors_query = 'sum by (reporter, response_code) (istio_requests_total{response_code="500"})'

        def errors_scraped() -> list[dict[str, Any]]:
            found = prometheus.query(errors_query)
            return found if len(found) == 2 and all(float(s["value"][1]) == failed for s in found) else []

        errors = _wait(errors_scraped)  # both reporters counted every 500 once the last scrape is in
        assert {s["metric"]["reporter"] for s in errors} == {"source", "destination"}

        p99 = ('histogram_quantile(0.99, sum by (le, source_workload, destination_workload) '
               '(rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[1m])))')
        quantiles = _wait(lambda: prometheus.query(p99))
        assert [(q["metric"]["source_workload"], q["metric"]["destination_workload"]) for q in quantiles] == [
            ("productpage-v1", "reviews-v1")]
        assert 0.0 < float(quantiles[0]["value"][1]) <= 1000.0

        sizes = prometheus.query('sum by (reporter) (istio_request_bytes_count)')
        assert sorted(s["metric"]["reporter"] for s in sizes) == ["destination", "source"]
    finally:
        prometheus.stop()
