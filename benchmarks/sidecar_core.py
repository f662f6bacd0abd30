"""CPU cost of the sidecar's request path without sockets: µs per proxied request.

Drives the real worker, codecs, filter chain and router with in-memory
transports (no syscalls, no event-loop wakeups), so the number isolates the
Python work per request and is stable on a busy machine. It pins itself to the last CPU
it may use. Bounded: runs for ``--seconds`` (default 3).

    python benchmarks/sidecar_core.py [--seconds 3] [--profile] [--calls] [--plugin]

``--plugin`` puts the ``bench_6hostcalls`` Wasm filter (built by ``make plugins``)
before the router, as the plugin rows of ``sidecar_wrk.py`` do. ``--calls`` also counts the
Python-level and C-level calls one request makes (a machine-independent measure of the path).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostcall_filter import pin_to_one_core  # noqa: E402 - this directory, as a script's

from wasmhost.sidecar._downstream import DownstreamConnection  # noqa: E402
from wasmhost.sidecar._reload import load_plan  # noqa: E402
from wasmhost.sidecar._upstream import UpstreamConnection  # noqa: E402
from wasmhost.sidecar._worker import ListenerState, Worker  # noqa: E402

CONFIG = """
static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters:PLUGIN_FILTER
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]
"""
PLUGIN = Path(__file__).resolve().parents[1] / "build" / "plugins" / "bench_6hostcalls.wasm"
PLUGIN_FILTER = f"""
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{PLUGIN}"}}}}"""

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 05:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n"
)


class MemoryTransport:
    """Just enough of ``asyncio.Transport`` for the edge classes."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]) -> None:
        self.written: list[bytes] = []
        self._extra = {"peername": peer, "sockname": local, "socket": None}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def build(plugin: bool = False) -> tuple[Worker, DownstreamConnection, MemoryTransport, UpstreamConnection, MemoryTransport]:
    loop = asyncio.new_event_loop()
    worker = Worker(loop)
    plan = load_plan(CONFIG.replace("PLUGIN_FILTER", PLUGIN_FILTER if plugin else ""), "<bench>", 1, worker)
    from wasmhost.sidecar._context import PlanRuntime

    runtime = PlanRuntime(plan, worker.runtime)
    worker.current = runtime
    listener = plan.listeners[0]
    state = ListenerState(listener, runtime.listeners[listener.name])
    down = DownstreamConnection(worker, state)
    down_transport = MemoryTransport(("127.0.0.1", 40000), ("127.0.0.1", 8080))
    down.connection_made(down_transport)  # type: ignore[arg-type]
    cluster = runtime.clusters["upstream"]
    pool = worker._pool(cluster, cluster.hosts[0])
    up = UpstreamConnection(pool)
    up_transport = MemoryTransport(("127.0.0.1", 9), ("127.0.0.1", 50000))
    up.connection_made(up_transport)  # type: ignore[arg-type]
    cluster.cx_active += 1
    pool.release(up)
    return worker, down, down_transport, up, up_transport


def check(down_transport: MemoryTransport, up_transport: MemoryTransport) -> None:
    """The path being timed really proxies: the upstream saw the request, the client got the answer."""
    sent = b"".join(up_transport.written)
    answered = b"".join(down_transport.written)
    if not sent.startswith(b"GET / HTTP/1.1\r\n") or not answered.startswith(b"HTTP/1.1 200 OK\r\n") \
            or not answered.endswith(b"hello world\n"):
        raise SystemExit(f"the benchmark path does not proxy: sent {sent[:80]!r}, answered {answered[:200]!r}")


def run(seconds: float, plugin: bool = False, rounds: int = 5) -> list[float]:
    """µs of CPU per request for each round (after a checked warm-up)."""
    worker, down, down_transport, up, up_transport = build(plugin)
    for _ in range(200):
        down.data_received(REQUEST)
        up.data_received(RESPONSE)
    check(down_transport, up_transport)
    results: list[float] = []
    for _ in range(rounds):
        count = 0
        start = time.process_time()
        deadline = start + seconds / rounds
        while True:
            for _ in range(500):
                down.data_received(REQUEST)
                up.data_received(RESPONSE)
            count += 500
            down_transport.written.clear()
            up_transport.written.clear()
            if time.process_time() >= deadline:
                break
        results.append((time.process_time() - start) * 1e6 / count)
    return results


def count_calls(plugin: bool = False, requests: int = 1000) -> tuple[float, float]:
    """Python-level and C-level function calls per request (after a warm-up)."""
    worker, down, down_transport, up, up_transport = build(plugin)
    for _ in range(200):
        down.data_received(REQUEST)
        up.data_received(RESPONSE)
    counts = {"call": 0, "c_call": 0}

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event in counts:
            counts[event] += 1

    sys.setprofile(profile)
    try:
        for _ in range(requests):
            down.data_received(REQUEST)
            up.data_received(RESPONSE)
    finally:
        sys.setprofile(None)
    return counts["call"] / requests, counts["c_call"] / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--plugin", action="store_true", help="bench_6hostcalls before the router")
    parser.add_argument("--calls", action="store_true", help="also count the calls one request makes")
    args = parser.parse_args()
    pin_to_one_core()  # unpinned, this VM's per-process CPU accounting swings by 3x
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        results = run(args.seconds, args.plugin, rounds=1)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    else:
        results = run(args.seconds, args.plugin)
    median = statistics.median(results)
    best = min(results)
    print(f"{'with' if args.plugin else 'without'} plugin: {median:.1f} µs CPU per request (median of {len(results)} "
          f"rounds; best {best:.1f} µs = {1e6 / best:,.0f} req/s/core before syscalls)")
    if args.calls:
        python_calls, c_calls = count_calls(args.plugin)
        print(f"calls per request: {python_calls:.0f} Python-level, {c_calls:.0f} C-level")


if __name__ == "__main__":
    main()
