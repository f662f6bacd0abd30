"""Sidecar throughput with telemetry off vs on (istio.metadata_exchange + istio.stats, then + tracing at 100%).

Starts a loopback upstream and one sidecar per configuration, sends keep-alive HTTP/1.1
requests from a client thread pool for a fixed time, and prints requests/second for each.
Bounded: ``--seconds`` per configuration (default 5), 127.0.0.1 only.

    python benchmarks/telemetry_overhead.py --seconds 5 --clients 4
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e._telemetry import listener, node, running, sidecar_bootstrap  # noqa: E402
from tests.e2e._upstream import ScriptedUpstream  # noqa: E402
from tests.wasmhost.sidecar._bootstrap import cluster  # noqa: E402

OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"


def drive(port: int, seconds: float, clients: int) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while time.monotonic() < stop:
            connection.request("GET", "/", headers={"host": "reviews:9080"})
            connection.getresponse().read()
            counts[index] += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with ScriptedUpstream(body=b"x" * 64) as app, ScriptedUpstream() as collector:
        tracing = {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": OTEL, "http_service": {"http_uri": {"uri": "http://collector/v1/traces", "cluster": "collector",
                                                         "timeout": "1s"}}}}}
        configs = {
            "telemetry off": dict(telemetry=False),
            "metrics (mx + istio.stats)": dict(telemetry=True),
            "metrics + tracing 100%": dict(telemetry=True, tracing=tracing),
        }
        results = {}
        for label, options in configs.items():
            boot = sidecar_bootstrap(node("reviews-v1"), [listener("in", "INBOUND", "inbound|9080||", **options)],
                                     [cluster("inbound|9080||", app.port), cluster("collector", collector.port)])
            with tempfile.TemporaryDirectory() as workdir, running(boot, Path(workdir)) as sidecar:
                port = sidecar.listener_ports()["in"]
                drive(port, 1.0, args.clients)  # warm up
                results[label] = drive(port, args.seconds, args.clients)
            print(f"{label:<28} {results[label]:9.0f} req/s", flush=True)
        base = results["telemetry off"]
        for label, value in results.items():
            print(f"{label:<28} {100.0 * (value - base) / base:+6.1f}% vs off")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
