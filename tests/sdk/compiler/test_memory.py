"""Memory management: the heap stops growing once a request mix has been seen, because
the collector (run when callbacks return) hands every request's garbage back to the free
lists that the next requests allocate from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sdk.compiler import compile_file
from tests.sdk.compiler._stubhost import StubHost, WasmRunner

CHURN = Path(__file__).parent / "plugins" / "churn.py"


def start(host: StubHost) -> WasmRunner:
    runner = WasmRunner(compile_file(CHURN), host)
    runner.call("proxy_on_context_create", 1, 0)
    runner.call("proxy_on_vm_start", 1, 0)
    runner.call("proxy_on_configure", 1, 0)
    return runner


def requests(runner: WasmRunner, host: StubHost, first: int, count: int) -> None:
    calls: dict[str, Any] = {name: runner.exports[name] for name in (
        "proxy_on_context_create", "proxy_on_request_headers", "proxy_on_log", "proxy_on_done", "proxy_on_delete")}
    store = runner.store
    for i in range(first, first + count):
        ctx = i + 2
        host.maps[0] = [(b":path", f"/p{i % 7}/x".encode()), (b"user-agent", b"curl/8"), (b"accept", b"*/*")]
        calls["proxy_on_context_create"](store, ctx, 1)
        calls["proxy_on_request_headers"](store, ctx, 3, 1)
        calls["proxy_on_log"](store, ctx)
        calls["proxy_on_done"](store, ctx)
        calls["proxy_on_delete"](store, ctx)


def test_heap_is_flat_after_warm_up() -> None:
    host = StubHost()
    runner = start(host)
    requests(runner, host, 0, 3000)
    warm = runner.call("wasmesh_heap_size")
    requests(runner, host, 3000, 6000)
    assert runner.call("wasmesh_heap_size") == warm
    assert runner.call("wasmesh_heap_live") < warm
    runner.call("proxy_on_tick", 1)
    assert host.logs[-1] == (2, "9000 ['p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6']")


def test_garbage_is_collected_not_accumulated() -> None:
    host = StubHost()
    runner = start(host)
    requests(runner, host, 0, 3000)
    # each request allocates well over a kilobyte; 3000 of them never fit in this heap
    assert runner.call("wasmesh_heap_size") < 1024 * 1024
    assert runner.memory_size() <= 2 * 1024 * 1024


def test_deep_structures_survive_collection() -> None:
    host = StubHost()
    runner = WasmRunner(compile_file(Path(__file__).parent / "plugins" / "deep.py"), host)
    runner.call("proxy_on_context_create", 1, 0)
    runner.call("proxy_on_configure", 1, 0)  # 100,000 nodes: collected (and kept) on return
    for _ in range(3):
        runner.call("proxy_on_tick", 1)
    assert host.logs == [(2, "100000 4999950000 20000")] * 3
    assert runner.call("wasmesh_heap_live") > 100_000 * 32


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_million_requests_soak() -> None:
    host = StubHost()
    runner = start(host)
    requests(runner, host, 0, 20_000)
    warm = runner.call("wasmesh_heap_size")
    requests(runner, host, 20_000, 980_000)
    assert runner.call("wasmesh_heap_size") == warm
